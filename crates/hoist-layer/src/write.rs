//! directory → deterministic tar.
//!
//! The walk visits each directory's names in bytewise order and emits a directory before its
//! contents, so the same tree always yields the same bytes (and so the same diff_id). Headers
//! follow what BuildKit/containerd produce with Go's `archive/tar`: USTAR, PAX records only
//! when needed (long names, big ids, xattrs), numeric uid/gid with empty uname/gname, mtime in
//! whole seconds, permission bits including setuid/setgid/sticky, names relative without `./`
//! and directories ending in `/`.
//!
//! In overlay mode (an upper dir) overlayfs' markers are translated: a char device 0/0 becomes
//! an empty `.wh.<name>` file, emitted before its siblings; a directory carrying
//! `trusted.overlay.opaque=y` is followed immediately by `<dir>/.wh..wh..opq`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use hoist_oci::Digest;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};

use crate::apply::list_dir_typed;
use crate::checkpoint::{self, Checkpoints, DigestSink};
use crate::error::LayerError;
use crate::hashing::HashingWriter;
use crate::reader::Xattrs;
use crate::{OPAQUE_MARKER, WHITEOUT_PREFIX};

const BLOCK: usize = 512;
pub(crate) const COPY_BUF: usize = 128 * 1024;
/// Largest value a 7-digit octal uid/gid field holds; beyond it a PAX record carries it.
const MAX_ID: u64 = 0o7_777_777;
/// Largest size an 11-digit octal field holds.
const MAX_SIZE: u64 = 0o77_777_777_777;

/// Options for [`write_layer`] and [`write_tree`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Clamp mtimes newer than this Unix time (BuildKit's `SOURCE_DATE_EPOCH` with
    /// `rewrite-timestamp`).
    pub clamp_mtime: Option<u64>,
}

/// What a written layer is: its uncompressed digest and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// sha256 of the tar bytes written, i.e. the layer's diff_id.
    pub diff_id: Digest,
    /// Bytes written.
    pub size: u64,
    /// Tar entries written (PAX headers not counted).
    pub entries: u64,
    /// Bytes of file content and symlink targets, hardlinks once: docker's layer size.
    pub content_bytes: u64,
}

/// Writes the overlay upper dir `upper` as a layer tar to `out`, translating overlay
/// whiteouts and opaque directories (see the module docs).
///
/// The tar is hashed on its way to `out`, so the returned [`LayerSummary::diff_id`] needs no
/// second pass; wrap `out` in a compressor (and a [`HashingWriter`]) to get the blob too.
/// `out` is flushed but not closed.
pub fn write_layer<W: Write>(
    upper: &Path,
    out: W,
    opts: &WriteOptions,
) -> Result<LayerSummary, LayerError> {
    write(upper, out, opts, true)
}

/// Writes the plain directory `dir` as a tar, with no whiteout translation (char devices and
/// xattrs are archived as they are).
pub fn write_tree<W: Write>(
    dir: &Path,
    out: W,
    opts: &WriteOptions,
) -> Result<LayerSummary, LayerError> {
    write(dir, out, opts, false)
}

fn write<W: Write>(
    dir: &Path,
    out: W,
    opts: &WriteOptions,
    overlay: bool,
) -> Result<LayerSummary, LayerError> {
    let root = open_root(dir)?;
    let out = BufWriter::with_capacity(COPY_BUF, HashingWriter::new(out));
    let mut writer = TarWriter::new(out, dir, overlay, opts);
    writer.walk(root.as_fd(), b"")?;
    writer.put(&[0; 2 * BLOCK])?;
    let (entries, content_bytes) = (writer.entries, writer.content_bytes);
    let hashing = writer
        .out
        .into_inner()
        .map_err(|e| LayerError::WriteArchive {
            source: e.into_error(),
        })?;
    let (mut out, diff_id, size) = hashing.finish();
    out.flush()
        .map_err(|source| LayerError::WriteArchive { source })?;
    Ok(LayerSummary {
        diff_id,
        size,
        entries,
        content_bytes,
    })
}

