//! Property tests over entry names: arbitrary names never escape, and arbitrary trees
//! round-trip.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use common::*;
use hoist_layer::{ApplyOptions, LayerError, WriteOptions, apply_layer, write_tree};
use proptest::prelude::*;

/// Raw tar names made of the pieces attackers use.
fn hostile_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "..", ".", "", "a", "b", "etc", "/", "//", ".wh.x", "link",
        ]),
        1..8,
    )
    .prop_map(|parts| parts.join("/"))
}

/// One path component: any bytes but `/` and NUL, not `.`/`..`, not a whiteout.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 1..40)
        .prop_map(|mut v| {
            v.retain(|&b| b != b'/');
            if v.is_empty() {
                v.push(b'x');
            }
            v
        })
        .prop_filter("not . or ..", |v| v != b"." && v != b"..")
        .prop_filter("not a whiteout", |v| !v.starts_with(b".wh."))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_name_lands_outside_the_root(
        names in prop::collection::vec(hostile_name(), 1..5),
        symlink_first in any::<bool>(),
    ) {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut tar = RawTar::new();
        if symlink_first {
            tar = tar.symlink("link", "/");
        }
        for name in &names {
            tar = tar.file(name, b"data");
        }
        match apply_layer(tar.finish().as_slice(), &root, &ApplyOptions::default()) {
            Ok(_) | Err(LayerError::Escape { .. } | LayerError::InvalidName { .. }) => {}
            // A name whose parent is a file is an ordinary filesystem error.
            Err(LayerError::Apply { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        let outside: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(outside, vec![std::ffi::OsString::from("root")]);
    }

    #[test]
    fn arbitrary_names_round_trip(
        paths in prop::collection::vec(prop::collection::vec(component(), 1..5), 1..12),
    ) {
        require_root();
        let src = tempfile::tempdir().unwrap();
        let mut dirs = BTreeSet::new();
        for (i, parts) in paths.iter().enumerate() {
            let (file, parents) = parts.split_last().unwrap();
            let mut dir = src.path().to_path_buf();
            let mut ok = true;
            for p in parents {
                dir.push(OsStr::from_bytes(p));
                if dir.is_file() { ok = false; break; }
                fs::create_dir_all(&dir).unwrap();
                dirs.insert(dir.clone());
            }
            let path = dir.join(OsStr::from_bytes(file));
            if ok && !path.exists() {
                fs::write(&path, format!("file {i}")).unwrap();
            }
        }
        let mut tar = Vec::new();
        write_tree(src.path(), &mut tar, &WriteOptions::default()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        apply_layer(tar.as_slice(), dst.path(), &ApplyOptions::default()).unwrap();
        prop_assert_eq!(snapshot(dst.path(), false), snapshot(src.path(), false));
        let mut again = Vec::new();
        write_tree(dst.path(), &mut again, &WriteOptions::default()).unwrap();
        prop_assert!(tar == again, "the copy must archive to the same bytes");
    }
}
