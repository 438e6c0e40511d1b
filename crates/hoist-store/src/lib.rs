//! hoist-store: the local content-addressed image store — atomic blobs, unpacked layer
//! snapshots, refs and image records, locking, garbage collection, and docker/OCI archives.
//!
//! # Layout
//!
//! ```text
//! <root>/                      --root, HOIST_ROOT, /var/lib/hoist (root) or $XDG_DATA_HOME/hoist
//!   v1/                        format version: a future layout lives beside, never on top
//!     lock                     flock: shared while a process uses the store, exclusive to sweep
//!     settle.lock              flock: held while snapshots written before a reboot are checked
//!     meta.db                  SQLite (WAL): layers, layer blobs, images, tags, repo digests
//!     blobs/sha256/<hex>       immutable content: configs, manifests, layer blobs as received
//!     snapshots/<n>/           one unpacked layer each, usable as an overlayfs lowerdir
//!     tmp/                     staging on the same filesystem, for atomic renames
//! ```
//!
//! # Why SQLite
//!
//! Refs, image records and layer mappings change together (an import adds a layer, its blob and
//! an image in one step; `rmi` removes a tag and maybe the image). A transactional store makes
//! each such change all-or-nothing across processes without a daemon, and WAL mode lets readers
//! (`images`, `history`) run while another process writes. Plain JSON files with renames would
//! need our own multi-file journal for the same guarantee.
//!
//! # Crash safety
//!
//! Content is written first (temp file → hash → verify → fsync → rename), records second, in a
//! transaction. A crash leaves unreferenced files, which [`Store::gc`] removes; it never leaves a
//! record that points at missing or partial content.
//!
//! Snapshots are the exception for a power loss (not for a process crash, which the page cache
//! survives): a layer directory is recorded without an fsync, so that writing back hundreds of
//! megabytes stays off the build's path. Each is noted as unsettled until it is known to be on
//! disk; after a reboot, an unsettled snapshot is unpacked again from its blob or, for a built
//! layer, hashed again and dropped if damaged, before anything reads it (settle.rs).

mod archive;
mod blob;
mod cache;
mod error;
mod registry;
mod settle;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hoist_oci::{Digest, ImageConfig, Reference, media};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use archive::{LoadedImage, save_archive};
pub use blob::BlobWriter;
pub use cache::{CacheEntry, CacheHit, CacheMountUsage, CachePrune, CacheUsage, FileStat, ReadOld};
use error::IoContext;
pub use error::StoreError;
pub use settle::Settled;

const FORMAT: &str = "v1";

/// A layer directory's digest, made by [`Store::digest_snapshot`] and committed by
/// [`Store::commit_digested`].
#[derive(Debug)]
pub struct DigestedSnapshot {
    summary: hoist_layer::LayerSummary,
    checkpoints: hoist_layer::Checkpoints,
}

impl DigestedSnapshot {
    /// The layer's diff id, size and counts.
    pub fn summary(&self) -> &hoist_layer::LayerSummary {
        &self.summary
    }
}

/// A layer the store holds, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of file content and symlink targets in the layer (what docker reports as a
    /// layer's size).
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    snapshot: i64,
}

/// An image the store holds, with its names.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// The config digest (docker's image id).
    pub id: Digest,
    /// The manifest, when one was pulled or written.
    pub manifest: Option<Digest>,
    /// Creation time from the config.
    pub created: Option<jiff::Timestamp>,
    /// Sum of the layer sizes.
    pub size: u64,
    /// Tags pointing at it, canonical.
    pub tags: Vec<Reference>,
    /// `repo@digest` names pointing at it.
    pub digests: Vec<Reference>,
    /// When it was last tagged.
    pub last_tag_time: Option<jiff::Timestamp>,
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    /// Blob files removed.
    pub blobs: u64,
    /// Snapshots removed.
    pub snapshots: u64,
    /// Bytes freed (blobs and snapshot content).
    pub bytes: u64,
    /// True when another process used the store, so files were left for a later sweep.
    pub deferred: bool,
}

/// What removing an image did.
#[derive(Debug, Default, Clone)]
pub struct Removal {
    /// Names removed.
    pub untagged: Vec<Reference>,
    /// The image id, when the image itself was deleted.
    pub deleted: Option<Digest>,
    /// Chain ids of layers deleted with it.
    pub deleted_layers: Vec<Digest>,
}