fn open_root(dir: &Path) -> Result<OwnedFd, LayerError> {
    rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::OpenRoot {
        path: dir.to_path_buf(),
        source: e.into(),
    })
}

/// What [`write_layer`]`(upper, io::sink(), opts)` returns — the same [`LayerSummary`] — and
/// [`Checkpoints`] from which the next version of the tree can resume the hash.
///
/// With `previous`, the checkpoints of an earlier version of this tree (whose snapshot must
/// still exist unchanged; see [`Checkpoints`]), the tar prefix both versions share is not
/// read again: the walk reads only metadata while its fingerprint matches the checkpoints',
/// then restores the sha256 state at the last one that matched and hashes from there.
/// Checkpoints that match nothing (another tree, a change early on) give a full hash at the
/// cost of re-reading the few files since the start.
pub fn digest_layer(
    upper: &Path,
    opts: &WriteOptions,
    previous: Option<&Checkpoints>,
) -> Result<(LayerSummary, Checkpoints), LayerError> {
    let d = digest(upper, opts, previous, checkpoint::INTERVAL)?;
    Ok((d.summary, d.checkpoints))
}

/// Waits until the directory at a path (relative to the root, no trailing `/`; the root is
/// empty) is final: its entries all there, each whole, and its own metadata set. `Err` when
/// the tree will never be (its writer gave it up).
pub type Gate = std::sync::Arc<dyn Fn(&[u8]) -> Result<(), LayerError> + Send + Sync>;

/// [`digest_layer`] of an upper dir that is still being written: each directory is listed,
/// and stated, only once `gate` says it is final, so the digest follows the writer instead
/// of waiting for it to finish. The writer must finish every directory it seals before
/// sealing it, and change nothing of it after: the result is then the digest of the finished
/// tree.
pub fn digest_layer_gated(
    upper: &Path,
    opts: &WriteOptions,
    previous: Option<&Checkpoints>,
    gate: Gate,
) -> Result<(LayerSummary, Checkpoints), LayerError> {
    let d = digest_with(upper, opts, previous, checkpoint::INTERVAL, Some(gate))?;
    Ok((d.summary, d.checkpoints))
}

/// A digest and how it was made.
#[derive(Debug)]
pub(crate) struct Digested {
    pub(crate) summary: LayerSummary,
    pub(crate) checkpoints: Checkpoints,
    /// Tar bytes actually hashed: all of them unless it resumed.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "tests check that a resume skipped the prefix")
    )]
    pub(crate) hashed: u64,
}

/// [`digest_layer`] with checkpoints every `interval` bytes (tests use small ones).
pub(crate) fn digest(
    upper: &Path,
    opts: &WriteOptions,
    previous: Option<&Checkpoints>,
    interval: u64,
) -> Result<Digested, LayerError> {
    digest_with(upper, opts, previous, interval, None)
}

fn digest_with(
    upper: &Path,
    opts: &WriteOptions,
    previous: Option<&Checkpoints>,
    interval: u64,
    gate: Option<Gate>,
) -> Result<Digested, LayerError> {
    let root = open_root(upper)?;
    let sink_root = root.try_clone().map_err(|source| LayerError::OpenRoot {
        path: upper.to_path_buf(),
        source,
    })?;
    let mut writer = TarWriter::new(
        DigestSink::new(sink_root, interval, previous),
        upper,
        true,
        opts,
    );
    writer.gate = gate;
    writer.walk(root.as_fd(), b"")?;
    writer.out.end()?;
    writer.put(&[0; 2 * BLOCK])?;
    let hashed = writer.out.hashed();
    let (hash, size, checkpoints) = writer.out.finish()?;
    Ok(Digested {
        summary: LayerSummary {
            diff_id: Digest::from_sha256(hash),
            size,
            entries: writer.entries,
            content_bytes: writer.content_bytes,
        },
        checkpoints,
        hashed,
    })
}

