//! Atomic, verified blob writes: bytes go to a temp file in `tmp/` while being hashed, and only a
//! complete, verified, fsynced file is renamed into `blobs/sha256/<hex>`. A crash leaves garbage
//! in `tmp/` (collected by gc), never a blob whose name lies about its content.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use hoist_oci::{Digest, Sha256Hasher};

use crate::error::{IoContext, StoreError};

/// A blob being written; call [`BlobWriter::commit`] to make it visible.
pub struct BlobWriter {
    file: BufWriter<File>,
    tmp: tempfile::TempPath,
    hasher: Sha256Hasher,
    blobs_dir: PathBuf,
}

impl BlobWriter {
    pub(crate) fn new(tmp_dir: &Path, blobs_dir: &Path) -> Result<Self, StoreError> {
        let named = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(tmp_dir)
            .ctx("creating a temp file in", tmp_dir)?;
        let (file, tmp) = named.into_parts();
        Ok(Self {
            file: BufWriter::with_capacity(256 * 1024, file),
            tmp,
            hasher: Sha256Hasher::new(),
            blobs_dir: blobs_dir.to_owned(),
        })
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Verifies (when `expected` is given), syncs and renames the blob into place.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let Self {
            file,
            tmp,
            hasher,
            blobs_dir,
        } = self;
        let size = hasher.len();
        let digest = hasher.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let file = file
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .ctx("writing", &*tmp)?;
        file.sync_all().ctx("syncing", &*tmp)?;
        let dest = blobs_dir.join(digest.hex());
        if !dest.exists() {
            tmp.persist(&dest)
                .map_err(|e| e.error)
                .ctx("renaming a blob to", &dest)?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
