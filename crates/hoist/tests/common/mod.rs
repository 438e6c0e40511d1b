//! A private store per test, and the busybox fixture imported into it.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Hoist {
    pub dir: tempfile::TempDir,
}

impl Hoist {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("hoist-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hoist"));
        c.arg("--root")
            .arg(self.root())
            .env_remove("HOIST_ROOT")
            .env("TZ", "UTC");
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hoist")
    }

    /// Runs hoist, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        hoist_test::success(&self.output(args))
    }

    /// Runs hoist, asserts failure with exit status 1, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "hoist {args:?} should fail: {out:?}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn rootfs(&self) -> PathBuf {
        let p = self.dir.path().join("busybox-rootfs.tar");
        if !p.exists() {
            hoist_test::busybox_rootfs_tar(self.dir.path());
        }
        p
    }

    /// Imports the busybox rootfs under `name`; returns the image id.
    pub fn import_busybox(&self, name: &str) -> String {
        let tar = self.rootfs();
        self.ok(&["import", tar.to_str().unwrap(), name])
            .trim()
            .to_owned()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}
