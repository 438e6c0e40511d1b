//! Resumed diff ids through the store: `commit_snapshot_after` agrees with `commit_snapshot`
//! and with `write_layer`, and falls back to a full hash when the checkpoints are unusable.

use std::fs;
use std::io;
use std::path::Path;

use hoist_layer::{WriteOptions, write_layer};
use hoist_store::{LayerInfo, Store};
use hoist_test::seeded_bytes as bytes;

/// About 14 MB: big files first (several checkpoints), then small ones.
fn build(root: &Path) {
    fs::create_dir_all(root.join("app/big")).unwrap();
    for i in 0..3 {
        fs::write(root.join(format!("app/big/{i}.bin")), bytes(i, 4 << 20)).unwrap();
    }
    fs::create_dir_all(root.join("app/src")).unwrap();
    for i in 0..200 {
        fs::write(
            root.join(format!("app/src/f{i:03}.txt")),
            bytes(100 + i, 200 + (i as usize * 97) % 16_000),
        )
        .unwrap();
    }
}

/// A hard-linked copy of `src` (directories recreated with their times), as an incremental
/// COPY makes: the same layer, whenever it is made.
fn link_tree(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            link_tree(&e.path(), &to);
        } else {
            fs::hard_link(e.path(), &to).unwrap();
        }
    }
    // Last: making its entries moved it.
    let mtime = fs::metadata(src).unwrap().modified().unwrap();
    fs::File::open(dst).unwrap().set_modified(mtime).unwrap();
}

/// Replaces a file near the end of the walk with a new inode.
fn change(root: &Path, what: &[u8]) {
    let p = root.join("app/src/f190.txt");
    fs::remove_file(&p).unwrap();
    fs::write(&p, what).unwrap();
}

fn diff_id(dir: &Path) -> hoist_oci::Digest {
    write_layer(dir, io::sink(), &WriteOptions::default())
        .unwrap()
        .diff_id
}

fn staged(store: &Store, name: &str) -> std::path::PathBuf {
    store.tmp_dir().join(name)
}

fn checkpoint_rows(root: &Path) -> i64 {
    let db = rusqlite::Connection::open(root.join("v1/meta.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM layer_checkpoints", [], |r| r.get(0))
        .unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Store,
    first: LayerInfo,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let upper = staged(&store, "first");
    build(&upper);
    let want = diff_id(&upper);
    let first = store.commit_snapshot(&upper).unwrap();
    assert_eq!(first.diff_id, want);
    assert_eq!(checkpoint_rows(&root), 1);
    Setup {
        _tmp: tmp,
        root,
        store,
        first,
    }
}

#[test]
fn resumed_commit_equals_full_commit() {
    let s = setup();
    let snapshot = s.store.snapshot_dir(&s.first);
    let (a, b) = (staged(&s.store, "a"), staged(&s.store, "b"));
    link_tree(&snapshot, &a);
    change(&a, b"changed");
    link_tree(&a, &b);
    let want = diff_id(&a);
    let resumed = s.store.commit_snapshot_after(&a, &s.first).unwrap();
    assert_eq!(resumed.diff_id, want);
    // The same tree committed in full is the same layer.
    let full = s.store.commit_snapshot(&b).unwrap();
    assert_eq!(full, resumed);
    assert!(!b.exists());
    assert_eq!(checkpoint_rows(&s.root), 2);

    // And a resume from a resumed layer's checkpoints.
    let c = staged(&s.store, "c");
    link_tree(&s.store.snapshot_dir(&resumed), &c);
    change(&c, b"changed again");
    let want = diff_id(&c);
    assert_eq!(
        s.store.commit_snapshot_after(&c, &resumed).unwrap().diff_id,
        want
    );
}

#[test]
fn garbage_checkpoints_fall_back_to_a_full_hash() {
    let s = setup();
    let db = rusqlite::Connection::open(s.root.join("v1/meta.db")).unwrap();
    for garbage in [&b""[..], b"HCKP\x01garbage", &[0xff; 300]] {
        db.execute(
            "UPDATE layer_checkpoints SET data = ?1 WHERE diff_id = ?2",
            rusqlite::params![garbage, s.first.diff_id.as_str()],
        )
        .unwrap();
        let a = staged(&s.store, "a");
        link_tree(&s.store.snapshot_dir(&s.first), &a);
        change(&a, &bytes(garbage.len() as u64, 5000));
        let want = diff_id(&a);
        let layer = s.store.commit_snapshot_after(&a, &s.first).unwrap();
        assert_eq!(layer.diff_id, want);
    }
    // No row at all.
    db.execute("DELETE FROM layer_checkpoints", []).unwrap();
    let a = staged(&s.store, "a");
    link_tree(&s.store.snapshot_dir(&s.first), &a);
    change(&a, b"no checkpoints");
    let want = diff_id(&a);
    assert_eq!(
        s.store.commit_snapshot_after(&a, &s.first).unwrap().diff_id,
        want
    );
}

#[test]
fn checkpoints_go_with_their_layer() {
    let s = setup();
    let a = staged(&s.store, "a");
    link_tree(&s.store.snapshot_dir(&s.first), &a);
    change(&a, b"changed");
    s.store.commit_snapshot_after(&a, &s.first).unwrap();
    assert_eq!(checkpoint_rows(&s.root), 2);
    // Nothing references these layers: pruning drops them, and their checkpoints.
    s.store
        .prune_cache(&hoist_store::CachePrune::default())
        .unwrap();
    assert!(s.store.layer(&s.first.diff_id).unwrap().is_none());
    assert_eq!(checkpoint_rows(&s.root), 0);
    // A previous layer that is gone is only a full hash.
    let b = staged(&s.store, "b");
    build(&b);
    change(&b, b"after the previous layer went");
    let want = diff_id(&b);
    assert_eq!(
        s.store.commit_snapshot_after(&b, &s.first).unwrap().diff_id,
        want
    );
}
