//! `digest_layer` against `write_layer`, and resumed digests against full ones, on real trees.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hoist_test::seeded_bytes as bytes;
use proptest::prelude::*;
use rustix::fs::{self as rfs, AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use crate::checkpoint::INTERVAL;
use crate::write::{Digested, digest};
use crate::{Checkpoints, WriteOptions, digest_layer, write_layer};

/// Small enough that the test trees have dozens of points.
const SMALL: u64 = 64 * 1024;

/// Like the integration tests: devices, trusted.* xattrs and chown need root.
fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "hoist-layer tests must run as root (devices, chown, trusted.* xattrs)"
    );
}

fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rfs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    rfs::lsetxattr(path, key, value, XattrFlags::empty()).unwrap();
}

fn mtime(path: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec())
}

fn paths(root: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            paths(&p, out);
        }
        out.push(p);
    }
}

/// Sizes around the block and buffer boundaries, and a few bigger ones.
const SIZES: [usize; 12] = [
    0, 1, 100, 511, 512, 513, 1024, 4095, 20_000, 65_536, 131_073, 300_000,
];

/// A tree with every kind of entry the layer format carries: `dirs` directories of `files`
/// files each (sizes from [`SIZES`]), symlinks with short and long targets, a long path (PAX),
/// user and trusted xattrs, hardlinks spanning the whole walk, a fifo, a whiteout and an
/// opaque directory. Timestamps are set last, so the tree is the same every time.
fn build_tree(root: &Path, dirs: usize, files: usize) {
    fs::create_dir_all(root).unwrap();
    // Walked first and last: a hardlink whose first name is in any skipped prefix.
    fs::create_dir(root.join("a")).unwrap();
    fs::write(root.join("a/hl-first"), bytes(1, 3000)).unwrap();
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..files {
            let n = d * files + f;
            fs::write(
                dir.join(format!("f{f:03}.txt")),
                bytes(n as u64 + 10, SIZES[n % SIZES.len()]),
            )
            .unwrap();
        }
        std::os::unix::fs::symlink(format!("f000.txt-{d}"), dir.join("link")).unwrap();
        if d % 3 == 1 {
            set_xattr(
                &dir.join("f000.txt"),
                "user.note",
                format!("n{d}").as_bytes(),
            );
            set_xattr(&dir, "trusted.tag", b"\x00\x01");
        }
    }
    // The odd ones, in a directory of their own so every tree shape has them.
    let s = root.join("s");
    fs::create_dir(&s).unwrap();
    fs::write(s.join("l".repeat(120)), bytes(7, 777)).unwrap();
    std::os::unix::fs::symlink("t".repeat(150), s.join("long-target")).unwrap();
    fs::write(s.join("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(s.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    rfs::mknodat(
        CWD,
        s.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // overlayfs' deletion marker and opaque directory, as an upper dir has them.
    rfs::mknodat(
        CWD,
        s.join("gone"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0),
        rfs::makedev(0, 0),
    )
    .unwrap();
    fs::create_dir(s.join("opaque")).unwrap();
    fs::write(s.join("opaque/kept"), b"kept").unwrap();
    set_xattr(&s.join("opaque"), "trusted.overlay.opaque", b"y");
    fs::create_dir(root.join("z")).unwrap();
    fs::hard_link(root.join("a/hl-first"), root.join("z/hl-second")).unwrap();
    let mut all = Vec::new();
    paths(root, &mut all);
    // Deepest first, so setting a directory's time comes after its children changed it.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(
            p,
            1_700_000_000 + i as i64,
            (i as i64 * 7919) % 1_000_000_000,
        );
    }
}

/// What an incremental COPY makes: the same directories (attributes copied) with every other
/// entry hard-linked to the previous tree's inode.
fn link_tree(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            link_tree(&from, &to);
        } else {
            fs::hard_link(&from, &to).unwrap();
        }
    }
    let meta = fs::symlink_metadata(src).unwrap();
    fs::set_permissions(dst, meta.permissions()).unwrap();
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())).unwrap();
    let mut list = vec![0u8; 4096];
    let n = rfs::llistxattr(src, &mut list[..]).unwrap();
    for key in list[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let mut value = vec![0u8; 4096];
        let len = rfs::lgetxattr(src, OsStr::from_bytes(key), &mut value[..]).unwrap();
        rfs::lsetxattr(
            dst,
            OsStr::from_bytes(key),
            &value[..len],
            XattrFlags::empty(),
        )
        .unwrap();
    }
    let (s, ns) = mtime(src);
    set_mtime(dst, s, ns);
}