/// Where the tar writer's bytes go: a stream ([`write_layer`]) or a digest that may skip a
/// prefix ([`digest_layer`]). One walker serves both so their bytes cannot drift apart.
trait TarOut {
    /// Header, PAX or padding bytes.
    fn put(&mut self, bytes: &[u8]) -> Result<(), LayerError>;
    /// Bytes of a file's content.
    fn content(&mut self, bytes: &[u8]) -> Result<(), LayerError>;
    /// All `size` bytes of `file`'s content, read through `buf` unless the sink has room of
    /// its own.
    fn file_content(
        &mut self,
        file: File,
        size: u64,
        path: &[u8],
        buf: &mut [u8],
    ) -> Result<(), LayerError> {
        let out = |b: &[u8]| self.content(b);
        copy_exact(file, size, path, &mut Buffered { buf, out })
    }
    /// Whether file contents are wanted now; when not, the file is not even opened.
    fn reads_content(&self) -> bool;
    /// A regular file at `path` of `size` bytes follows its header.
    fn file(&mut self, st: &Stat, size: u64, path: &[u8]);
    /// Tar member `entry` starts, with `content_bytes` counted before it.
    fn entry_start(&mut self, entry: u64, content_bytes: u64) -> Result<(), LayerError>;
}

impl<W: Write> TarOut for BufWriter<HashingWriter<W>> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.write_all(bytes)
            .map_err(|source| LayerError::WriteArchive { source })
    }

    fn content(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.put(bytes)
    }

    fn reads_content(&self) -> bool {
        true
    }

    fn file(&mut self, _: &Stat, _: u64, _: &[u8]) {}

    fn entry_start(&mut self, _: u64, _: u64) -> Result<(), LayerError> {
        Ok(())
    }
}

impl TarOut for DigestSink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        DigestSink::put(self, bytes);
        Ok(())
    }

    fn content(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        DigestSink::content(self, bytes);
        Ok(())
    }

    fn file_content(
        &mut self,
        file: File,
        size: u64,
        path: &[u8],
        _: &mut [u8],
    ) -> Result<(), LayerError> {
        DigestSink::file_content(self, file, size, path)
    }

    fn reads_content(&self) -> bool {
        self.hashing()
    }

    fn file(&mut self, st: &Stat, size: u64, path: &[u8]) {
        DigestSink::file(self, st, size, path);
    }

    fn entry_start(&mut self, entry: u64, content_bytes: u64) -> Result<(), LayerError> {
        DigestSink::entry_start(self, entry, content_bytes)
    }
}

/// One tar member to emit.
struct Member<'a> {
    kind: EntryType,
    path: &'a [u8],
    link: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    dev: (u32, u32),
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

