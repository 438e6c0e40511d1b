//! Pid 1's filesystem work: the root mount, pivot_root, /proc /dev /sys, the generated /etc files,
//! the spec's mounts, and removing the mount stubs again after the run.
//!
//! Everything after `pivot_root` uses absolute paths inside the new root, so a symlink in the
//! image (`/etc -> /somewhere`) resolves inside the sandbox, never on the host. Sources from the
//! host (bind sources, the generated files) are captured as detached mounts (`open_tree`) before
//! the pivot.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode, Timestamps};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::error::{Errno, SandboxError};
use crate::spec::{Mount, Rootfs, RunSpec};

type Result<T> = std::result::Result<T, SandboxError>;

/// Generated files in the state directory, bind-mounted read-only (as BuildKit does).
pub(crate) const GENERATED: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

fn mount_err<T: AsRef<Path>>(
    what: &str,
    target: T,
) -> impl FnOnce(rustix::io::Errno) -> SandboxError + use<T> {
    let (what, target) = (what.to_owned(), target.as_ref().display().to_string());
    move |e| SandboxError::Mount {
        what,
        target,
        errno: e.into(),
    }
}

fn create_err<T: AsRef<Path>>(path: T) -> impl FnOnce(std::io::Error) -> SandboxError + use<T> {
    let path = path.as_ref().display().to_string();
    move |e| SandboxError::Create {
        path,
        errno: Errno::from(&e),
    }
}

/// What pid 1 must undo after the command: mounts over stubs, then the stubs themselves.
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    /// Mount targets to detach before removing stubs, in mount order.
    mounted: Vec<PathBuf>,
    /// Paths created only to be mount points, in creation order (parents first).
    created: Vec<PathBuf>,
}

/// A mount captured before pivot_root, attached after it.
enum Pending {
    Tree {
        fd: OwnedFd,
        target: String,
        is_dir: bool,
        readonly: bool,
        what: String,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// Mount the root, capture host sources, pivot into it and populate it. Returns the stubs to
/// remove after the run.
pub(crate) fn setup(spec: &RunSpec, state: &Path) -> Result<Stubs> {
    // Nothing we mount may propagate back to the host.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(mount_err("private propagation", "/"))?;

    let merged = state.join("rootfs");
    mount_root(&spec.rootfs, state, &merged)?;

    let mut pending = Vec::new();
    for (name, target) in GENERATED
        .iter()
        .zip(["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"])
    {
        pending.push(capture(&state.join(name), target, true, false)?);
    }
    for m in &spec.mounts {
        pending.push(match m {
            Mount::Bind {
                source,
                target,
                readonly,
            } => capture(source, target, *readonly, true)?,
            Mount::Tmpfs { target, size } => Pending::Tmpfs {
                target: target.clone(),
                size: *size,
            },
        });
    }

    pivot(&merged)?;
    mount_system()?;

    let mut stubs = Stubs::default();
    for p in pending {
        attach(p, &mut stubs)?;
    }
    Ok(stubs)
}

fn mount_root(rootfs: &Rootfs, state: &Path, merged: &Path) -> Result<()> {
    match rootfs {
        Rootfs::Dir(dir) => rustix::mount::mount_bind_recursive(dir, merged).map_err(mount_err(
            &format!("the root directory {}", dir.display()),
            merged,
        )),
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        } => {
            let what = "the overlay root";
            let err = |step: &str| {
                let what = format!("{what} ({step})");
                mount_err(&what, merged)
            };
            clear_volatile_marker(workdir)?;
            // The new mount API takes each lower dir separately ("lowerdir+", Linux 6.8), so
            // many layers never hit mount(2)'s one-page option limit.
            let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
                .map_err(err("fsopen"))?;
            let empty = state.join("empty");
            let lowers: Vec<&Path> = if lowerdirs.is_empty() {
                // overlayfs needs a lower layer; an empty one stands for `FROM scratch`.
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&empty)
                    .map_err(create_err(&empty))?;
                vec![&empty]
            } else {
                lowerdirs.iter().map(PathBuf::as_path).collect()
            };
            for (i, lower) in lowers.iter().copied().enumerate() {
                match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower) {
                    Ok(()) => {}
                    // Before Linux 6.8 "lowerdir+" is unknown: use mount(2) instead.
                    Err(rustix::io::Errno::INVAL) if i == 0 => {
                        return mount_overlay_legacy(&lowers, upperdir, workdir, merged);
                    }
                    Err(e) => return Err(err(&format!("lowerdir+ {}", lower.display()))(e)),
                }
            }
            rustix::mount::fsconfig_set_string(&fs, "upperdir", upperdir)
                .map_err(err(&format!("upperdir {}", upperdir.display())))?;
            rustix::mount::fsconfig_set_string(&fs, "workdir", workdir)
                .map_err(err(&format!("workdir {}", workdir.display())))?;
            // Layers are diffs of the upper dir: keep it plain (no redirect or metacopy xattrs).
            rustix::mount::fsconfig_set_string(&fs, "redirect_dir", "off")
                .map_err(err("redirect_dir=off"))?;
            rustix::mount::fsconfig_set_string(&fs, "metacopy", "off")
                .map_err(err("metacopy=off"))?;
            // Without it, the overlay's teardown syncs the whole upper filesystem: every dirty
            // page on the disk, such as the files a COPY just wrote, is written back before the
            // step can end. The upper dir is scratch until the store commits it, and the store
            // makes what it keeps durable itself.
            rustix::mount::fsconfig_set_flag(&fs, "volatile").map_err(err("volatile"))?;
            rustix::mount::fsconfig_create(&fs).map_err(err("create"))?;
            let mnt =
                rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
                    .map_err(err("fsmount"))?;
            rustix::mount::move_mount(
                &mnt,
                "",
                CWD,
                merged,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(err("move_mount"))
        }
    }
}

