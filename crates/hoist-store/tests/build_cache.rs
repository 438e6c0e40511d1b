//! Build cache entries and their partial keys: a step's key before its files' contents, which
//! says whether any entry could match the step before its files are hashed.

use std::fs;

use hoist_store::{LayerInfo, Store};

const CREATED: &str = "2026-01-01T00:00:00Z";

/// A small layer committed to `store`.
fn layer(store: &Store, name: &str) -> LayerInfo {
    let upper = store.tmp_dir().join(name);
    fs::create_dir_all(upper.join("app")).unwrap();
    fs::write(upper.join("app/f.txt"), name).unwrap();
    store.commit_snapshot(&upper).unwrap()
}

#[test]
fn a_partial_key_says_whether_an_entry_may_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l = layer(&store, "a");
    assert!(!store.cache_may_hold("partial-1").unwrap());
    store
        .cache_put("key-1", Some("partial-1"), &l, CREATED)
        .unwrap();
    store.cache_put("key-2", None, &l, CREATED).unwrap();
    assert!(store.cache_may_hold("partial-1").unwrap());
    assert!(!store.cache_may_hold("partial-2").unwrap());
    // The same key recorded again takes the newer partial key.
    store
        .cache_put("key-1", Some("partial-2"), &l, CREATED)
        .unwrap();
    assert!(!store.cache_may_hold("partial-1").unwrap());
    assert!(store.cache_may_hold("partial-2").unwrap());
    // Pruned, the entry no longer says a step may be cached.
    store
        .prune_cache(&hoist_store::CachePrune::default())
        .unwrap();
    assert!(!store.cache_may_hold("partial-2").unwrap());
}

#[test]
fn a_database_from_before_partial_keys_gains_the_column_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("v1")).unwrap();
    let db_path = dir.path().join("v1/meta.db");
    {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.execute_batch(
            "CREATE TABLE build_cache (
                 key TEXT PRIMARY KEY, diff_id TEXT NOT NULL, created TEXT NOT NULL,
                 last_used INTEGER NOT NULL
             );
             INSERT INTO build_cache VALUES ('old-key', 'sha256:0000', '2025-01-01T00:00:00Z', 0);",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(!store.cache_may_hold("partial-1").unwrap());
    let l = layer(&store, "b");
    store
        .cache_put("key-1", Some("partial-1"), &l, CREATED)
        .unwrap();
    assert!(store.cache_may_hold("partial-1").unwrap());
    drop(store);
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let rows: Vec<(String, Option<String>)> = db
        .prepare("SELECT key, partial FROM build_cache ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            ("key-1".to_owned(), Some("partial-1".to_owned())),
            ("old-key".to_owned(), None)
        ]
    );
    // A second open finds the column there and changes nothing.
    drop(db);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.cache_may_hold("partial-1").unwrap());
    // The row from before usage counts were kept counts as used once.
    let old = store
        .cache_entries()
        .unwrap()
        .into_iter()
        .find(|e| e.key == "old-key")
        .unwrap();
    assert_eq!((old.uses, old.size, old.shared), (1, 0, false));
}

#[test]
fn entries_count_their_uses_and_prune_until_leaves_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l = layer(&store, "c");
    store.cache_put("key-1", None, &l, CREATED).unwrap();
    assert!(store.cache_get("key-1").unwrap().is_some());
    assert!(store.cache_get("key-1").unwrap().is_some());
    // Made again (a --no-cache build): one more use.
    store.cache_put("key-1", None, &l, CREATED).unwrap();
    let entries = store.cache_entries().unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.key.as_str(), e.uses, e.created.as_str()),
        ("key-1", 4, CREATED)
    );
    assert_eq!(e.diff_id, l.diff_id.as_str());
    assert_eq!(e.size, l.size);
    assert!(!e.shared, "no image holds the layer");
    let now = jiff::Timestamp::now().as_second();
    assert!((now - 5..=now).contains(&e.last_used));
    // Used within the last hour: `until=1h` keeps it.
    let hour = hoist_store::CachePrune {
        unused_since: Some(now - 3600),
        ..Default::default()
    };
    assert_eq!(store.prune_cache(&hour).unwrap(), (vec![], 0));
    assert!(store.cache_get("key-1").unwrap().is_some());
    // Unused since a second from now: it goes, with the layer only it kept.
    let later = hoist_store::CachePrune {
        unused_since: Some(now + 1),
        ..Default::default()
    };
    let (removed, bytes) = store.prune_cache(&later).unwrap();
    assert_eq!(removed, ["key-1"]);
    assert_eq!(bytes, l.size);
    assert!(store.cache_entries().unwrap().is_empty());
    assert!(store.cache_get("key-1").unwrap().is_none());
}

#[test]
fn cache_mounts_are_listed_with_their_uses_and_pruned_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.cache_mount_dir("npm", 0, 0, 0o755).unwrap();
    fs::write(a.join("blob"), vec![7u8; 5000]).unwrap();
    store.cache_mount_dir("npm", 0, 0, 0o755).unwrap();
    let b = store.cache_mount_dir("go", 0, 0, 0o755).unwrap();
    // A directory made before uses were recorded: listed, its times unknown.
    let db_path = dir.path().join("v1/meta.db");
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute(
            "DELETE FROM cache_mounts WHERE dir = ?1",
            [b.file_name().unwrap().to_str().unwrap()],
        )
        .unwrap();
    let mounts = store.cache_mounts().unwrap();
    assert_eq!(mounts.len(), 2);
    let npm = mounts.iter().find(|m| a.ends_with(&m.dir)).unwrap();
    assert_eq!((npm.size, npm.uses), (5000, Some(2)));
    let go = mounts.iter().find(|m| b.ends_with(&m.dir)).unwrap();
    assert_eq!((go.size, go.uses, go.last_used), (0, None, None));
    // Used within the hour, `npm` stays; `go`, of unknown age, goes.
    let now = jiff::Timestamp::now().as_second();
    let (removed, bytes) = store.prune_cache_mounts(Some(now - 3600)).unwrap();
    assert_eq!((removed, bytes), (vec![go.dir.clone()], 0));
    assert!(a.is_dir() && !b.exists());
    // Without a filter, everything goes.
    let (removed, bytes) = store.prune_cache_mounts(None).unwrap();
    assert_eq!((removed, bytes), (vec![npm.dir.clone()], 5000));
    assert!(!a.exists() && store.cache_mounts().unwrap().is_empty());
}
