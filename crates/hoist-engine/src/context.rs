//! Where COPY reads from: the build context (filtered by .dockerignore) or the root filesystem of
//! another stage or image, and the selection of files a source pattern names.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use hoist_dockerfile::ignore::Matcher;
use hoist_oci::{Digest, Sha256Hasher};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, StatxFlags};

use crate::BuildError;
use crate::fsutil::{clean, resolve};
use crate::glob::path_match;

/// A tree COPY can read.
pub(crate) struct SourceTree<'a> {
    pub(crate) root: PathBuf,
    pub(crate) ignore: Option<&'a Matcher>,
    /// COPY `--exclude` patterns, matched against paths relative to the tree and to the
    /// selected directory.
    pub(crate) exclude: Option<Matcher>,
}

/// One source a pattern selected: its real path and its path relative to the tree's root.
#[derive(Debug, Clone)]
pub(crate) struct Selected {
    pub(crate) real: PathBuf,
    pub(crate) rel: String,
    /// Where `real` is in the tree: `rel`, or where a symlink `rel` leads. .dockerignore
    /// patterns apply to what is below it by this path, as the context holds it.
    pub(crate) in_tree: String,
}

impl SourceTree<'_> {
    pub(crate) fn ignored(&self, rel: &str) -> bool {
        // An unusable pattern was refused when the matcher was built; a path it cannot match
        // counts as included.
        let hit = |m: &Matcher| !rel.is_empty() && m.matches(rel).unwrap_or(false);
        self.ignore.is_some_and(hit) || self.exclude.as_ref().is_some_and(hit)
    }

    /// Whether the context holds `rel`: .dockerignore does not leave it out, or it is a
    /// directory that a `!` pattern may take something back from (`d1` then `!d1/keep`), which
    /// docker's context transfer sends, its entries each decided by the patterns; and
    /// `--exclude` does not leave it out.
    fn in_context(&self, rel: &str) -> bool {
        let hit = |m: &Matcher| !rel.is_empty() && m.matches(rel).unwrap_or(false);
        if self.exclude.as_ref().is_some_and(hit) {
            return false;
        }
        match self.ignore {
            Some(m) if hit(m) => {
                m.may_take_back_below(rel) && resolve(&self.root, rel, true).is_dir()
            }
            _ => true,
        }
    }

    fn excluded_below(&self, rel_in_dir: &str) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|m| !rel_in_dir.is_empty() && m.matches(rel_in_dir).unwrap_or(false))
    }

    /// Whether [`SourceTree::ignored`] can answer differently for paths below `tree_rel` than
    /// for `tree_rel` itself.
    fn ignored_varies_below(&self, tree_rel: &str) -> bool {
        self.ignore.is_some_and(|m| m.may_match_below(tree_rel))
            || self.excluded_varies_below(tree_rel)
    }

    fn excluded_varies_below(&self, rel: &str) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|m| m.may_match_below(rel))
    }

    /// Expands a COPY source (wildcards in any component) into existing paths, sorted. A path
    /// that does not exist is an error; a wildcard that matches nothing selects nothing, as
    /// in BuildKit (`COPY requirements.* ./` copies a file only if there is one).
    pub(crate) fn select(&self, pattern: &str) -> Result<Vec<Selected>, BuildError> {
        let parts = clean(pattern);
        let mut found = vec![(Vec::<String>::new(), self.root.clone())];
        let mut any_wild = false;
        for part in &parts {
            let wild = part.contains(['*', '?', '[']);
            let first_wild = wild && !any_wild;
            any_wild |= wild;
            let mut next = Vec::new();
            for (rel, _) in &found {
                let rel_str = rel.join("/");
                let dir = resolve(&self.root, &rel_str, true);
                if wild {
                    // What .dockerignore leaves out is not in the context, so not there to list.
                    let listed = if self.in_context(&rel_str) {
                        fs::read_dir(&dir)
                    } else {
                        Err(io::ErrorKind::NotFound.into())
                    };
                    let Ok(entries) = listed else {
                        if first_wild {
                            // The path before the first wildcard must be a directory (an
                            // earlier wildcard's matches need not all be).
                            return Err(BuildError::SourceNotFound(format!(
                                "/{}",
                                parts.join("/")
                            )));
                        }
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    for name in names {
                        if path_match(part, &name) {
                            let mut r = rel.clone();
                            r.push(name);
                            let real = self.root.join(r.join("/"));
                            next.push((r, real));
                        }
                    }
                } else {
                    let mut r = rel.clone();
                    r.push(part.clone());
                    let real = dir.join(part);
                    next.push((r, real));
                }
            }
            found = next;
        }
        let mut out = Vec::new();
        for (rel, _) in found {
            let rel = rel.join("/");
            if !self.in_context(&rel) {
                continue;
            }
            // The source itself is followed if it is a symlink (docker's COPY does), to what
            // the context holds: a target .dockerignore leaves out is not there.
            let real = resolve(&self.root, &rel, true);
            let in_tree = real
                .strip_prefix(&self.root)
                .map_or_else(|_| rel.clone(), |t| t.to_string_lossy().into_owned());
            let left_out = in_tree != rel
                && self
                    .ignore
                    .is_some_and(|m| !in_tree.is_empty() && m.matches(&in_tree).unwrap_or(false));
            if !left_out && fs::symlink_metadata(&real).is_ok() {
                out.push(Selected { real, rel, in_tree });
            } else if any_wild && fs::symlink_metadata(resolve(&self.root, &rel, false)).is_ok() {
                // A match that links to nothing: BuildKit fails on it rather than skip it.
                return Err(BuildError::SourceNotFound(format!("/{rel}")));
            }
        }
        if out.is_empty() && !any_wild {
            let shown = format!("/{}", parts.join("/"));
            return Err(BuildError::SourceNotFound(shown));
        }
        Ok(out)
    }
}

/// The lstat fields a walk reports: what the cache fingerprints and looks contents up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) mode: u32,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
}

impl Stat {
    /// Stats `path`, following it if it is a symlink when `follow`.
    pub(crate) fn of(path: &Path, follow: bool) -> io::Result<Self> {
        let flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        match rustix::fs::statx(rustix::fs::CWD, path, flags, StatxFlags::BASIC_STATS) {
            Ok(x) => Ok(Self::from_statx(&x)),
            Err(rustix::io::Errno::NOSYS) if follow => fs::metadata(path).map(|m| Self::from(&m)),
            Err(rustix::io::Errno::NOSYS) => fs::symlink_metadata(path).map(|m| Self::from(&m)),
            Err(e) => Err(e.into()),
        }
    }

    // The same numbers std's `Metadata` gives (it is built from statx too), so fingerprints
    // and stat-cache rows made either way agree.
    fn from_statx(x: &rustix::fs::Statx) -> Self {
        let ns = |t: rustix::fs::StatxTimestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        Self {
            mode: u32::from(x.stx_mode),
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
            size: x.stx_size,
            mtime_ns: ns(x.stx_mtime),
            ctime_ns: ns(x.stx_ctime),
        }
    }

    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub(crate) fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    pub(crate) fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }
}

/// What COPY needs of a source's lstat, at a third of `fs::Metadata`'s size: a copy plan holds
/// one per file of the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    ctime_ns: i64,
    dev: u64,
    ino: u64,
}

impl FileMeta {
    fn kind(&self) -> u32 {
        self.mode & 0o170_000
    }
    pub(crate) fn is_dir(&self) -> bool {
        self.kind() == 0o040_000
    }
    pub(crate) fn is_file(&self) -> bool {
        self.kind() == 0o100_000
    }
    pub(crate) fn is_symlink(&self) -> bool {
        self.kind() == 0o120_000
    }
    /// Type and permission bits, as `st_mode`.
    pub(crate) fn mode(&self) -> u32 {
        self.mode
    }
    pub(crate) fn uid(&self) -> u32 {
        self.uid
    }
    pub(crate) fn gid(&self) -> u32 {
        self.gid
    }
    pub(crate) fn nlink(&self) -> u64 {
        u64::from(self.nlink)
    }
    pub(crate) fn len(&self) -> u64 {
        self.size
    }
    pub(crate) fn mtime(&self) -> i64 {
        self.mtime
    }
    pub(crate) fn dev(&self) -> u64 {
        self.dev
    }
    pub(crate) fn ino(&self) -> u64 {
        self.ino
    }
}

