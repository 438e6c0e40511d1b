//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Why an entry was judged to leave the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeReason {
    /// The name climbs above the root with `..`.
    ParentDir,
    /// A path component is a symlink leading out of the root (absolute or `..`).
    Symlink,
    /// A hardlink's target climbs above the root with `..`.
    HardlinkTarget,
    /// A hardlink's target path goes through a symlink leading out of the root.
    HardlinkTargetSymlink,
}

impl std::fmt::Display for EscapeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ParentDir => "its name climbs out of the root with `..`",
            Self::Symlink => "its path goes through a symlink that points outside the root",
            Self::HardlinkTarget => "its hardlink target climbs out of the root with `..`",
            Self::HardlinkTargetSymlink => {
                "its hardlink target goes through a symlink that points outside the root"
            }
        })
    }
}

/// What went wrong while applying or writing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The root directory itself could not be opened.
    #[error("failed to open layer root {path}")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The tar stream is unreadable or malformed.
    #[error("failed to read the layer archive")]
    ReadArchive {
        #[source]
        source: io::Error,
    },
    /// A hostile entry: applying it would touch something outside the root.
    #[error("layer entry {entry:?} escapes the root: {reason}")]
    Escape { entry: String, reason: EscapeReason },
    /// A name that is not a usable path (empty whiteout, NUL, …).
    #[error("layer entry {entry:?} has an invalid name")]
    InvalidName { entry: String },
    /// A tar entry type we do not extract.
    #[error("layer entry {entry:?} has unsupported tar type {kind:?}")]
    UnsupportedType { entry: String, kind: char },
    /// A hardlink whose target is not in the root.
    #[error("hardlink {entry:?} points at {target:?}, which cannot be linked")]
    HardlinkTarget {
        entry: String,
        target: String,
        #[source]
        source: io::Error,
    },
    /// A filesystem step on one entry failed.
    #[error("failed to {op} for layer entry {entry:?}")]
    Apply {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A filesystem step failed while walking a tree to archive it.
    #[error("failed to {op} {path:?} while writing a layer")]
    Walk {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file in the tree uses the reserved `.wh.` prefix and would read back as a whiteout.
    #[error("{path:?} uses the reserved whiteout prefix `.wh.`")]
    ReservedName { path: String },
    /// An overlay feature whose diff is not in the upper dir (redirect_dir, metacopy).
    #[error("{path:?} carries overlay xattr {xattr}, which layer diffs do not support")]
    OverlayFeature { path: String, xattr: String },
    /// A file shrank while it was being archived; the tar would be corrupt.
    #[error("{path:?} changed while being archived: expected {expected} bytes, read {actual}")]
    FileChanged {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// A file was replaced by another while being archived.
    #[error("{path:?} was replaced while being archived")]
    Replaced { path: String },
    /// The writer of a tree digested as it was written gave it up (see
    /// [`crate::digest_layer_gated`]).
    #[error("the tree being digested was given up by its writer")]
    Abandoned,
    /// Writing the tar stream failed.
    #[error("failed to write the layer archive")]
    WriteArchive {
        #[source]
        source: io::Error,
    },
}

/// Why stored [`crate::Checkpoints`] bytes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Shorter than their own layout says.
    #[error("layer checkpoints are truncated")]
    Truncated,
    /// Not checkpoint data at all.
    #[error("not layer checkpoint data")]
    Magic,
    /// Written by a hoist with another encoding.
    #[error("layer checkpoints have version {0}, this hoist reads version 1")]
    Version(u8),
    /// Corrupted.
    #[error("layer checkpoints fail their checksum")]
    Checksum,
    /// Well-formed bytes that do not describe a possible layer.
    #[error("layer checkpoints are inconsistent: {0}")]
    Invalid(&'static str),
}