/// Why an image cannot be removed without `-f`.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(
        "conflict: unable to delete {0} (must be forced) - image is referenced in multiple repositories"
    )]
    MultipleRepositories(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The open store. One per process; cheap to share by reference across threads.
pub struct Store {
    dir: PathBuf,
    db: Mutex<Connection>,
    lock: File,
    /// This boot's id, which new snapshots are noted with (see settle.rs).
    boot: String,
    /// What opening the store settled.
    settled: Settled,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl Store {
    /// The default location: `/var/lib/hoist` as root, else `$XDG_DATA_HOME/hoist`
    /// (`~/.local/share/hoist`).
    #[must_use]
    pub fn default_root() -> PathBuf {
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/hoist");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("hoist");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/hoist")
    }

    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join(FORMAT);
        for sub in ["blobs/sha256", "snapshots", "tmp"] {
            fs::create_dir_all(dir.join(sub)).ctx("creating", dir.join(sub))?;
        }
        let lock_path = dir.join("lock");
        let lock = lock_file(&lock_path)?;
        lock.lock_shared().ctx("locking", &lock_path)?;
        let db = Connection::open(dir.join("meta.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(60))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Creating the tables is idempotent, but every open would parse and run each statement
        // again; a database made with this very schema text says so in its user_version.
        let version = schema_version();
        let current: i32 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current != version {
            db.execute_batch(SCHEMA)?;
            db.execute_batch(cache::CACHE_SCHEMA)?;
            cache::migrate(&db)?;
            db.execute_batch(settle::SCHEMA)?;
            db.pragma_update(None, "user_version", version)?;
        }
        let mut store = Self {
            dir,
            db: Mutex::new(db),
            lock,
            boot: settle::boot_id(),
            settled: Settled::default(),
        };
        store.settled = store.settle()?;
        Ok(store)
    }

    /// What opening the store did to snapshots written before a reboot (see [`Store::settle`]),
    /// for the user to hear of.
    #[must_use]
    pub fn settled_at_open(&self) -> &Settled {
        &self.settled
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it rolls back).
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    /// The staging directory (same filesystem as the content).
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The file of a blob (which may not exist).
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Whether a blob is present.
    #[must_use]
    pub fn has_blob(&self, digest: &Digest) -> bool {
        digest.algorithm() == "sha256" && self.blob_path(digest).is_file()
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        if digest.algorithm() != "sha256" {
            return Err(StoreError::MissingBlob(digest.clone()));
        }
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => StoreError::Io {
                context: "opening",
                path,
                source: e,
            },
        })
    }

    /// Reads a small blob (config, manifest) whole.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .ctx("reading", self.blob_path(digest))?;
        Ok(buf)
    }

    /// Starts writing a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        BlobWriter::new(&self.tmp_dir(), &self.blobs_dir())
    }

    /// A staging directory for a snapshot, and the empty `root` in it to unpack into.
    fn staging_root(&self) -> Result<(tempfile::TempDir, PathBuf), StoreError> {
        let staging = tempfile::Builder::new()
            .prefix("snap-")
            .tempdir_in(self.tmp_dir())
            .ctx("creating a staging dir in", self.tmp_dir())?;
        let root = staging.path().join("root");
        fs::create_dir(&root).ctx("creating", &root)?;
        Ok((staging, root))
    }

    /// Writes a small blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        // A blob is renamed into place only complete and synced, so one already there holds
        // these bytes: writing, syncing and dropping a copy (every warm build's image config)
        // would change nothing.
        let digest = Digest::sha256_of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        io::Write::write_all(&mut w, bytes).ctx("writing", self.tmp_dir())?;
        Ok(w.commit(None)?.0)
    }

    /// Stores a layer blob as it comes (compressed or not), unpacking it into a snapshot and
    /// computing its diff id in the same pass. `expected` verifies the blob's digest.
    pub fn import_layer(
        &self,
        raw: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<LayerInfo, StoreError> {
        let mut blob = self.blob_writer()?;
        let (_staging, root) = self.staging_root()?;
        let read_err = |e| StoreError::Io {
            context: "reading a layer into",
            path: root.clone(),
            source: e,
        };
        let (diff_id, tar_size, size, encoding) = {
            let mut tee = Tee {
                inner: raw,
                copy: &mut blob,
            };
            let (encoding, sniffed) = hoist_layer::sniff(&mut tee).map_err(read_err)?;
            let decoded = encoding
                .decoder(io::BufReader::with_capacity(256 * 1024, sniffed))
                .map_err(read_err)?;
            let mut hashing = hoist_layer::HashingReader::new(decoded);
            let opts = hoist_layer::ApplyOptions {
                whiteouts: hoist_layer::WhiteoutMode::Overlay,
                ..hoist_layer::ApplyOptions::default()
            };
            let stats = hoist_layer::apply_layer(&mut hashing, &root, &opts)?;
            // The tar's end-of-archive padding belongs to the diff id too.
            io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
            let (decoded, diff_id, tar_size) = hashing.finish();
            drop(decoded);
            io::copy(&mut tee, &mut io::sink()).map_err(read_err)?;
            (
                diff_id,
                tar_size,
                stats.bytes + stats.symlink_bytes,
                encoding,
            )
        };
        let (blob_digest, blob_size) = blob.commit(expected)?;
        let media_type = match encoding {
            hoist_layer::Compression::None => media::DOCKER_LAYER_TAR,
            hoist_layer::Compression::Gzip => media::DOCKER_LAYER_GZIP,
            hoist_layer::Compression::Zstd => media::OCI_LAYER_ZSTD,
            // Other encodings are stored as received but not pushable as-is.
            _ => "application/octet-stream",
        };
        self.commit_layer(
            &diff_id,
            size,
            tar_size,
            &root,
            &blob_digest,
            media_type,
            blob_size,
        )
    }

    /// Makes an overlay upper directory (staged under [`Store::tmp_dir`]) a layer: its
    /// deterministic tar is hashed on the fly for the diff id, nothing is written but the
    /// record (and the hash's checkpoints, for [`Store::commit_snapshot_after`]), and the
    /// directory itself becomes the snapshot. When the store already has a layer with that
    /// diff id, the directory is removed and the existing layer returned.
    pub fn commit_snapshot(&self, upper: &Path) -> Result<LayerInfo, StoreError> {
        let digested = self.digest_snapshot(upper, None, None)?;
        self.commit_digested(upper, &digested)
    }

    /// The first half of [`Store::commit_snapshot`] (or, with `previous`, of
    /// [`Store::commit_snapshot_after`]): the layer's digest, which can be computed on another
    /// thread while `upper` serves as a lower layer of the next step. `upper` must not change
    /// until [`Store::commit_digested`] took it. With `gate`, `upper` is still being written
    /// and the digest follows its writer directory by directory (see
    /// [`hoist_layer::digest_layer_gated`]).
    pub fn digest_snapshot(
        &self,
        upper: &Path,
        previous: Option<&LayerInfo>,
        gate: Option<hoist_layer::Gate>,
    ) -> Result<DigestedSnapshot, StoreError> {
        let checkpoints = match previous {
            Some(previous) => self.checkpoints(previous)?,
            None => None,
        };
        let opts = hoist_layer::WriteOptions::default();
        let (summary, checkpoints) = match gate {
            Some(gate) => hoist_layer::digest_layer_gated(upper, &opts, checkpoints.as_ref(), gate),
            None => hoist_layer::digest_layer(upper, &opts, checkpoints.as_ref()),
        }?;
        Ok(DigestedSnapshot {
            summary,
            checkpoints,
        })
    }

    /// The second half of [`Store::commit_snapshot`]: `upper`, digested, becomes the snapshot.
    pub fn commit_digested(
        &self,
        upper: &Path,
        digested: &DigestedSnapshot,
    ) -> Result<LayerInfo, StoreError> {
        let summary = &digested.summary;
        self.commit_unpacked(
            &summary.diff_id,
            summary.content_bytes,
            summary.size,
            upper,
            Some(&digested.checkpoints),
        )
    }

    /// [`Store::commit_snapshot`] for an upper directory made from `previous`'s snapshot by
    /// hard-linking the files that did not change (an incremental COPY): the part of the tar
    /// both share is not hashed again but resumed from `previous`'s checkpoints. Without
    /// usable checkpoints (none stored, unreadable, or the layer gone) it hashes everything,
    /// with the same result.
    pub fn commit_snapshot_after(
        &self,
        upper: &Path,
        previous: &LayerInfo,
    ) -> Result<LayerInfo, StoreError> {
        let digested = self.digest_snapshot(upper, Some(previous), None)?;
        self.commit_digested(upper, &digested)
    }

    /// `layer`'s checkpoints, when they can be trusted. They name the snapshot's inodes, so
    /// they are only valid while that very snapshot exists: the record must still point at
    /// it and the directory be there. It then stays while the digest runs, as another
    /// process's sweep waits for our shared lock to go.
    fn checkpoints(
        &self,
        layer: &LayerInfo,
    ) -> Result<Option<hoist_layer::Checkpoints>, StoreError> {
        let data: Option<Vec<u8>> = {
            let db = self.db();
            if layer_row(&db, &layer.diff_id)?.as_ref() != Some(layer) {
                return Ok(None);
            }
            db.query_row(
                "SELECT data FROM layer_checkpoints WHERE diff_id = ?1",
                [layer.diff_id.as_str()],
                |r| r.get(0),
            )
            .optional()?
        };
        if !self.snapshot_dir(layer).is_dir() {
            return Ok(None);
        }
        // Unreadable checkpoints only cost the speed-up.
        Ok(data.and_then(|d| hoist_layer::Checkpoints::from_bytes(&d).ok()))
    }

    fn commit_unpacked(
        &self,
        diff_id: &Digest,
        size: u64,
        tar_size: u64,
        unpacked: &Path,
        checkpoints: Option<&hoist_layer::Checkpoints>,
    ) -> Result<LayerInfo, StoreError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut duplicate = false;
        let info = match layer_row(&tx, diff_id)? {
            Some(info) => {
                // The checkpoints describe `unpacked`'s inodes, not the existing snapshot's.
                duplicate = true;
                info
            }
            None => {
                let info = self.insert_layer(&tx, diff_id, size, tar_size, unpacked)?;
                if let Some(checkpoints) = checkpoints {
                    tx.execute(
                        "INSERT OR REPLACE INTO layer_checkpoints (diff_id, data) VALUES (?1, ?2)",
                        params![diff_id.as_str(), checkpoints.to_bytes()],
                    )?;
                }
                info
            }
        };
        tx.commit()?;
        drop(db);
        if duplicate {
            // Not under the database's write lock: a large tree takes a while to delete, and
            // nothing refers to it (a crash before this leaves it for the sweep).
            fs::remove_dir_all(unpacked).ctx("removing", unpacked)?;
        }
        Ok(info)
    }

    fn insert_layer(
        &self,
        tx: &Connection,
        diff_id: &Digest,
        size: u64,
        tar_size: u64,
        unpacked: &Path,
    ) -> Result<LayerInfo, StoreError> {
        let n: i64 = tx.query_row(
            "SELECT COALESCE(MAX(snapshot), 0) + 1 FROM layers",
            [],
            |r| r.get(0),
        )?;
        let dest = self.dir.join("snapshots").join(n.to_string());
        // Left by a crash between rename and commit: nothing references it.
        if dest.exists() {
            fs::remove_dir_all(&dest).ctx("removing", &dest)?;
        }
        fs::rename(unpacked, &dest).ctx("renaming a snapshot to", &dest)?;
        tx.execute(
            "INSERT INTO layers (diff_id, snapshot, size, tar_size) VALUES (?1, ?2, ?3, ?4)",
            params![diff_id.as_str(), n, size as i64, tar_size as i64],
        )?;
        settle::note_unsettled(tx, n, &self.boot)?;
        Ok(LayerInfo {
            diff_id: diff_id.clone(),
            size,
            tar_size,
            snapshot: n,
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one row of each table")]
    fn commit_layer(
        &self,
        diff_id: &Digest,
        size: u64,
        tar_size: u64,
        unpacked: &Path,
        blob: &Digest,
        media_type: &str,
        blob_size: u64,
    ) -> Result<LayerInfo, StoreError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO layer_blobs (digest, diff_id, media_type, size) VALUES (?1, ?2, ?3, ?4)",
            params![blob.as_str(), diff_id.as_str(), media_type, blob_size as i64],
        )?;
        let info = match layer_row(&tx, diff_id)? {
            Some(info) => info,
            None => self.insert_layer(&tx, diff_id, size, tar_size, unpacked)?,
        };
        tx.commit()?;
        Ok(info)
    }

    /// Remembers that `blob` (already committed with [`Store::blob_writer`]) holds the layer
    /// `diff_id` in another encoding, e.g. the gzip made for a push, so it is made only once.
    pub fn record_layer_blob(
        &self,
        diff_id: &Digest,
        blob: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        if !self.has_blob(blob) {
            return Err(StoreError::MissingBlob(blob.clone()));
        }
        self.db().execute(
            "INSERT OR IGNORE INTO layer_blobs (digest, diff_id, media_type, size) VALUES (?1, ?2, ?3, ?4)",
            params![blob.as_str(), diff_id.as_str(), media_type, size as i64],
        )?;
        Ok(())
    }

    /// A layer by diff id.
    pub fn layer(&self, diff_id: &Digest) -> Result<Option<LayerInfo>, StoreError> {
        Ok(layer_row(&self.db(), diff_id)?)
    }

    /// The directory holding a layer unpacked (an overlayfs lowerdir).
    #[must_use]
    pub fn snapshot_dir(&self, layer: &LayerInfo) -> PathBuf {
        self.dir.join("snapshots").join(layer.snapshot.to_string())
    }

    /// Blobs known to hold a layer: (digest, media type, size).
    pub fn layer_blobs(&self, diff_id: &Digest) -> Result<Vec<(Digest, String, u64)>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT digest, media_type, size FROM layer_blobs WHERE diff_id = ?1 ORDER BY media_type",
        )?;
        let rows = stmt.query_map([diff_id.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (d, m, s) = row?;
            if let Ok(d) = d.parse::<Digest>()
                && self.has_blob(&d)
            {
                out.push((d, m, s as u64));
            }
        }
        Ok(out)
    }

    /// The uncompressed tar of a layer, streamed.
    pub fn layer_tar(&self, diff_id: &Digest) -> Result<Box<dyn Read>, StoreError> {
        let blobs = self.layer_blobs(diff_id)?;
        // Prefer a blob that needs no decompression.
        let Some(pick) = blobs
            .iter()
            .find(|(d, _, _)| d == diff_id)
            .or_else(|| blobs.first())
        else {
            // A built layer has no blob: its snapshot regenerates the same bytes.
            let layer = self
                .layer(diff_id)?
                .ok_or_else(|| StoreError::MissingLayer(diff_id.clone()))?;
            return self.snapshot_tar(&layer);
        };
        let file = io::BufReader::with_capacity(256 * 1024, self.open_blob(&pick.0)?);
        hoist_layer::decompress(file).ctx("reading", self.blob_path(&pick.0))
    }

    /// Streams the deterministic tar of a snapshot (built layers keep no tar).
    fn snapshot_tar(&self, layer: &LayerInfo) -> Result<Box<dyn Read>, StoreError> {
        let dir = self.snapshot_dir(layer);
        let (reader, writer) = io::pipe().ctx("making a pipe for", &dir)?;
        std::thread::spawn(move || {
            // A failure closes the pipe early; the reader then sees a short tar and fails.
            let _ = hoist_layer::write_layer(&dir, writer, &hoist_layer::WriteOptions::default());
        });
        Ok(Box::new(reader))
    }

    /// Records an image whose config bytes are given; every layer must already be stored.
    /// Returns the image id (the config digest).
    pub fn put_image(
        &self,
        config_bytes: &[u8],
        manifest: Option<&Digest>,
    ) -> Result<Digest, StoreError> {
        let config: ImageConfig =
            serde_json::from_slice(config_bytes).map_err(|source| StoreError::Json {
                what: "image config".into(),
                source,
            })?;
        let id = self.write_blob(config_bytes)?;
        let mut db = self.db();
        // A rebuilt image that is recorded already (a warm build's) costs no write.
        if image_recorded(&db, &id, manifest, &config.rootfs.diff_ids)? {
            return Ok(id);
        }
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut size = 0u64;
        for diff_id in &config.rootfs.diff_ids {
            let layer = layer_row(&tx, diff_id)?
                .ok_or_else(|| StoreError::MissingLayer(diff_id.clone()))?;
            size += layer.size;
        }
        let created = config
            .created_at()
            .map_or(0, |t| i64::try_from(t.as_nanosecond()).unwrap_or(0));
        tx.execute(
            "INSERT INTO images (id, manifest, created, size, added) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET manifest = COALESCE(excluded.manifest, images.manifest)",
            params![
                id.as_str(),
                manifest.map(Digest::as_str),
                created,
                size as i64,
                now().as_second()
            ],
        )?;
        tx.execute("DELETE FROM image_layers WHERE image = ?1", [id.as_str()])?;
        for (i, diff_id) in config.rootfs.diff_ids.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers (image, idx, diff_id) VALUES (?1, ?2, ?3)",
                params![id.as_str(), i as i64, diff_id.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// The parsed config of an image.
    pub fn config(&self, id: &Digest) -> Result<ImageConfig, StoreError> {
        let bytes = self.read_blob(id)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: format!("image config {id}"),
            source,
        })
    }

    /// Points `name` (tag defaulted to `latest`) at an image.
    pub fn tag(&self, name: &Reference, id: &Digest) -> Result<(), StoreError> {
        let name = name.clone().with_default_tag();
        let db = self.db();
        let ts = now().to_string();
        if name.digest().is_some() {
            db.execute(
                "INSERT INTO repo_digests (name, image) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![name.to_string(), id.as_str()],
            )?;
        } else {
            db.execute(
                "INSERT INTO tags (name, image) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![name.to_string(), id.as_str()],
            )?;
        }
        db.execute(
            "UPDATE images SET last_tag_time = ?2 WHERE id = ?1",
            params![id.as_str(), ts],
        )?;
        Ok(())
    }

    /// Finds an image the way docker does: full or short id, `name[:tag]`, `name@digest`.
    pub fn resolve(&self, name: &str) -> Result<Digest, StoreError> {
        let not_found = || {
            let shown = match Reference::parse(name) {
                Ok(r) => r.with_default_tag().familiar(),
                Err(_) => name.to_owned(),
            };
            StoreError::NoSuchImage(shown)
        };
        let db = self.db();
        let exists = |id: &str| -> Result<bool, StoreError> {
            Ok(db
                .query_row("SELECT 1 FROM images WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some())
        };
        if let Some(d) = name
            .strip_prefix("sha256:")
            .and_then(|_| name.parse::<Digest>().ok())
        {
            return if exists(d.as_str())? {
                Ok(d)
            } else {
                Err(not_found())
            };
        }
        let is_hex = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex && name.len() == 64 {
            let id = format!("sha256:{name}");
            return if exists(&id)? {
                id.parse().map_err(|_| not_found())
            } else {
                Err(not_found())
            };
        }
        if let Ok(r) = Reference::parse(name) {
            let r = r.with_default_tag();
            let table = if r.digest().is_some() {
                "repo_digests"
            } else {
                "tags"
            };
            let hit: Option<String> = db
                .query_row(
                    &format!("SELECT image FROM {table} WHERE name = ?1"),
                    [r.to_string()],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(id) = hit {
                return id.parse().map_err(|_| not_found());
            }
            // A digest reference also finds the image whose manifest has that digest.
            if let Some(d) = r.digest() {
                let hit: Option<String> = db
                    .query_row(
                        "SELECT id FROM images WHERE manifest = ?1",
                        [d.as_str()],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(id) = hit {
                    return id.parse().map_err(|_| not_found());
                }
            }
        }
        if is_hex {
            let mut stmt = db.prepare("SELECT id FROM images WHERE id LIKE ?1 LIMIT 2")?;
            let ids: Vec<String> = stmt
                .query_map([format!("sha256:{name}%")], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if ids.len() == 1 {
                return ids[0].parse().map_err(|_| not_found());
            }
        }
        Err(not_found())
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT id, manifest, created, size, last_tag_time FROM images ORDER BY created DESC, rowid DESC")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, manifest, created, size, ltt) = row?;
            let Ok(id) = id.parse::<Digest>() else {
                continue;
            };
            out.push(ImageRecord {
                manifest: manifest.and_then(|m| m.parse().ok()),
                created: (created != 0)
                    .then(|| jiff::Timestamp::from_nanosecond(i128::from(created)).ok())
                    .flatten(),
                size: size as u64,
                tags: names(&db, "tags", &id)?,
                digests: names(&db, "repo_digests", &id)?,
                last_tag_time: ltt.and_then(|t| t.parse().ok()),
                id,
            });
        }
        Ok(out)
    }

    /// One image's record.
    pub fn image(&self, id: &Digest) -> Result<ImageRecord, StoreError> {
        self.images()?
            .into_iter()
            .find(|i| &i.id == id)
            .ok_or_else(|| StoreError::NoSuchImage(id.to_string()))
    }

    /// Removes a name, and the image when no name is left (docker's `rmi`).
    /// `by_name` is the reference the user typed when it was a name rather than an id.
    pub fn remove(&self, target: &str, force: bool) -> Result<Removal, RemoveError> {
        let id = self.resolve(target)?;
        let by_name = Reference::parse(target)
            .ok()
            .map(Reference::with_default_tag)
            .filter(|r| self.db_has_name(r).unwrap_or(false));
        let mut removal = Removal::default();
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let tags = names(&tx, "tags", &id)?;
        let digests = names(&tx, "repo_digests", &id)?;
        if let Some(name) = by_name {
            let table = if name.digest().is_some() {
                "repo_digests"
            } else {
                "tags"
            };
            tx.execute(
                &format!("DELETE FROM {table} WHERE name = ?1"),
                [name.to_string()],
            )
            .map_err(StoreError::from)?;
            removal.untagged.push(name.clone());
            // The last tag of a repository takes that repository's digest names with it
            // (docker); the image goes when no name at all is left.
            let mut remaining_digests: Vec<&Reference> =
                digests.iter().filter(|d| **d != name).collect();
            let repo_still_tagged = tags
                .iter()
                .any(|t| *t != name && t.repository() == name.repository());
            if name.digest().is_none() && !repo_still_tagged {
                for d in digests
                    .iter()
                    .filter(|d| d.repository() == name.repository())
                {
                    tx.execute("DELETE FROM repo_digests WHERE name = ?1", [d.to_string()])
                        .map_err(StoreError::from)?;
                    removal.untagged.push(d.clone());
                }
                remaining_digests.retain(|d| d.repository() != name.repository());
            }
            let remaining_tags = tags.iter().filter(|t| **t != name).count();
            if remaining_tags + remaining_digests.len() > 0 {
                tx.commit().map_err(StoreError::from)?;
                return Ok(removal);
            }
        } else {
            let repos: std::collections::BTreeSet<String> =
                tags.iter().map(Reference::repository).collect();
            if repos.len() > 1 && !force {
                return Err(RemoveError::MultipleRepositories(id.short().to_owned()));
            }
            for t in tags.iter().chain(&digests) {
                let table = if t.digest().is_some() {
                    "repo_digests"
                } else {
                    "tags"
                };
                tx.execute(
                    &format!("DELETE FROM {table} WHERE name = ?1"),
                    [t.to_string()],
                )
                .map_err(StoreError::from)?;
                removal.untagged.push(t.clone());
            }
        }
        let layers: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT diff_id FROM image_layers WHERE image = ?1 ORDER BY idx")
                .map_err(StoreError::from)?;
            stmt.query_map([id.as_str()], |r| r.get(0))
                .map_err(StoreError::from)?
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?
        };
        tx.execute("DELETE FROM image_layers WHERE image = ?1", [id.as_str()])
            .map_err(StoreError::from)?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id.as_str()])
            .map_err(StoreError::from)?;
        // Layers nobody else uses go, reported top-down by chain id like docker.
        let mut chain: Vec<Digest> = Vec::new();
        for l in &layers {
            let prev = chain.last().map(|c| c.as_str().to_owned());
            let next = match prev {
                None => l
                    .parse()
                    .map_err(|_| StoreError::Archive(format!("bad diff id {l}")))?,
                Some(p) => Digest::sha256_of(format!("{p} {l}").as_bytes()),
            };
            chain.push(next);
        }
        for (l, c) in layers.iter().zip(&chain).rev() {
            // A layer the build cache keeps stays for `builder prune`, as docker's build cache
            // outlives `rmi`.
            let used: bool = tx
                .query_row(
                    "SELECT 1 FROM image_layers WHERE diff_id = ?1 UNION ALL SELECT 1 FROM build_cache WHERE diff_id = ?1 LIMIT 1",
                    [l],
                    |_| Ok(()),
                )
                .optional()
                .map_err(StoreError::from)?
                .is_some();
            if !used {
                tx.execute("DELETE FROM layers WHERE diff_id = ?1", [l])
                    .map_err(StoreError::from)?;
                tx.execute("DELETE FROM layer_blobs WHERE diff_id = ?1", [l])
                    .map_err(StoreError::from)?;
                tx.execute("DELETE FROM layer_checkpoints WHERE diff_id = ?1", [l])
                    .map_err(StoreError::from)?;
                removal.deleted_layers.push(c.clone());
            }
        }
        tx.commit().map_err(StoreError::from)?;
        removal.deleted = Some(id);
        Ok(removal)
    }

    fn db_has_name(&self, r: &Reference) -> Result<bool, StoreError> {
        let table = if r.digest().is_some() {
            "repo_digests"
        } else {
            "tags"
        };
        let db = self.db();
        Ok(db
            .query_row(
                &format!("SELECT 1 FROM {table} WHERE name = ?1"),
                [r.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Removes the images with no name (dangling), or with `all` every image (hoist keeps no
    /// containers, so none is in use), of those `select` picks (docker's prune filters);
    /// returns what each removal did.
    pub fn prune(
        &self,
        all: bool,
        mut select: impl FnMut(&ImageRecord) -> Result<bool, StoreError>,
    ) -> Result<Vec<Removal>, StoreError> {
        let mut out = Vec::new();
        for img in self.images()? {
            if (img.tags.is_empty() || all) && select(&img)? {
                match self.remove(img.id.as_str(), true) {
                    Ok(r) => out.push(r),
                    Err(RemoveError::Store(e)) => return Err(e),
                    Err(RemoveError::MultipleRepositories(_)) => {}
                }
            }
        }
        Ok(out)
    }

    /// Deletes blobs and snapshots that no record references. Needs the store to itself: when
    /// another process has it open, the sweep is deferred (records are already consistent).
    pub fn gc(&self) -> Result<GcStats, StoreError> {
        let mut stats = GcStats::default();
        let lock_path = self.dir.join("lock");
        match self.lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The conversion may have dropped our shared lock; take it back.
                self.lock.lock_shared().ctx("locking", &lock_path)?;
                stats.deferred = true;
                return Ok(stats);
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    context: "locking",
                    path: lock_path,
                    source: e,
                });
            }
        }
        let result = self.sweep(&mut stats);
        self.lock.lock_shared().ctx("locking", &lock_path)?;
        result.map(|()| stats)
    }

    fn sweep(&self, stats: &mut GcStats) -> Result<(), StoreError> {
        let db = self.db();
        let mut live = std::collections::HashSet::new();
        let mut live_snaps = std::collections::HashSet::new();
        {
            let mut stmt = db.prepare("SELECT id, manifest FROM images")?;
            for row in stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })? {
                let (id, m) = row?;
                live.insert(id);
                live.extend(m);
            }
            let mut stmt = db.prepare("SELECT digest FROM layer_blobs")?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                live.insert(row?);
            }
            let mut stmt = db.prepare("SELECT snapshot FROM layers")?;
            for row in stmt.query_map([], |r| r.get::<_, i64>(0))? {
                live_snaps.insert(row?.to_string());
            }
        }
        drop(db);
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).ctx("reading", &blobs)? {
            let entry = entry.ctx("reading", &blobs)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&format!("sha256:{name}")) {
                stats.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).ctx("removing", entry.path())?;
                stats.blobs += 1;
            }
        }
        let snaps = self.dir.join("snapshots");
        for entry in fs::read_dir(&snaps).ctx("reading", &snaps)? {
            let entry = entry.ctx("reading", &snaps)?;
            if !live_snaps.contains(&entry.file_name().to_string_lossy().into_owned()) {
                stats.bytes += dir_size(&entry.path());
                fs::remove_dir_all(entry.path()).ctx("removing", entry.path())?;
                stats.snapshots += 1;
            }
        }
        // Nobody else has the store open, so everything staged is a leftover.
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).ctx("reading", &tmp)? {
            let entry = entry.ctx("reading", &tmp)?;
            let p = entry.path();
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.ctx("removing", &p)?;
        }
        Ok(())
    }
}

