//! Resumable layer digests: checkpoints of the tar hash, and the output side of the tar writer
//! that uses them.
//!
//! A rebuilt COPY layer is mostly the previous layer's tree, hard-linked, so its tar starts
//! with a long prefix that is byte for byte the previous layer's. [`digest_layer`] records, at
//! entry boundaries every few MiB, the sha256 state of the tar so far together with a
//! *fingerprint* of everything that determined those bytes; a later digest that finds the same
//! fingerprint at the same entry restores the sha256 state there instead of re-reading the
//! prefix. Finding it needs only metadata (stat, xattrs, link targets), no file contents.
//!
//! The fingerprint is a chain over the checkpoints: the value at a checkpoint is the sha256 of
//! the previous checkpoint's value followed by every header byte written since (PAX headers,
//! ustar headers, padding) and, in place of each regular file's content, its identity
//! `(st_dev, st_ino, size, mtime)`. Header bytes carry names, modes, owners, times, link
//! targets and xattrs, so equal fingerprints mean equal tar bytes as long as an identity stands
//! for one content. It does because:
//!
//! - snapshots are immutable: nothing writes into a committed snapshot's files;
//! - an incremental rebuild hard-links unchanged files from the previous snapshot (same inode)
//!   and writes changed files as new inodes;
//! - the previous snapshot is alive while its checkpoints are used (the store checks), so the
//!   inode numbers it holds cannot have been reused for other content.
//!
//! The mtime (with nanoseconds) is not needed by that argument; it is there so that a file
//! written in place by mistake, which breaks immutability, still most likely misses.
//!
//! [`digest_layer`]: crate::digest_layer

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

use crate::error::{CheckpointError, LayerError};
use crate::write::{Fill, copy_exact};

/// Tar bytes between checkpoints: a resume re-hashes at most this much of the unchanged
/// prefix (a few ms), and a 340 MB layer keeps fewer than a hundred points of ~160 bytes.
/// It also bounds the log a resuming walk keeps (see [`DigestSink`]).
pub(crate) const INTERVAL: u64 = 4 << 20;

const MAGIC: &[u8; 4] = b"HCKP";
/// Bump when the encoding, the fingerprint or sha2's serialized state changes.
const VERSION: u8 = 1;
const FP_LEN: usize = 32;
const SUM_LEN: usize = 32;
/// magic, version, interval, state length, count.
const HEAD_LEN: usize = 4 + 1 + 8 + 2 + 4;
const BLOCK: u64 = 512;

fn state_len() -> usize {
    Sha256::new().serialize().len()
}

/// One resumable point of a layer's tar: at the start of entry `entry`, `offset` bytes in.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Tar members (PAX headers not counted) before this point.
    pub(crate) entry: u64,
    /// Tar bytes before this point; a multiple of 512.
    pub(crate) offset: u64,
    /// [`crate::LayerSummary::content_bytes`] so far.
    pub(crate) content_bytes: u64,
    /// The fingerprint chain's value here (see the module docs).
    pub(crate) fp: [u8; FP_LEN],
    /// sha2's serialized sha256 state of the tar bytes before this point.
    pub(crate) state: Vec<u8>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("entry", &self.entry)
            .field("offset", &self.offset)
            .field("content_bytes", &self.content_bytes)
            .field("fp", &hex::encode(self.fp))
            .finish_non_exhaustive()
    }
}

/// Where a layer's tar hash can be resumed: produced by [`crate::digest_layer`] and given back
/// to it for the next version of the same tree. Store it with [`Checkpoints::to_bytes`].
///
/// Only valid while the snapshot it was made from exists unchanged (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints {
    interval: u64,
    points: Vec<Checkpoint>,
}

impl Checkpoints {
    pub(crate) fn new(interval: u64, points: Vec<Checkpoint>) -> Self {
        Self { interval, points }
    }

