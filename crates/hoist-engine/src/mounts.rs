//! Overlay mounts of layer stacks, for the file operations the engine does itself (COPY, ADD,
//! WORKDIR). They live in the host's mount namespace under the store's `tmp/`, and are unmounted
//! when the guard drops; a crash leaves a mount that the store's sweep cannot remove, which is why
//! every mount point is named `mnt-*` (findable) and detached lazily.

use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::BuildError;

/// A mounted overlay; unmounted on drop.
pub(crate) struct OverlayMount {
    target: PathBuf,
    /// The mount point's directory; `None` for a read-only view of at most one layer, which is
    /// that layer's (or an empty) directory itself.
    dir: Option<tempfile::TempDir>,
}

impl OverlayMount {
    /// Mounts `lowerdirs` (topmost first) with an optional writable `upper`/`work` pair at a
    /// fresh directory under `tmp`. Without `upper` the view is read-only.
    pub(crate) fn new(
        tmp: &Path,
        lowerdirs: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        empty: &Path,
    ) -> Result<Self, BuildError> {
        if upper.is_none() && lowerdirs.len() <= 1 {
            let target = lowerdirs.first().map_or(empty, PathBuf::as_path).to_owned();
            return Ok(Self { target, dir: None });
        }
        let dir = tempfile::Builder::new()
            .prefix("mnt-")
            .tempdir_in(tmp)
            .map_err(|e| BuildError::io("creating a mount point in", tmp, e))?;
        let target = dir.path().join("m");
        std::fs::create_dir(&target).map_err(|e| BuildError::io("creating", &target, e))?;
        // overlayfs wants at least two lower layers without an upper one, and at least one with:
        // an empty directory at the bottom satisfies both and changes nothing.
        let mut lowers: Vec<String> = lowerdirs.iter().map(|p| escape(p)).collect();
        lowers.push(escape(empty));
        let mut data = format!("lowerdir={}", lowers.join(":"));
        if let Some((upper, work)) = upper {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                escape(upper),
                escape(work)
            ));
        }
        let flags = if upper.is_some() {
            MountFlags::empty()
        } else {
            MountFlags::RDONLY
        };
        let cstr = |data: String| {
            std::ffi::CString::new(data)
                .map_err(|_| BuildError::Invalid("a layer path holds a NUL byte".into()))
        };
        // Without `volatile`, unmounting syncs the whole filesystem under `upper` (every dirty
        // page on the disk); the upper dir is scratch until the store commits it. Linux before
        // 5.10 does not know the option.
        let volatile = upper.is_some().then(|| cstr(format!("{data},volatile")));
        let data = cstr(data)?;
        let mounted = match volatile.transpose()? {
            Some(v) => match mount("overlay", &target, "overlay", flags, v.as_c_str()) {
                Err(rustix::io::Errno::INVAL) => {
                    mount("overlay", &target, "overlay", flags, data.as_c_str())
                }
                done => done,
            },
            None => mount("overlay", &target, "overlay", flags, data.as_c_str()),
        };
        mounted.map_err(|e| BuildError::Mount {
            target: target.clone(),
            layers: lowerdirs.len(),
            source: e.into(),
        })?;
        Ok(Self {
            target,
            dir: Some(dir),
        })
    }

    /// The merged view.
    pub(crate) fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.dir.is_none() {
            return;
        }
        // Nothing can hold the mount busy once the engine's file operations are done; DETACH
        // covers an fd still being closed on another thread.
        let _ = unmount(&self.target, UnmountFlags::DETACH);
    }
}

/// overlayfs option values escape `,` `:` and `\`.
fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options /proc/self/mounts shows for the mount at `target`.
    fn options_of(target: &Path) -> Option<String> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let target = target.to_str()?;
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(1) == Some(&target)).then(|| f.get(3).map(|o| (*o).to_owned()))?
        })
    }

    // Needs root, as every mount test (CI runs as root).
    #[test]
    fn a_writable_overlay_is_volatile_and_a_view_is_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["lower", "upper", "work", "empty"]
            .iter()
            .map(|d| tmp.path().join(d))
            .collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let (lower, upper, work, empty) = (&dirs[0], &dirs[1], &dirs[2], &dirs[3]);
        std::fs::write(lower.join("f"), "x").unwrap();

        let rw = OverlayMount::new(
            tmp.path(),
            std::slice::from_ref(lower),
            Some((upper, work)),
            empty,
        )
        .unwrap();
        let opts = options_of(rw.path()).expect("the overlay is mounted");
        assert!(
            opts.split(',')
                .any(|o| matches!(o, "volatile" | "fsync=volatile")),
            "{opts}"
        );
        std::fs::write(rw.path().join("g"), "y").unwrap();
        let target = rw.path().to_owned();
        drop(rw);
        assert_eq!(options_of(&target), None, "unmounted on drop");
        assert_eq!(std::fs::read_to_string(upper.join("g")).unwrap(), "y");

        let ro =
            OverlayMount::new(tmp.path(), &[upper.clone(), lower.clone()], None, empty).unwrap();
        let opts = options_of(ro.path()).expect("the view is mounted");
        assert!(opts.starts_with("ro,"), "{opts}");
        assert_eq!(std::fs::read_to_string(ro.path().join("f")).unwrap(), "x");
    }
}
