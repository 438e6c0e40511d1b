//! tar → directory, with every path resolved inside the root.
//!
//! Each entry is split into a parent directory and a final name. The parent is opened with
//! `openat2(root, parent, RESOLVE_BENEATH)`, so neither `..` nor a symlink (absolute or
//! relative, placed by this archive or an earlier layer) can lead the walk out of the root:
//! the kernel answers `EXDEV` and we refuse the entry. The final name is then only ever used
//! with `*at` calls that do not follow it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`,
//! `mknodat`, `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`).
//!
//! Attributes go on in the order the kernel needs: content, then owner (chown clears setuid
//! and file capabilities), then mode, then xattrs, then mtime. Directory mtimes are set
//! after the whole archive, because adding children changes them.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::error::{EscapeReason, LayerError};
use crate::names::{NameError, join, normalize};
use crate::reader::{Entry, TarReader, Xattrs};
use crate::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Copy buffer for file contents; files stream through it, never whole.
const COPY_BUF: usize = 128 * 1024;

/// How whiteout entries (`.wh.<name>`, `.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The root is a merged filesystem: `.wh.<name>` deletes `<name>`; an opaque marker
    /// empties its directory of everything that was there before this layer, wherever the
    /// marker sits in the tar.
    Apply,
    /// The root is a fresh snapshot used as an overlayfs lowerdir: `.wh.<name>` becomes a
    /// char device 0/0 and an opaque marker sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
}

/// What to do when the kernel refuses `mknod` for a device entry (e.g. not root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Fail with the error.
    Create,
    /// Skip the entry and count it in [`ApplyStats::skipped_devices`].
    SkipUnpermitted,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Set owners from the tar (lchown). Defaults to true when running as root.
    pub chown: bool,
    pub devices: DevicePolicy,
    /// Resolve symlinks as if the root were `/` (`RESOLVE_IN_ROOT`, what a chroot'ed docker
    /// extraction does) instead of refusing paths through symlinks that point outside
    /// (`RESOLVE_BENEATH`, the default). Either way nothing outside the root is touched.
    /// A directory entry then keeps a symlink to a directory in its place (COPY and ADD onto
    /// an image), where a layer's replaces it.
    pub follow_symlinks_in_root: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            whiteouts: WhiteoutMode::Apply,
            chown: rustix::process::geteuid().is_root(),
            devices: DevicePolicy::Create,
            follow_symlinks_in_root: false,
        }
    }
}

/// Counts from one [`apply_layer`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries seen (including whiteouts and skipped ones).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Bytes of symlink targets: with `bytes`, what docker counts as a layer's size.
    pub symlink_bytes: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Device entries skipped under [`DevicePolicy::SkipUnpermitted`].
    pub skipped_devices: u64,
}

/// Extracts the tar stream `tar` into `root`.
///
/// `tar` must be uncompressed (see [`crate::decompress`]). The stream is read to its very end,
/// so a [`crate::HashingReader`] around it sees every byte and yields the diff_id.
///
/// A hostile entry fails the call with [`LayerError::Escape`]; nothing outside `root` is
/// touched, but `root` is left partially applied, so callers extract into a fresh snapshot
/// and discard it on error. The entry for the root itself (`./`) is skipped.
pub fn apply_layer(
    tar: impl Read,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let root_fd = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::OpenRoot {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let mut applier = Applier::new(root_fd, opts);
    let read_err = |source| LayerError::ReadArchive { source };
    let mut reader = TarReader::new(tar);
    while let Some(entry) = reader.next_entry().map_err(read_err)? {
        applier.stats.entries += 1;
        applier.entry(&entry, &mut reader)?;
    }
    applier.set_dir_times()?;
    // Go's writers pad to a record size; drain so wrapping hashers see the whole stream.
    io::copy(&mut reader.into_inner(), &mut io::sink()).map_err(read_err)?;
    Ok(applier.stats)
}

/// Ownership, mode, time and xattrs of one entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Xattrs,
}

struct Applier<'a> {
    root: OwnedFd,
    opts: &'a ApplyOptions,
    resolve: ResolveFlags,
    is_root: bool,
    /// Paths this layer created, so an opaque marker late in the tar spares them
    /// (one entry per path of the layer, in [`WhiteoutMode::Apply`] only).
    added: BTreeSet<Vec<u8>>,
    /// Directory mtimes, set at the end.
    dir_times: Vec<(Vec<u8>, Timespec)>,
    buf: Vec<u8>,
    stats: ApplyStats,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// `/proc/self/fd/<dir>/<name>`: a path for xattr calls on `name` inside an already