/// A volatile overlay leaves `work/incompat/volatile` in its work dir, and overlayfs refuses
/// to mount over that again: it cannot know whether the machine crashed before the upper dir
/// was synced. Only a sandbox that ended in this boot can have left it (the store sweeps its
/// scratch directories after a crash), so a later sandbox on the same pair removes it.
fn clear_volatile_marker(workdir: &Path) -> Result<()> {
    let incompat = workdir.join("work").join("incompat");
    let volatile = incompat.join("volatile");
    let dirty = volatile.join("dirty");
    // `dirty` is a file, the rest directories.
    for (path, is_dir) in [(&dirty, false), (&volatile, true), (&incompat, true)] {
        let removed = if is_dir {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(SandboxError::Mount {
                    what: format!("removing {}", path.display()),
                    target: workdir.display().to_string(),
                    errno: Errno::from(&e),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// mount(2) takes all options in one page. Paths relative to their common parent (we chdir
/// there) keep the string short for many layers under one store directory.
fn mount_overlay_legacy(lowers: &[&Path], upper: &Path, work: &Path, merged: &Path) -> Result<()> {
    let what = "the overlay root (mount(2))";
    let all: Vec<&Path> = lowers.iter().copied().chain([upper, work]).collect();
    let mut common = all[0].parent().unwrap_or(Path::new("/")).to_path_buf();
    while !all.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    // overlayfs splits options on ',' and lower dirs on ':'; a backslash escapes either.
    let rel = |p: &Path| {
        let r = p
            .strip_prefix(&common)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned();
        let r = if r.is_empty() { ".".to_owned() } else { r };
        r.replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(':', "\\:")
    };
    let lower: Vec<String> = lowers.iter().map(|p| rel(p)).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off",
        lower.join(":"),
        rel(upper),
        rel(work)
    );
    if data.len() >= 4096 {
        return Err(SandboxError::Mount {
            what: format!("{what} with {} layers", lowers.len()),
            target: merged.display().to_string(),
            errno: Errno(libc::E2BIG),
        });
    }
    let cstr = |data: String| {
        std::ffi::CString::new(data).map_err(|_| SandboxError::Mount {
            what: what.to_owned(),
            target: merged.display().to_string(),
            errno: Errno(libc::EINVAL),
        })
    };
    // `volatile` as with the new API (see `mount_root`); Linux before 5.10 does not know it.
    let volatile = cstr(format!("{data},volatile"))?;
    let data = cstr(data)?;
    rustix::process::chdir(&common).map_err(mount_err(what, merged))?;
    let mount = |data: &std::ffi::CStr| {
        rustix::mount::mount("overlay", merged, "overlay", MountFlags::empty(), data)
    };
    let mounted = match mount(&volatile) {
        Err(rustix::io::Errno::INVAL) => mount(&data),
        done => done,
    };
    rustix::process::chdir("/").map_err(mount_err(what, merged))?;
    mounted.map_err(mount_err(what, merged))
}

fn capture(source: &Path, target: &str, readonly: bool, recursive: bool) -> Result<Pending> {
    let what = format!("bind of {}", source.display());
    let meta = fs::metadata(source).map_err(|e| SandboxError::Mount {
        what: what.clone(),
        target: target.to_owned(),
        errno: Errno::from(&e),
    })?;
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let fd = rustix::mount::open_tree(CWD, source, flags).map_err(mount_err(&what, target))?;
    Ok(Pending::Tree {
        fd,
        target: target.to_owned(),
        is_dir: meta.is_dir(),
        readonly,
        what,
    })
}

fn pivot(merged: &Path) -> Result<()> {
    let err = |e: rustix::io::Errno| SandboxError::PivotRoot {
        path: merged.display().to_string(),
        errno: e.into(),
    };
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
    // the new root, with no directory needed for the old one.
    rustix::process::chdir(merged).map_err(err)?;
    rustix::process::pivot_root(".", ".").map_err(err)?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(err)?;
    rustix::process::chdir("/").map_err(err)
}

fn mount_fs(fstype: &str, target: &str, flags: MountFlags, data: &str) -> Result<()> {
    ensure_dir(target)?;
    let data = std::ffi::CString::new(data).map_err(|_| SandboxError::Mount {
        what: fstype.to_owned(),
        target: target.to_owned(),
        errno: Errno(libc::EINVAL),
    })?;
    rustix::mount::mount(fstype, target, fstype, flags, data.as_c_str())
        .map_err(mount_err(fstype, target))
}

/// /proc, a minimal /dev and a read-only /sys, as runc sets them up for docker. A missing
/// /proc, /dev or /sys directory is created and stays in the layer, as with BuildKit.
fn mount_system() -> Result<()> {
    let nse = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount_fs("proc", "/proc", nse, "")?;
    mount_fs(
        "tmpfs",
        "/dev",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
    )?;
    // Devices are made with mknod rather than bound from the host: we are real root.
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = format!("/dev/{name}");
        rustix::fs::mknodat(
            CWD,
            &*path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| SandboxError::Create {
            path,
            errno: e.into(),
        })?;
    }
    mount_fs(
        "devpts",
        "/dev/pts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    mount_fs("tmpfs", "/dev/shm", nse, "mode=1777,size=65536k")?;
    mount_fs("mqueue", "/dev/mqueue", nse, "")?;
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(to, link).map_err(create_err(link))?;
    }
    // A fresh sysfs shows the sandbox's own network namespace in /sys/class/net.
    mount_fs("sysfs", "/sys", nse | MountFlags::RDONLY, "")
}

fn ensure_dir(path: &str) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SandboxError::Target {
            what: "a filesystem".to_owned(),
            target: path.to_owned(),
            problem: "not a directory".to_owned(),
        }),
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(create_err(path)),
    }
}