/// Replaces `path` by a new inode with `data`, keeping its mode and times, as a rebuild that
/// copies a changed file does.
fn replace(path: &Path, data: &[u8], mode: Option<u32>) {
    let meta = fs::symlink_metadata(path).unwrap();
    keeping_dir_time(path, || {
        let tmp = path.with_extension("new-inode");
        fs::write(&tmp, data).unwrap();
        fs::set_permissions(
            &tmp,
            fs::Permissions::from_mode(mode.unwrap_or(meta.mode() & 0o7777)),
        )
        .unwrap();
        set_mtime(&tmp, meta.mtime(), meta.mtime_nsec());
        fs::rename(&tmp, path).unwrap();
    });
}

/// Runs `f` on `path`'s parent directory, then restores the directory's times, so only what
/// the test means to change changes.
fn keeping_dir_time(path: &Path, f: impl FnOnce()) {
    let parent = path.parent().unwrap();
    let (s, ns) = mtime(parent);
    f();
    set_mtime(parent, s, ns);
}

fn written(dir: &Path, opts: &WriteOptions) -> crate::LayerSummary {
    write_layer(dir, io::sink(), opts).unwrap()
}

/// The heart of every test: a resume from `previous` equals a full digest of `dir` in
/// summary and in checkpoints, and the full digest equals `write_layer`'s.
fn check_resume(dir: &Path, previous: &Checkpoints, interval: u64) -> (Digested, Digested) {
    let opts = WriteOptions::default();
    let full = digest(dir, &opts, None, interval).unwrap();
    assert_eq!(full.summary, written(dir, &opts));
    assert_eq!(full.hashed, full.summary.size);
    let resumed = digest(dir, &opts, Some(previous), interval).unwrap();
    assert_eq!(resumed.summary, full.summary);
    assert_eq!(resumed.checkpoints, full.checkpoints);
    (full, resumed)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    old: PathBuf,
    new: PathBuf,
    old_digest: Digested,
}

/// A tree of about 12 MiB digested with [`SMALL`] points, and a hard-linked copy to change.
fn fixture() -> Fixture {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let new = tmp.path().join("new");
    build_tree(&old, 12, 24);
    let old_digest = digest(&old, &WriteOptions::default(), None, SMALL).unwrap();
    assert_eq!(old_digest.summary, written(&old, &WriteOptions::default()));
    assert!(
        old_digest.checkpoints.len() > 30,
        "{}",
        old_digest.checkpoints.len()
    );
    link_tree(&old, &new);
    Fixture {
        _tmp: tmp,
        old,
        new,
        old_digest,
    }
}

/// Applies `change` to a fresh hard-linked copy, checks the resume and returns (full,
/// resumed).
fn scenario(change: impl FnOnce(&Path)) -> (Digested, Digested, Fixture) {
    let fx = fixture();
    change(&fx.new);
    let (full, resumed) = check_resume(&fx.new, &fx.old_digest.checkpoints, SMALL);
    (full, resumed, fx)
}

#[test]
fn digest_equals_write_layer() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path(), 4, 20);
    for opts in [
        WriteOptions::default(),
        WriteOptions {
            clamp_mtime: Some(1_700_000_100),
        },
    ] {
        let want = written(tmp.path(), &opts);
        let (summary, checkpoints) = digest_layer(tmp.path(), &opts, None).unwrap();
        assert_eq!(summary, want);
        assert_eq!(
            digest(tmp.path(), &opts, None, SMALL).unwrap().summary,
            want
        );
        // Resuming from its own checkpoints (nothing changed) is still the same.
        let (again, again_cp) = digest_layer(tmp.path(), &opts, Some(&checkpoints)).unwrap();
        assert_eq!((again, again_cp), (want, checkpoints));
    }
}

#[test]
fn unchanged_tree_resumes_at_the_last_point() {
    let (full, resumed, _fx) = scenario(|_| {});
    // Only what follows the last point (at most an interval plus one entry) is hashed.
    assert!(
        resumed.hashed <= SMALL + 300_000 + 2048,
        "{}",
        resumed.hashed
    );
    assert!(resumed.hashed < full.summary.size / 8);
}