/// resolved directory. The magic link is only ever an intermediate component.
fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    path
}

fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut path = parent.to_vec();
        path.push(b'/');
        path.extend_from_slice(name);
        path
    }
}

/// Removes `name` in `dir`, recursively if it is a directory; never follows symlinks.
fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rfs::unlinkat(dir, os(name), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let child = rfs::openat(
        dir,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for grandchild in list_dir(child.as_fd())? {
        remove_all(child.as_fd(), &grandchild)?;
    }
    rfs::unlinkat(dir, os(name), AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Names in a directory, without `.` and `..`.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    Ok(list_dir_typed(dir)?.into_iter().map(|(n, _)| n).collect())
}

/// The names in `dir` with the type each entry says it has (`Unknown` where the file
/// system does not say).
pub(crate) fn list_dir_typed(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut names = Vec::new();
    // Dir::read_from rejects O_PATH fds; a fresh readable fd of the same directory works.
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut reader = rfs::Dir::new(fd)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), entry.file_type()));
        }
    }
    Ok(names)
}

impl<'a> Applier<'a> {
    fn new(root: OwnedFd, opts: &'a ApplyOptions) -> Self {
        let scope = if opts.follow_symlinks_in_root {
            ResolveFlags::IN_ROOT
        } else {
            ResolveFlags::BENEATH
        };
        Self {
            root,
            opts,
            resolve: scope | ResolveFlags::NO_MAGICLINKS,
            is_root: rustix::process::geteuid().is_root(),
            added: BTreeSet::new(),
            dir_times: Vec::new(),
            buf: vec![0; COPY_BUF],
            stats: ApplyStats::default(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &Entry, data: &mut TarReader<R>) -> Result<(), LayerError> {
        let name = lossy(&entry.path);
        let parts = normalize(&entry.path).map_err(|e| match e {
            NameError::Escapes => LayerError::Escape {
                entry: name.clone(),
                reason: EscapeReason::ParentDir,
            },
            NameError::Invalid => LayerError::InvalidName {
                entry: name.clone(),
            },
        })?;
        let Some((last, parent)) = parts.split_last() else {
            // The root itself (`./`): its attributes belong to whoever owns the snapshot dir.
            return Ok(());
        };
        let last = last.to_vec();
        let parent = join(parent);
        let path = join(&parts);

        if last == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&name, &parent);
        }
        if last.starts_with(b".wh..wh.") {
            // AUFS bookkeeping (`.wh..wh.plnk`, …): never content.
            return Ok(());
        }
        if let Some(hidden) = last.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&name, &parent, hidden);
        }
        if entry.sparse {
            return Err(LayerError::UnsupportedType {
                entry: name,
                kind: 'S',
            });
        }

        let meta = self.meta(entry, &name)?;
        let dir = self.open_parent(&name, &parent)?;
        let dir = dir.as_fd();
        let apply = |op: &'static str| {
            let entry = name.clone();
            move |e: Errno| LayerError::Apply {
                entry,
                op,
                source: e.into(),
            }
        };
        match entry.kind {
            b'0' => {
                self.make_room(&name, dir, &last, false)?;
                let fd = rfs::openat(
                    dir,
                    os(&last),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(apply("create file"))?;
                let mut file = File::from(fd);
                self.copy(&name, data, &mut file)?;
                drop(file);
                self.set_attrs(&name, dir, &last, &path, &meta, FileType::RegularFile)?;
            }
            b'5' => {
                if self.opts.follow_symlinks_in_root && self.is_dir_link(dir, &last, &path) {
                    // As tar's --keep-directory-symlink: the entries below go through the
                    // link, and the directory it names keeps its own attributes. Replacing
                    // it would hide what it names (`COPY rootfs/ /` over a `/bin` that links
                    // to `/usr/bin`).
                    return Ok(());
                }
                if !self.make_room(&name, dir, &last, true)? {
                    rfs::mkdirat(dir, os(&last), Mode::from_raw_mode(0o700))
                        .map_err(apply("create directory"))?;
                }
                self.set_attrs(&name, dir, &last, &path, &meta, FileType::Directory)?;
            }
            b'2' => {
                self.make_room(&name, dir, &last, false)?;
                rfs::symlinkat(os(&entry.link), dir, os(&last)).map_err(apply("create symlink"))?;
                self.stats.symlink_bytes += entry.link.len() as u64;
                self.set_attrs(&name, dir, &last, &path, &meta, FileType::Symlink)?;
            }
            b'1' => {
                self.hardlink(&name, dir, &last, &path, &entry.link)?;
            }
            b'3' | b'4' | b'6' => {
                let file_type = match entry.kind {
                    b'3' => FileType::CharacterDevice,
                    b'4' => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rfs::makedev(entry.dev_major, entry.dev_minor);
                self.make_room(&name, dir, &last, false)?;
                match rfs::mknodat(dir, os(&last), file_type, Mode::from_raw_mode(0o600), dev) {
                    Ok(()) => {}
                    Err(Errno::PERM)
                        if file_type != FileType::Fifo
                            && self.opts.devices == DevicePolicy::SkipUnpermitted =>
                    {
                        self.stats.skipped_devices += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(apply("create device node")(e)),
                }
                self.set_attrs(&name, dir, &last, &path, &meta, file_type)?;
            }
            other => {
                return Err(LayerError::UnsupportedType {
                    entry: name,
                    kind: char::from(other),
                });
            }
        }
        self.mark_added(path);
        Ok(())
    }

    fn meta(&self, entry: &Entry, name: &str) -> Result<Meta, LayerError> {
        let range = || LayerError::Apply {
            entry: name.to_owned(),
            op: "read header",
            source: io::Error::new(io::ErrorKind::InvalidData, "uid or gid out of range"),
        };
        Ok(Meta {
            uid: u32::try_from(entry.uid).map_err(|_| range())?,
            gid: u32::try_from(entry.gid).map_err(|_| range())?,
            mode: entry.mode,
            mtime: entry.mtime,
            xattrs: entry
                .xattrs
                .iter()
                .filter(|(key, _)| self.keep_xattr(key))
                .cloned()
                .collect(),
        })
    }

    /// Remembers a path this layer created. Only merged-tree application needs the set
    /// (opaque markers and whiteouts consult it), so overlay snapshots skip the memory.
    fn mark_added(&mut self, path: Vec<u8>) {
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.added.insert(path);
        }
    }

    /// Overlay's own xattrs would steer the overlay mount this snapshot may become a layer
    /// of, so an archive never gets to set them; `trusted.*` needs root anyway.
    fn keep_xattr(&self, name: &[u8]) -> bool {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            return false;
        }
        self.is_root || !name.starts_with(b"trusted.")
    }

    /// Opens `path` (relative to the root) as an `O_PATH` directory fd, inside the root.
    fn resolve(&self, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        let path = if path.is_empty() {
            b".".as_slice()
        } else {
            path
        };
        rfs::openat2(
            &self.root,
            os(path),
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            self.resolve,
        )
    }

    /// Opens the parent directory of an entry, creating missing directories (0755, as docker).
    fn open_parent(&mut self, entry: &str, parent: &[u8]) -> Result<OwnedFd, LayerError> {
        match self.resolve(parent, OFlags::PATH) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(resolve_error(
                    entry,
                    e,
                    EscapeReason::Symlink,
                    "open parent directory",
                ));
            }
        }
        let parts: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
        let mut dir = self
            .resolve(b"", OFlags::PATH)
            .map_err(|e| resolve_error(entry, e, EscapeReason::Symlink, "open root"))?;
        for i in 0..parts.len() {
            let sub = join(&parts[..i + 1]);
            dir = match self.resolve(&sub, OFlags::PATH) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let fail = |op| {
                        move |e: Errno| LayerError::Apply {
                            entry: entry.to_owned(),
                            op,
                            source: e.into(),
                        }
                    };
                    match rfs::mkdirat(&dir, os(parts[i]), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(fail("create parent directory")(e)),
                    }
                    // mkdir honours the umask; docker's parents are 0755 regardless.
                    rfs::chmodat(
                        &dir,
                        os(parts[i]),
                        Mode::from_raw_mode(0o755),
                        AtFlags::empty(),
                    )
                    .map_err(fail("create parent directory"))?;
                    self.mark_added(sub.clone());
                    self.resolve(&sub, OFlags::PATH).map_err(|e| {
                        resolve_error(entry, e, EscapeReason::Symlink, "open parent directory")
                    })?
                }
                Err(e) => {
                    return Err(resolve_error(
                        entry,
                        e,
                        EscapeReason::Symlink,
                        "open parent directory",
                    ));
                }
            };
        }
        Ok(dir)
    }

    /// Whether `name` in `dir` (at `path` from the root) is a symlink that leads, inside the
    /// root, to a directory.
    fn is_dir_link(&self, dir: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> bool {
        rfs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
            && self.resolve(path, OFlags::PATH).is_ok()
    }

    /// Clears `name` for a new entry. Returns true when a directory is there and the new
    /// entry is a directory too (its attributes are replaced, its children kept).
    fn make_room(
        &mut self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        new_is_dir: bool,
    ) -> Result<bool, LayerError> {
        let fail = |source| LayerError::Apply {
            entry: entry.to_owned(),
            op: "replace existing path",
            source,
        };
        match rfs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(fail(e.into())),
            Ok(st) => {
                if new_is_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Ok(true);
                }
                remove_all(dir, name).map_err(fail)?;
                Ok(false)
            }
        }
    }

    fn copy<R: Read>(
        &mut self,
        entry: &str,
        from: &mut R,
        to: &mut File,
    ) -> Result<(), LayerError> {
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(LayerError::ReadArchive { source }),
            };
            to.write_all(&self.buf[..n])
                .map_err(|source| LayerError::Apply {
                    entry: entry.to_owned(),
                    op: "write file",
                    source,
                })?;
            self.stats.bytes += n as u64;
        }
    }

    fn set_attrs(
        &mut self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        meta: &Meta,
        file_type: FileType,
    ) -> Result<(), LayerError> {
        let fail = |op: &'static str| {
            move |e: Errno| LayerError::Apply {
                entry: entry.to_owned(),
                op,
                source: e.into(),
            }
        };
        if self.opts.chown {
            rfs::chownat(
                dir,
                os(name),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(fail("set owner"))?;
        }
        if file_type != FileType::Symlink {
            // After chown, which clears setuid/setgid. The name is ours (just created or
            // checked to be a directory), so following it cannot leave the root.
            rfs::chmodat(
                dir,
                os(name),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(fail("set mode"))?;
        }
        if !meta.xattrs.is_empty() {
            let target = proc_path(dir, name);
            for (key, value) in &meta.xattrs {
                // Linux refuses user.* on symlinks; docker drops them too.
                if file_type == FileType::Symlink && key.starts_with(b"user.") {
                    continue;
                }
                rfs::lsetxattr(os(&target), os(key), value, XattrFlags::empty())
                    .map_err(fail("set xattr"))?;
            }
        }
        if file_type == FileType::Directory {
            self.dir_times.push((path.to_vec(), meta.mtime));
        } else {
            let times = Timestamps {
                last_access: meta.mtime,
                last_modification: meta.mtime,
            };
            rfs::utimensat(dir, os(name), &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(fail("set mtime"))?;
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        target: &[u8],
    ) -> Result<(), LayerError> {
        let target_parts = normalize(target).map_err(|e| match e {
            NameError::Escapes => LayerError::Escape {
                entry: entry.to_owned(),
                reason: EscapeReason::HardlinkTarget,
            },
            NameError::Invalid => LayerError::InvalidName {
                entry: entry.to_owned(),
            },
        })?;
        let Some((target_name, target_parent)) = target_parts.split_last() else {
            return Err(LayerError::InvalidName {
                entry: entry.to_owned(),
            });
        };
        let target_path = join(&target_parts);
        if target_path == path {
            return Ok(());
        }
        let link_err = |source: io::Error| LayerError::HardlinkTarget {
            entry: entry.to_owned(),
            target: lossy(target),
            source,
        };
        let target_dir = self
            .resolve(&join(target_parent), OFlags::PATH)
            .map_err(|e| match e {
                Errno::XDEV => LayerError::Escape {
                    entry: entry.to_owned(),
                    reason: EscapeReason::HardlinkTargetSymlink,
                },
                e => link_err(e.into()),
            })?;
        // Refuse before clearing the destination, so a bad link destroys nothing.
        rfs::statat(&target_dir, os(target_name), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| link_err(e.into()))?;
        self.make_room(entry, dir, name, false)?;
        rfs::linkat(
            &target_dir,
            os(target_name),
            dir,
            os(name),
            AtFlags::empty(),
        )
        .map_err(|e| link_err(e.into()))?;
        self.mark_added(path.to_vec());
        Ok(())
    }

    fn whiteout(&mut self, entry: &str, parent: &[u8], hidden: &[u8]) -> Result<(), LayerError> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(LayerError::InvalidName {
                entry: entry.to_owned(),
            });
        }
        let path = child_path(parent, hidden);
        let fail = |op: &'static str| {
            move |source: io::Error| LayerError::Apply {
                entry: entry.to_owned(),
                op,
                source,
            }
        };
        match self.opts.whiteouts {
            WhiteoutMode::Apply => {
                let dir = match self.resolve(parent, OFlags::PATH) {
                    Ok(dir) => dir,
                    // Nothing there, nothing to hide.
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => {
                        return Err(resolve_error(
                            entry,
                            e,
                            EscapeReason::Symlink,
                            "open parent directory",
                        ));
                    }
                };
                // A whiteout hides lower layers only, never this layer's own entry.
                if !self.added.contains(&path) {
                    remove_all(dir.as_fd(), hidden).map_err(fail("remove whited-out path"))?;
                }
            }
            WhiteoutMode::Overlay => {
                let dir = self.open_parent(entry, parent)?;
                self.make_room(entry, dir.as_fd(), hidden, false)?;
                rfs::mknodat(
                    &dir,
                    os(hidden),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(|e| fail("create overlay whiteout")(e.into()))?;
                self.mark_added(path);
            }
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn opaque(&mut self, entry: &str, dir_path: &[u8]) -> Result<(), LayerError> {
        let fail = |op: &'static str| {
            move |source: io::Error| LayerError::Apply {
                entry: entry.to_owned(),
                op,
                source,
            }
        };
        match self.opts.whiteouts {
            WhiteoutMode::Apply => {
                let dir = match self.resolve(dir_path, OFlags::PATH) {
                    Ok(dir) => dir,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => {
                        return Err(resolve_error(
                            entry,
                            e,
                            EscapeReason::Symlink,
                            "open opaque directory",
                        ));
                    }
                };
                self.purge(dir.as_fd(), dir_path)
                    .map_err(fail("empty opaque directory"))?;
            }
            WhiteoutMode::Overlay => {
                // Make sure it exists (the marker may come without its dir entry).
                if !dir_path.is_empty() {
                    let (parent, name) = match dir_path.iter().rposition(|&b| b == b'/') {
                        Some(i) => (&dir_path[..i], &dir_path[i + 1..]),
                        None => (&b""[..], dir_path),
                    };
                    let parent_fd = self.open_parent(entry, parent)?;
                    if !self.make_room(entry, parent_fd.as_fd(), name, true)? {
                        rfs::mkdirat(&parent_fd, os(name), Mode::from_raw_mode(0o755))
                            .map_err(|e| fail("create opaque directory")(e.into()))?;
                    }
                }
                let dir = self.resolve(dir_path, OFlags::RDONLY).map_err(|e| {
                    resolve_error(entry, e, EscapeReason::Symlink, "open opaque directory")
                })?;
                rfs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                    .map_err(|e| fail("mark directory opaque")(e.into()))?;
            }
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Removes what lower layers left in `dir`, keeping this layer's entries (an opaque
    /// marker may come after them in the tar).
    fn purge(&self, dir: BorrowedFd<'_>, dir_path: &[u8]) -> io::Result<()> {
        for name in list_dir(dir)? {
            let path = child_path(dir_path, &name);
            let ours = self.added.contains(&path);
            let mut prefix = path.clone();
            prefix.push(b'/');
            let has_ours_below = self
                .added
                .range(prefix.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&prefix));
            if !ours && !has_ours_below {
                remove_all(dir, &name)?;
                continue;
            }
            let st = rfs::statat(dir, os(&name), AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let child = rfs::openat(
                    dir,
                    os(&name),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.purge(child.as_fd(), &path)?;
            }
        }
        Ok(())
    }

    fn set_dir_times(&mut self) -> Result<(), LayerError> {
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], path.as_slice()),
            };
            let entry = lossy(&path);
            // A later whiteout may have removed it.
            let Ok(dir) = self.resolve(parent, OFlags::PATH) else {
                continue;
            };
            match rfs::statat(&dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                _ => continue,
            }
            let times = Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            rfs::utimensat(&dir, os(name), &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                LayerError::Apply {
                    entry,
                    op: "set directory mtime",
                    source: e.into(),
                }
            })?;
        }
        Ok(())
    }
}

fn resolve_error(entry: &str, e: Errno, reason: EscapeReason, op: &'static str) -> LayerError {
    match e {
        // RESOLVE_BENEATH / RESOLVE_IN_ROOT answer EXDEV when the walk would leave the root.
        Errno::XDEV => LayerError::Escape {
            entry: entry.to_owned(),
            reason,
        },
        e => LayerError::Apply {
            entry: entry.to_owned(),
            op,
            source: e.into(),
        },
    }
}
