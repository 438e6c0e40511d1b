//! Hostile archives are refused with a typed error naming the entry, and nothing outside the
//! root changes.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use hoist_layer::{ApplyOptions, EscapeReason, LayerError, apply_layer};

/// A root to extract into, next to a victim directory that must never change.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    victim: PathBuf,
    before: Tree,
    host_passwd: Vec<u8>,
}

impl Sandbox {
    fn new() -> Self {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let victim = tmp.path().join("victim");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("secret"), b"do not touch").unwrap();
        fs::create_dir(victim.join("etc")).unwrap();
        fs::write(victim.join("etc/passwd"), b"victim").unwrap();
        let before = snapshot(tmp.path(), true);
        let host_passwd = fs::read("/etc/passwd").unwrap();
        Self {
            before,
            _tmp: tmp,
            root,
            victim,
            host_passwd,
        }
    }

    fn apply(&self, tar: &[u8]) -> Result<hoist_layer::ApplyStats, LayerError> {
        apply_layer(tar, &self.root, &ApplyOptions::default())
    }

    /// Everything outside the root is as it was.
    fn assert_outside_unchanged(&self) {
        let now = snapshot(self.root.parent().unwrap(), true);
        let outside = |t: &Tree| -> Tree {
            t.iter()
                .filter(|(k, _)| !k.starts_with(b"root"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(outside(&now), outside(&self.before));
        assert_eq!(fs::read("/etc/passwd").unwrap(), self.host_passwd);
    }

    fn assert_root_empty(&self) {
        assert_eq!(
            fs::read_dir(&self.root).unwrap().count(),
            0,
            "root must stay untouched"
        );
    }

    fn victim(&self) -> &str {
        self.victim.to_str().unwrap()
    }
}

#[track_caller]
fn assert_escape(
    result: Result<hoist_layer::ApplyStats, LayerError>,
    entry: &str,
    reason: EscapeReason,
) {
    match result {
        Err(LayerError::Escape {
            entry: got,
            reason: why,
        }) => {
            assert_eq!((got.as_str(), why), (entry, reason));
        }
        other => panic!("expected an escape error for {entry:?}, got {other:?}"),
    }
}

#[test]
fn dot_dot_entries_are_refused() {
    for name in [
        "../escape",
        "a/../../escape",
        "/../escape",
        "./../../../../tmp/escape",
    ] {
        let sb = Sandbox::new();
        let tar = RawTar::new().file(name, b"pwned").finish();
        let err = sb.apply(&tar).unwrap_err();
        assert!(
            err.to_string().contains(name),
            "the message names the entry: {err}"
        );
        assert_escape(Err(err), name, EscapeReason::ParentDir);
        sb.assert_root_empty();
        sb.assert_outside_unchanged();
    }
}

#[test]
fn leading_slash_and_dot_slash_are_normalised_into_the_root() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("/abs/file", b"a")
        .file("./rel/file", b"r")
        .finish();
    sb.apply(&tar).unwrap();
    assert_eq!(fs::read(sb.root.join("abs/file")).unwrap(), b"a");
    assert_eq!(fs::read(sb.root.join("rel/file")).unwrap(), b"r");
    sb.assert_outside_unchanged();
}

#[test]
fn writing_through_an_absolute_symlink_is_refused() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("link", sb.victim())
        .file("link/secret", b"pwned")
        .finish();
    assert_escape(sb.apply(&tar), "link/secret", EscapeReason::Symlink);
    sb.assert_outside_unchanged();

    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("etc", "/etc")
        .file("etc/passwd", b"pwned")
        .finish();
    assert_escape(sb.apply(&tar), "etc/passwd", EscapeReason::Symlink);
    sb.assert_outside_unchanged();
}

#[test]
fn writing_through_a_relative_symlink_that_climbs_out_is_refused() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .dir("a/")
        .symlink("a/up", "../../victim")
        .file("a/up/secret", b"pwned")
        .finish();
    assert_escape(sb.apply(&tar), "a/up/secret", EscapeReason::Symlink);
    sb.assert_outside_unchanged();
}

#[test]
fn a_symlink_left_by_a_lower_layer_cannot_be_traversed_out() {
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("/", sb.root.join("evil")).unwrap();
    let rel = format!("evil/{}/secret", sb.victim().trim_start_matches('/'));
    let tar = RawTar::new().file(&rel, b"pwned").finish();
    assert_escape(sb.apply(&tar), &rel, EscapeReason::Symlink);
    sb.assert_outside_unchanged();
}

#[test]
fn whiteouts_and_opaque_markers_through_symlinks_are_refused() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("link", sb.victim())
        .file("link/.wh.secret", b"")
        .finish();
    assert_escape(sb.apply(&tar), "link/.wh.secret", EscapeReason::Symlink);
    sb.assert_outside_unchanged();

    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("link", sb.victim())
        .file("link/.wh..wh..opq", b"")
        .finish();
    assert_escape(sb.apply(&tar), "link/.wh..wh..opq", EscapeReason::Symlink);
    sb.assert_outside_unchanged();
}

