//! Snapshots are recorded without an fsync (writing back a large layer would otherwise sit on
//! every build's path), so a power loss can cut one short after its record is committed. Each
//! new snapshot is noted as unsettled, with the boot it was written in:
//!
//! - in the same boot, once it is older than [`SETTLE_AFTER`] (the kernel has written it back
//!   by then), a `syncfs` makes sure and the note goes;
//! - after a reboot, a snapshot still unsettled may have lost data. A layer the store keeps a
//!   blob of is unpacked again from that blob (blobs are synced before they are recorded), or
//!   dropped if that fails; a built layer, which has no blob, is hashed again and dropped
//!   (record, build cache entries, directory) unless it still hashes to its diff id. A dropped layer is rebuilt by the next
//!   build that needs it; an image that used it reports it missing instead of serving it
//!   damaged.
//!
//! Every store open does this before anything reads a snapshot; the common case is one query
//! of an empty table.

use std::fs;
use std::path::Path;

use hoist_oci::Digest;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::error::IoContext;
use crate::{LayerInfo, Store, StoreError};

/// Seconds after which a snapshot's pages are written back by the kernel on its own (dirty
/// pages expire after 30 s, and the flusher wakes every 5 s), so a `syncfs` costs little.
pub(crate) const SETTLE_AFTER: i64 = 60;

pub(crate) const SCHEMA: &str = "
-- Snapshots not yet known to be on disk (see settle.rs): the boot they were written in and
-- when, in unix seconds.
CREATE TABLE IF NOT EXISTS unsettled_snapshots (
    snapshot INTEGER PRIMARY KEY,
    boot     TEXT NOT NULL,
    written  INTEGER NOT NULL
);
";

/// This boot's id, or empty where the kernel does not say (a reboot then goes unnoticed, and
/// snapshots are only ever settled by `syncfs`).
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Notes a snapshot just recorded (in the recording transaction).
pub(crate) fn note_unsettled(
    tx: &rusqlite::Connection,
    snapshot: i64,
    boot: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR REPLACE INTO unsettled_snapshots (snapshot, boot, written) VALUES (?1, ?2, ?3)",
        params![snapshot, boot, unix_now()],
    )?;
    Ok(())
}

/// What became of the snapshots a [`Store::settle`] looked at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Known to be on disk now (synced, or intact after a reboot).
    pub settled: usize,
    /// Unpacked again from their blobs after a reboot.
    pub unpacked: Vec<Digest>,
    /// Built layers that no longer hash to their diff id after a reboot, dropped.
    pub dropped: Vec<Digest>,
}