struct TarWriter<O: TarOut> {
    out: O,
    /// The walk's root path and `/`, then the current entry's path (see `read_xattrs`).
    full_path: Vec<u8>,
    root_len: usize,
    overlay: bool,
    clamp: Option<u64>,
    /// (dev, inode) → where its first path lies in `link_names`, for hardlinks within the
    /// layer. Every file of a rebuilt COPY has a second link (in the earlier layer), so this
    /// holds one path per file there: kept in one buffer, not an allocation each.
    links: HashMap<(u64, u64), (usize, usize)>,
    link_names: Vec<u8>,
    buf: Vec<u8>,
    entries: u64,
    content_bytes: u64,
    /// When the tree is still being written: see [`digest_layer_gated`].
    gate: Option<Gate>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn walk_err(path: &[u8], op: &'static str) -> impl Fn(Errno) -> LayerError {
    let path = lossy(path);
    move |e| LayerError::Walk {
        path: path.clone(),
        op,
        source: e.into(),
    }
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(a.len() + b.len() + 1);
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

/// All xattrs of `name` in `dir` (not following it), sorted by name. `full` is the same file's
/// path from the walk's root path: looked up by it, an entry with no xattrs costs a third of a
/// lookup through `/proc/self/fd`. Resolving a path again is safe here because the trees walked
/// are the store's own and nothing writes them any more (a committed snapshot, or an upper
/// directory whose sandbox is gone).
fn read_xattrs(dir: BorrowedFd<'_>, name: &[u8], full: &[u8]) -> Result<Xattrs, Errno> {
    match read_xattrs_of(XattrsOf::Path(os(full))) {
        Err(Errno::NAMETOOLONG) => {}
        done => return done,
    }
    let mut path = format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(&dir)).into_bytes();
    path.extend_from_slice(name);
    read_xattrs_of(XattrsOf::Path(os(&path)))
}

/// What [`read_xattrs_of`] reads: a path (not followed), or a file already open, which spares
/// the lookup.
#[derive(Clone, Copy)]
enum XattrsOf<'a> {
    Path(&'a std::ffi::OsStr),
    File(BorrowedFd<'a>),
}

impl XattrsOf<'_> {
    fn list(self, buf: &mut [u8]) -> Result<usize, Errno> {
        match self {
            Self::Path(p) => rfs::llistxattr(p, buf),
            Self::File(fd) => rfs::flistxattr(fd, buf),
        }
    }

    fn list_len(self) -> Result<usize, Errno> {
        match self {
            Self::Path(p) => rfs::llistxattr_query(p),
            Self::File(fd) => rfs::flistxattr_query(fd),
        }
    }

    fn get(self, key: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
        match self {
            Self::Path(p) => rfs::lgetxattr(p, os(key), buf),
            Self::File(fd) => rfs::fgetxattr(fd, os(key), buf),
        }
    }

    fn get_len(self, key: &[u8]) -> Result<usize, Errno> {
        match self {
            Self::Path(p) => rfs::lgetxattr_query(p, os(key)),
            Self::File(fd) => rfs::fgetxattr_query(fd, os(key)),
        }
    }
}

/// Opens the regular file `name` in `dir` to read it. Without touching its atime: a file
/// just written has a ctime past its atime, so a read would dirty its inode again. (Allowed to
/// the files' owner or a process with CAP_FOWNER; anyone else opens as usual.) Never blocks:
/// only files listed as regular are opened, but a FIFO put in their place must not hang the walk.
fn open_file(dir: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<OwnedFd, LayerError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rfs::openat(dir, os(name), flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rfs::openat(dir, os(name), flags, Mode::empty()),
        opened => opened,
    }
    .map_err(walk_err(path, "open file"))
}

fn read_xattrs_of(of: XattrsOf<'_>) -> Result<Xattrs, Errno> {
    let mut list = vec![0u8; 1024];
    let len = loop {
        match of.list(&mut list[..]) {
            Ok(len) => break len,
            Err(Errno::RANGE) => list.resize(of.list_len()?.max(list.len() * 2), 0),
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; 256];
    for key in list[..len].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let n = loop {
            match of.get(key, &mut value[..]) {
                Ok(n) => break n,
                Err(Errno::RANGE) => {
                    let want = of.get_len(key)?;
                    value.resize(want.max(value.len() * 2), 0);
                }
                Err(e) => return Err(e),
            }
        };
        out.push((key.to_vec(), value[..n].to_vec()));
    }
    out.sort();
    Ok(out)
}

/// Xattrs that describe the host or the overlay mount, not the content.
fn is_private_xattr(key: &[u8]) -> bool {
    key.starts_with(b"trusted.overlay.")
        || key.starts_with(b"user.overlay.")
        || key == b"security.selinux"
}

fn has_xattr(xattrs: &[(Vec<u8>, Vec<u8>)], key: &[u8], value: Option<&[u8]>) -> bool {
    xattrs
        .iter()
        .any(|(k, v)| k == key && value.is_none_or(|want| v == want))
}

/// One PAX record: `<len> <key>=<value>\n`, where `<len>` counts itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    loop {
        let total = base + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl<O: TarOut> TarWriter<O> {
    fn new(out: O, root: &Path, overlay: bool, opts: &WriteOptions) -> Self {
        let mut full_path = root.as_os_str().as_encoded_bytes().to_vec();
        full_path.push(b'/');
        Self {
            out,
            root_len: full_path.len(),
            full_path,
            overlay,
            clamp: opts.clamp_mtime,
            links: HashMap::new(),
            link_names: Vec::new(),
            buf: vec![0; COPY_BUF],
            entries: 0,
            content_bytes: 0,
            gate: None,
        }
    }

    /// Waits for the directory at `path` to be final, when the tree is still being written.
    fn wait_for(&self, path: &[u8]) -> Result<(), LayerError> {
        match &self.gate {
            Some(gate) => gate(path.strip_suffix(b"/").unwrap_or(path)),
            None => Ok(()),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.out.put(bytes)
    }

    fn pad(&mut self, size: u64) -> Result<(), LayerError> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn mtime(&self, st: &Stat) -> u64 {
        let secs = u64::try_from(st.st_mtime).unwrap_or(0);
        self.clamp.map_or(secs, |clamp| secs.min(clamp))
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &[u8]) -> Result<(), LayerError> {
        self.wait_for(rel)?;
        let mut names = list_dir_typed(dir).map_err(|e| LayerError::Walk {
            path: lossy(rel),
            op: "list directory",
            source: e,
        })?;
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // A regular file whose content the digest reads is opened and its stat taken from the
        // open file, in turn: one lookup of its name instead of two. Every other entry's stat
        // is taken here, as the whiteouts must be known before their siblings are written.
        // A directory of a tree still being written is stated when its turn comes, once
        // final (no whiteout is a directory); an entry of unknown type waits for the end.
        let opens_files = self.out.reads_content();
        let gated = self.gate.is_some();
        let mut items = Vec::with_capacity(names.len());
        for (name, kind) in names {
            let path = concat(rel, &name);
            let st = if (opens_files && kind == FileType::RegularFile)
                || (gated && kind == FileType::Directory)
            {
                None
            } else {
                if gated && kind == FileType::Unknown {
                    self.wait_for(&path)?;
                }
                Some(
                    rfs::statat(dir, os(&name), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(walk_err(&path, "stat"))?,
                )
            };
            items.push((name, path, kind, st));
        }
        // Whiteouts before their siblings, as the OCI spec asks of writers.
        if self.overlay {
            for (name, _, _, st) in &items {
                if let Some(st) = st.as_ref().filter(|st| is_whiteout(st)) {
                    let path = concat(rel, &concat(WHITEOUT_PREFIX.as_bytes(), name));
                    self.marker(&path, self.mtime(st))?;
                }
            }
        }
        for (name, path, kind, st) in items {
            if self.overlay && st.as_ref().is_some_and(is_whiteout) {
                continue;
            }
            if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(LayerError::ReservedName { path: lossy(&path) });
            }
            let (st, opened) = match st {
                Some(st) => (st, None),
                None if kind == FileType::Directory => {
                    self.wait_for(&path)?;
                    let st = rfs::statat(dir, os(&name), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(walk_err(&path, "stat"))?;
                    (st, None)
                }
                None => {
                    let fd = open_file(dir, &name, &path)?;
                    (rfs::fstat(&fd).map_err(walk_err(&path, "stat"))?, Some(fd))
                }
            };
            self.member(dir, &name, &path, &st, opened)?;
        }
        Ok(())
    }

    /// An empty whiteout or opaque-marker file.
    fn marker(&mut self, path: &[u8], mtime: u64) -> Result<(), LayerError> {
        self.header(&Member {
            kind: EntryType::Regular,
            path,
            link: b"",
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            dev: (0, 0),
            xattrs: &[],
        })
    }

    fn member(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        st: &Stat,
        mut opened: Option<OwnedFd>,
    ) -> Result<(), LayerError> {
        let file_type = FileType::from_raw_mode(st.st_mode);
        if matches!(file_type, FileType::Socket | FileType::Unknown) {
            // Sockets are not content; docker skips them too.
            return Ok(());
        }
        // A file whose content is wanted already (the digest does not switch back to
        // skipping) is opened first: its xattrs are then read without a lookup.
        if file_type != FileType::RegularFile {
            opened = None;
        } else if opened.is_none() && st.st_size > 0 && self.out.reads_content() {
            opened = Some(open_file(dir, name, path)?);
        }
        let all_xattrs = match &opened {
            Some(fd) => read_xattrs_of(XattrsOf::File(fd.as_fd())),
            None => {
                self.full_path.truncate(self.root_len);
                self.full_path.extend_from_slice(path);
                read_xattrs(dir, name, &self.full_path)
            }
        }
        .map_err(walk_err(path, "read xattrs"))?;
        for feature in [
            b"trusted.overlay.redirect".as_slice(),
            b"trusted.overlay.metacopy",
        ] {
            if self.overlay && has_xattr(&all_xattrs, feature, None) {
                return Err(LayerError::OverlayFeature {
                    path: lossy(path),
                    xattr: lossy(feature),
                });
            }
        }
        let opaque = self.overlay
            && file_type == FileType::Directory
            && (has_xattr(&all_xattrs, b"trusted.overlay.opaque", Some(b"y"))
                || has_xattr(&all_xattrs, b"user.overlay.opaque", Some(b"y")));
        let xattrs: Vec<_> = all_xattrs
            .into_iter()
            .filter(|(k, _)| !is_private_xattr(k))
            .collect();

        let mut member = Member {
            kind: EntryType::Regular,
            path,
            link: b"",
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime: self.mtime(st),
            size: 0,
            dev: (0, 0),
            xattrs: &xattrs,
        };

        if file_type != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self
                .links
                .get(&key)
                .and_then(|&(start, end)| self.link_names.get(start..end))
                .map(<[u8]>::to_vec)
            {
                member.kind = EntryType::Link;
                member.link = &first;
                return self.header(&member);
            }
            let start = self.link_names.len();
            self.link_names.extend_from_slice(path);
            self.links.insert(key, (start, self.link_names.len()));
        }

        match file_type {
            FileType::Directory => {
                let dir_path = concat(path, b"/");
                member.kind = EntryType::Directory;
                member.path = &dir_path;
                self.header(&member)?;
                if opaque {
                    let marker = concat(&dir_path, OPAQUE_MARKER.as_bytes());
                    self.marker(&marker, member.mtime)?;
                }
                let child = rfs::openat(
                    dir,
                    os(name),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(walk_err(path, "open directory"))?;
                self.walk(child.as_fd(), &dir_path)
            }
            FileType::RegularFile => {
                let size = u64::try_from(st.st_size).unwrap_or(0);
                member.size = size;
                self.header(&member)?;
                self.content_bytes += size;
                self.out.file(st, size, path);
                // Asked after the header: a digest switches from skipping to hashing at an
                // entry's start.
                if self.out.reads_content() {
                    let fd = match opened {
                        Some(fd) => fd,
                        None => open_file(dir, name, path)?,
                    };
                    self.out
                        .file_content(File::from(fd), size, path, &mut self.buf)?;
                }
                self.pad(size)
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, os(name), Vec::new())
                    .map_err(walk_err(path, "read symlink"))?;
                member.kind = EntryType::Symlink;
                member.link = target.as_bytes();
                // Counted after the header, so the count at an entry's start excludes it.
                self.header(&member)?;
                self.content_bytes += member.link.len() as u64;
                Ok(())
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                member.kind = match file_type {
                    FileType::CharacterDevice => EntryType::Char,
                    FileType::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                if file_type != FileType::Fifo {
                    member.dev = (rfs::major(st.st_rdev), rfs::minor(st.st_rdev));
                }
                self.header(&member)
            }
            FileType::Socket | FileType::Unknown => Ok(()),
        }
    }

    fn header(&mut self, m: &Member<'_>) -> Result<(), LayerError> {
        self.out.entry_start(self.entries, self.content_bytes)?;
        let mut pax = Vec::<(Vec<u8>, Vec<u8>)>::new();
        if m.path.len() > 100 {
            pax.push((b"path".to_vec(), m.path.to_vec()));
        }
        if m.link.len() > 100 {
            pax.push((b"linkpath".to_vec(), m.link.to_vec()));
        }
        if m.uid > MAX_ID {
            pax.push((b"uid".to_vec(), m.uid.to_string().into_bytes()));
        }
        if m.gid > MAX_ID {
            pax.push((b"gid".to_vec(), m.gid.to_string().into_bytes()));
        }
        if m.size > MAX_SIZE {
            pax.push((b"size".to_vec(), m.size.to_string().into_bytes()));
        }
        for (key, value) in m.xattrs {
            pax.push((concat(b"SCHILY.xattr.", key), value.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            let mut data = Vec::new();
            for (key, value) in &pax {
                pax_record(&mut data, key, value);
            }
            // Go's naming: <dir>/PaxHeaders.0/<base>.
            let trimmed = m.path.strip_suffix(b"/").unwrap_or(m.path);
            let split = trimmed
                .iter()
                .rposition(|&b| b == b'/')
                .map_or(0, |i| i + 1);
            let name = [&trimmed[..split], b"PaxHeaders.0/", &trimmed[split..]].concat();
            let mut h = Header::new_ustar();
            set_bytes(&mut h.as_mut_bytes()[..100], &name);
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.put(h.as_bytes())?;
            self.put(&data)?;
            self.pad(data.len() as u64)?;
        }

        let mut h = Header::new_ustar();
        set_bytes(&mut h.as_mut_bytes()[..100], m.path);
        set_bytes(&mut h.as_mut_bytes()[157..257], m.link);
        h.set_entry_type(m.kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid.min(MAX_ID));
        h.set_gid(m.gid.min(MAX_ID));
        h.set_mtime(m.mtime);
        h.set_size(m.size.min(MAX_SIZE));
        if matches!(m.kind, EntryType::Char | EntryType::Block) {
            let fail = |source| LayerError::Walk {
                path: lossy(m.path),
                op: "encode device",
                source,
            };
            h.set_device_major(m.dev.0).map_err(fail)?;
            h.set_device_minor(m.dev.1).map_err(fail)?;
        }
        h.set_cksum();
        self.put(h.as_bytes())?;
        self.entries += 1;
        Ok(())
    }
}

/// Where [`copy_exact`] reads to: room for the next read, then how much of it was read. The
/// digest reads straight into the buffers its hashing thread takes, with no copy between.
pub(crate) trait Fill {
    /// Room for the next read; never empty.
    fn room(&mut self) -> &mut [u8];
    /// The first `n` bytes of the room were read.
    fn filled(&mut self, n: usize) -> Result<(), LayerError>;
}

/// A [`Fill`] through a buffer of its own, handing each read to `out`.
pub(crate) struct Buffered<'a, F> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) out: F,
}

impl<F: FnMut(&[u8]) -> Result<(), LayerError>> Fill for Buffered<'_, F> {
    fn room(&mut self) -> &mut [u8] {
        self.buf
    }

    fn filled(&mut self, n: usize) -> Result<(), LayerError> {
        (self.out)(&self.buf[..n])
    }
}

/// Copies exactly `size` bytes of `file` to `to`: a file that shrank would corrupt the
/// archive, one that grew is cut at the size its header already announced.
pub(crate) fn copy_exact(
    file: File,
    size: u64,
    path: &[u8],
    to: &mut impl Fill,
) -> Result<(), LayerError> {
    let mut reader = file.take(size);
    let mut done = 0u64;
    loop {
        let n = match reader.read(to.room()) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(LayerError::Walk {
                    path: lossy(path),
                    op: "read file",
                    source,
                });
            }
        };
        to.filled(n)?;
        done += n as u64;
    }
    if done != size {
        return Err(LayerError::FileChanged {
            path: lossy(path),
            expected: size,
            actual: done,
        });
    }
    Ok(())
}

/// Copies `value` into a fixed header field, truncating (a PAX record carries the full one).
fn set_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}