impl From<&fs::Metadata> for FileMeta {
    fn from(m: &fs::Metadata) -> Self {
        Self {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: u32::try_from(m.mtime_nsec()).unwrap_or(0),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

impl FileMeta {
    // The same numbers std's `Metadata` gives, as for [`Stat`].
    fn from_statx(x: &rustix::fs::Statx) -> Self {
        Self {
            mode: u32::from(x.stx_mode),
            uid: x.stx_uid,
            gid: x.stx_gid,
            nlink: x.stx_nlink,
            size: x.stx_size,
            mtime: x.stx_mtime.tv_sec,
            mtime_nsec: x.stx_mtime.tv_nsec,
            ctime_ns: x.stx_ctime.tv_sec * 1_000_000_000 + i64::from(x.stx_ctime.tv_nsec),
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
        }
    }
}

impl From<&FileMeta> for Stat {
    fn from(m: &FileMeta) -> Self {
        Self {
            mode: m.mode,
            dev: m.dev,
            ino: m.ino,
            size: m.size,
            mtime_ns: m.mtime * 1_000_000_000 + i64::from(m.mtime_nsec),
            ctime_ns: m.ctime_ns,
        }
    }
}

impl From<&fs::Metadata> for Stat {
    fn from(m: &fs::Metadata) -> Self {
        Self {
            mode: m.mode(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// One path [`walk_stats`] found.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Its path as reported (under the prefix, names made UTF-8 lossily).
    pub(crate) rel: String,
    pub(crate) stat: Stat,
    /// Its real path, when the part of `rel` below the walked directory does not spell it (a
    /// name that is not UTF-8); else that directory joined with that part is.
    pub(crate) real: Option<PathBuf>,
}

/// Appends the fingerprint encoding of one path: its length-prefixed name and its stat.
pub(crate) fn encode_stat(buf: &mut Vec<u8>, name: &str, st: &Stat) {
    buf.extend_from_slice(&(name.len() as u64).to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    for v in [u64::from(st.mode), st.dev, st.ino, st.size] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&st.mtime_ns.to_le_bytes());
    buf.extend_from_slice(&st.ctime_ns.to_le_bytes());
}

/// Walks `dir` (a selected directory), yielding paths relative to it, parents before children,
/// in name order, skipping what .dockerignore excludes (`base_rel` is `dir`'s path in the tree).
/// `make` gets each path, its lstat and its real path when the path does not spell it (a name
/// that is not UTF-8; else `dir` joined with the path is the real one).
pub(crate) fn walk<T>(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    out: &mut Vec<T>,
    make: impl Fn(String, FileMeta, Option<PathBuf>) -> T,
) -> Result<(), BuildError> {
    let (mut listings, _) = run(tree, &MetaLister, dir, base_rel, "", false, workers(), None);
    out.reserve(count(&listings));
    stitch(&mut listings, 0, out, &make)?;
    Ok(())
}

/// [`walk`], handing `out` to `flush` whenever it holds `chunk` or more paths (and once at the
/// end), as [`StatWalk::paths_chunked`] does. Each directory is listed when the walk reaches it
/// (on this thread), so only the listings on the way down to it are held, however large the
/// tree: the caller's work on each chunk is what runs on every core.
pub(crate) fn walk_chunked<T>(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    out: &mut Vec<T>,
    make: impl Fn(String, FileMeta, Option<PathBuf>) -> T,
    chunk: usize,
    mut flush: impl FnMut(&mut Vec<T>) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let mut lister = OnDemand::new(start(tree, &MetaLister, dir, base_rel, "", false));
    let mut chunks = Chunks {
        size: chunk,
        flush: &mut flush,
        list: &mut |slot| lister.list(slot),
    };
    stitch_in(&mut Vec::new(), 0, out, &make, &mut chunks, false)?;
    flush(out)
}

/// [`walk_chunked`] a directory at a time: a directory's entries are handed over together, the
/// listings of its subdirectories after them (depth first, in name order), and with each chunk
/// `flush` gets the reported paths of the directories whose entries are all in it or before
/// it. False, having handed nothing over, when an entry could be reported for what lies below
/// it alone (`!` patterns look into ignored directories, or `--exclude` drops some): only
/// [`walk_chunked`]'s order knows whether to.
pub(crate) fn walk_dirwise_chunked<T>(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    out: &mut Vec<T>,
    make: impl Fn(String, FileMeta, Option<PathBuf>) -> T,
    chunk: usize,
    mut flush: impl FnMut(&mut Vec<T>, &mut Vec<String>) -> Result<(), BuildError>,
) -> Result<bool, BuildError> {
    if tree.ignore.is_some_and(Matcher::has_exclusions) || tree.exclude.is_some() {
        return Ok(false);
    }
    let mut lister = OnDemand::new(start(tree, &MetaLister, dir, base_rel, "", false));
    let mut whole = Vec::new();
    let mut todo = vec![0];
    while let Some(slot) = todo.pop() {
        let mut listing = lister.list(slot).ok_or_else(not_listed)??;
        let at = todo.len();
        for e in std::mem::take(&mut listing.entries) {
            if e.ignored || e.dropped {
                return Err(BuildError::Invalid(
                    "a directory walk met an entry it cannot report".into(),
                ));
            }
            let real = if e.exact { None } else { listing.real(&e) };
            out.push(make(join(&listing.rel, listing.name(&e)), e.meta, real));
            if let Some(child) = e.child {
                todo.push(child.get());
            }
        }
        // Taken from the end: the first subdirectory first.
        todo[at..].reverse();
        whole.push(std::mem::take(&mut listing.rel));
        if out.len() >= chunk {
            flush(out, &mut whole)?;
        }
    }
    flush(out, &mut whole)?;
    Ok(true)
}

/// Lists a walk's directories one at a time, when its stitch reaches them.
struct OnDemand<'w, 'a, L: Lister> {
    walker: Walker<'w, 'a, L>,
    /// Directories found but not listed yet, by slot.
    pending: Vec<Option<DirTask>>,
    scratch: Scratch<L::Meta>,
    found: Vec<DirTask>,
}

impl<'w, 'a, L: Lister> OnDemand<'w, 'a, L> {
    fn new((walker, root): (Walker<'w, 'a, L>, DirTask)) -> Self {
        Self {
            walker,
            pending: vec![Some(root)],
            scratch: Scratch::default(),
            found: Vec::new(),
        }
    }

    /// Slot `slot`'s listing; `None` if it was never found or was listed already.
    fn list(&mut self, slot: usize) -> Option<Listing<L::Meta>> {
        let task = self.pending.get_mut(slot)?.take()?;
        let (_, listing) = self
            .walker
            .list_one(task, &mut self.scratch, &mut self.found);
        for task in self.found.drain(..) {
            if self.pending.len() <= task.slot {
                self.pending.resize_with(task.slot + 1, || None);
            }
            let at = task.slot;
            self.pending[at] = Some(task);
        }
        Some(listing)
    }
}

/// A listing's share of a [`StatWalk::fingerprint`].
fn feed_listing<M>(h: &mut Sha256Hasher, listing: &DirListing<M>) {
    h.update(listing.digest.as_ref().map_or("", |d| d.hex()).as_bytes());
}

/// [`walk_stats`], its [`StatWalk::fingerprint`] fed to `fp` and its
/// [`StatWalk::paths_chunked`], in one pass that lists each directory when it reaches it (on
/// this thread), so only the listings on the way down are held however large the tree. Returns
/// false, having done nothing, when .dockerignore re-includes paths below ignored directories:
/// that fingerprint needs every listing at once ([`walk_stats`] then).
#[expect(
    clippy::too_many_arguments,
    reason = "the walk's arguments, and the chunked output's"
)]
pub(crate) fn walk_stats_chunked<T>(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    prefix: &str,
    fp: &mut Sha256Hasher,
    out: &mut Vec<T>,
    make: impl Fn(String, Stat, Option<PathBuf>) -> T,
    chunk: usize,
    mut flush: impl FnMut(&mut Vec<T>) -> Result<(), BuildError>,
) -> Result<bool, BuildError> {
    if tree.ignore.is_some_and(Matcher::has_exclusions) {
        return Ok(false);
    }
    let mut lister = OnDemand::new(start(tree, &StatLister, dir, base_rel, prefix, true));
    let mut listed = 0u64;
    let mut list = |slot: usize| {
        let listing = lister.list(slot)?;
        // The stitch visits listings in the order the fingerprint takes them.
        if let Ok(l) = &listing {
            feed_listing(fp, l);
        }
        listed += 1;
        Some(listing)
    };
    let mut chunks = Chunks {
        size: chunk,
        flush: &mut flush,
        list: &mut list,
    };
    stitch_in(&mut Vec::new(), 0, out, &make, &mut chunks, false)?;
    flush(out)?;
    fp.update(&listed.to_le_bytes());
    Ok(true)
}

/// Entries a walk that may only fingerprint keeps in its listings (about 7 MB): past them, a
/// listing keeps only its subdirectories, which is all [`StatWalk::fingerprint`] needs.
pub(crate) const KEPT_ENTRIES: usize = 100_000;

/// [`walk`] with every reported path under `prefix` and only the stat fields, listed but not
/// yet put in order: a warm-cache check needs only [`StatWalk::fingerprint`]. With `keep`,
/// the listings keep at most that many entries in all; if they had to drop some,
/// [`StatWalk::complete`] is false and the paths must be walked again.
pub(crate) fn walk_stats(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    prefix: &str,
    keep: Option<usize>,
) -> StatWalk {
    walk_stats_with(tree, dir, base_rel, prefix, workers(), keep)
}

fn walk_stats_with(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    prefix: &str,
    threads: usize,
    keep: Option<usize>,
) -> StatWalk {
    let (listings, complete) = run(
        tree,
        &StatLister,
        dir,
        base_rel,
        prefix,
        true,
        threads,
        keep,
    );
    StatWalk {
        listings,
        descends_ignored: tree.ignore.is_some_and(Matcher::has_exclusions),
        complete,
    }
}

/// The directory listings of a [`walk_stats`].
pub(crate) struct StatWalk {
    listings: Vec<Option<Listing<StatMeta>>>,
    /// Whether ignored directories were listed (for what `!` patterns re-include).
    descends_ignored: bool,
    /// Whether every listing kept all its entries.
    complete: bool,
}

impl StatWalk {
    /// Feeds `h` a digest of what the walk reports, without putting it in order: every
    /// listing's digest (made while listing, on the walk's threads) in walk order, then the stat
    /// of each ignored directory that is reported for what is re-included below it. A listing's
    /// digest covers each entry that may be reported or leads to what may be: its name, what
    /// the walk decided for it and, when it is reported for sure, its stat; subdirectories'
    /// listings follow in order, so equal feeds mean equal walks. Fails as the walk would
    /// have, with the first unreadable directory.
    pub(crate) fn fingerprint(&mut self, h: &mut Sha256Hasher) -> Result<(), BuildError> {
        let order = self.order()?;
        for &slot in &order {
            if let Some(Some(Ok(listing))) = self.listings.get(slot) {
                feed_listing(h, listing);
            }
        }
        // After the digests, so that a walk that lists as it goes can feed the same.
        h.update(&(order.len() as u64).to_le_bytes());
        if self.descends_ignored {
            let mut buf = Vec::new();
            reported_ignored(&self.listings, 0, &mut buf);
            h.update(&buf);
        }
        Ok(())
    }

    /// Listing slots in walk order (what [`stitch`] visits).
    fn order(&mut self) -> Result<Vec<usize>, BuildError> {
        let mut order = Vec::with_capacity(self.listings.len());
        let mut pending = vec![0];
        while let Some(slot) = pending.pop() {
            let Some(listing) = self.listings.get_mut(slot) else {
                return Err(not_listed());
            };
            match listing {
                Some(Ok(l)) => pending.extend(
                    l.entries
                        .iter()
                        .rev()
                        .filter_map(|e| e.child.map(NonZeroUsize::get)),
                ),
                Some(Err(_)) => {
                    return Err(listing
                        .take()
                        .and_then(Result::err)
                        .unwrap_or_else(not_listed));
                }
                None => return Err(not_listed()),
            }
            order.push(slot);
        }
        Ok(order)
    }

    /// The paths found, in walk order.
    #[cfg(test)]
    pub(crate) fn paths(self) -> Result<Vec<Walked>, BuildError> {
        let mut out = Vec::new();
        self.paths_chunked(
            &mut out,
            |rel, stat, real| Walked { rel, stat, real },
            usize::MAX,
            |_| Ok(()),
        )?;
        Ok(out)
    }

    /// Appends what `make` makes of each path found (its path, stat and real path as
    /// [`Walked`] has them) to `out`, in walk order, handing `out` to `flush` whenever it
    /// holds `chunk` or more (and once at the end): `flush` takes them out, so a walk of any
    /// size holds about a chunk of them at once. Each directory's listing is freed once its
    /// paths are made.
    pub(crate) fn paths_chunked<T>(
        mut self,
        out: &mut Vec<T>,
        make: impl Fn(String, Stat, Option<PathBuf>) -> T,
        chunk: usize,
        mut flush: impl FnMut(&mut Vec<T>) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        if !self.complete {
            return Err(BuildError::Invalid(
                "a walk that kept only directories was asked for its paths".into(),
            ));
        }
        let mut chunks = Chunks {
            size: chunk,
            flush: &mut flush,
            list: &mut |_| None,
        };
        stitch_in(&mut self.listings, 0, out, &make, &mut chunks, false)?;
        flush(out)
    }

    /// Whether [`StatWalk::paths_chunked`] can give the paths: no listing dropped entries to
    /// stay within the walk's `keep`.
    pub(crate) fn complete(&self) -> bool {
        self.complete
    }
}

/// Appends the stat of every ignored directory below listing `slot` that is reported (for
/// something reported below it); returns how many paths are reported, as [`stitch`] counts.
fn reported_ignored(
    listings: &[Option<Listing<StatMeta>>],
    slot: usize,
    buf: &mut Vec<u8>,
) -> usize {
    let Some(Some(Ok(listing))) = listings.get(slot) else {
        return 0;
    };
    let mut reported = listing.left_out;
    for e in &listing.entries {
        let below = e
            .child
            .map_or(0, |c| reported_ignored(listings, c.get(), buf));
        if e.ignored && below == 0 {
            continue;
        }
        if e.ignored && !e.dropped {
            encode_stat(buf, "", &e.meta);
        }
        reported += 1 + below;
    }
    reported
}

fn not_listed() -> BuildError {
    BuildError::Invalid("a directory of the walk was not listed".into())
}

/// Threads a walk may use: one per core, at most 8 (past that the disk, not the CPU, limits).
fn workers() -> usize {
    static WORKERS: OnceLock<usize> = OnceLock::new();
    *WORKERS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(8)
    })
}

/// One listed directory: its entries' names in one buffer (one allocation per directory, not
/// per path), sorted, and what the walk decided for each.
struct DirListing<M> {
    /// The directory's reported path.
    rel: String,
    names: String,
    entries: Vec<Entry<M>>,
    /// The real paths of entries whose reported path does not spell them, by where their
    /// names start (in listing order, so sorted).
    reals: Vec<(u32, PathBuf)>,
    /// Of the kept entries, when the walk fingerprints.
    digest: Option<Digest>,
    /// Entries left out to stay within the walk's `keep` that would be reported: what
    /// [`reported_ignored`] still needs to count of them.
    left_out: usize,
}

impl<M> DirListing<M> {
    fn new(rel: String) -> Self {
        Self {
            rel,
            names: String::new(),
            entries: Vec::new(),
            reals: Vec::new(),
            digest: None,
            left_out: 0,
        }
    }

    fn name(&self, e: &Entry<M>) -> &str {
        &self.names[e.name.0 as usize..e.name.1 as usize]
    }

    fn real(&self, e: &Entry<M>) -> Option<PathBuf> {
        let i = self.reals.binary_search_by_key(&e.name.0, |r| r.0).ok()?;
        Some(self.reals[i].1.clone())
    }

    /// Appends a name for [`Lister::list`]: returns its range in `names`.
    fn push_name(&mut self, name: &str) -> io::Result<(u32, u32)> {
        let start = self.names.len();
        self.names.push_str(name);
        match (u32::try_from(start), u32::try_from(self.names.len())) {
            (Ok(start), Ok(end)) => Ok((start, end)),
            _ => Err(io::Error::other(
                "more than 4 GiB of names in one directory",
            )),
        }
    }
}

struct Entry<M> {
    /// Its name's range in the listing's `names` (lossily UTF-8).
    name: (u32, u32),
    meta: M,
    is_dir: bool,
    /// Whether the reported path spells the real one below the walked directory (else the
    /// listing's `reals` has it).
    exact: bool,
    /// Ignored itself: reported only if something below it is.
    ignored: bool,
    /// Matched by `--exclude` relative to the walked directory: not reported, though it
    /// still counts as something below its parent.
    dropped: bool,
    /// Its listing's slot, for a directory that is descended into.
    child: Option<NonZeroUsize>,
}

type Listing<M> = Result<DirListing<M>, BuildError>;

/// Lists one directory, one lstat per entry (symlinks are reported, never followed).
trait Lister: Sync {
    type Meta: Send;

    /// What a listed entry keeps, from its statx (or std's lstat where there is no statx).
    fn of_statx(x: &rustix::fs::Statx) -> Self::Meta;
    fn of_std(m: &fs::Metadata) -> Self::Meta;
    fn is_dir(meta: &Self::Meta) -> bool;

    /// Adds every entry of `dir` to `out`, unsorted: getdents into the reused `buf` and one
    /// statx per entry, relative to the open directory. `follow`: `dir` itself may be a
    /// symlink to follow (the selected source only); `exact`: `out.rel` spells `dir`'s real
    /// path.
    fn list(
        &self,
        dir: &Path,
        follow: bool,
        exact: bool,
        buf: &mut Vec<u8>,
        out: &mut DirListing<Self::Meta>,
    ) -> io::Result<()> {
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !follow {
            // Listed as a directory by lstat: never follow what may have replaced it since.
            flags |= OFlags::NOFOLLOW;
        }
        let fd = rustix::fs::open(dir, flags, Mode::empty())?;
        if buf.capacity() < 32 * 1024 {
            buf.reserve(32 * 1024);
        }
        let mut entries = RawDir::new(&fd, buf.spare_capacity_mut());
        // An error part way ends the listing, as `read_dir` does.
        while let Some(Ok(entry)) = entries.next() {
            let name = entry.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let stat = match rustix::fs::statx(
                &fd,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::BASIC_STATS,
            ) {
                Ok(x) => Self::of_statx(&x),
                // No statx (old kernels, some seccomp profiles): std falls back to lstat.
                Err(rustix::io::Errno::NOSYS) => {
                    match fs::symlink_metadata(dir.join(OsStr::from_bytes(bytes))) {
                        Ok(m) => Self::of_std(&m),
                        Err(_) => continue,
                    }
                }
                // Gone since it was listed.
                Err(_) => continue,
            };
            let utf8 = std::str::from_utf8(bytes).ok();
            let exact = exact && utf8.is_some();
            let name = match utf8 {
                Some(n) => out.push_name(n)?,
                None => out.push_name(&String::from_utf8_lossy(bytes))?,
            };
            if !exact {
                out.reals.push((name.0, dir.join(OsStr::from_bytes(bytes))));
            }
            out.entries.push(Entry {
                name,
                is_dir: Self::is_dir(&stat),
                meta: stat,
                exact,
                ignored: false,
                dropped: false,
                child: None,
            });
        }
        Ok(())
    }

    fn stat(meta: &Self::Meta) -> Stat;

    /// The real path of an entry of `listing`, the listing of `dir`.
    fn path(listing: &DirListing<Self::Meta>, e: &Entry<Self::Meta>, dir: &Path) -> PathBuf {
        listing.real(e).unwrap_or_else(|| dir.join(listing.name(e)))
    }
}

fn join(base: &str, name: &str) -> String {
    let mut s = String::with_capacity(base.len() + 1 + name.len());
    push_joined(&mut s, base, name);
    s
}

fn push_joined(s: &mut String, base: &str, name: &str) {
    if !base.is_empty() {
        s.push_str(base);
        s.push('/');
    }
    s.push_str(name);
}

/// What a copy needs of each entry ([`FileMeta`]).
struct MetaLister;

impl Lister for MetaLister {
    type Meta = FileMeta;

    fn of_statx(x: &rustix::fs::Statx) -> FileMeta {
        FileMeta::from_statx(x)
    }

    fn of_std(m: &fs::Metadata) -> FileMeta {
        FileMeta::from(m)
    }

    fn is_dir(meta: &FileMeta) -> bool {
        meta.is_dir()
    }

    fn stat(meta: &Self::Meta) -> Stat {
        Stat::from(meta)
    }
}

type StatMeta = Stat;

/// [`Stat`]s only.
struct StatLister;

impl Lister for StatLister {
    type Meta = StatMeta;

    fn of_statx(x: &rustix::fs::Statx) -> Stat {
        Stat::from_statx(x)
    }

    fn of_std(m: &fs::Metadata) -> Stat {
        Stat::from(m)
    }

    fn is_dir(meta: &Stat) -> bool {
        meta.is_dir()
    }

    fn stat(meta: &Self::Meta) -> Stat {
        *meta
    }
}

/// Whether paths in a directory need the matcher, or all answer alike (known from the
/// directory's own answer when no pattern can tell anything below it apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Ask,
    All(bool),
}

/// A child directory's scope for one set of patterns, and the path the patterns need (kept
/// only while they are still asked): `parent_rel` and `scope` are the parent's, `this` whether
/// the patterns matched the child itself.
fn below(
    scope: Scope,
    parent_rel: &str,
    name: &str,
    this: bool,
    varies: impl Fn(&str) -> bool,
) -> (String, Scope) {
    match scope {
        Scope::All(v) => (String::new(), Scope::All(v)),
        Scope::Ask => {
            let r = join(parent_rel, name);
            if varies(&r) {
                (r, Scope::Ask)
            } else {
                (String::new(), Scope::All(this))
            }
        }
    }
}

/// A directory to list.
struct DirTask {
    /// Where its listing goes.
    slot: usize,
    path: PathBuf,
    follow: bool,
    exact: bool,
    /// Its path in the tree (for .dockerignore and --exclude); kept only while asked.
    tree_rel: String,
    /// Its path below the walked directory (for --exclude's second reading); ditto.
    dir_rel: String,
    /// Its reported path.
    rel: String,
    ignore: Scope,
    exclude: Scope,
}

struct Walker<'w, 'a, L> {
    tree: &'w SourceTree<'a>,
    lister: &'w L,
    /// Whether an ignored directory is still listed (`!` patterns may re-include below it).
    descend_ignored: bool,
    /// Whether listings get a digest.
    digests: bool,
    /// Listings handed out below the root's (slot 0).
    slots: AtomicUsize,
    /// Entries the listings may still keep; past them, only subdirectories.
    keep: Option<AtomicUsize>,
    /// A listing kept only its subdirectories.
    dropped: std::sync::atomic::AtomicBool,
}

/// Per-thread buffers.
struct Scratch<M> {
    dents: Vec<u8>,
    path: String,
    bytes: Vec<u8>,
    /// Listed into, then copied out at its size (no growing vectors per directory).
    listing: DirListing<M>,
}

impl<M> Default for Scratch<M> {
    fn default() -> Self {
        Self {
            dents: Vec::new(),
            path: String::new(),
            bytes: Vec::new(),
            listing: DirListing::new(String::new()),
        }
    }
}

impl<M> Scratch<M> {
    fn joined(&mut self, base: &str, name: &str) -> &str {
        self.path.clear();
        push_joined(&mut self.path, base, name);
        &self.path
    }
}

/// Lists `dir` and every directory below it the walk descends into, on up to `threads`
/// threads, with .dockerignore and `--exclude` (relative to `dir`) answered; slot 0 holds
/// `dir`'s listing. [`stitch`] puts them in order.
/// With `keep`, the listings keep that many entries in all, then only subdirectories; the
/// flag says whether none had to drop any.
#[expect(
    clippy::too_many_arguments,
    reason = "the walk's arguments, and how it runs"
)]
fn run<L: Lister>(
    tree: &SourceTree<'_>,
    lister: &L,
    dir: &Path,
    base_rel: &str,
    prefix: &str,
    digests: bool,
    threads: usize,
    keep: Option<usize>,
) -> (Vec<Option<Listing<L::Meta>>>, bool) {
    let (mut walker, root) = start(tree, lister, dir, base_rel, prefix, digests);
    walker.keep = keep.map(AtomicUsize::new);
    let mut listings: Vec<Option<Listing<L::Meta>>> = Vec::new();
    for (slot, listing) in walker.list_all(root, threads) {
        if listings.len() <= slot {
            listings.resize_with(slot + 1, || None);
        }
        listings[slot] = Some(listing);
    }
    (listings, !walker.dropped.load(Ordering::Relaxed))
}