#[test]
fn content_change_late_hashes_little() {
    let (full, resumed, _fx) = scenario(|new| {
        // Same size, same times, new inode: only the identity tells.
        let p = new.join("d11/f020.txt");
        let len = fs::metadata(&p).unwrap().len() as usize;
        replace(&p, &bytes(999, len), None);
    });
    assert!(resumed.hashed < full.summary.size / 8, "{}", resumed.hashed);
}

#[test]
fn content_change_early_hashes_everything_after_it() {
    let (full, resumed, _fx) = scenario(|new| {
        let p = new.join("a/hl-first");
        replace(&p, &bytes(998, 3000), None);
        // The second name must still be a hardlink to the first: relink it.
        keeping_dir_time(&new.join("z/hl-second"), || {
            fs::remove_file(new.join("z/hl-second")).unwrap();
            fs::hard_link(&p, new.join("z/hl-second")).unwrap();
        });
    });
    assert!(resumed.hashed > full.summary.size * 9 / 10);
}

#[test]
fn content_change_in_the_middle() {
    let (full, resumed, _fx) = scenario(|new| {
        replace(&new.join("d06/f005.txt"), b"now something else", None);
    });
    assert!(resumed.hashed < full.summary.size * 3 / 4);
    assert!(resumed.hashed > full.summary.size / 4);
}

#[test]
fn appended_content() {
    scenario(|new| {
        let p = new.join("d08/f010.txt");
        let mut data = fs::read(&p).unwrap();
        data.extend_from_slice(b"appended\n");
        replace(&p, &data, None);
    });
}

#[test]
fn mode_change_on_a_new_inode() {
    scenario(|new| {
        replace(
            &new.join("d07/f003.txt"),
            &fs::read(new.join("d07/f003.txt")).unwrap(),
            Some(0o600),
        )
    });
}

#[test]
fn mode_change_in_place() {
    // chmod on a shared inode changes the old tree too; the header still tells.
    scenario(|new| {
        fs::set_permissions(new.join("d05/f004.txt"), fs::Permissions::from_mode(0o700)).unwrap();
    });
}

#[test]
fn added_file() {
    scenario(|new| {
        let p = new.join("d09/f010b.txt");
        keeping_dir_time(&p, || fs::write(&p, b"added").unwrap());
        set_mtime(&p, 1_700_000_000, 0);
    });
}

#[test]
fn removed_file() {
    scenario(|new| {
        let p = new.join("d09/f011.txt");
        keeping_dir_time(&p, || fs::remove_file(&p).unwrap());
    });
}

#[test]
fn directory_mtime_change() {
    scenario(|new| set_mtime(&new.join("d07"), 1_800_000_000, 0));
}

#[test]
fn directory_xattr_change() {
    scenario(|new| set_xattr(&new.join("d10"), "user.note", b"changed"));
}

#[test]
fn whiteout_added() {
    scenario(|new| {
        let p = new.join("d10/deleted");
        keeping_dir_time(&p, || {
            rfs::mknodat(
                CWD,
                &p,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0),
                rfs::makedev(0, 0),
            )
            .unwrap();
        });
    });
}

#[test]
fn truncated_tree() {
    // The walk ends before reaching the next point's entry: the resume happens at the end.
    let (full, resumed, _fx) = scenario(|new| {
        for d in 6..12 {
            fs::remove_dir_all(new.join(format!("d{d:02}"))).unwrap();
        }
        fs::remove_dir_all(new.join("s")).unwrap();
        fs::remove_dir_all(new.join("z")).unwrap();
        set_mtime(new, 1_700_000_000, 0);
    });
    assert!(resumed.hashed < full.summary.size / 4, "{}", resumed.hashed);
}

#[test]
fn last_file_changed() {
    let (full, resumed, _fx) = scenario(|new| {
        let p = new.join("z/hl-second");
        // Breaks the hardlink: z/hl-second becomes a file of its own.
        replace(&p, b"last", None);
    });
    assert!(resumed.hashed < full.summary.size / 8);
}

#[test]
fn chains_of_resumes_stay_right() {
    let (_, first, fx) = scenario(|new| {
        replace(&new.join("d10/f001.txt"), b"first change", None);
    });
    let third = fx.old.parent().unwrap().join("third");
    link_tree(&fx.new, &third);
    replace(&third.join("d11/f001.txt"), b"second change", None);
    let (full, resumed) = check_resume(&third, &first.checkpoints, SMALL);
    assert!(resumed.hashed < full.summary.size / 8);
}

