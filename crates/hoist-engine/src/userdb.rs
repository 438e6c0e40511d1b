//! `--chown` and WORKDIR ownership: names are looked up in the destination root's own
//! /etc/passwd and /etc/group, read through in-root path resolution so a hostile symlink in the
//! image cannot point the lookup at the host's files.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// A numeric owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Reads `path` (absolute inside the image) from `root`, resolving symlinks inside it.
pub(crate) fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn lookup(text: Option<&str>, name: &str) -> Option<Vec<String>> {
    text?
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name))
}

/// Resolves `user[:group]` as BuildKit's COPY does: a name takes its uid and primary gid from
/// passwd (unknown names are 0), a number sets both, an explicit group overrides the gid.
pub(crate) fn resolve_chown(root: &Path, spec: &str) -> Owner {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut owner = Owner::default();
    if let Ok(id) = user.parse::<u32>() {
        owner = Owner { uid: id, gid: id };
    } else if !user.is_empty() {
        let passwd = read_in_root(root, "/etc/passwd");
        if let Some(f) = lookup(passwd.as_deref(), user) {
            owner.uid = f.get(2).and_then(|x| x.parse().ok()).unwrap_or(0);
            owner.gid = f.get(3).and_then(|x| x.parse().ok()).unwrap_or(0);
        }
    }
    if let Some(group) = group {
        if let Ok(id) = group.parse::<u32>() {
            owner.gid = id;
        } else {
            let groups = read_in_root(root, "/etc/group");
            if let Some(f) = lookup(groups.as_deref(), group) {
                owner.gid = f.get(2).and_then(|x| x.parse().ok()).unwrap_or(0);
            }
        }
    }
    owner
}