/// A walker of `dir` and the task that lists it (slot 0).
fn start<'w, 'a, L: Lister>(
    tree: &'w SourceTree<'a>,
    lister: &'w L,
    dir: &Path,
    base_rel: &str,
    prefix: &str,
    digests: bool,
) -> (Walker<'w, 'a, L>, DirTask) {
    let ignore = if tree.ignored_varies_below(base_rel) {
        Scope::Ask
    } else {
        Scope::All(tree.ignored(base_rel))
    };
    let exclude = if tree.excluded_varies_below("") {
        Scope::Ask
    } else {
        Scope::All(false)
    };
    let walker = Walker {
        tree,
        lister,
        descend_ignored: tree.ignore.is_some_and(Matcher::has_exclusions),
        digests,
        slots: AtomicUsize::new(0),
        keep: None,
        dropped: std::sync::atomic::AtomicBool::new(false),
    };
    let root = DirTask {
        slot: 0,
        path: dir.to_owned(),
        follow: true,
        exact: true,
        tree_rel: if ignore == Scope::Ask {
            base_rel.to_owned()
        } else {
            String::new()
        },
        dir_rel: String::new(),
        rel: prefix.to_owned(),
        ignore,
        exclude,
    };
    (walker, root)
}

/// Entries listed (an upper bound of the paths reported).
fn count<M>(listings: &[Option<Listing<M>>]) -> usize {
    listings
        .iter()
        .map(|l| match l {
            Some(Ok(l)) => l.entries.len(),
            _ => 0,
        })
        .sum()
}