    /// How many points there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there is none (a layer smaller than the interval).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// A versioned, checksummed encoding, for [`Checkpoints::from_bytes`].
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let state_len = state_len();
        let mut out =
            Vec::with_capacity(HEAD_LEN + self.points.len() * (24 + FP_LEN + state_len) + SUM_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.interval.to_le_bytes());
        // Both fit: the state is ~100 bytes, and a layer has one point per INTERVAL.
        out.extend_from_slice(&u16::try_from(state_len).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.points.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for p in &self.points {
            out.extend_from_slice(&p.entry.to_le_bytes());
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.extend_from_slice(&p.content_bytes.to_le_bytes());
            out.extend_from_slice(&p.fp);
            out.extend_from_slice(&p.state);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Decodes [`Checkpoints::to_bytes`]' output. Anything else — truncated, corrupted, from
    /// another version — is an error, never a panic: a wrong hash state would give a wrong
    /// diff_id, so the bytes are checksummed and every point is checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        if bytes.len() < HEAD_LEN + SUM_LEN {
            return Err(CheckpointError::Truncated);
        }
        if &bytes[..4] != MAGIC {
            return Err(CheckpointError::Magic);
        }
        if bytes[4] != VERSION {
            return Err(CheckpointError::Version(bytes[4]));
        }
        let (body, sum) = bytes.split_at(bytes.len() - SUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(CheckpointError::Checksum);
        }
        let mut r = Cursor(&body[5..]);
        let interval = r.u64()?;
        let stored_state_len = usize::from(r.u16()?);
        let count = r.u32()?;
        if stored_state_len != state_len() {
            return Err(CheckpointError::Invalid("hash state size"));
        }
        if interval == 0 {
            return Err(CheckpointError::Invalid("zero interval"));
        }
        let per_point = 24 + FP_LEN + stored_state_len;
        if usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(per_point))
            != Some(r.0.len())
        {
            return Err(CheckpointError::Invalid("point count"));
        }
        let mut points: Vec<Checkpoint> = Vec::with_capacity(r.0.len() / per_point);
        for _ in 0..count {
            let entry = r.u64()?;
            let offset = r.u64()?;
            let content_bytes = r.u64()?;
            let fp: [u8; FP_LEN] = r
                .take(FP_LEN)?
                .try_into()
                .map_err(|_| CheckpointError::Truncated)?;
            let state = r.take(stored_state_len)?.to_vec();
            restore(&state).ok_or(CheckpointError::Invalid("hash state"))?;
            if offset % BLOCK != 0 {
                return Err(CheckpointError::Invalid("unaligned offset"));
            }
            if let Some(last) = points.last()
                && (entry <= last.entry || offset <= last.offset)
            {
                return Err(CheckpointError::Invalid("points out of order"));
            }
            points.push(Checkpoint {
                entry,
                offset,
                content_bytes,
                fp,
                state,
            });
        }
        Ok(Self { interval, points })
    }
}

/// A sha256 hasher from a serialized state, if it is one.
fn restore(state: &[u8]) -> Option<Sha256> {
    let state = SerializedState::<Sha256>::try_from(state).ok()?;
    Sha256::deserialize(&state).ok()
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        if self.0.len() < n {
            return Err(CheckpointError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| CheckpointError::Truncated)?,
        ))
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| CheckpointError::Truncated)?,
        ))
    }

    fn u16(&mut self) -> Result<u16, CheckpointError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes(
            b.try_into().map_err(|_| CheckpointError::Truncated)?,
        ))
    }
}

/// What a [`DigestSink`] is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Walking without hashing, comparing fingerprints with the previous layer's points and
    /// logging what it would have hashed since the last one that matched.
    Match,
    /// Hashing the tar and recording points.
    Hash,
}

/// Bytes of a file's identity in the fingerprint.
const ID_LEN: usize = 40;

/// What a file's content stands for in the fingerprint (see the module docs).
fn identity(st: &Stat, size: u64) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    id[..8].copy_from_slice(&st.st_dev.to_le_bytes());
    id[8..16].copy_from_slice(&st.st_ino.to_le_bytes());
    id[16..24].copy_from_slice(&size.to_le_bytes());
    id[24..32].copy_from_slice(&st.st_mtime.to_le_bytes());
    id[32..].copy_from_slice(&st.st_mtime_nsec.to_le_bytes());
    id
}

