//! write_tree → apply_layer → the same tree, and byte-identical output for the same tree.

mod common;

use common::*;
use hoist_layer::{ApplyOptions, WriteOptions, apply_layer, write_tree};
use hoist_oci::Digest;

#[test]
fn every_kind_and_attribute_survives_a_round_trip() {
    require_root();
    let src = tempfile::tempdir().unwrap();
    build_rich_tree(src.path());
    let mut tar = Vec::new();
    let summary = write_tree(src.path(), &mut tar, &WriteOptions::default()).unwrap();
    assert_eq!(summary.diff_id, Digest::sha256_of(&tar));
    assert_eq!(summary.size, tar.len() as u64);

    let dst = tempfile::tempdir().unwrap();
    let stats = apply_layer(tar.as_slice(), dst.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(stats.entries, summary.entries);
    assert_eq!(stats.skipped_devices, 0);

    let want = snapshot(src.path(), true);
    let got = snapshot(dst.path(), true);
    for (path, node) in &want {
        assert_eq!(
            got.get(path),
            Some(node),
            "{}",
            String::from_utf8_lossy(path)
        );
    }
    assert_eq!(got.len(), want.len());

    // Spot checks that the snapshot really covers what matters.
    let node = |p: &str| got.get(p.as_bytes()).unwrap();
    assert_eq!(node("usr/bin/suid").mode, 0o4755);
    assert_eq!(node("usr/bin/sgid").mode, 0o2711);
    assert_eq!(node("tmp").mode, 0o1777);
    assert_eq!(
        (node("srv/bigid").uid, node("srv/bigid").gid),
        (3_000_000, 4_000_000)
    );
    assert_eq!(
        node("usr/bin/sh").hardlink_of.as_deref(),
        Some(b"etc/ls".as_slice())
    );
    assert_eq!(node("srv/null").rdev, (1, 3));
    assert_eq!(node("srv/loop0").kind, "block");
    assert_eq!(node("srv/fifo").kind, "fifo");
    assert!(
        node("usr/bin/ping")
            .xattrs
            .iter()
            .any(|(k, _)| k == b"security.capability")
    );
    assert!(
        node("etc/ssl")
            .xattrs
            .iter()
            .any(|(k, _)| k == b"trusted.thing")
    );
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    require_root();
    let src = tempfile::tempdir().unwrap();
    build_rich_tree(src.path());
    let write = |dir: &std::path::Path| {
        let mut tar = Vec::new();
        write_tree(dir, &mut tar, &WriteOptions::default()).unwrap();
        tar
    };
    let first = write(src.path());
    assert_eq!(first, write(src.path()));
    // A copy made by applying the tar has other inodes and creation order, same bytes.
    let copy = tempfile::tempdir().unwrap();
    apply_layer(first.as_slice(), copy.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(first, write(copy.path()));
}

#[test]
fn headers_follow_buildkit_conventions() {
    require_root();
    let src = tempfile::tempdir().unwrap();
    build_rich_tree(src.path());
    let mut tar = Vec::new();
    write_tree(src.path(), &mut tar, &WriteOptions::default()).unwrap();
    let names = tar_names(&tar);
    // Sorted, dirs first and with a trailing slash, no leading ./
    assert_eq!(
        &names[..3],
        [
            "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/",
            &format!("{}/{}/", "d".repeat(60), "e".repeat(60)),
            &format!("{}/{}/{}", "d".repeat(60), "e".repeat(60), "f".repeat(80))
        ]
    );
    let etc = names.iter().position(|n| n == "etc/").unwrap();
    assert_eq!(names[etc + 1], "etc/empty");
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("./") && !n.starts_with('/'))
    );

    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        assert!(h.as_ustar().is_some(), "USTAR headers");
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        let path = entry.path_bytes().into_owned();
        if path == b"etc/ls" {
            assert_eq!(h.entry_type(), tar::EntryType::Regular);
        }
        if path == b"usr/bin/busybox" || path == b"usr/bin/sh" {
            assert_eq!(h.entry_type(), tar::EntryType::Link);
            assert_eq!(entry.link_name_bytes().unwrap().as_ref(), b"etc/ls");
        }
        if path == b"usr/bin/ping" {
            let pax: Vec<_> = entry
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|e| e.unwrap().key().unwrap().to_owned())
                .collect();
            assert_eq!(pax, ["SCHILY.xattr.security.capability"]);
        }
    }
}

#[test]
fn clamp_mtime_rewrites_newer_times_only() {
    require_root();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("old"), b"o").unwrap();
    std::fs::write(src.path().join("new"), b"n").unwrap();
    set_mtime(&src.path().join("old"), 100);
    set_mtime(&src.path().join("new"), 2_000_000_000);
    let mut tar = Vec::new();
    let opts = WriteOptions {
        clamp_mtime: Some(1_000),
    };
    write_tree(src.path(), &mut tar, &opts).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let times: Vec<_> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(times, [("new".to_owned(), 1_000), ("old".to_owned(), 100)]);
}

/// PAX records are length-prefixed, so values may hold newlines; the tar crate's reader
/// splits on them, which is why hoist-layer parses tar itself.
#[test]
fn newlines_in_long_names_and_xattr_values_survive() {
    require_root();
    let src = tempfile::tempdir().unwrap();
    let name = format!("{}\n{}", "a".repeat(80), "b".repeat(80));
    std::fs::write(src.path().join(&name), b"x").unwrap();
    // A capability mask with bits 1 and 3 has a 0x0a byte.
    let cap = [
        1, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    set_xattr(&src.path().join(&name), "security.capability", &cap);
    let mut tar = Vec::new();
    write_tree(src.path(), &mut tar, &WriteOptions::default()).unwrap();
    let dst = tempfile::tempdir().unwrap();
    apply_layer(tar.as_slice(), dst.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(dst.path(), true), snapshot(src.path(), true));
}

/// Go ignores the size field of header-only entries; so must we, or a symlink could
/// smuggle entries that docker never sees.
#[test]
fn header_only_entries_carry_no_data() {
    require_root();
    let mut h = tar::Header::new_ustar();
    h.as_mut_bytes()[..4].copy_from_slice(b"link");
    h.as_mut_bytes()[157..163].copy_from_slice(b"target");
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(512);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    // What a size-trusting reader would skip as the symlink's "data": a real file header.
    let mut f = tar::Header::new_ustar();
    f.as_mut_bytes()[..6].copy_from_slice(b"hidden");
    f.set_entry_type(tar::EntryType::Regular);
    f.set_mode(0o644);
    f.set_size(0);
    f.set_cksum();
    tar.extend_from_slice(f.as_bytes());
    tar.extend_from_slice(&[0; 1024]);
    let dst = tempfile::tempdir().unwrap();
    let stats = apply_layer(tar.as_slice(), dst.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(stats.entries, 2);
    assert!(dst.path().join("hidden").exists());
}