/// Appends listing `slot`'s paths, each directory followed by its own listing's: the order of
/// a sequential depth-first walk. Returns how many paths that walk would have reported before
/// `--exclude` (which decides whether an ignored directory is kept).
fn stitch<M, T>(
    listings: &mut [Option<Listing<M>>],
    slot: usize,
    out: &mut Vec<T>,
    make: &impl Fn(String, M, Option<PathBuf>) -> T,
) -> Result<usize, BuildError> {
    let mut never = |_: &mut Vec<T>| Ok(());
    let mut chunks = Chunks {
        size: usize::MAX,
        flush: &mut never,
        list: &mut |_| None,
    };
    stitch_in(listings, slot, out, make, &mut chunks, false)
}

/// Where a chunked [`stitch`] hands its output, and how it gets a listing it was not given.
struct Chunks<'f, T, M> {
    size: usize,
    flush: &'f mut dyn FnMut(&mut Vec<T>) -> Result<(), BuildError>,
    /// Lists a slot's directory now (`None`: it was never found).
    list: &'f mut dyn FnMut(usize) -> Option<Listing<M>>,
}

/// [`stitch`], flushing `out` between entries once it holds a chunk, except below an ignored
/// directory: that one is taken back out if nothing below it is reported.
fn stitch_in<M, T>(
    listings: &mut [Option<Listing<M>>],
    slot: usize,
    out: &mut Vec<T>,
    make: &impl Fn(String, M, Option<PathBuf>) -> T,
    chunks: &mut Chunks<'_, T, M>,
    below_ignored: bool,
) -> Result<usize, BuildError> {
    let mut listing = match listings.get_mut(slot).and_then(Option::take) {
        Some(listing) => listing,
        None => (chunks.list)(slot).ok_or_else(not_listed)?,
    }?;
    let entries = std::mem::take(&mut listing.entries);
    let mut reported = 0;
    for e in entries {
        if !below_ignored && out.len() >= chunks.size {
            (chunks.flush)(out)?;
        }
        let at = out.len();
        if !e.dropped {
            let real = if e.exact { None } else { listing.real(&e) };
            out.push(make(join(&listing.rel, listing.name(&e)), e.meta, real));
        }
        let below = match e.child {
            Some(child) => stitch_in(
                listings,
                child.get(),
                out,
                make,
                chunks,
                below_ignored || e.ignored,
            )?,
            None => 0,
        };
        if e.ignored && below == 0 {
            out.truncate(at);
            continue;
        }
        reported += 1 + below;
    }
    Ok(reported)
}

