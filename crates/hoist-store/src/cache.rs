//! The build cache index and the context stat cache, both in the store's database.
//!
//! A cache entry maps a step's key (the engine's hash of everything the step's result depends
//! on) to the layer it made and the time it was made, so a hit reproduces the same history and
//! the same image id. Layers that only the cache keeps are reclaimed by [`Store::prune_cache`],
//! never by `rmi`, as docker keeps its build cache apart from its images.
//!
//! The stat cache maps a context file's path to (device, inode, size, mtime, ctime) and the
//! sha256 of its content, so an unchanged file is never read again.

use std::io;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use hoist_oci::Digest;

use crate::error::IoContext;
use crate::{LayerInfo, Store, StoreError, layer_row};

/// What `stat` says about a file; equal stats mean the content digest still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// A hit in the build cache.
#[derive(Debug, Clone)]
pub struct CacheHit {
    /// The layer the step made.
    pub layer: LayerInfo,
    /// When it was made (the history time to reuse).
    pub created: String,
}

/// What the cache holds, for `system df` and `builder prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Entries.
    pub entries: u64,
    /// Bytes of the layers only the cache keeps.
    pub reclaimable: u64,
}

/// One build cache entry, as `system df -v` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The step's key.
    pub key: String,
    /// The layer it made.
    pub diff_id: String,
    /// The layer's size on disk.
    pub size: u64,
    /// When the step made it (RFC 3339, as recorded for its history).
    pub created: String,
    /// When a build last made or hit it, in unix seconds.
    pub last_used: i64,
    /// How many builds made or hit it.
    pub uses: u64,
    /// Whether an image holds its layer too (removing the entry then frees nothing).
    pub shared: bool,
}

/// One `RUN --mount=type=cache` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountUsage {
    /// Its directory's name under `cache-mounts/` (the sha256 of the mount's id).
    pub dir: String,
    /// Bytes of the files in it.
    pub size: u64,
    /// When it was made and last mounted, in unix seconds, and how many steps mounted it;
    /// unknown for a directory made before hoist recorded these.
    pub created: Option<i64>,
    pub last_used: Option<i64>,
    pub uses: Option<u64>,
}

/// Which build cache a [`Store::prune_cache`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CachePrune {
    /// Entries whose layer an image holds too (`builder prune --all`). Without it those stay,
    /// as BuildKit keeps the records it shares with images: removing them frees nothing and
    /// only makes the next build of those images miss.
    pub all: bool,
    /// Stop once the layers only the cache keeps fit in this many bytes (least recently used
    /// go first).
    pub keep_bytes: Option<u64>,
    /// Only entries no build used since this unix second (docker's `until` filter).
    pub unused_since: Option<i64>,
}

