//! Path resolution inside a root with chroot semantics: `..` stops at the root and absolute
//! symlinks restart from it. Sources (the context, other stages) and destinations (the image
//! being built) are both resolved this way, so no path an image or a context contains can make
//! the engine read or write outside the tree it means.

use std::fs;
use std::path::{Path, PathBuf};

/// Lexically cleans a slash path: no empty, `.` or `..` components (`..` stops at the top).
pub(crate) fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_owned()),
        }
    }
    out
}

/// Resolves `path` under `root`, following symlinks (all of them, or all but the last when
/// `follow_last` is false) inside the root. Missing trailing components are kept as they are.
pub(crate) fn resolve(root: &Path, path: &str, follow_last: bool) -> PathBuf {
    let mut pending: Vec<String> = clean(path).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let candidate = root.join(done.iter().collect::<PathBuf>()).join(&part);
        let is_last = pending.is_empty();
        let link = if is_last && !follow_last {
            None
        } else {
            fs::read_link(&candidate).ok()
        };
        match link {
            Some(target) if hops < 40 => {
                hops += 1;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                for p in clean(&target).into_iter().rev() {
                    pending.push(p);
                }
            }
            _ => done.push(part),
        }
    }
    root.join(done.iter().collect::<PathBuf>())
}

/// Sets a path's access and modification times (never following a symlink at `path`).
pub(crate) fn set_mtime(path: &Path, sec: i64, nsec: i64) -> Result<(), crate::BuildError> {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| crate::BuildError::io("setting the time of", path, e.into()))
}

/// Opens files through their parent directory, kept open while the next file shares it: a
/// context file's full path is many components, and walking them again for each of 20k files
/// cost more than opening the files.
#[derive(Default)]
pub(crate) struct ParentCache {
    parent: Option<(PathBuf, std::os::fd::OwnedFd)>,
}

impl ParentCache {
    /// `path` opened read-only (not following a symlink at its last component when
    /// `nofollow`); the same file a plain open of the whole path gives.
    pub(crate) fn open(&mut self, path: &Path, nofollow: bool) -> std::io::Result<fs::File> {
        use rustix::fs::{Mode, OFlags};
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return fs::File::open(path);
        };
        if self.parent.as_ref().is_none_or(|(p, _)| p != dir) {
            let dir_path = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let fd = rustix::fs::open(
                dir_path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.parent = Some((dir.to_owned(), fd));
        }
        let Some((_, fd)) = &self.parent else {
            return fs::File::open(path);
        };
        let mut flags = OFlags::RDONLY | OFlags::CLOEXEC;
        if nofollow {
            flags |= OFlags::NOFOLLOW;
        }
        Ok(rustix::fs::openat(fd, name, flags, Mode::empty())?.into())
    }
}