#[test]
fn hardlinks_out_of_the_root_are_refused() {
    // `..` in the target.
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .hardlink("stolen", "../../../../../../etc/passwd")
        .finish();
    assert_escape(sb.apply(&tar), "stolen", EscapeReason::HardlinkTarget);
    sb.assert_root_empty();
    sb.assert_outside_unchanged();

    // An absolute target names a path inside the root, never the host's file.
    let sb = Sandbox::new();
    let tar = RawTar::new().hardlink("stolen", "/etc/passwd").finish();
    match sb.apply(&tar) {
        Err(LayerError::HardlinkTarget { entry, target, .. }) => {
            assert_eq!((entry.as_str(), target.as_str()), ("stolen", "/etc/passwd"));
        }
        other => panic!("expected a missing hardlink target, got {other:?}"),
    }
    assert!(!sb.root.join("stolen").exists());
    sb.assert_outside_unchanged();

    // A target reached through a symlink that points out.
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("l", "/etc")
        .hardlink("stolen", "l/passwd")
        .finish();
    assert_escape(
        sb.apply(&tar),
        "stolen",
        EscapeReason::HardlinkTargetSymlink,
    );
    assert!(!sb.root.join("stolen").exists());
    sb.assert_outside_unchanged();
}

#[test]
fn hardlinks_inside_the_root_work() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("bin/busybox", b"bb")
        .hardlink("bin/sh", "/bin/busybox")
        .finish();
    sb.apply(&tar).unwrap();
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| fs::metadata(sb.root.join(p)).unwrap().ino();
    assert_eq!(ino("bin/sh"), ino("bin/busybox"));
}

#[test]
fn in_root_resolution_follows_absolute_symlinks_inside_the_root() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .dir("etc/")
        .symlink("link", "/etc")
        .file("link/passwd", b"inside")
        .finish();
    let opts = ApplyOptions {
        follow_symlinks_in_root: true,
        ..ApplyOptions::default()
    };
    apply_layer(tar.as_slice(), &sb.root, &opts).unwrap();
    assert_eq!(fs::read(sb.root.join("etc/passwd")).unwrap(), b"inside");
    sb.assert_outside_unchanged();
}

#[test]
fn in_root_resolution_keeps_a_symlink_to_a_directory_under_a_directory_entry() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.root.join("usr/bin")).unwrap();
    fs::write(sb.root.join("usr/bin/sh"), b"shell").unwrap();
    std::os::unix::fs::symlink("usr/bin", sb.root.join("bin")).unwrap();
    // A link leading out of the root resolves inside it, where nothing is: replaced.
    std::os::unix::fs::symlink(&sb.victim, sb.root.join("out")).unwrap();
    let tar = RawTar::new()
        .dir("bin/")
        .file("bin/foo.sh", b"foo")
        .dir("out/")
        .file("out/secret", b"mine")
        .finish();
    let opts = ApplyOptions {
        follow_symlinks_in_root: true,
        ..ApplyOptions::default()
    };
    apply_layer(tar.as_slice(), &sb.root, &opts).unwrap();
    assert!(
        fs::symlink_metadata(sb.root.join("bin"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(fs::read(sb.root.join("usr/bin/foo.sh")).unwrap(), b"foo");
    assert_eq!(fs::read(sb.root.join("usr/bin/sh")).unwrap(), b"shell");
    assert!(fs::symlink_metadata(sb.root.join("out")).unwrap().is_dir());
    assert_eq!(fs::read(sb.root.join("out/secret")).unwrap(), b"mine");
    sb.assert_outside_unchanged();

    // A layer's directory entry replaces the link, as a layer says what the path is.
    let sb = Sandbox::new();
    fs::create_dir_all(sb.root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", sb.root.join("bin")).unwrap();
    sb.apply(
        &RawTar::new()
            .dir("bin/")
            .file("bin/foo.sh", b"foo")
            .finish(),
    )
    .unwrap();
    assert!(fs::symlink_metadata(sb.root.join("bin")).unwrap().is_dir());
    assert!(!sb.root.join("usr/bin/foo.sh").exists());
    sb.assert_outside_unchanged();
}

#[test]
fn bad_whiteout_names_are_refused() {
    let sb = Sandbox::new();
    for name in ["a/.wh..", "a/.wh."] {
        let tar = RawTar::new().dir("a/").file(name, b"").finish();
        assert!(
            matches!(sb.apply(&tar), Err(LayerError::InvalidName { .. })),
            "{name}"
        );
    }
    assert!(sb.root.join("a").exists());
    sb.assert_outside_unchanged();
}

#[test]
fn truncated_archives_fail_as_read_errors() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("f", &[7; 4096]).finish();
    let err = sb.apply(&tar[..1000]).unwrap_err();
    assert!(matches!(err, LayerError::ReadArchive { .. }), "{err:?}");
}