fn attach(p: Pending, stubs: &mut Stubs) -> Result<()> {
    match p {
        Pending::Tree {
            fd,
            target,
            is_dir,
            readonly,
            what,
        } => {
            let path = ensure_target(&target, is_dir, &mut stubs.created, &what)?;
            rustix::mount::move_mount(&fd, "", CWD, &path, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
                .map_err(mount_err(&what, &target))?;
            stubs.mounted.push(path.clone());
            if readonly {
                rustix::mount::mount_remount(&path, MountFlags::BIND | MountFlags::RDONLY, "")
                    .map_err(mount_err(&format!("{what} (read-only)"), &target))?;
            }
        }
        Pending::Tmpfs { target, size } => {
            let what = "tmpfs".to_owned();
            let path = ensure_target(&target, true, &mut stubs.created, &what)?;
            let mut data = "mode=1777".to_owned();
            if let Some(size) = size {
                data.push_str(&format!(",size={size}"));
            }
            let data = std::ffi::CString::new(data).expect("no NUL in a formatted number");
            rustix::mount::mount(
                "tmpfs",
                &path,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                data.as_c_str(),
            )
            .map_err(mount_err(&what, &target))?;
            stubs.mounted.push(path);
        }
    }
    Ok(())
}

/// Resolve `target` inside the (already pivoted) root, following symlinks ourselves so a dangling
/// link is created at its destination, and create whatever is missing: directories, then a
/// directory or an empty file for the last component. Newly created paths are appended to
/// `created`. Returns the resolved path.
fn ensure_target(
    target: &str,
    is_dir: bool,
    created: &mut Vec<PathBuf>,
    what: &str,
) -> Result<PathBuf> {
    resolve_create(target, created, |path, last| {
        if last && !is_dir {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)
                .map(drop)
        } else {
            fs::DirBuilder::new().mode(0o755).create(path)
        }
    })
    .and_then(|path| {
        let meta = fs::metadata(&path).map_err(create_err(&path))?;
        if meta.is_dir() != is_dir {
            return Err(SandboxError::Target {
                what: what.to_owned(),
                target: target.to_owned(),
                problem: if is_dir {
                    "not a directory".to_owned()
                } else {
                    "is a directory".to_owned()
                },
            });
        }
        Ok(path)
    })
}