/// One step of the walk since the last matching point, to be hashed if the next one does not
/// match.
enum Event {
    Entry {
        entry: u64,
        content_bytes: u64,
    },
    /// The next `n` bytes of [`Log::bytes`].
    Bytes(usize),
    /// A regular file's content, read again by path if it has to be hashed.
    File {
        id: [u8; ID_LEN],
        dev: u64,
        ino: u64,
        size: u64,
        path: Vec<u8>,
    },
}

/// Headers and file identities, never contents: it spans one interval of the previous tar at
/// most (matching stops once past the next point's offset), so its size is bounded by
/// [`INTERVAL`] whatever the tree.
#[derive(Default)]
struct Log {
    bytes: Vec<u8>,
    events: Vec<Event>,
}

impl Log {
    fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }
}

/// The output of a tar walk that only wants the digest and checkpoints. Resuming, it starts
/// in [`Phase::Match`]: nothing is read or hashed while the fingerprint matches the previous
/// layer's points; at the first point that differs (or at the end) it restores the hash at
/// the last point that matched, hashes the logged steps since then — re-opening their files
/// — and goes on hashing. One walk, contents read only from the last matching point on.
pub(crate) struct DigestSink {
    phase: Phase,
    tar: PipedSha,
    /// Tar bytes so far, hashed or not.
    offset: u64,
    /// The fingerprint since the last point, seeded with that point's value.
    fp: Sha256,
    interval: u64,
    last_point: u64,
    points: Vec<Checkpoint>,
    prev: Vec<Checkpoint>,
    /// `prev`'s hash states, restored up front so that resuming cannot fail half-way.
    prev_states: Vec<Sha256>,
    /// The next of `prev` to compare.
    next: usize,
    /// The last of `prev` that matched; `None`: the start.
    base: Option<usize>,
    log: Log,
    /// The tree's root, to re-open logged files.
    root: OwnedFd,
    /// Tar bytes fed to the hasher (tests check that a resume skipped most).
    hashed: u64,
}

impl DigestSink {
    /// A sink for the tree at `root`, resuming from `prev` when given (and usable).
    pub(crate) fn new(root: OwnedFd, interval: u64, prev: Option<&Checkpoints>) -> Self {
        let mut sink = Self {
            phase: Phase::Hash,
            tar: PipedSha::new(),
            offset: 0,
            fp: Sha256::new(),
            interval,
            last_point: 0,
            points: Vec::new(),
            prev: Vec::new(),
            prev_states: Vec::new(),
            next: 0,
            base: None,
            log: Log::default(),
            root,
            hashed: 0,
        };
        // Points made at another spacing would be valid, but the result would not be the
        // points a full pass makes; keeping them identical keeps chains of resumes simple.
        let Some(prev) = prev.filter(|p| p.interval == interval && !p.points.is_empty()) else {
            return sink;
        };
        let Some(states) = prev.points.iter().map(|p| restore(&p.state)).collect() else {
            return sink;
        };
        sink.prev = prev.points.clone();
        sink.prev_states = states;
        sink.phase = Phase::Match;
        sink
    }

    /// Whether file contents are read and hashed now.
    pub(crate) fn hashing(&self) -> bool {
        self.phase == Phase::Hash
    }

    /// Tar bytes the hasher was fed.
    pub(crate) fn hashed(&self) -> u64 {
        self.hashed
    }