impl Store {
    /// Settles the unsettled snapshots (see the module docs); [`Store::open`] calls it.
    pub fn settle(&self) -> Result<Settled, StoreError> {
        let mut out = Settled::default();
        let rows: Vec<(i64, String, i64)> = {
            let db = self.db();
            let mut stmt = db.prepare("SELECT snapshot, boot, written FROM unsettled_snapshots")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        if rows.is_empty() {
            return Ok(out);
        }
        let now = unix_now();
        let (this_boot, earlier): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, boot, _)| *boot == self.boot);
        let old: Vec<i64> = this_boot
            .iter()
            .filter(|(_, _, written)| now - written >= SETTLE_AFTER)
            .map(|(snapshot, _, _)| *snapshot)
            .collect();
        // A sync that fails leaves the notes for the next open: the store stays usable, and
        // the snapshots are still checked should the machine go down.
        let snaps = self.dir.join("snapshots");
        let synced = !old.is_empty()
            && fs::File::open(&snaps)
                .ok()
                .is_some_and(|dir| rustix::fs::syncfs(&dir).is_ok());
        if synced {
            let mut db = self.db();
            let tx = db.transaction()?;
            // Only notes as old as those synced: a snapshot number noted again since (its
            // layer removed and the number reused) stays noted.
            for s in &old {
                tx.execute(
                    "DELETE FROM unsettled_snapshots WHERE snapshot = ?1 AND written <= ?2",
                    params![s, now - SETTLE_AFTER],
                )?;
            }
            tx.commit()?;
            out.settled += old.len();
        }
        if earlier.is_empty() {
            return Ok(out);
        }
        // One process checks at a time; the others then find the notes gone.
        let lock_path = self.dir.join("settle.lock");
        let lock = crate::lock_file(&lock_path)?;
        lock.lock().ctx("locking", &lock_path)?;
        for (snapshot, boot, _) in earlier {
            self.check_after_reboot(snapshot, &boot, &mut out)?;
        }
        Ok(out)
    }

    /// Checks one snapshot written before a reboot, still noted with that boot.
    fn check_after_reboot(
        &self,
        snapshot: i64,
        boot: &str,
        out: &mut Settled,
    ) -> Result<(), StoreError> {
        let layer = {
            let db = self.db();
            let noted: Option<String> = db
                .query_row(
                    "SELECT boot FROM unsettled_snapshots WHERE snapshot = ?1",
                    [snapshot],
                    |r| r.get(0),
                )
                .optional()?;
            if noted.as_deref() != Some(boot) {
                return Ok(());
            }
            layer_by_snapshot(&db, snapshot)?
        };
        let Some(layer) = layer else {
            self.forget(snapshot)?;
            return Ok(());
        };
        if let Some((blob, _, _)) = self.layer_blobs(&layer.diff_id)?.into_iter().next() {
            // A blob that cannot be unpacked (it was checked when stored) loses the layer
            // rather than the whole store: pulling or loading the image again brings it back.
            if self.unpack_again(&layer, &blob).is_ok() {
                out.unpacked.push(layer.diff_id);
            } else {
                self.drop_layer(&layer)?;
                out.dropped.push(layer.diff_id);
            }
            return Ok(());
        }
        let dir = self.snapshot_dir(&layer);
        let intact = hoist_layer::digest_layer(&dir, &hoist_layer::WriteOptions::default(), None)
            .is_ok_and(|(summary, _)| {
                summary.diff_id == layer.diff_id && summary.size == layer.tar_size
            });
        if intact {
            self.forget(snapshot)?;
            out.settled += 1;
        } else {
            self.drop_layer(&layer)?;
            out.dropped.push(layer.diff_id);
        }
        Ok(())
    }

    fn forget(&self, snapshot: i64) -> Result<(), StoreError> {
        self.db().execute(
            "DELETE FROM unsettled_snapshots WHERE snapshot = ?1",
            [snapshot],
        )?;
        Ok(())
    }

    /// Replaces a layer's snapshot with a fresh unpacking of its blob, itself unsettled (in
    /// this boot) until synced.
    fn unpack_again(&self, layer: &LayerInfo, blob: &Digest) -> Result<(), StoreError> {
        let (staging, root) = self.staging_root()?;
        let file = std::io::BufReader::with_capacity(256 * 1024, self.open_blob(blob)?);
        let read_err = |e| StoreError::Io {
            context: "reading a layer into",
            path: root.clone(),
            source: e,
        };
        let mut tar = hoist_layer::decompress(file).map_err(read_err)?;
        let opts = hoist_layer::ApplyOptions {
            whiteouts: hoist_layer::WhiteoutMode::Overlay,
            ..hoist_layer::ApplyOptions::default()
        };
        hoist_layer::apply_layer(&mut tar, &root, &opts)?;
        let dest = self.snapshot_dir(layer);
        let old = staging.path().join("old");
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match fs::rename(&dest, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("moving aside", &dest),
        }
        fs::rename(&root, &dest).ctx("renaming a snapshot to", &dest)?;
        note_unsettled(&tx, layer.snapshot, &self.boot)?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a damaged built layer: its record, checkpoints and build cache entries, then its
    /// directory.
    fn drop_layer(&self, layer: &LayerInfo) -> Result<(), StoreError> {
        {
            let mut db = self.db();
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = layer.diff_id.as_str();
            tx.execute("DELETE FROM layers WHERE diff_id = ?1", [id])?;
            tx.execute("DELETE FROM layer_checkpoints WHERE diff_id = ?1", [id])?;
            tx.execute("DELETE FROM build_cache WHERE diff_id = ?1", [id])?;
            tx.execute(
                "DELETE FROM unsettled_snapshots WHERE snapshot = ?1",
                [layer.snapshot],
            )?;
            tx.commit()?;
        }
        // Nothing refers to the directory any more: one left behind goes with the next sweep.
        let _ = remove_tree(&self.snapshot_dir(layer));
        Ok(())
    }
}

fn layer_by_snapshot(
    db: &rusqlite::Connection,
    snapshot: i64,
) -> Result<Option<LayerInfo>, StoreError> {
    let row: Option<(String, i64, i64)> = db
        .query_row(
            "SELECT diff_id, size, tar_size FROM layers WHERE snapshot = ?1",
            [snapshot],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((diff_id, size, tar_size)) = row else {
        return Ok(None);
    };
    let diff_id = diff_id
        .parse()
        .map_err(|_| StoreError::Archive(format!("bad diff id {diff_id} in the store")))?;
    Ok(Some(LayerInfo {
        diff_id,
        size: size as u64,
        tar_size: tar_size as u64,
        snapshot,
    }))
}

fn remove_tree(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("removing", path),
    }
}
