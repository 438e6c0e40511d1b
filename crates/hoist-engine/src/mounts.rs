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
        let data = std::ffi::CString::new(data)
            .map_err(|_| BuildError::Invalid("a layer path holds a NUL byte".into()))?;
        mount("overlay", &target, "overlay", flags, data.as_c_str()).map_err(|e| {
            BuildError::Mount {
                target: target.clone(),
                layers: lowerdirs.len(),
                source: e.into(),
            }
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
