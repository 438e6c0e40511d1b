//! Whiteouts and opaque directories, in both modes.

mod common;

use common::*;
use hoist_layer::{ApplyOptions, WhiteoutMode, WriteOptions, apply_layer, write_layer};

fn keys(tree: &Tree) -> Vec<String> {
    tree.keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn lower() -> Vec<u8> {
    RawTar::new()
        .file("f", b"file")
        .dir("a/")
        .file("a/keep", b"k")
        .file("a/gone", b"g")
        .dir("d/")
        .file("d/inner", b"i")
        .dir("b/")
        .file("b/x", b"x")
        .dir("b/sub/")
        .file("b/sub/z", b"z")
        .dir("c/")
        .file("c/old", b"old")
        .dir("c/deep/")
        .file("c/deep/lower", b"lower")
        .dir("c/sub/")
        .file("c/sub/lower", b"lower")
        .finish()
}

#[test]
fn apply_mode_deletes_and_empties_opaque_dirs_wherever_the_marker_sits() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let opts = ApplyOptions::default();
    apply_layer(lower().as_slice(), root.path(), &opts).unwrap();

    let layer = RawTar::new()
        .file(".wh.f", b"")
        .file("a/.wh.gone", b"")
        .file(".wh.d", b"")
        .file("nope/.wh.missing", b"")
        // Marker first: b's lower content goes, its new content stays.
        .dir("b/")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"new")
        // Marker after the siblings: they must survive it, lower content must not.
        .file("c/new2", b"n")
        .file("c/deep/mine", b"m")
        .dir("c/sub/")
        .file("c/sub/n", b"n")
        .file("c/.wh..wh..opq", b"")
        .finish();
    let stats = apply_layer(layer.as_slice(), root.path(), &opts).unwrap();
    assert_eq!(
        stats.whiteouts, 5,
        "the whiteout under a missing dir hides nothing"
    );

    assert_eq!(
        keys(&snapshot(root.path(), false)),
        [
            "a",
            "a/keep",
            "b",
            "b/new",
            "c",
            "c/deep",
            "c/deep/mine",
            "c/new2",
            "c/sub",
            "c/sub/n",
        ]
    );
    assert!(
        !root.path().join("nope").exists(),
        "a whiteout creates nothing"
    );
}

#[test]
fn a_whiteout_does_not_delete_this_layers_own_entry() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let layer = RawTar::new().file("x", b"mine").file(".wh.x", b"").finish();
    apply_layer(layer.as_slice(), root.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(std::fs::read(root.path().join("x")).unwrap(), b"mine");
}

#[test]
fn existing_paths_are_replaced_and_dirs_merged() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let opts = ApplyOptions::default();
    let first = RawTar::new()
        .dir("dir/")
        .file("dir/child", b"c")
        .dir("was-dir/")
        .file("was-dir/child", b"c")
        .file("was-file", b"f")
        .symlink("was-link", "/etc")
        .finish();
    apply_layer(first.as_slice(), root.path(), &opts).unwrap();
    let second = RawTar::new()
        .pax(&[("mtime", b"1234.5")])
        .dir("dir/")
        .file("was-dir", b"now a file")
        .dir("was-file/")
        .file("was-link", b"now a file")
        .finish();
    apply_layer(second.as_slice(), root.path(), &opts).unwrap();
    let tree = snapshot(root.path(), true);
    assert_eq!(
        keys(&tree),
        ["dir", "dir/child", "was-dir", "was-file", "was-link"]
    );
    assert_eq!(
        tree[&b"dir"[..]].mtime,
        Some(1234),
        "dir over dir replaces attributes"
    );
    assert_eq!(tree[&b"was-dir"[..]].kind, "file");
    assert_eq!(tree[&b"was-file"[..]].kind, "dir");
    assert_eq!(tree[&b"was-link"[..]].kind, "file");
}

#[test]
fn overlay_mode_writes_overlay_markers() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        ..ApplyOptions::default()
    };
    let layer = RawTar::new()
        .file(".wh.f", b"")
        .dir("a/")
        .file("a/.wh.gone", b"")
        .file("a/new", b"n")
        .dir("b/")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"n")
        // An opaque marker after its siblings, with no dir entry of its own.
        .file("c/n", b"n")
        .file("c/.wh..wh..opq", b"")
        .finish();
    let stats = apply_layer(layer.as_slice(), root.path(), &opts).unwrap();
    assert_eq!(stats.whiteouts, 4);
    let tree = snapshot(root.path(), false);
    for wh in ["f", "a/gone"] {
        let node = &tree[wh.as_bytes()];
        assert_eq!((node.kind, node.rdev), ("char", (0, 0)), "{wh}");
    }
    let opaque = (b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
    assert!(tree[&b"b"[..]].xattrs.contains(&opaque));
    assert!(tree[&b"c"[..]].xattrs.contains(&opaque));
    assert!(!tree[&b"a"[..]].xattrs.contains(&opaque));
    assert_eq!(std::fs::read(root.path().join("c/n")).unwrap(), b"n");

    // And back: the snapshot diffs into the same whiteouts, before their siblings.
    let mut tar = Vec::new();
    write_layer(root.path(), &mut tar, &WriteOptions::default()).unwrap();
    assert_eq!(
        tar_names(&tar),
        [
            ".wh.f",
            "a/",
            "a/.wh.gone",
            "a/new",
            "b/",
            "b/.wh..wh..opq",
            "b/new",
            "c/",
            "c/.wh..wh..opq",
            "c/n"
        ]
    );
    // A second trip through overlay mode is byte-stable.
    let again = tempfile::tempdir().unwrap();
    apply_layer(tar.as_slice(), again.path(), &opts).unwrap();
    let mut tar2 = Vec::new();
    write_layer(again.path(), &mut tar2, &WriteOptions::default()).unwrap();
    assert_eq!(tar, tar2);
}

#[test]
fn archives_cannot_set_overlay_xattrs() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.kept", b"1"),
        ])
        .dir("d/")
        .finish();
    apply_layer(layer.as_slice(), root.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(
        xattrs(&root.path().join("d")),
        [(b"user.kept".to_vec(), b"1".to_vec())]
    );
}

#[test]
fn chown_can_be_turned_off() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    chown(&src.path().join("f"), 1234, 5678);
    let mut tar = Vec::new();
    hoist_layer::write_tree(src.path(), &mut tar, &WriteOptions::default()).unwrap();
    let opts = ApplyOptions {
        chown: false,
        ..ApplyOptions::default()
    };
    apply_layer(tar.as_slice(), root.path(), &opts).unwrap();
    let node = &snapshot(root.path(), false)[&b"f"[..]];
    assert_eq!((node.uid, node.gid), (0, 0));
}
