//! A real overlayfs mount: changes made through the merged view diff into `.wh.` entries.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use hoist_layer::{ApplyOptions, WriteOptions, apply_layer, write_layer, write_tree};

struct Mount(PathBuf);

impl Mount {
    fn overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Self {
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(merged)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting overlayfs failed (needs root and overlay support)"
        );
        Self(merged.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn upper_dir_diffs_into_whiteouts_and_opaque_dirs() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| tmp.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::write(lower.join("etc/passwd"), b"root\n").unwrap();
    fs::write(lower.join("etc/group"), b"root\n").unwrap();
    fs::write(lower.join("etc/shadow"), b"secret\n").unwrap();
    fs::create_dir_all(lower.join("var/cache/apt")).unwrap();
    fs::write(lower.join("var/cache/apt/pkgcache.bin"), b"cache").unwrap();
    fs::write(lower.join("var/cache/old"), b"old").unwrap();
    fs::create_dir_all(lower.join("keep")).unwrap();
    fs::write(lower.join("keep/file"), b"kept").unwrap();

    let mount = Mount::overlay(&lower, &upper, &work, &merged);
    fs::remove_file(merged.join("etc/group")).unwrap();
    fs::remove_file(merged.join("etc/shadow")).unwrap();
    fs::write(merged.join("etc/hostname"), b"buildkitsandbox\n").unwrap();
    // Replacing a lower dir makes overlayfs mark the new one opaque.
    fs::remove_dir_all(merged.join("var/cache")).unwrap();
    fs::create_dir(merged.join("var/cache")).unwrap();
    fs::write(merged.join("var/cache/new"), b"new").unwrap();
    let want = snapshot(&merged, false);
    drop(mount);

    let mut layer = Vec::new();
    let summary = write_layer(&upper, &mut layer, &WriteOptions::default()).unwrap();
    assert_eq!(summary.diff_id, hoist_oci::Digest::sha256_of(&layer));
    assert_eq!(
        tar_names(&layer),
        [
            "etc/",
            "etc/.wh.group",
            "etc/.wh.shadow",
            "etc/hostname",
            "var/",
            "var/cache/",
            "var/cache/.wh..wh..opq",
            "var/cache/new",
        ]
    );
    // The whiteout char devices overlayfs makes can share one inode; they are still
    // whiteouts, never hardlinks.
    let mut archive = tar::Archive::new(layer.as_slice());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        assert_ne!(entry.header().entry_type(), tar::EntryType::Link);
        assert!(entry.header().as_ustar().is_some());
    }

    // Lower + layer applied as a merged tree = what the merged view showed.
    let mut lower_tar = Vec::new();
    write_tree(&lower, &mut lower_tar, &WriteOptions::default()).unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    apply_layer(lower_tar.as_slice(), &rootfs, &ApplyOptions::default()).unwrap();
    apply_layer(layer.as_slice(), &rootfs, &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(&rootfs, false), want);
}
