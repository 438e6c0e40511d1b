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
    store.prune_cache(None).unwrap();
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
}