fn common_prefix<'a>(mut paths: impl Iterator<Item = &'a str>) -> String {
    let Some(first) = paths.next() else {
        return String::new();
    };
    let mut len = first.len();
    for p in paths {
        len = first
            .bytes()
            .zip(p.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    // Cut at a char boundary.
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    first[..len].to_owned()
}

pub(crate) const CACHE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS build_cache (
    key       TEXT PRIMARY KEY,
    diff_id   TEXT NOT NULL,
    created   TEXT NOT NULL,
    last_used INTEGER NOT NULL,
    partial   TEXT,
    uses      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS build_cache_diff ON build_cache (diff_id);
-- What `system df -v` says of a RUN --mount=type=cache directory (cache-mounts/<dir>): when
-- it was made and last mounted, in unix seconds, and how many steps mounted it.
CREATE TABLE IF NOT EXISTS cache_mounts (
    dir       TEXT PRIMARY KEY,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    uses      INTEGER NOT NULL
);
-- Another name of a cached step: a COPY from a stage or an image is named by that source's
-- key, and cached by what it copies (the key it was last found to stand for); a bind mount
-- of a stage, named so, stands for the digest of what it shows.
CREATE TABLE IF NOT EXISTS cache_aliases (
    key    TEXT PRIMARY KEY,
    target TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_steps (
    identity TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    inputs   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stat_fingerprints (
    fingerprint TEXT PRIMARY KEY,
    digest      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stat_cache (
    path     TEXT PRIMARY KEY,
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest   TEXT NOT NULL
);
";

/// Brings a `build_cache` table made before it had its `partial` and `uses` columns up to
/// date (the schema's CREATE TABLE does not touch a table that exists), and indexes `partial`.
pub(crate) fn migrate(db: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    let has = |column: &str| -> Result<bool, rusqlite::Error> {
        db.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('build_cache') WHERE name = ?1)",
            [column],
            |r| r.get(0),
        )
    };
    if !has("partial")? {
        db.execute_batch("ALTER TABLE build_cache ADD COLUMN partial TEXT")?;
    }
    if !has("uses")? {
        db.execute_batch("ALTER TABLE build_cache ADD COLUMN uses INTEGER NOT NULL DEFAULT 1")?;
    }
    db.execute_batch(
        "CREATE INDEX IF NOT EXISTS build_cache_partial ON build_cache (partial) WHERE partial IS NOT NULL",
    )
}

impl Store {
    /// The layer cached under `key`, if it is still in the store.
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheHit>, StoreError> {
        let db = self.db();
        let row: Option<(String, String)> = db
            .query_row(
                "SELECT diff_id, created FROM build_cache WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((diff_id, created)) = row else {
            return Ok(None);
        };
        let Ok(diff_id) = diff_id.parse::<Digest>() else {
            return Ok(None);
        };
        let Some(layer) = layer_row(&db, &diff_id)? else {
            return Ok(None);
        };
        if !self.snapshot_dir(&layer).is_dir() {
            return Ok(None);
        }
        db.execute(
            "UPDATE build_cache SET last_used = ?2, uses = uses + 1 WHERE key = ?1",
            params![key, jiff::Timestamp::now().as_second()],
        )?;
        Ok(Some(CacheHit { layer, created }))
    }

    /// Records that the step `key` made `layer` at `created`. `partial` is the step's key
    /// before its files' contents were added, if it has any (see [`Store::cache_may_hold`]).
    pub fn cache_put(
        &self,
        key: &str,
        partial: Option<&str>,
        layer: &LayerInfo,
        created: &str,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO build_cache (key, diff_id, created, last_used, partial) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(key) DO UPDATE SET diff_id = excluded.diff_id, created = excluded.created,
             last_used = excluded.last_used, partial = excluded.partial, uses = uses + 1",
            params![
                key,
                layer.diff_id.as_str(),
                created,
                jiff::Timestamp::now().as_second(),
                partial
            ],
        )?;
        Ok(())
    }

    /// What `name` was last found to stand for (see [`Store::cache_alias_put`]).
    pub fn cache_alias(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT target FROM cache_aliases WHERE key = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that the step named `name` is the one cached as `target`. A COPY from a stage
    /// is named by the stage's key, known before anything is read, and cached by the digests
    /// of what it copies: the name spares the next build hashing the same files again. (A
    /// bind mount of a stage is named so too, its target the digest of what it shows.)
    pub fn cache_alias_put(&self, name: &str, target: &str) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO cache_aliases (key, target) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET target = excluded.target",
            params![name, target],
        )?;
        Ok(())
    }

    /// Whether a step whose key, before its files' contents, is `partial` may be cached: some
    /// entry was recorded with that partial key. When none was, no key made from it can hit,
    /// whatever the files hold.
    pub fn cache_may_hold(&self, partial: &str) -> Result<bool, StoreError> {
        Ok(self.db().query_row(
            "SELECT EXISTS (SELECT 1 FROM build_cache WHERE partial = ?1)",
            [partial],
            |r| r.get(0),
        )?)
    }

    /// The key a step had at its last build.
    pub fn step_key(&self, identity: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT key FROM build_steps WHERE identity = ?1",
                [identity],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a step's new key and inputs (only when its key changed), handing the inputs it
    /// had before, if any, to `read_old` when given (for explaining a miss or reusing an
    /// earlier layer; a large COPY's are megabytes, not read when not needed). The inputs are
    /// `len` bytes of text that `write` writes straight into the row, and the old ones are read
    /// from theirs: neither is ever held whole in memory.
    pub fn swap_step_inputs(
        &self,
        identity: &str,
        key: &str,
        len: usize,
        write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
        read_old: Option<&mut ReadOld<'_>>,
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let db_path = self.dir.join("meta.db");
        if let Some(read_old) = read_old {
            let row: Option<i64> = tx
                .query_row(
                    "SELECT rowid FROM build_steps WHERE identity = ?1",
                    [identity],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(row) = row {
                let blob = tx.blob_open(rusqlite::MAIN_DB, "build_steps", "inputs", row, true)?;
                read_old(&mut io::BufReader::with_capacity(64 * 1024, blob))
                    .ctx("reading step inputs from", &db_path)?;
            }
        }
        let len = i64::try_from(len)
            .map_err(|_| io::Error::other("step inputs too large"))
            .ctx("writing step inputs to", &db_path)?;
        // Not an upsert: its update makes the zeroblob whole in memory, megabytes for a large
        // COPY; a plain insert leaves it to the pages the blob is written into.
        tx.execute("DELETE FROM build_steps WHERE identity = ?1", [identity])?;
        tx.execute(
            "INSERT INTO build_steps (identity, key, inputs) VALUES (?1, ?2, zeroblob(?3))",
            params![identity, key, len],
        )?;
        let row: i64 = tx.query_row(
            "SELECT rowid FROM build_steps WHERE identity = ?1",
            [identity],
            |r| r.get(0),
        )?;
        {
            let blob = tx.blob_open(rusqlite::MAIN_DB, "build_steps", "inputs", row, false)?;
            let mut out = Counted {
                inner: io::BufWriter::with_capacity(64 * 1024, blob),
                written: 0,
            };
            write(&mut out)
                .and_then(|()| io::Write::flush(&mut out))
                .and_then(|()| match i64::try_from(out.written) {
                    Ok(n) if n == len => Ok(()),
                    _ => Err(io::Error::other(format!(
                        "{} bytes of step inputs written, {len} announced",
                        out.written
                    ))),
                })
                .ctx("writing step inputs to", &db_path)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Digests of files whose stat is unchanged since they were last hashed. One range scan
    /// over the paths' common prefix (a context directory) answers them all.
    pub fn stat_lookup(
        &self,
        paths: &[(String, FileStat)],
    ) -> Result<Vec<Option<Digest>>, StoreError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = common_prefix(paths.iter().map(|(p, _)| p.as_str()));
        let mut upper = prefix.clone();
        upper.push(char::MAX);
        // The rows come in path order (the primary key's); merging them with the paths sorted
        // the same way (bytewise, as SQLite's BINARY collation) holds no copy of the rows.
        let mut order: Vec<usize> = (0..paths.len()).collect();
        order.sort_unstable_by(|&a, &b| paths[a].0.as_bytes().cmp(paths[b].0.as_bytes()));
        let mut found = vec![None; paths.len()];
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM stat_cache WHERE path >= ?1 AND path < ?2 ORDER BY path",
        )?;
        let mut rows = stmt.query(params![prefix, upper])?;
        let mut next = order.iter().peekable();
        while let Some(row) = rows.next()? {
            let path = row.get_ref(0)?.as_bytes().map_err(rusqlite::Error::from)?;
            while next.next_if(|&&i| paths[i].0.as_bytes() < path).is_some() {}
            while let Some(&i) = next.next_if(|&&i| paths[i].0.as_bytes() == path) {
                let cached = FileStat {
                    dev: row.get::<_, i64>(1)? as u64,
                    ino: row.get::<_, i64>(2)? as u64,
                    size: row.get::<_, i64>(3)? as u64,
                    mtime_ns: row.get(4)?,
                    ctime_ns: row.get(5)?,
                };
                if cached == paths[i].1 {
                    found[i] = row
                        .get_ref(6)?
                        .as_str()
                        .map_err(rusqlite::Error::from)?
                        .parse()
                        .ok();
                }
            }
        }
        Ok(found)
    }

    /// The content digest of a whole selection of files whose stats hash to `fingerprint`.
    pub fn fingerprint_get(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT digest FROM stat_fingerprints WHERE fingerprint = ?1",
                [fingerprint],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Remembers a selection's content digest under the hash of its stats.
    pub fn fingerprint_put(&self, fingerprint: &str, digest: &str) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT OR REPLACE INTO stat_fingerprints (fingerprint, digest) VALUES (?1, ?2)",
            params![fingerprint, digest],
        )?;
        Ok(())
    }

    /// Remembers the digests of freshly hashed files (path, stat, digest), borrowed: the
    /// caller's lists are not copied.
    pub fn stat_record<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, &'a FileStat, &'a Digest)>,
    ) -> Result<(), StoreError> {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO stat_cache (path, dev, ino, size, mtime_ns, ctime_ns, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(path) DO UPDATE SET dev = excluded.dev, ino = excluded.ino, size = excluded.size,
                 mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, digest = excluded.digest",
            )?;
            for (path, s, d) in entries {
                stmt.execute(params![
                    path,
                    s.dev as i64,
                    s.ino as i64,
                    s.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    d.as_str()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The directory behind `RUN --mount=type=cache,id=<id>`, created on first use (owner and
    /// mode as the mount asks). Its contents persist between builds and never enter a key.
    pub fn cache_mount_dir(
        &self,
        id: &str,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<std::path::PathBuf, StoreError> {
        use crate::error::IoContext;
        let base = self.dir.join("cache-mounts");
        std::fs::create_dir_all(&base).ctx("creating", &base)?;
        let dir = base.join(Digest::sha256_of(id.as_bytes()).hex());
        if !dir.exists() {
            let staging = tempfile::Builder::new()
                .prefix("cm-")
                .tempdir_in(&base)
                .ctx("creating a directory in", &base)?;
            let path = staging.keep();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).ctx("chown", &path)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .ctx("chmod", &path)?;
            if std::fs::rename(&path, &dir).is_err() {
                // Another build made it first.
                let _ = std::fs::remove_dir(&path);
            }
        }
        let now = jiff::Timestamp::now().as_second();
        self.db().execute(
            "INSERT INTO cache_mounts (dir, created, last_used, uses) VALUES (?1, ?2, ?2, 1)
             ON CONFLICT(dir) DO UPDATE SET last_used = excluded.last_used, uses = uses + 1",
            params![Digest::sha256_of(id.as_bytes()).hex(), now],
        )?;
        Ok(dir)
    }

    /// Removes the `RUN --mount=type=cache` directories — all of them, or those no step
    /// mounted since the unix second `unused_since` — and returns their names and bytes.
    pub fn prune_cache_mounts(
        &self,
        unused_since: Option<i64>,
    ) -> Result<(Vec<String>, u64), StoreError> {
        use crate::error::IoContext;
        let base = self.dir.join("cache-mounts");
        let Some(cutoff) = unused_since else {
            let mounts = self.cache_mounts()?;
            let bytes = mounts.iter().map(|m| m.size).sum();
            let mounts = mounts.into_iter().map(|m| m.dir).collect();
            if base.exists() {
                std::fs::remove_dir_all(&base).ctx("removing", &base)?;
            }
            self.db().execute("DELETE FROM cache_mounts", [])?;
            return Ok((mounts, bytes));
        };
        let (mut removed, mut bytes) = (Vec::new(), 0);
        for m in self.cache_mounts()? {
            if m.last_used.is_some_and(|t| t >= cutoff) {
                continue;
            }
            let dir = base.join(&m.dir);
            std::fs::remove_dir_all(&dir).ctx("removing", &dir)?;
            self.db()
                .execute("DELETE FROM cache_mounts WHERE dir = ?1", [&m.dir])?;
            bytes += m.size;
            removed.push(m.dir);
        }
        Ok((removed, bytes))
    }

    /// The `RUN --mount=type=cache` directories, most recently used last.
    pub fn cache_mounts(&self) -> Result<Vec<CacheMountUsage>, StoreError> {
        use crate::error::IoContext;
        let base = self.dir.join("cache-mounts");
        let listing = match std::fs::read_dir(&base) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("listing", &base),
        };
        let rows: std::collections::HashMap<String, (i64, i64, i64)> = {
            let db = self.db();
            let mut stmt = db.prepare("SELECT dir, created, last_used, uses FROM cache_mounts")?;
            stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for entry in listing {
            let entry = entry.ctx("listing", &base)?;
            let name = entry.file_name();
            // Directories still being made are `cm-…`; finished ones are named by a digest.
            let Some(dir) = name
                .to_str()
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                continue;
            };
            let row = rows.get(dir);
            out.push(CacheMountUsage {
                dir: dir.to_owned(),
                size: crate::dir_size(&entry.path()),
                created: row.map(|r| r.0),
                last_used: row.map(|r| r.1),
                uses: row.map(|r| r.2.max(0) as u64),
            });
        }
        out.sort_by(|a, b| (a.last_used, &a.dir).cmp(&(b.last_used, &b.dir)));
        Ok(out)
    }

    /// Every build cache entry, least recently used first (as `docker system df -v` sorts).
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT c.key, c.diff_id, COALESCE(l.size, 0), c.created, c.last_used, c.uses,
                    EXISTS (SELECT 1 FROM image_layers i WHERE i.diff_id = c.diff_id)
             FROM build_cache c LEFT JOIN layers l ON l.diff_id = c.diff_id
             ORDER BY c.last_used ASC, c.key ASC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CacheEntry {
                key: r.get(0)?,
                diff_id: r.get(1)?,
                size: r.get::<_, i64>(2)?.max(0) as u64,
                created: r.get(3)?,
                last_used: r.get(4)?,
                uses: r.get::<_, i64>(5)?.max(0) as u64,
                shared: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For each image, the bytes of its layers that another image holds too (docker's
    /// `SharedSize`); the rest of its size is its own.
    pub fn images_shared_size(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT i.image, COALESCE(SUM(l.size), 0)
             FROM (SELECT DISTINCT image, diff_id FROM image_layers) i
             JOIN layers l ON l.diff_id = i.diff_id
             WHERE (SELECT COUNT(DISTINCT image) FROM image_layers o WHERE o.diff_id = i.diff_id) > 1
             GROUP BY i.image",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Bytes of the layers images use, each layer once (docker's `system df` image size).
    pub fn images_size(&self) -> Result<u64, StoreError> {
        let size: i64 = self.db().query_row(
            "SELECT COALESCE(SUM(size), 0) FROM layers WHERE diff_id IN (SELECT diff_id FROM image_layers)",
            [],
            |r| r.get(0),
        )?;
        Ok(size as u64)
    }

    /// Entries and the bytes of layers only the cache keeps.
    pub fn cache_usage(&self) -> Result<CacheUsage, StoreError> {
        let db = self.db();
        let entries: i64 = db.query_row("SELECT COUNT(*) FROM build_cache", [], |r| r.get(0))?;
        let reclaimable: i64 = db.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM layers WHERE diff_id IN (SELECT diff_id FROM build_cache)
             AND diff_id NOT IN (SELECT diff_id FROM image_layers)",
            [],
            |r| r.get(0),
        )?;
        Ok(CacheUsage {
            entries: entries as u64,
            reclaimable: reclaimable as u64,
        })
    }

    /// Drops cache entries — all of them, or those `opts` selects: unused since its time,
    /// least recently used first until the layers only the cache keeps fit in its bytes — and
    /// the layers nothing references any more. Returns the keys of the entries removed and
    /// the bytes reclaimed.
    pub fn prune_cache(&self, opts: &CachePrune) -> Result<(Vec<String>, u64), StoreError> {
        let keep_bytes = opts.keep_bytes;
        let mut removed = Vec::new();
        let before = self.cache_usage()?.reclaimable;
        {
            let mut db = self.db();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let rows: Vec<(String, String, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT c.key, c.diff_id, COALESCE(l.size, 0) FROM build_cache c LEFT JOIN layers l ON l.diff_id = c.diff_id
                     WHERE c.last_used < ?1
                       AND (?2 OR c.diff_id NOT IN (SELECT diff_id FROM image_layers))
                     ORDER BY c.last_used ASC",
                )?;
                stmt.query_map(
                    params![opts.unused_since.unwrap_or(i64::MAX), opts.all],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?
                .collect::<Result<_, _>>()?
            };
            let mut total: u64 = before;
            for (key, _diff, size) in rows {
                if let Some(keep) = keep_bytes {
                    if total <= keep {
                        break;
                    }
                    total = total.saturating_sub(size as u64);
                }
                tx.execute("DELETE FROM build_cache WHERE key = ?1", [&key])?;
                removed.push(key);
            }
            // A name whose step is gone is of no use (a mount's digest goes too: it is
            // found again by hashing).
            tx.execute(
                "DELETE FROM cache_aliases WHERE target NOT IN (SELECT key FROM build_cache)",
                [],
            )?;
            // Everything goes: what the steps recorded for explaining and reusing goes too.
            let everything = CachePrune {
                all: true,
                ..CachePrune::default()
            };
            if *opts == everything {
                tx.execute("DELETE FROM build_steps", [])?;
                tx.execute("DELETE FROM stat_fingerprints", [])?;
            }
            tx.execute(
                "DELETE FROM layer_blobs WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)
                 AND diff_id NOT IN (SELECT diff_id FROM build_cache)",
                [],
            )?;
            tx.execute(
                "DELETE FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)
                 AND diff_id NOT IN (SELECT diff_id FROM build_cache)",
                [],
            )?;
            tx.execute(
                "DELETE FROM layer_checkpoints WHERE diff_id NOT IN (SELECT diff_id FROM layers)",
                [],
            )?;
            tx.commit()?;
        }
        let stats = self.gc()?;
        Ok((removed, stats.bytes))
    }
}

/// What reads a step's earlier inputs as [`Store::swap_step_inputs`] streams them.
pub type ReadOld<'a> = dyn FnMut(&mut dyn io::Read) -> io::Result<()> + 'a;

/// A writer that counts what went through it.
struct Counted<W> {
    inner: W,
    written: usize,
}

impl<W: io::Write> io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