#[test]
fn foreign_or_mismatched_checkpoints_give_a_full_hash() {
    let fx = fixture();
    let other = fx.old.parent().unwrap().join("other");
    build_tree(&other, 3, 5);
    let foreign = digest(&other, &WriteOptions::default(), None, SMALL).unwrap();
    let (full, resumed) = check_resume(&fx.new, &foreign.checkpoints, SMALL);
    assert_eq!(resumed.hashed, full.summary.size);
    // Points at another spacing are not used.
    let coarse = digest(&fx.old, &WriteOptions::default(), None, SMALL * 2).unwrap();
    let (full, resumed) = check_resume(&fx.new, &coarse.checkpoints, SMALL);
    assert_eq!(resumed.hashed, full.summary.size);
    // Stored points come back exactly.
    let back = Checkpoints::from_bytes(&fx.old_digest.checkpoints.to_bytes()).unwrap();
    assert_eq!(back, fx.old_digest.checkpoints);
}

#[test]
fn default_interval_on_a_bigger_tree() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    build_tree(&old, 3, 10);
    for i in 0..3 {
        fs::write(old.join(format!("d01/big{i}")), bytes(i, 4 << 20)).unwrap();
    }
    let opts = WriteOptions::default();
    let (summary, checkpoints) = digest_layer(&old, &opts, None).unwrap();
    assert_eq!(summary, written(&old, &opts));
    assert!(checkpoints.len() >= 2, "{}", checkpoints.len());
    link_tree(&old, &new);
    replace(&new.join("d02/f005.txt"), b"changed", None);
    let resumed = digest(&new, &opts, Some(&checkpoints), INTERVAL).unwrap();
    let full = digest(&new, &opts, None, INTERVAL).unwrap();
    assert_eq!(resumed.summary, full.summary);
    assert_eq!(resumed.checkpoints, full.checkpoints);
    assert_eq!(full.summary, written(&new, &opts));
    assert!(resumed.hashed < full.summary.size / 2);
}

/// One of the changes a rebuild makes.
#[derive(Debug, Clone)]
enum Change {
    Content(usize),
    Append(usize),
    Mode(usize),
    Remove(usize),
    Add(usize),
    DirTime(usize),
    None,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<usize>().prop_map(Change::Content),
        any::<usize>().prop_map(Change::Append),
        any::<usize>().prop_map(Change::Mode),
        any::<usize>().prop_map(Change::Remove),
        any::<usize>().prop_map(Change::Add),
        any::<usize>().prop_map(Change::DirTime),
        Just(Change::None),
    ]
}

/// Regular files of `root`, sorted.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    paths(root, &mut all);
    let mut out: Vec<_> = all
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .collect();
    out.sort();
    out
}