    /// Header, PAX or padding bytes.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.fp.update(bytes);
        match self.phase {
            Phase::Hash => {
                self.tar.update(bytes);
                self.hashed += bytes.len() as u64;
            }
            Phase::Match => {
                self.log.bytes.extend_from_slice(bytes);
                match self.log.events.last_mut() {
                    Some(Event::Bytes(n)) => *n += bytes.len(),
                    _ => self.log.events.push(Event::Bytes(bytes.len())),
                }
            }
        }
        self.offset += bytes.len() as u64;
    }

    /// A regular file's content of `size` bytes follows its header: fingerprint its identity
    /// and, when not hashing, log it and step over it (when hashing, [`DigestSink::content`]
    /// gets the bytes).
    pub(crate) fn file(&mut self, st: &Stat, size: u64, path: &[u8]) {
        if size == 0 {
            return;
        }
        let id = identity(st, size);
        self.fp.update(id);
        if self.phase == Phase::Match {
            self.log.events.push(Event::File {
                id,
                dev: st.st_dev,
                ino: st.st_ino,
                size,
                path: path.to_vec(),
            });
            self.offset += size;
        }
    }

    /// File content being hashed.
    pub(crate) fn content(&mut self, bytes: &[u8]) {
        self.tar.update(bytes);
        self.hashed += bytes.len() as u64;
        self.offset += bytes.len() as u64;
    }

    /// A file's content being hashed, read straight into the hashing thread's buffers.
    pub(crate) fn file_content(
        &mut self,
        file: File,
        size: u64,
        path: &[u8],
    ) -> Result<(), LayerError> {
        copy_exact(file, size, path, self)
    }

    /// Ends the fingerprint segment: its value, which also seeds the next one.
    fn close_segment(&mut self) -> [u8; FP_LEN] {
        let value: [u8; FP_LEN] = std::mem::take(&mut self.fp).finalize().into();
        self.fp.update(value);
        value
    }

    /// Entry `entry` starts here (offset block-aligned), with `content_bytes` counted before it.
    pub(crate) fn entry_start(&mut self, entry: u64, content_bytes: u64) -> Result<(), LayerError> {
        if self.phase == Phase::Match {
            // In Match, `next` is always in range: the last match switches to Hash.
            let point = &self.prev[self.next];
            if point.entry == entry {
                let (offset, cb) = (point.offset, point.content_bytes);
                let fp = self.close_segment();
                if offset == self.offset && cb == content_bytes && self.prev[self.next].fp == fp {
                    self.base = Some(self.next);
                    self.next += 1;
                    self.log.clear();
                    if self.next == self.prev.len() {
                        // Nothing left to compare: hash from this point on.
                        self.resume()?;
                    }
                    return Ok(());
                }
                self.resume()?;
            } else if point.entry < entry || point.offset < self.offset {
                // Past the point: it cannot match any more.
                self.resume()?;
            } else {
                self.log.events.push(Event::Entry {
                    entry,
                    content_bytes,
                });
                return Ok(());
            }
        }
        if self.offset - self.last_point >= self.interval {
            let fp = self.close_segment();
            // The state is the hashing thread's to give: it fills in at the end.
            self.tar.mark(self.points.len());
            self.points.push(Checkpoint {
                entry,
                offset: self.offset,
                content_bytes,
                fp,
                state: Vec::new(),
            });
            self.last_point = self.offset;
        }
        Ok(())
    }

    /// The walk is over; call before the trailer.
    pub(crate) fn end(&mut self) -> Result<(), LayerError> {
        if self.phase == Phase::Match {
            self.resume()?;
        }
        Ok(())
    }

    /// Leaves [`Phase::Match`]: restores the hash at the last matching point (or starts
    /// afresh) and hashes what was logged since, so the state is as if it had hashed all
    /// along.
    fn resume(&mut self) -> Result<(), LayerError> {
        let end = self.offset;
        self.phase = Phase::Hash;
        self.fp = Sha256::new();
        match self.base {
            Some(i) => {
                let point = &self.prev[i];
                self.tar.reset(self.prev_states[i].clone());
                self.offset = point.offset;
                self.fp.update(point.fp);
                self.points = self.prev[..=i].to_vec();
            }
            None => {
                self.tar.reset(Sha256::new());
                self.offset = 0;
                self.points.clear();
            }
        }
        self.last_point = self.offset;
        self.prev = Vec::new();
        self.prev_states = Vec::new();
        let log = std::mem::take(&mut self.log);
        let mut bytes = &log.bytes[..];
        for event in log.events {
            match event {
                Event::Entry {
                    entry,
                    content_bytes,
                } => self.entry_start(entry, content_bytes)?,
                Event::Bytes(n) => {
                    let (head, rest) = bytes.split_at(n);
                    self.put(head);
                    bytes = rest;
                }
                Event::File {
                    id,
                    dev,
                    ino,
                    size,
                    path,
                } => {
                    self.fp.update(id);
                    let file = self.reopen(&path, dev, ino)?;
                    self.file_content(file, size, &path)?;
                }
            }
        }
        debug_assert_eq!(self.offset, end, "the replay retraces the walk");
        Ok(())
    }

    /// Opens a logged file again by its path under the root, refusing anything but the inode
    /// the walk saw.
    fn reopen(&self, path: &[u8], dev: u64, ino: u64) -> Result<File, LayerError> {
        let err = |op| {
            let path = String::from_utf8_lossy(path).into_owned();
            move |e: Errno| LayerError::Walk {
                path,
                op,
                source: e.into(),
            }
        };
        let fd = rfs::openat2(
            &self.root,
            OsStr::from_bytes(path),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(err("open file"))?;
        let st = rfs::fstat(&fd).map_err(err("stat file"))?;
        if st.st_dev != dev || st.st_ino != ino {
            return Err(LayerError::Replaced {
                path: String::from_utf8_lossy(path).into_owned(),
            });
        }
        Ok(File::from(fd))
    }

    /// The tar's digest and length, and the points. Call after [`DigestSink::end`].
    pub(crate) fn finish(mut self) -> Result<([u8; 32], u64, Checkpoints), LayerError> {
        let (sha, states) = self.tar.finish()?;
        for (i, state) in states {
            if let Some(point) = self.points.get_mut(i) {
                point.state = state;
            }
        }
        Ok((
            sha.finalize().into(),
            self.offset,
            Checkpoints::new(self.interval, self.points),
        ))
    }
}