/// The queue the threads share.
struct Queue {
    tasks: Vec<DirTask>,
    /// Threads working on a task (which may add more).
    busy: usize,
    /// A thread panicked: the others stop waiting.
    failed: bool,
}

/// Marks the queue failed if its thread unwinds, so no other thread waits forever.
struct PanicGuard<'q> {
    queue: &'q Mutex<Queue>,
    wake: &'q Condvar,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.queue).failed = true;
            self.wake.notify_all();
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // The queue holds no invariant a panic could break half way.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Entries listed before the walk spreads over threads: below this a thread costs more
/// than it saves.
const SEQUENTIAL_ENTRIES: usize = 256;

impl<L: Lister> Walker<'_, '_, L> {
    /// Lists `root` and every directory below it that is descended into.
    fn list_all(&self, root: DirTask, threads: usize) -> Vec<(usize, Listing<L::Meta>)> {
        let mut done = Vec::new();
        let mut tasks = vec![root];
        let mut scratch = Scratch::default();
        let mut seen = 0;
        while let Some(task) = tasks.pop() {
            let (slot, listing) = self.list_one(task, &mut scratch, &mut tasks);
            seen += listing.as_ref().map_or(0, |l| l.entries.len());
            done.push((slot, listing));
            if threads > 1 && tasks.len() > 1 && seen >= SEQUENTIAL_ENTRIES {
                break;
            }
        }
        if tasks.is_empty() {
            return done;
        }
        let queue = Mutex::new(Queue {
            tasks,
            busy: 0,
            failed: false,
        });
        let wake = Condvar::new();
        std::thread::scope(|s| {
            let others: Vec<_> = (1..threads)
                .map(|_| s.spawn(|| self.work(&queue, &wake)))
                .collect();
            done.extend(self.work(&queue, &wake));
            for t in others {
                match t.join() {
                    Ok(listed) => done.extend(listed),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        done
    }

    /// One thread's share: takes directories off the queue until none are left or being
    /// listed, going on with one subdirectory of each itself and sharing the rest.
    fn work(&self, queue: &Mutex<Queue>, wake: &Condvar) -> Vec<(usize, Listing<L::Meta>)> {
        let _guard = PanicGuard { queue, wake };
        let mut done = Vec::new();
        let mut scratch = Scratch::default();
        let mut found = Vec::new();
        let mut next = None;
        loop {
            let task = match next.take() {
                Some(task) => task,
                None => {
                    let mut q = lock(queue);
                    loop {
                        if q.failed {
                            return done;
                        }
                        if let Some(task) = q.tasks.pop() {
                            q.busy += 1;
                            break task;
                        }
                        if q.busy == 0 {
                            return done;
                        }
                        q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                    }
                }
            };
            done.push(self.list_one(task, &mut scratch, &mut found));
            next = found.pop();
            if next.is_none() || !found.is_empty() {
                let mut q = lock(queue);
                if next.is_none() {
                    q.busy -= 1;
                }
                q.tasks.append(&mut found);
                if !q.tasks.is_empty() || q.busy == 0 {
                    wake.notify_all();
                }
            }
        }
    }

    /// Lists one directory: sorted, .dockerignore and `--exclude` answered, subdirectories to
    /// descend into pushed onto `found`, the digest made.
    fn list_one(
        &self,
        task: DirTask,
        scratch: &mut Scratch<L::Meta>,
        found: &mut Vec<DirTask>,
    ) -> (usize, Listing<L::Meta>) {
        let mut work = std::mem::replace(&mut scratch.listing, DirListing::new(String::new()));
        work.names.clear();
        work.entries.clear();
        work.reals.clear();
        let listed = self.lister.list(
            &task.path,
            task.follow,
            task.exact,
            &mut scratch.dents,
            &mut work,
        );
        let slot = task.slot;
        let listing = match listed {
            Ok(()) => Ok(self.decide(task, &mut work, scratch, found)),
            Err(e) => Err(BuildError::io("reading", &task.path, e)),
        };
        scratch.listing = work;
        (slot, listing)
    }

    /// Sorts and filters what `work` listed for `task`, queues its subdirectories and returns
    /// it at its size.
    fn decide(
        &self,
        task: DirTask,
        work: &mut DirListing<L::Meta>,
        scratch: &mut Scratch<L::Meta>,
        found: &mut Vec<DirTask>,
    ) -> DirListing<L::Meta> {
        let DirListing { names, entries, .. } = &mut *work;
        let name = |e: &Entry<L::Meta>| &names[e.name.0 as usize..e.name.1 as usize];
        // Names in byte order; equal (lossy) names keep the directory's order, as a stable
        // sort would, with no buffer to allocate.
        entries.sort_unstable_by(|a, b| name(a).cmp(name(b)).then(a.name.0.cmp(&b.name.0)));
        entries.retain_mut(|e| {
            let name = name(e);
            e.ignored = match task.ignore {
                Scope::All(v) => v,
                Scope::Ask => self.tree.ignored(scratch.joined(&task.tree_rel, name)),
            };
            if e.ignored && !(e.is_dir && self.descend_ignored) {
                return false;
            }
            e.dropped = match task.exclude {
                Scope::All(v) => v,
                Scope::Ask => self
                    .tree
                    .excluded_below(scratch.joined(&task.dir_rel, name)),
            };
            true
        });
        for i in 0..work.entries.len() {
            let e = &work.entries[i];
            if !e.is_dir {
                continue;
            }
            let name = work.name(e);
            let (tree_rel, ignore) = below(task.ignore, &task.tree_rel, name, e.ignored, |r| {
                self.tree.ignored_varies_below(r)
            });
            let (dir_rel, exclude) = below(task.exclude, &task.dir_rel, name, e.dropped, |r| {
                self.tree.excluded_varies_below(r)
            });
            // Below a directory whose every path is ignored nothing is reported.
            if ignore == Scope::All(true) {
                continue;
            }
            let slot = NonZeroUsize::MIN.saturating_add(self.slots.fetch_add(1, Ordering::Relaxed));
            found.push(DirTask {
                slot: slot.get(),
                path: L::path(work, e, &task.path),
                follow: false,
                exact: e.exact,
                tree_rel,
                dir_rel,
                rel: join(&task.rel, name),
                ignore,
                exclude,
            });
            work.entries[i].child = Some(slot);
        }
        let digest = self.digests.then(|| {
            let buf = &mut scratch.bytes;
            buf.clear();
            for e in &work.entries {
                // Never reported, and nothing below it is.
                if e.ignored && e.child.is_none() {
                    continue;
                }
                let name = work.name(e);
                buf.extend_from_slice(&(name.len() as u64).to_le_bytes());
                buf.extend_from_slice(name.as_bytes());
                buf.push(
                    u8::from(e.ignored)
                        | u8::from(e.dropped) << 1
                        | u8::from(e.child.is_some()) << 2,
                );
                // Reported for sure; an ignored directory's stat counts only if it is
                // reported, which depends on what is below it ([`StatWalk::fingerprint`]).
                if !e.ignored && !e.dropped {
                    encode_stat(buf, "", &L::stat(&e.meta));
                }
            }
            let mut h = Sha256Hasher::new();
            h.update(buf);
            h.finish()
        });
        let within = self.keep.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                l.checked_sub(work.entries.len())
            })
            .is_ok()
        });
        if within {
            return DirListing {
                rel: task.rel,
                names: work.names.clone(),
                entries: work.entries.drain(..).collect(),
                reals: work.reals.clone(),
                digest,
                left_out: 0,
            };
        }
        // Only what the fingerprint reads: the subdirectories (their order, and what an
        // ignored one contributes), with their names.
        self.dropped.store(true, Ordering::Relaxed);
        let mut names = String::new();
        let mut entries = Vec::new();
        let left_out = work
            .entries
            .iter()
            .filter(|e| e.child.is_none() && !e.ignored)
            .count();
        for mut e in work.entries.drain(..).filter(|e| e.child.is_some()) {
            let name = &work.names[e.name.0 as usize..e.name.1 as usize];
            let start = u32::try_from(names.len()).unwrap_or(u32::MAX);
            names.push_str(name);
            e.name = (start, u32::try_from(names.len()).unwrap_or(u32::MAX));
            entries.push(e);
        }
        DirListing {
            rel: task.rel,
            names,
            entries,
            reals: Vec::new(),
            digest,
            left_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Found = Vec<(PathBuf, String, FileMeta)>;

    /// [`walk_dirwise_chunked`] hands over what [`walk`] gives (`want`), unless it declines,
    /// and reports each directory whole only once every entry of it was handed over.
    fn dirwise_agrees(
        tree: &SourceTree<'_>,
        dir: &Path,
        base_rel: &str,
        chunk: usize,
        want: &Found,
    ) {
        let mut got = Vec::new();
        let mut whole = Vec::new();
        let dirwise = walk_dirwise_chunked(
            tree,
            dir,
            base_rel,
            &mut Vec::new(),
            |rel, meta, real| (real.unwrap_or_else(|| dir.join(&rel)), rel, meta),
            chunk,
            |out, done| {
                got.append(out);
                whole.extend(done.drain(..).map(|d| (d, got.len())));
                Ok(())
            },
        )
        .unwrap();
        let plain = tree.exclude.is_none() && !tree.ignore.is_some_and(Matcher::has_exclusions);
        assert_eq!(dirwise, plain);
        if !dirwise {
            assert!(got.is_empty() && whole.is_empty());
            return;
        }
        let sorted = |v: &Found| {
            let mut v: Vec<(PathBuf, String)> = v
                .iter()
                .map(|(real, rel, _)| (real.clone(), rel.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&got), sorted(want), "chunks of {chunk}");
        let parent = |rel: &str| rel.rsplit_once('/').map_or("", |(p, _)| p).to_owned();
        let dirs: std::collections::BTreeSet<String> = want
            .iter()
            .filter(|(_, _, m)| m.is_dir())
            .map(|(_, rel, _)| rel.clone())
            .chain([String::new()])
            .collect();
        assert_eq!(
            whole
                .iter()
                .map(|(d, _)| d.clone())
                .collect::<std::collections::BTreeSet<_>>(),
            dirs,
            "every directory is reported whole"
        );
        for (d, handed) in &whole {
            for (_, rel, _) in want.iter().filter(|(_, rel, _)| &parent(rel) == d) {
                assert!(
                    got[..*handed].iter().any(|(_, r, _)| r == rel),
                    "{rel} handed over after {d:?} was reported whole"
                );
            }
        }
    }

    /// [`walk`] on a given number of threads.
    fn walk_with(
        tree: &SourceTree<'_>,
        dir: &Path,
        base_rel: &str,
        prefix: &str,
        threads: usize,
    ) -> Found {
        let (mut listings, _) = run(
            tree,
            &MetaLister,
            dir,
            base_rel,
            prefix,
            false,
            threads,
            None,
        );
        let mut out = Vec::new();
        stitch(
            &mut listings,
            0,
            &mut out,
            &|rel: String, meta, real: Option<PathBuf>| {
                let real = real.unwrap_or_else(|| {
                    let below = rel.strip_prefix(prefix).unwrap_or(&rel);
                    dir.join(below.trim_start_matches('/'))
                });
                (real, rel, meta)
            },
        )
        .unwrap();
        out
    }

    /// The sequential walk the parallel one replaced, kept as the reference for its output.
    fn reference(tree: &SourceTree<'_>, dir: &Path, base_rel: &str, prefix: &str) -> Found {
        fn inner(
            tree: &SourceTree<'_>,
            dir: &Path,
            tree_rel: &str,
            out_rel: &str,
            out: &mut Found,
        ) {
            let mut entries: Vec<(String, fs::DirEntry)> = fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, entry) in entries {
                let rel_in_tree = join(tree_rel, &name);
                let Ok(meta) = entry.metadata() else { continue };
                let is_dir = meta.is_dir();
                let ignored = tree.ignored(&rel_in_tree);
                if ignored && !(is_dir && tree.ignore.is_some_and(Matcher::has_exclusions)) {
                    continue;
                }
                let rel = join(out_rel, &name);
                let path = entry.path();
                let at = out.len();
                out.push((path.clone(), rel.clone(), FileMeta::from(&meta)));
                if is_dir {
                    inner(tree, &path, &rel_in_tree, &rel, out);
                }
                if ignored && out.len() == at + 1 {
                    out.truncate(at);
                }
            }
        }
        let mut out = Vec::new();
        inner(tree, dir, base_rel, prefix, &mut out);
        if tree.exclude.is_some() {
            out.retain(|(_, rel, _)| {
                let rel = if prefix.is_empty() {
                    rel.as_str()
                } else {
                    rel.strip_prefix(prefix)
                        .map_or(rel.as_str(), |r| r.trim_start_matches('/'))
                };
                !tree.excluded_below(rel)
            });
        }
        out
    }

    fn write(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, rel).unwrap();
    }

    /// Nested directories, many of them (so the walk goes parallel), symlinks to a directory,
    /// a file and nowhere, an empty directory and a name that is not UTF-8.
    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "Dockerfile",
            ".dockerignore",
            "a.txt",
            "b.tmp",
            "logs/x.log",
            "logs/keep.txt",
            "vendor/lib/v.txt",
            "vendor/keep/k.txt",
            "vendor/keep/deep/k.tmp",
            "build/out.bin",
        ] {
            write(root, f);
        }
        for d in 0..120 {
            for f in 0..4 {
                write(root, &format!("src/d{d:03}/f{f}.txt"));
            }
            write(root, &format!("src/d{d:03}/sub/f3"));
            write(root, &format!("src/d{d:03}/sub/g.tmp"));
        }
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::create_dir_all(root.join("vendor/empty")).unwrap();
        std::os::unix::fs::symlink("src", root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("src/link-file")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("src/d007/dangling")).unwrap();
        fs::write(root.join(OsStr::from_bytes(b"src/d001/bad\xffname")), "x").unwrap();
        fs::create_dir_all(root.join(OsStr::from_bytes(b"src/odd\xfedir"))).unwrap();
        fs::write(root.join(OsStr::from_bytes(b"src/odd\xfedir/inside")), "x").unwrap();
        dir
    }

    fn matcher(patterns: &[&str]) -> Option<Matcher> {
        (!patterns.is_empty()).then(|| Matcher::new(patterns).unwrap())
    }

    #[test]
    fn parallel_walk_matches_the_sequential_one() {
        let ctx = context();
        let root = ctx.path();
        let ignores: &[&[&str]] = &[
            &[],
            &["Dockerfile", ".dockerignore"],
            &[
                "vendor",
                "!vendor/keep",
                "build",
                "**/*.tmp",
                "logs/*.log",
                "src/d01*",
            ],
            &["*", "!src/d003", "!a.txt", "!vendor/keep/deep"],
            &["src/**", "!src/d002/sub/**", "vendor/empty"],
            &["src/d1*/sub", "!src/d11*/sub/f3", "link-dir"],
        ];
        let excludes: &[&[&str]] = &[
            &[],
            &["*.txt"],
            &["d00*/sub"],
            &["**/f3", "!src/d05*/sub/f3"],
        ];
        let mut walks = 0;
        for ignore in ignores {
            let ignore = matcher(ignore);
            for exclude in excludes {
                let tree = SourceTree {
                    root: root.to_owned(),
                    ignore: ignore.as_ref(),
                    exclude: matcher(exclude),
                };
                // The whole context (COPY .), a directory in it as the cache walks it (under its
                // own path) and as the copy does (relative to it).
                for (dir, base_rel, prefix) in
                    [("", "", ""), ("src", "src", "src"), ("src", "src", "")]
                {
                    let dir = root.join(dir);
                    let want = reference(&tree, &dir, base_rel, prefix);
                    for threads in [1, 4] {
                        let got = walk_with(&tree, &dir, base_rel, prefix, threads);
                        assert_eq!(got.len(), want.len(), "{ignore:?} {exclude:?} {base_rel}");
                        for ((real, rel, meta), (want_real, want_rel, want_meta)) in
                            got.iter().zip(&want)
                        {
                            assert_eq!((rel, real), (want_rel, want_real));
                            assert_eq!(Stat::from(meta), Stat::from(want_meta), "{rel}");
                        }
                        let stats = walk_stats_with(&tree, &dir, base_rel, prefix, threads, None)
                            .paths()
                            .unwrap();
                        assert_eq!(stats.len(), want.len());
                        for (w, (want_real, want_rel, want_meta)) in stats.iter().zip(&want) {
                            assert_eq!(&w.rel, want_rel);
                            assert_eq!(w.stat, Stat::from(want_meta), "{}", w.rel);
                            let below = w.rel.strip_prefix(prefix).unwrap().trim_start_matches('/');
                            let real = w.real.clone().unwrap_or_else(|| dir.join(below));
                            assert_eq!(&real, want_real);
                        }
                        // Listed as the walk reaches each directory, a chunk at a time (as
                        // a copy walks): the same paths.
                        if prefix.is_empty() {
                            for chunk in [1, 7, 4096] {
                                dirwise_agrees(&tree, &dir, base_rel, chunk, &want);
                                let mut lazy = Vec::new();
                                walk_chunked(
                                    &tree,
                                    &dir,
                                    base_rel,
                                    &mut Vec::new(),
                                    |rel, meta, real| (real, rel, meta),
                                    chunk,
                                    |out| {
                                        lazy.append(out);
                                        Ok(())
                                    },
                                )
                                .unwrap();
                                let lazy: Vec<(PathBuf, String)> = lazy
                                    .into_iter()
                                    .map(|(real, rel, _)| {
                                        (real.unwrap_or_else(|| dir.join(&rel)), rel)
                                    })
                                    .collect();
                                let want: Vec<(PathBuf, String)> = want
                                    .iter()
                                    .map(|(r, rel, _)| (r.clone(), rel.clone()))
                                    .collect();
                                assert_eq!(lazy, want, "lazy, chunks of {chunk}");
                            }
                        }
                        // Handed over a chunk at a time, the same paths in the same order
                        // (an ignored directory taken back out never straddles a flush).
                        for chunk in [1, 3, 50] {
                            let mut all = Vec::new();
                            let mut flushes = 0;
                            walk_stats_with(&tree, &dir, base_rel, prefix, threads, None)
                                .paths_chunked(
                                    &mut Vec::new(),
                                    |rel, stat, real| Walked { rel, stat, real },
                                    chunk,
                                    |out| {
                                        flushes += 1;
                                        all.append(out);
                                        Ok(())
                                    },
                                )
                                .unwrap();
                            assert_eq!(all, stats, "chunks of {chunk}");
                            if chunk == 1 && stats.len() > 1 {
                                assert!(flushes > 1, "chunks of 1 came in {flushes} flush");
                            }
                        }
                        // Fingerprinted and listed as the walk reaches each directory: the
                        // same paths and the same fingerprint (unless `!` patterns need every
                        // listing at once).
                        let mut fp = Sha256Hasher::new();
                        walk_stats_with(&tree, &dir, base_rel, prefix, threads, None)
                            .fingerprint(&mut fp)
                            .unwrap();
                        // Keeping only a few entries listed: the same fingerprint, but no
                        // paths.
                        let mut few =
                            walk_stats_with(&tree, &dir, base_rel, prefix, threads, Some(5));
                        let mut few_fp = Sha256Hasher::new();
                        few.fingerprint(&mut few_fp).unwrap();
                        assert_eq!(few_fp.finish(), fp.clone().finish(), "keeping 5");
                        assert!(!few.complete(), "{ignore:?} {exclude:?} {base_rel}");
                        assert!(
                            few.paths_chunked(&mut Vec::new(), |rel, _, _| rel, 10, |_| Ok(()))
                                .is_err()
                        );
                        let all =
                            walk_stats_with(&tree, &dir, base_rel, prefix, threads, Some(100_000));
                        assert!(all.complete());
                        for chunk in [1, 3, 4096] {
                            let mut lazy_fp = Sha256Hasher::new();
                            let mut all = Vec::new();
                            let walked = walk_stats_chunked(
                                &tree,
                                &dir,
                                base_rel,
                                prefix,
                                &mut lazy_fp,
                                &mut Vec::new(),
                                |rel, stat, real| Walked { rel, stat, real },
                                chunk,
                                |out| {
                                    all.append(out);
                                    Ok(())
                                },
                            )
                            .unwrap();
                            if !walked {
                                assert!(tree.ignore.is_some_and(Matcher::has_exclusions));
                                assert!(all.is_empty());
                                continue;
                            }
                            assert_eq!(all, stats, "lazy, chunks of {chunk}");
                            assert_eq!(
                                lazy_fp.finish(),
                                fp.clone().finish(),
                                "{ignore:?} {exclude:?} {base_rel} {prefix}"
                            );
                        }
                        walks += 1;
                    }
                }
            }
        }
        assert_eq!(walks, ignores.len() * excludes.len() * 3 * 2);
    }

    #[test]
    fn fingerprints_change_with_what_the_walk_reports_and_only_then() {
        let ctx = context();
        let root = ctx.path();
        let ignore = Matcher::new(["build", "vendor", "!vendor/keep", "src/d07*"]).unwrap();
        let exclude = Matcher::new(["**/f3"]).unwrap();
        let tree = SourceTree {
            root: root.to_owned(),
            ignore: Some(&ignore),
            exclude: Some(exclude),
        };
        let state = |threads| {
            let mut h = Sha256Hasher::new();
            let mut walk = walk_stats_with(&tree, root, "", "", threads, None);
            walk.fingerprint(&mut h).unwrap();
            (h.finish(), walk.paths().unwrap())
        };
        let (mut fingerprint, mut reported) = state(4);
        assert_eq!(state(1).0, fingerprint, "threads change nothing");
        let mode = |rel: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
        };
        let changes: &[&dyn Fn()] = &[
            // Ignored, or below what is: not reported.
            &|| write(root, "build/new.bin"),
            &|| write(root, "vendor/lib/new.txt"),
            &|| mode("build", 0o700),
            &|| write(root, "src/d071/new.txt"),
            // Excluded: not reported, though what is below it is.
            &|| write(root, "src/d000/sub/f3"),
            &|| mode("src/d000/sub/f3", 0o600),
            // Reported.
            &|| fs::write(root.join("src/d050/f1.txt"), "longer content").unwrap(),
            &|| fs::rename(root.join("src/d060/f2.txt"), root.join("src/d060/f9.txt")).unwrap(),
            &|| write(root, "vendor/keep/new.txt"),
            // An ignored directory reported for what is re-included below it.
            &|| mode("vendor", 0o700),
            &|| fs::remove_file(root.join("src/d119/sub/g.tmp")).unwrap(),
        ];
        for (i, change) in changes.iter().enumerate() {
            change();
            let (now, paths) = state(4);
            assert_eq!(now == fingerprint, paths == reported, "change {i}");
            (fingerprint, reported) = (now, paths);
        }
    }

    #[test]
    fn a_walk_reports_what_it_found() {
        let ctx = context();
        let tree = SourceTree {
            root: ctx.path().to_owned(),
            ignore: None,
            exclude: None,
        };
        let found = walk_stats_with(&tree, ctx.path(), "", "", 4, None)
            .paths()
            .unwrap();
        let rels: Vec<&str> = found.iter().map(|w| w.rel.as_str()).collect();
        // Parents first, names in byte order, symlinks reported and not followed.
        let at = |r: &str| rels.iter().position(|x| *x == r).unwrap();
        assert!(at("src") < at("src/d000") && at("src/d000") < at("src/d000/f0.txt"));
        assert!(at("Dockerfile") < at("a.txt"));
        assert!(found[at("link-dir")].stat.is_symlink());
        assert!(!rels.iter().any(|r| r.starts_with("link-dir/")));
        assert!(found[at("empty")].stat.is_dir());
        let odd = &found[at("src/odd\u{fffd}dir/inside")];
        assert_eq!(
            odd.real.as_deref(),
            Some(
                ctx.path()
                    .join(OsStr::from_bytes(b"src/odd\xfedir/inside"))
                    .as_path()
            )
        );
        // The files and directories made above, three symlinks, two odd names.
        assert_eq!(rels.len(), 10 + 6 + 1 + 120 * 8 + 2 + 3 + 1 + 2);
    }

    #[test]
    fn an_unreadable_directory_is_an_error() {
        let tree = SourceTree {
            root: PathBuf::from("/nonexistent"),
            ignore: None,
            exclude: None,
        };
        let mut walk = walk_stats_with(&tree, Path::new("/nonexistent/dir"), "", "", 4, None);
        assert!(walk.fingerprint(&mut Sha256Hasher::new()).is_err());
        assert!(walk.paths().is_err());
    }
}