fn apply(root: &Path, change: &Change) {
    let fs_ = files(root);
    let pick = |i: usize| fs_[i % fs_.len()].clone();
    match *change {
        Change::Content(i) => {
            let p = pick(i);
            let len = fs::metadata(&p).unwrap().len() as usize;
            replace(&p, &bytes(i as u64, len), None);
        }
        Change::Append(i) => {
            let p = pick(i);
            let mut data = fs::read(&p).unwrap();
            data.push(b'!');
            replace(&p, &data, None);
        }
        Change::Mode(i) => {
            let p = pick(i);
            replace(&p, &fs::read(&p).unwrap(), Some(0o640));
        }
        Change::Remove(i) => {
            let p = pick(i);
            keeping_dir_time(&p, || fs::remove_file(&p).unwrap());
        }
        Change::Add(i) => {
            let p = pick(i).with_extension("added");
            keeping_dir_time(&p, || fs::write(&p, bytes(i as u64, 700)).unwrap());
        }
        Change::DirTime(i) => set_mtime(pick(i).parent().unwrap(), 1_900_000_000, 5),
        Change::None => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random shapes, random changes, tiny intervals (a point nearly every entry): resumed
    /// equals full equals write_layer, twice in a row.
    #[test]
    fn resumes_equal_full_digests(
        dirs in 1usize..6,
        files_per_dir in 1usize..12,
        interval_blocks in 1u64..40,
        first in change(),
        second in change(),
    ) {
        require_root();
        let interval = interval_blocks * 512;
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
        build_tree(&a, dirs, files_per_dir);
        let da = digest(&a, &WriteOptions::default(), None, interval).unwrap();
        prop_assert_eq!(&da.summary, &written(&a, &WriteOptions::default()));
        link_tree(&a, &b);
        apply(&b, &first);
        let (_, db) = check_resume(&b, &da.checkpoints, interval);
        link_tree(&b, &c);
        apply(&c, &second);
        check_resume(&c, &db.checkpoints, interval);
    }
}

/// Directories sealed by a test writer, as the engine's copy seals them.
#[derive(Default)]
struct Seals {
    state: std::sync::Mutex<(std::collections::HashSet<Vec<u8>>, Option<bool>)>,
    more: std::sync::Condvar,
}

impl Seals {
    fn seal(&self, dir: &[u8]) {
        self.state.lock().unwrap().0.insert(dir.to_vec());
        self.more.notify_all();
    }

    fn end(&self, whole: bool) {
        self.state.lock().unwrap().1 = Some(whole);
        self.more.notify_all();
    }

    fn gate(self: &std::sync::Arc<Self>) -> crate::Gate {
        let seals = self.clone();
        std::sync::Arc::new(move |dir: &[u8]| {
            let mut st = seals.state.lock().unwrap();
            loop {
                match st.1 {
                    Some(false) => return Err(crate::LayerError::Abandoned),
                    Some(true) => return Ok(()),
                    None if st.0.contains(dir) => return Ok(()),
                    None => st = seals.more.wait(st).unwrap(),
                }
            }
        })
    }
}

/// Writes a tree a directory at a time (its entries, then its time) and seals each directory
/// once final; those at odd depths get a hard link at the very end, and are sealed only by
/// the end of the writing.
fn write_sealed(root: &Path, seals: &Seals) {
    let mut late = Vec::new();
    let mut todo = vec![(String::new(), 0u32)];
    while let Some((rel, depth)) = todo.pop() {
        let here = root.join(&rel);
        for i in 0..3u32 {
            let path = here.join(format!("e{i}"));
            let len = 1000 + 700 * i as usize;
            fs::write(&path, bytes(u64::from(i * 31 + depth), len)).unwrap();
            set_mtime(&path, 1_600_000_000 + i64::from(i), 0);
        }
        std::os::unix::fs::symlink("e0", here.join("e3")).unwrap();
        if depth < 3 {
            for j in 0..2 {
                let name = format!("d{j}");
                fs::create_dir(here.join(&name)).unwrap();
                let sub = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                todo.push((sub, depth + 1));
            }
        }
        let time = 1_500_000_000 + i64::from(depth);
        if depth % 2 == 1 {
            late.push((here, time));
        } else {
            set_mtime(&here, time, 0);
            seals.seal(rel.as_bytes());
        }
        // Gives the digest its chance to catch up.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for (dir, time) in late {
        fs::hard_link(dir.join("e0"), dir.join("e4")).unwrap();
        set_mtime(&dir, time, 0);
    }
    seals.end(true);
}

/// A digest that follows a writer directory by directory gives the finished tree's digest.
/// (Debug builds also check it inside; a gate that let the walk run ahead fails both.)
#[test]
fn a_gated_digest_follows_its_writer_to_the_finished_trees_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("upper");
    fs::create_dir(&root).unwrap();
    let seals = std::sync::Arc::new(Seals::default());
    let opts = WriteOptions::default();
    let gated = std::thread::scope(|s| {
        let digest = s.spawn(|| crate::digest_layer_gated(&root, &opts, None, seals.gate()));
        write_sealed(&root, &seals);
        digest.join().unwrap()
    })
    .unwrap();
    let (full, _) = digest_layer(&root, &opts, None).unwrap();
    assert_eq!(gated.0, full);
    assert!(full.entries > 50, "{full:?}");
}

/// A writer that gives up its tree ends the digest waiting on it.
#[test]
fn a_gated_digest_ends_when_its_writer_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let seals = std::sync::Arc::new(Seals::default());
    let got = std::thread::scope(|s| {
        let digest = s.spawn(|| {
            crate::digest_layer_gated(tmp.path(), &WriteOptions::default(), None, seals.gate())
        });
        seals.end(false);
        digest.join().unwrap()
    });
    assert!(matches!(got, Err(crate::LayerError::Abandoned)), "{got:?}");
}
