//! Shared test helpers: root check, tree snapshots, tree builders, raw tar writing.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hoist_oci::Digest;
use rustix::fs::{self as rfs, AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

/// These tests create devices, chown and set trusted xattrs: they need root and say so
/// instead of skipping.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "hoist-layer tests must run as root (devices, chown, trusted.* xattrs, overlay mounts)"
    );
}

/// What a tree looks like, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<i64>,
    pub content: Option<String>,
    pub link: Option<Vec<u8>>,
    pub rdev: (u32, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first path (in walk order) sharing this inode, for hardlinked files.
    pub hardlink_of: Option<Vec<u8>>,
}

pub type Tree = BTreeMap<Vec<u8>, Node>;

/// Snapshot of everything under `root` (not `root` itself), keyed by relative path.
pub fn snapshot(root: &Path, with_mtimes: bool) -> Tree {
    let mut tree = Tree::new();
    let mut inodes = BTreeMap::new();
    walk(root, b"", &mut tree, &mut inodes, with_mtimes);
    tree
}

fn walk(
    dir: &Path,
    rel: &[u8],
    tree: &mut Tree,
    inodes: &mut BTreeMap<(u64, u64), Vec<u8>>,
    with_mtimes: bool,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(OsStr::from_bytes(&name));
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            [rel, b"/", &name].concat()
        };
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = FileType::from_raw_mode(md.mode());
        let kind = match ft {
            FileType::Directory => "dir",
            FileType::RegularFile => "file",
            FileType::Symlink => "symlink",
            FileType::CharacterDevice => "char",
            FileType::BlockDevice => "block",
            FileType::Fifo => "fifo",
            _ => "other",
        };
        let hardlink_of = if ft != FileType::Directory && md.nlink() > 1 {
            let first = inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel_path.clone());
            Some(first.clone())
        } else {
            None
        };
        let node = Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: with_mtimes.then_some(md.mtime()),
            content: (ft == FileType::RegularFile)
                .then(|| Digest::sha256_of(&fs::read(&path).unwrap()).to_string()),
            link: (ft == FileType::Symlink).then(|| {
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            rdev: if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice) {
                (rfs::major(md.rdev()), rfs::minor(md.rdev()))
            } else {
                (0, 0)
            },
            xattrs: xattrs(&path),
            hardlink_of,
        };
        tree.insert(rel_path.clone(), node);
        if ft == FileType::Directory {
            walk(&path, &rel_path, tree, inodes, with_mtimes);
        }
    }
}

/// All xattrs of `path` (not following it), except SELinux labels.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 4096];
    let n = match rfs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Vec::new(),
        Err(e) => panic!("llistxattr {path:?}: {e}"),
    };
    let mut out = Vec::new();
    for key in list[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if key == b"security.selinux" {
            continue;
        }
        let mut value = vec![0u8; 4096];
        let len = rfs::lgetxattr(path, OsStr::from_bytes(key), &mut value[..]).unwrap();
        out.push((key.to_vec(), value[..len].to_vec()));
    }
    out.sort();
    out
}