/// Bytes handed to the hashing thread at a time.
const PIPE_CHUNK: usize = 256 * 1024;
/// Chunks in flight: enough to ride out the walk's pauses (opening files, listing
/// directories) without holding much memory.
const PIPE_DEPTH: usize = 8;

impl Fill for DigestSink {
    fn room(&mut self) -> &mut [u8] {
        self.tar.room()
    }

    fn filled(&mut self, n: usize) -> Result<(), LayerError> {
        self.tar.filled(n);
        self.hashed += n as u64;
        self.offset += n as u64;
        Ok(())
    }
}

/// The hashing thread's result: the final state, and the state at each mark.
type Hashed = (Sha256, Vec<(usize, Vec<u8>)>);

enum PipeMsg {
    /// A buffer and how much of it is data.
    Data(Vec<u8>, usize),
    /// Record the state here for checkpoint `n`.
    Mark(usize),
    /// Continue from this state (a resume).
    Reset(Box<Sha256>),
}

/// The tar's sha256, computed on a thread of its own from buffers the walk fills, so reading
/// the tree and hashing it overlap (sha256 is the longest part of a layer's digest, and cannot
/// be split).
struct PipedSha {
    /// Always [`PIPE_CHUNK`] long (buffers are zeroed once, when made), `len` of it data.
    buf: Vec<u8>,
    len: usize,
    to_worker: Option<std::sync::mpsc::SyncSender<PipeMsg>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<Hashed>>,
}

