//! Moves filesystem trees in and out of layer tars: apply a layer to a directory, diff a snapshot
//! into a deterministic tar, compress, and hash while streaming.
//!
//! Why a crate of its own: layer tars are the one untrusted input that turns into files on disk,
//! so every path they name is resolved inside the target root with `openat2`
//! (`RESOLVE_BENEATH`), never with `Path::join`. Escapes are refused with
//! [`LayerError::Escape`]. The writing side is the mirror image: an overlay upper dir becomes
//! the same bytes for the same tree, so the diff_id is stable and cache keys hold.
//!
//! Everything streams: no layer and no file is held in memory, copies use fixed buffers.
//! Tar is parsed by our own small reader (`reader.rs`) that reads headers exactly as Go's
//! `archive/tar` does, so hoist never sees a different file list than docker for the same
//! bytes; the tar crate only formats headers on the writing side.
//!
//! - [`apply_layer`]: tar → directory, in one of two [`WhiteoutMode`]s (a merged rootfs, or an
//!   overlay lowerdir snapshot).
//! - [`write_layer`] / [`write_tree`]: directory → deterministic tar, returning the diff_id.
//! - [`digest_layer`]: the same diff_id without the tar, resumable from the [`Checkpoints`] of
//!   an earlier version of the tree so a rebuilt layer re-hashes only what follows the change.
//! - [`decompress`], [`Compression`], [`compress_gzip`], [`compress_zstd`]: the codecs.
//! - [`HashingReader`] / [`HashingWriter`]: sha256 and byte count of whatever streams through.

mod apply;
mod checkpoint;
mod compression;
#[cfg(test)]
mod digest_tests;
mod error;
mod hashing;
mod names;
mod reader;
mod write;

pub use apply::{ApplyOptions, ApplyStats, DevicePolicy, WhiteoutMode, apply_layer};
pub use checkpoint::Checkpoints;
pub use compression::{
    Compression, Encoder, Sniffed, compress, compress_gzip, compress_zstd, decompress, sniff,
};
pub use error::{CheckpointError, EscapeReason, LayerError};
pub use hashing::{HashingReader, HashingWriter};
pub use write::{
    Gate, LayerSummary, WriteOptions, digest_layer, digest_layer_gated, write_layer, write_tree,
};

/// The name of an opaque-directory marker inside a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The prefix that marks a whiteout (`.wh.<name>` deletes `<name>`).
pub const WHITEOUT_PREFIX: &str = ".wh.";