pub fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    rfs::lsetxattr(path, key, value, XattrFlags::empty()).unwrap();
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rfs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn mknod(path: &Path, ft: FileType, mode: u32, major: u32, minor: u32) {
    rfs::mknodat(
        CWD,
        path,
        ft,
        Mode::from_raw_mode(mode),
        rfs::makedev(major, minor),
    )
    .unwrap();
    rfs::chmodat(CWD, path, Mode::from_raw_mode(mode), AtFlags::empty()).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// A tree exercising every entry kind and attribute the layer format carries.
pub fn build_rich_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::create_dir_all(p("etc/ssl")).unwrap();
    fs::create_dir_all(p("usr/bin")).unwrap();
    fs::create_dir_all(p("tmp")).unwrap();
    fs::create_dir_all(p("srv/empty")).unwrap();
    fs::write(p("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(p("etc/empty"), b"").unwrap();
    // Bigger than the copy buffers and not a multiple of 512.
    let big: Vec<u8> = (0..(3 * 1024 * 1024 + 77))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    fs::write(p("usr/bin/big"), &big).unwrap();
    fs::write(p("usr/bin/suid"), b"#!/bin/sh\n").unwrap();
    chmod(&p("usr/bin/suid"), 0o4755);
    fs::write(p("usr/bin/sgid"), b"x").unwrap();
    chmod(&p("usr/bin/sgid"), 0o2711);
    chmod(&p("tmp"), 0o1777);
    fs::write(p("usr/bin/ping"), b"ping").unwrap();
    // cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
    set_xattr(
        &p("usr/bin/ping"),
        "security.capability",
        &[
            0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    set_xattr(&p("etc/passwd"), "user.note", b"hello");
    set_xattr(&p("etc/ssl"), "trusted.thing", b"\x00\x01binary");
    fs::write(p("srv/owned"), b"owned").unwrap();
    chown(&p("srv/owned"), 1000, 1001);
    fs::write(p("srv/bigid"), b"big ids").unwrap();
    chown(&p("srv/bigid"), 3_000_000, 4_000_000);
    // Hardlinks: three names, one inode.
    fs::write(p("usr/bin/busybox"), b"busybox binary").unwrap();
    fs::hard_link(p("usr/bin/busybox"), p("usr/bin/sh")).unwrap();
    fs::hard_link(p("usr/bin/busybox"), p("etc/ls")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/busybox", p("usr/bin/abs-link")).unwrap();
    std::os::unix::fs::symlink("../etc/passwd", p("srv/rel-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("srv/dangling")).unwrap();
    chown(&p("srv/dangling"), 5, 6);
    let long_target = "t".repeat(150);
    std::os::unix::fs::symlink(&long_target, p("srv/long-target")).unwrap();
    mknod(&p("srv/null"), FileType::CharacterDevice, 0o666, 1, 3);
    mknod(&p("srv/loop0"), FileType::BlockDevice, 0o660, 7, 0);
    mknod(&p("srv/fifo"), FileType::Fifo, 0o644, 0, 0);
    // A path longer than the 100-byte USTAR name field, and a non-UTF-8 name.
    let deep = p(&format!("{}/{}", "d".repeat(60), "e".repeat(60)));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(80)), b"deep").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"srv/caf\xe9")), b"latin1").unwrap();
    // mtimes last, directories after their children.
    let mut all = Vec::new();
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in all.iter().enumerate() {
        set_mtime(path, 1_600_000_000 + i as i64 * 7);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let is_dir = fs::symlink_metadata(&path).unwrap().is_dir();
        out.push(path.clone());
        if is_dir {
            collect(&path, out);
        }
    }
}

/// A tar written header by header, for archives `tar::Builder` refuses to make.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &[u8], kind: tar::EntryType, link: &[u8], size: u64, mode: u32) {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name);
        h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.bytes.extend_from_slice(h.as_bytes());
    }

    fn data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.header(
            name.as_bytes(),
            tar::EntryType::Regular,
            b"",
            data.len() as u64,
            0o644,
        );
        self.data(data);
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.header(name.as_bytes(), tar::EntryType::Directory, b"", 0, 0o755);
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.header(
            name.as_bytes(),
            tar::EntryType::Symlink,
            target.as_bytes(),
            0,
            0o777,
        );
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.header(
            name.as_bytes(),
            tar::EntryType::Link,
            target.as_bytes(),
            0,
            0o644,
        );
        self
    }

    /// A PAX header for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while base + len.to_string().len() != len {
                len = base + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.header(
            b"PaxHeaders.0/x",
            tar::EntryType::XHeader,
            b"",
            data.len() as u64,
            0o644,
        );
        self.data(&data);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0; 1024]);
        self.bytes
    }
}

/// The entry names of a tar, in order.
pub fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}