impl PipedSha {
    fn new() -> Self {
        let (to_worker, from_walk) = std::sync::mpsc::sync_channel::<PipeMsg>(PIPE_DEPTH);
        let (give_back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = std::thread::spawn(move || {
            let mut sha = Sha256::new();
            let mut states = Vec::new();
            for msg in from_walk {
                match msg {
                    PipeMsg::Data(chunk, len) => {
                        sha.update(&chunk[..len]);
                        // The walk may have finished; then the buffer is simply dropped.
                        let _ = give_back.send(chunk);
                    }
                    PipeMsg::Mark(n) => states.push((n, sha.serialize().to_vec())),
                    PipeMsg::Reset(state) => sha = *state,
                }
            }
            (sha, states)
        });
        Self {
            buf: vec![0; PIPE_CHUNK],
            len: 0,
            to_worker: Some(to_worker),
            spare,
            worker: Some(worker),
        }
    }

    fn send(&mut self, msg: PipeMsg) {
        // A send fails only if the thread is gone, which `finish` reports.
        if let Some(tx) = &self.to_worker {
            let _ = tx.send(msg);
        }
    }

    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| vec![0; PIPE_CHUNK]);
        let full = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.len);
        self.send(PipeMsg::Data(full, len));
    }

    /// The free part of the current buffer; never empty.
    fn room(&mut self) -> &mut [u8] {
        if self.len == PIPE_CHUNK {
            self.flush();
        }
        &mut self.buf[self.len..]
    }

    /// `n` bytes of [`PipedSha::room`] were filled.
    fn filled(&mut self, n: usize) {
        self.len += n;
        if self.len == PIPE_CHUNK {
            self.flush();
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = self.room();
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.filled(n);
        }
    }

    fn mark(&mut self, n: usize) {
        self.flush();
        self.send(PipeMsg::Mark(n));
    }

    fn reset(&mut self, state: Sha256) {
        // Bytes before a reset belong to the state being replaced.
        self.len = 0;
        self.send(PipeMsg::Reset(Box::new(state)));
    }

    /// The final state and the marked states.
    fn finish(mut self) -> Result<Hashed, LayerError> {
        self.flush();
        drop(self.to_worker.take());
        self.worker
            .take()
            .and_then(|w| w.join().ok())
            .ok_or_else(|| LayerError::WriteArchive {
                source: std::io::Error::other("the hashing thread stopped"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoints {
        let mut tar = Sha256::new();
        tar.update([7u8; 1024]);
        Checkpoints::new(
            INTERVAL,
            vec![
                Checkpoint {
                    entry: 3,
                    offset: 1024,
                    content_bytes: 10,
                    fp: [1; 32],
                    state: tar.serialize().to_vec(),
                },
                Checkpoint {
                    entry: 9,
                    offset: 4096,
                    content_bytes: 99,
                    fp: [2; 32],
                    state: tar.serialize().to_vec(),
                },
            ],
        )
    }

    #[test]
    fn bytes_round_trip() {
        let cp = sample();
        assert_eq!(Checkpoints::from_bytes(&cp.to_bytes()).unwrap(), cp);
        let empty = Checkpoints::new(INTERVAL, Vec::new());
        assert_eq!(Checkpoints::from_bytes(&empty.to_bytes()).unwrap(), empty);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = sample().to_bytes();
        assert_eq!(
            Checkpoints::from_bytes(b""),
            Err(CheckpointError::Truncated)
        );
        assert_eq!(
            Checkpoints::from_bytes(&[0u8; 200]),
            Err(CheckpointError::Magic)
        );
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(
            Checkpoints::from_bytes(&v2),
            Err(CheckpointError::Version(2))
        );
        // Every single-byte corruption and every truncation is refused.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(Checkpoints::from_bytes(&bad).is_err(), "flip at {i}");
            assert!(Checkpoints::from_bytes(&good[..i]).is_err(), "cut at {i}");
        }
        // Well checksummed but inconsistent bodies are refused too.
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - SUM_LEN);
            let sum = Sha256::digest(&body);
            body.extend_from_slice(&sum);
            body
        };
        let mut unordered = sample();
        unordered.points.swap(0, 1);
        assert_eq!(
            Checkpoints::from_bytes(&unordered.to_bytes()),
            Err(CheckpointError::Invalid("points out of order"))
        );
        let mut count = good.clone();
        count[HEAD_LEN - 4] = 3;
        assert_eq!(
            Checkpoints::from_bytes(&reseal(count)),
            Err(CheckpointError::Invalid("point count"))
        );
        let mut unaligned = sample();
        unaligned.points[0].offset = 1000;
        assert_eq!(
            Checkpoints::from_bytes(&unaligned.to_bytes()),
            Err(CheckpointError::Invalid("unaligned offset"))
        );
    }
}
