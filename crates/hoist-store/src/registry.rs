//! What registries know about our blobs: the repositories a blob was pulled from or pushed to,
//! so a push can mount it from a sibling repository instead of uploading it again.

use hoist_oci::Digest;
use rusqlite::params;

use crate::{Store, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blob_sources (
    digest     TEXT NOT NULL,
    repository TEXT NOT NULL, -- host/path, e.g. localhost:5000/library/busybox
    PRIMARY KEY (digest, repository)
);
";

impl Store {
    /// Remembers that `repository` (`host/path`) holds `blob`.
    pub fn record_blob_source(&self, blob: &Digest, repository: &str) -> Result<(), StoreError> {
        let db = self.db();
        db.execute_batch(SCHEMA)?;
        db.execute(
            "INSERT OR IGNORE INTO blob_sources (digest, repository) VALUES (?1, ?2)",
            params![blob.as_str(), repository],
        )?;
        Ok(())
    }

    /// Repositories (`host/path`) known to hold `blob`, most recently recorded first.
    pub fn blob_sources(&self, blob: &Digest) -> Result<Vec<String>, StoreError> {
        let db = self.db();
        db.execute_batch(SCHEMA)?;
        let mut stmt = db
            .prepare("SELECT repository FROM blob_sources WHERE digest = ?1 ORDER BY rowid DESC")?;
        let rows = stmt.query_map([blob.as_str()], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