/// Walks `target` component by component from `/`, expanding symlinks (at most 40, like the
/// kernel), calling `create(path, is_last)` for each missing component.
pub(crate) fn resolve_create(
    target: &str,
    created: &mut Vec<PathBuf>,
    mut create: impl FnMut(&Path, bool) -> std::io::Result<()>,
) -> Result<PathBuf> {
    let mut todo: Vec<String> = components(target).into_iter().rev().collect();
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                let dest = fs::read_link(&next).map_err(create_err(&next))?;
                if links > 40 {
                    return Err(SandboxError::Create {
                        path: target.to_owned(),
                        errno: Errno(libc::ELOOP),
                    });
                }
                if dest.is_absolute() {
                    cur = PathBuf::from("/");
                }
                todo.extend(components(&dest.to_string_lossy()).into_iter().rev());
            }
            Ok(_) => cur = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create(&next, todo.is_empty()).map_err(create_err(&next))?;
                created.push(next.clone());
                cur = next;
            }
            Err(e) => return Err(create_err(&next)(e)),
        }
    }
    Ok(cur)
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect()
}

/// Create the working directory if missing: 0755, owned by the command's user (BuildKit's
/// `MkdirAllAndChown` with the user's uid/gid). It is a legitimate change and stays in the layer.
pub(crate) fn create_cwd(cwd: &str, uid: u32, gid: u32) -> Result<()> {
    let mut created = Vec::new();
    resolve_create(cwd, &mut created, |path, _| {
        fs::DirBuilder::new().mode(0o755).create(path)?;
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)
    })?;
    Ok(())
}

/// Detach the mounts, then remove each stub that is still an empty file or an empty directory
/// (deepest first), keeping its parent's timestamps, as BuildKit's `MountStubsCleaner` does.
pub(crate) fn remove_stubs(stubs: &Stubs) -> Result<()> {
    for target in stubs.mounted.iter().rev() {
        rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| {
            SandboxError::Unmount {
                target: target.display().to_string(),
                errno: e.into(),
            }
        })?;
    }
    for path in stubs.created.iter().rev() {
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        let unused = if meta.is_dir() {
            fs::read_dir(path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        } else {
            meta.is_file() && meta.len() == 0
        };
        if !unused {
            continue;
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        let parent_times = fs::metadata(parent).ok();
        let removed = if meta.is_dir() {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        };
        removed.map_err(|e| SandboxError::RemoveStub {
            path: path.display().to_string(),
            errno: Errno::from(&e),
        })?;
        if let Some(m) = parent_times {
            let ts = |sec: i64, nsec: i64| rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            };
            let times = Timestamps {
                last_access: ts(m.atime(), m.atime_nsec()),
                last_modification: ts(m.mtime(), m.mtime_nsec()),
            };
            // Best effort: a timestamp is not worth failing the step for.
            let _ =
                rustix::fs::utimensat(CWD, parent, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        }
    }
    Ok(())
}
