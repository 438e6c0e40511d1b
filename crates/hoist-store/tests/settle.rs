//! Snapshots recorded without an fsync, after a power loss: a reboot is simulated by giving
//! their unsettled notes another boot id (the one thing a test cannot make happen), and the
//! damage a lost writeback leaves by rewriting a file. Opening the store settles them.

use std::fs;
use std::path::Path;

use hoist_store::{LayerInfo, Store};
use hoist_test::seeded_bytes as bytes;

fn db(root: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(root.join("v1/meta.db")).unwrap()
}

/// The unsettled notes: (snapshot, boot).
fn notes(root: &Path) -> Vec<(i64, String)> {
    let db = db(root);
    let mut stmt = db
        .prepare("SELECT snapshot, boot FROM unsettled_snapshots ORDER BY snapshot")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn this_boot() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

/// Every note as if written before a reboot.
fn reboot(root: &Path) {
    db(root)
        .execute(
            "UPDATE unsettled_snapshots SET boot = 'an-earlier-boot'",
            [],
        )
        .unwrap();
}

/// A built layer: a directory made a snapshot, with a build cache entry.
fn built(store: &Store, name: &str, seed: u64) -> LayerInfo {
    let upper = store.tmp_dir().join(name);
    fs::create_dir_all(upper.join("app")).unwrap();
    fs::write(upper.join("app/big.bin"), bytes(seed, 300_000)).unwrap();
    fs::write(upper.join("app/small.txt"), bytes(seed + 1, 900)).unwrap();
    // Fixed times: the same content makes the same layer whenever it is built.
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for p in ["app/big.bin", "app/small.txt", "app"] {
        fs::File::open(upper.join(p))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let layer = store.commit_snapshot(&upper).unwrap();
    store
        .cache_put(&format!("key-{name}"), None, &layer, "2026-01-01T00:00:00Z")
        .unwrap();
    layer
}

/// A layer tar of one regular file.
fn one_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, content).unwrap();
    tar.into_inner().unwrap()
}

/// Same length, other bytes: what a lost writeback can leave.
fn damage(file: &Path) {
    let len = fs::metadata(file).unwrap().len() as usize;
    fs::write(file, vec![0u8; len]).unwrap();
}

#[test]
fn built_layers_are_noted_and_settled_in_the_same_boot_once_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = built(&store, "a", 1);
    let b = built(&store, "b", 2);
    drop(store);
    let boot = this_boot();
    assert_eq!(
        notes(dir.path()),
        vec![
            (snapshot_of(&a, dir.path()), boot.clone()),
            (snapshot_of(&b, dir.path()), boot.clone())
        ]
    );
    // Recent: still noted after an open.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(notes(dir.path()).len(), 2);
    // Old enough: synced and forgotten by the next settle.
    db(dir.path())
        .execute(
            "UPDATE unsettled_snapshots SET written = written - 3600 WHERE snapshot = ?1",
            [snapshot_of(&a, dir.path())],
        )
        .unwrap();
    let settled = store.settle().unwrap();
    assert_eq!(settled.settled, 1);
    assert_eq!(notes(dir.path()), vec![(snapshot_of(&b, dir.path()), boot)]);
    assert!(store.layer(&a.diff_id).unwrap().is_some());
}

#[test]
fn after_a_reboot_a_damaged_built_layer_is_dropped_and_an_intact_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = built(&store, "good", 1);
    let bad = built(&store, "bad", 2);
    let bad_dir = store.snapshot_dir(&bad);
    drop(store);
    reboot(dir.path());
    damage(&bad_dir.join("app/big.bin"));
    let store = Store::open(dir.path()).unwrap();
    assert!(notes(dir.path()).is_empty());
    assert_eq!(store.layer(&good.diff_id).unwrap(), Some(good.clone()));
    assert!(store.cache_get("key-good").unwrap().is_some());
    assert!(store.snapshot_dir(&good).join("app/big.bin").is_file());
    // Never served damaged: no record, no cache entry, no directory.
    assert_eq!(store.layer(&bad.diff_id).unwrap(), None);
    assert!(store.cache_get("key-bad").unwrap().is_none());
    assert!(!bad_dir.exists());
    // The next build of that content records it again.
    let again = built(&store, "bad-again", 2);
    assert_eq!(again.diff_id, bad.diff_id);
    assert!(store.snapshot_dir(&again).join("app/big.bin").is_file());
}

#[test]
fn after_a_reboot_a_layer_with_a_blob_is_unpacked_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let content = bytes(7, 50_000);
    let tar = one_file_tar("etc/data.bin", &content);
    let layer = store.import_layer(&mut tar.as_slice(), None).unwrap();
    let file = store.snapshot_dir(&layer).join("etc/data.bin");
    drop(store);
    reboot(dir.path());
    damage(&file);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        fs::read(store.snapshot_dir(&layer).join("etc/data.bin")).unwrap(),
        content
    );
    assert_eq!(store.layer(&layer.diff_id).unwrap(), Some(layer.clone()));
    // Unpacked in this boot: noted again until synced.
    assert_eq!(
        notes(dir.path()),
        vec![(snapshot_of(&layer, dir.path()), this_boot())]
    );
}

#[test]
fn after_a_reboot_a_layer_whose_blob_cannot_be_unpacked_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tar = one_file_tar("data.bin", &bytes(8, 20_000));
    let layer = store.import_layer(&mut tar.as_slice(), None).unwrap();
    let (blob, _, _) = store.layer_blobs(&layer.diff_id).unwrap().remove(0);
    let blob_path = store.blob_path(&blob);
    drop(store);
    reboot(dir.path());
    // Not a power loss's doing (blobs are synced): the store must still open.
    fs::write(&blob_path, b"not a tar").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.settled_at_open().dropped, vec![layer.diff_id.clone()]);
    assert_eq!(store.layer(&layer.diff_id).unwrap(), None);
    assert!(notes(dir.path()).is_empty());
}

#[test]
fn a_note_whose_layer_is_gone_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    built(&store, "a", 1);
    drop(store);
    db(dir.path()).execute("DELETE FROM layers", []).unwrap();
    reboot(dir.path());
    Store::open(dir.path()).unwrap();
    assert!(notes(dir.path()).is_empty());
}

/// A layer's snapshot number, from its directory's name.
fn snapshot_of(layer: &LayerInfo, root: &Path) -> i64 {
    let store = Store::open(root).unwrap();
    store
        .snapshot_dir(layer)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