/// Opens (creating) a file that serves as a lock.
pub(crate) fn lock_file(path: &Path) -> Result<File, StoreError> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx("opening", path)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Whether `put_image` would change nothing: the image is recorded with these layers, which
/// are all stored, and with `manifest` (or no manifest is given).
fn image_recorded(
    db: &Connection,
    id: &Digest,
    manifest: Option<&Digest>,
    diff_ids: &[Digest],
) -> Result<bool, StoreError> {
    let stored: Option<Option<String>> = db
        .query_row(
            "SELECT manifest FROM images WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(stored) = stored else {
        return Ok(false);
    };
    if manifest.is_some_and(|m| stored.as_deref() != Some(m.as_str())) {
        return Ok(false);
    }
    let mut stmt = db.prepare("SELECT diff_id FROM image_layers WHERE image = ?1 ORDER BY idx")?;
    let layers: Vec<String> = stmt
        .query_map([id.as_str()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !layers
        .iter()
        .map(String::as_str)
        .eq(diff_ids.iter().map(Digest::as_str))
    {
        return Ok(false);
    }
    for diff_id in diff_ids {
        if layer_row(db, diff_id)?.is_none() {
            return Err(StoreError::MissingLayer(diff_id.clone()));
        }
    }
    Ok(true)
}

/// Stands for the schema text (any change to it gives another number; never 0, what a
/// database that has not recorded one reads).
fn schema_version() -> i32 {
    let digest =
        Digest::sha256_of(format!("{SCHEMA}{}{}", cache::CACHE_SCHEMA, settle::SCHEMA).as_bytes());
    let hex = digest.hex().get(..7).unwrap_or_default();
    i32::from_str_radix(hex, 16).map_or(1, |v| v.max(1))
}

pub(crate) fn layer_row(
    db: &Connection,
    diff_id: &Digest,
) -> Result<Option<LayerInfo>, rusqlite::Error> {
    db.query_row(
        "SELECT snapshot, size, tar_size FROM layers WHERE diff_id = ?1",
        [diff_id.as_str()],
        |r| {
            Ok(LayerInfo {
                diff_id: diff_id.clone(),
                snapshot: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                tar_size: r.get::<_, i64>(2)? as u64,
            })
        },
    )
    .optional()
}

fn names(db: &Connection, table: &str, id: &Digest) -> Result<Vec<Reference>, StoreError> {
    let mut stmt = db.prepare(&format!(
        "SELECT name FROM {table} WHERE image = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([id.as_str()], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(r) = Reference::parse(&r?) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Copies what is read into a second writer (the blob being kept) as it passes.
struct Tee<'a, W: io::Write> {
    inner: &'a mut dyn Read,
    copy: &'a mut W,
}

impl<W: io::Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layers (
    diff_id  TEXT PRIMARY KEY,
    snapshot INTEGER NOT NULL UNIQUE,
    size     INTEGER NOT NULL,
    tar_size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_blobs (
    digest     TEXT PRIMARY KEY,
    diff_id    TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS layer_blobs_diff ON layer_blobs (diff_id);
-- Where a built layer's diff id hash can be resumed (hoist_layer::Checkpoints::to_bytes);
-- valid only for the snapshot the layers row points at, so deleted with that row.
CREATE TABLE IF NOT EXISTS layer_checkpoints (
    diff_id TEXT PRIMARY KEY,
    data    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id            TEXT PRIMARY KEY,
    manifest      TEXT,
    created       INTEGER NOT NULL, -- unix nanoseconds, 0 when unknown
    size          INTEGER NOT NULL,
    added         INTEGER NOT NULL,
    last_tag_time TEXT
);
CREATE TABLE IF NOT EXISTS image_layers (
    image   TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    PRIMARY KEY (image, idx)
);
CREATE INDEX IF NOT EXISTS image_layers_diff ON image_layers (diff_id);
CREATE TABLE IF NOT EXISTS tags (
    name  TEXT PRIMARY KEY,
    image TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_digests (
    name  TEXT PRIMARY KEY,
    image TEXT NOT NULL
);
";
