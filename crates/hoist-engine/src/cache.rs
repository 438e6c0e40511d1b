//! Cache keys: sha256 over a versioned, length-prefixed encoding of everything a step's result
//! depends on — the key of the step before it (a chain back to the base image's digest), the
//! operation and its arguments, the environment and build args that reach it, and for COPY/ADD
//! the content digests (BLAKE3), modes and names of exactly the files selected. Never mtimes,
//! never a std hasher. Each key comes with its named inputs, so a miss can say what changed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use hoist_oci::{Algorithm, Digest, Sha256Hasher};
use hoist_plan::{Chmod, Copy, Exec, SourceRef};
use hoist_store::{FileStat, Store};

use crate::BuildError;
use crate::context::{
    KEPT_ENTRIES, Selected, SourceTree, Stat, StatWalk, encode_stat, walk_stats, walk_stats_chunked,
};
use crate::fsutil::ParentCache;

const VERSION: &str = "hoist-cache/v2";

/// What a file's content is keyed by: not an address anyone else reads, so the fastest
/// cryptographic hash there is (BLAKE3 hashes 293 MB of a context in 0.07 s of CPU here,
/// sha256 in 0.17 s).
const CONTENT: Algorithm = Algorithm::Blake3;

/// A key under construction, with the inputs that explain it.
pub(crate) struct Key {
    hasher: Sha256Hasher,
    inputs: Inputs,
    /// The key before the files' contents went in, for a COPY from the context.
    partial: Option<String>,
}

impl Key {
    pub(crate) fn new(parent: &str, op: &str) -> Self {
        let mut k = Self {
            hasher: Sha256Hasher::new(),
            inputs: Inputs::default(),
            partial: None,
        };
        k.field("version", VERSION);
        k.field("parent", parent);
        k.field("op", op);
        k
    }

    /// Adds a named input (length-prefixed, so no two encodings collide).
    pub(crate) fn field(&mut self, name: &str, value: &str) {
        for part in [name, value] {
            self.hasher.update(&(part.len() as u64).to_le_bytes());
            self.hasher.update(part.as_bytes());
        }
        self.inputs.fields.insert(name.to_owned(), value.to_owned());
    }

    /// The key as it stands, without finishing it.
    pub(crate) fn peek(&self) -> String {
        self.hasher.clone().finish().to_string()
    }

    /// Whether per-file inputs were recorded (the slow path ran).
    pub(crate) fn has_file_inputs(&self) -> bool {
        !self.inputs.files.is_empty()
    }

    /// The key before the files' contents went in (a COPY from the context only).
    pub(crate) fn partial(&self) -> Option<&str> {
        self.partial.as_deref()
    }

    pub(crate) fn finish(self) -> (String, Inputs) {
        (self.hasher.finish().to_string(), self.inputs)
    }
}

/// What the steps after a RUN chain on: its key and the layer it gave. A RUN's layer is not a
/// function of its key (a command may fetch or stamp anything), so when the cache entry is
/// replaced (`--no-cache-filter`, or a `--no-cache` build that stopped partway) the steps
/// that used the old layer must miss, not stack their layers on the new one. BuildKit
/// likewise never matches dependents through a step that was forced to re-run.
pub(crate) fn result_key(key: &str, layer: &Digest) -> String {
    let mut k = Key::new(key, "result");
    k.field("layer", layer.as_str());
    k.peek()
}

pub(crate) fn exec_key(parent: &str, e: &Exec) -> Key {
    let mut k = Key::new(parent, "exec");
    k.field("argv", &format!("{:?}", e.argv));
    for (name, value) in &e.env {
        k.field(&format!("env {name}"), value);
    }
    for (name, value) in &e.build_args {
        k.field(&format!("arg {name}"), value);
    }
    k.field("workdir", &e.workdir);
    k.field("user", e.user.as_deref().unwrap_or(""));
    k.field("network", &format!("{:?}", e.network));
    k.field("security", &format!("{:?}", e.security));
    k.field("mounts", &format!("{:?}", e.mounts));
    for f in &e.inline_files {
        k.field(
            &format!("inline {}", f.name),
            &format!("{:o} {}", f.mode, f.content),
        );
    }
    k
}

/// Adds the build's own flags that change what a RUN sees: `--network none`, for a RUN that
/// names no network of its own, and `--add-host` (BuildKit's RUN carries both in its op, so
/// they move its key). Added only when given: a build without them keeps its keys.
pub(crate) fn exec_build_fields(
    k: &mut Key,
    e: &Exec,
    no_network: bool,
    extra_hosts: &[(String, std::net::IpAddr)],
) {
    if no_network && e.network == hoist_plan::Network::Default {
        k.field("--network", "none");
    }
    if !extra_hosts.is_empty() {
        let hosts: Vec<String> = extra_hosts
            .iter()
            .map(|(host, ip)| format!("{host}={ip}"))
            .collect();
        k.field("--add-host", &hosts.join(","));
    }
}

pub(crate) fn workdir_key(parent: &str, path: &str, user: &str) -> Key {
    let mut k = Key::new(parent, "workdir");
    k.field("path", path);
    k.field("user", user);
    k
}

/// The key of a COPY/ADD. `from` names its source (a stage key or an image id) when it is not
/// the context; for the context the selected files are hashed, with `store`'s stat cache.
pub(crate) fn copy_key(
    parent: &str,
    c: &Copy,
    tree: &SourceTree<'_>,
    from: Option<&str>,
    store: &Store,
    per_file: bool,
) -> Result<Key, BuildError> {
    copy_key_with(parent, c, tree, from, store, per_file, None)
}

/// The key of a COPY from the context that is being copied beside it: with its per-file
/// inputs, and the contents' digests taken from `fed` (see [`Fed`]).
pub(crate) fn copy_key_fed(
    parent: &str,
    c: &Copy,
    tree: &SourceTree<'_>,
    store: &Store,
    fed: &Fed,
) -> Result<Key, BuildError> {
    copy_key_with(parent, c, tree, None, store, true, Some(fed))
}

fn copy_key_with(
    parent: &str,
    c: &Copy,
    tree: &SourceTree<'_>,
    from: Option<&str>,
    store: &Store,
    per_file: bool,
    fed: Option<&Fed>,
) -> Result<Key, BuildError> {
    let mut k = copy_key_head(parent, c);
    match (&c.from, from) {
        (SourceRef::Context, _) => {
            k.partial = Some(k.peek());
            let inputs = match fed {
                Some(fed) => context_inputs_per_file(
                    c,
                    tree,
                    store,
                    fingerprint_start(tree, c),
                    Recording::starting_now(),
                    Some(fed),
                )?,
                None => context_inputs(c, tree, store, per_file)?,
            };
            k.field("files", &inputs.digest);
            // Covered by the digest field: recorded for explanations, not hashed again.
            if let Some(files) = inputs.per_file {
                k.inputs.files = files;
            }
        }
        (_, Some(from)) => k.field("from", from),
        (_, None) => k.field("from", "unknown"),
    }
    Ok(k)
}

/// What names a bind mount of `source` from the stage whose key (or the image whose id) is
/// `from`, for [`Store::cache_alias`].
pub(crate) fn mount_name(from: &str, source: &str) -> String {
    let mut k = Key::new(from, "mount");
    k.field("source", source);
    k.peek()
}

/// A COPY from the context's key before its files go in: what [`Store::cache_may_hold`]
/// is asked before the files are hashed.
pub(crate) fn copy_partial_key(parent: &str, c: &Copy) -> String {
    copy_key_head(parent, c).peek()
}

/// Everything in a COPY's key but its sources' contents.
fn copy_key_head(parent: &str, c: &Copy) -> Key {
    let mut k = Key::new(parent, if c.add { "add" } else { "copy" });
    k.field("dest", &c.dest);
    k.field("chown", c.chown.as_deref().unwrap_or(""));
    k.field("chmod", &format!("{:?}", c.chmod));
    k.field(
        "flags",
        &format!(
            "link={} parents={} unpack={:?} checksum={:?}",
            c.link, c.parents, c.unpack, c.checksum
        ),
    );
    k.field("excludes", &format!("{:?}", c.excludes));
    k.field("sources", &format!("{:?}", c.sources));
    for f in &c.inline {
        k.field(
            &format!("inline {}", f.name),
            &format!("{:o} {}", f.mode, f.content),
        );
    }
    k
}

/// The selected context files, as one digest over `file <path>` → `<mode> <digest or link
/// target>`, and those per-file inputs when they were computed.
pub(crate) struct ContextInputs {
    pub(crate) digest: String,
    pub(crate) per_file: Option<FileInputs>,
}

/// A step's named cache inputs: its fields and, for a COPY from the context, one input per
/// selected file (`file <path>` → `<mode> <digest>`), kept compact: a context may hold millions.
#[derive(Default)]
pub(crate) struct Inputs {
    fields: BTreeMap<String, String>,
    files: FileInputs,
}

impl Inputs {
    /// The value of a named input. Per-file inputs are found only after
    /// [`Inputs::index`].
    pub(crate) fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(path) = name.strip_prefix("file ")
            && let Some(value) = self.files.get(path)
        {
            return Some(value.into());
        }
        self.fields.get(name).map(|v| v.as_str().into())
    }

    /// Makes [`Inputs::get`] find per-file inputs: they are read back into memory if they
    /// were set aside, and sorted by path. Only a step that compares its inputs with an
    /// earlier build's needs this.
    pub(crate) fn index(&mut self) -> Result<(), BuildError> {
        self.files.index()
    }

    /// The inputs that are not per-file.
    pub(crate) fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// Calls `f` with every input, fields first, then files in walk order.
    fn visit(&self, mut f: impl FnMut(&str, &str) -> io::Result<()>) -> io::Result<()> {
        for (k, v) in &self.fields {
            f(k, v)?;
        }
        let mut name = String::from("file ");
        self.files.visit(|path, value| {
            name.truncate("file ".len());
            name.push_str(path);
            f(&name, value)
        })
    }

    /// As a JSON object of names to values (what the store records): its length, and the
    /// text written a pair at a time (a large COPY's inputs are megabytes).
    pub(crate) fn json(
        &self,
    ) -> io::Result<(usize, impl FnOnce(&mut dyn io::Write) -> io::Result<()>)> {
        let mut len = 2;
        let mut pair = String::new();
        self.visit(|k, v| {
            json_pair(&mut pair, len > 2, k, v);
            len += pair.len();
            Ok(())
        })?;
        let write = move |w: &mut dyn io::Write| {
            w.write_all(b"{")?;
            let mut first = true;
            self.visit(|k, v| {
                json_pair(&mut pair, !first, k, v);
                first = false;
                w.write_all(pair.as_bytes())
            })?;
            w.write_all(b"}")
        };
        Ok((len, write))
    }

    #[cfg(test)]
    fn to_json(&self) -> String {
        let (len, write) = self.json().unwrap();
        let mut out = Vec::new();
        write(&mut out).unwrap();
        assert_eq!(out.len(), len);
        String::from_utf8(out).unwrap()
    }
}

/// `pair` becomes `"name":"value"`, with a comma before it unless it is the first.
fn json_pair(pair: &mut String, comma: bool, name: &str, value: &str) {
    pair.clear();
    if comma {
        pair.push(',');
    }
    // Serialising a string cannot fail.
    pair.push_str(&serde_json::to_string(name).unwrap_or_default());
    pair.push(':');
    pair.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// Records a [`FileInputs`] holds in memory before it sets them aside in a file: a context may
/// hold millions of files, and a build's memory should not grow with it.
const SPILL_AT: usize = 4096;

/// Per-file inputs, in walk order: the paths one after another in one string, and a fixed-size
/// record per file. Past [`SPILL_AT`] records, the earlier ones go to a temporary file (when
/// given a directory for it), to be read back in order ([`FileInputs::visit`]) or all at once
/// for lookups ([`FileInputs::index`]).
#[derive(Default)]
pub(crate) struct FileInputs {
    names: String,
    files: Vec<FileInput>,
    /// Indices into `files` in path order, for lookups.
    by_name: Vec<u32>,
    spill: Option<Spill>,
    spill_at: usize,
}

/// Records set aside, in order: `u32` path length, path, `u32` mode, a tag byte (`s`ha256 with
/// 32 bytes, `d`ir, `l`ink with a `u32` length and the target, `x` special).
struct Spill {
    /// Where to make the file; it is made at the first spill.
    dir: PathBuf,
    file: Option<fs::File>,
    len: u64,
    count: usize,
}

struct FileInput {
    /// Where its path ends in `names` (it starts where the one before ends).
    end: u32,
    mode: u32,
    what: FileValue,
}

enum FileValue {
    /// The BLAKE3 hash of the file's content.
    Content([u8; 32]),
    Dir,
    Link(Box<str>),
    Special,
}

impl FileInputs {
    /// Inputs that set records aside in a temporary file in `dir` past [`SPILL_AT`].
    fn spilling_in(dir: PathBuf) -> Self {
        Self {
            spill: Some(Spill {
                dir,
                file: None,
                len: 0,
                count: 0,
            }),
            spill_at: SPILL_AT,
            ..Self::default()
        }
    }

    fn len(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.count) + self.files.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, path: &str, mode: u32, what: FileValue) -> Result<(), BuildError> {
        self.names.push_str(path);
        let end = u32::try_from(self.names.len())
            .map_err(|_| BuildError::Invalid("more than 4 GiB of paths in one COPY".into()))?;
        self.files.push(FileInput { end, mode, what });
        if self.spill.is_some() && self.files.len() >= self.spill_at {
            self.set_aside()?;
        }
        Ok(())
    }

    /// Appends the records in memory to the spill file and drops them.
    fn set_aside(&mut self) -> Result<(), BuildError> {
        let mut out = Vec::with_capacity(self.names.len() + self.files.len() * 48);
        for i in 0..self.files.len() {
            encode_input(&mut out, self.name(i), &self.files[i])?;
        }
        let count = self.files.len();
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let file = match &mut spill.file {
            Some(file) => file,
            None => spill.file.insert(
                tempfile::tempfile_in(&spill.dir)
                    .map_err(|e| BuildError::io("making a temporary file in", &spill.dir, e))?,
            ),
        };
        std::os::unix::fs::FileExt::write_all_at(&*file, &out, spill.len)
            .map_err(|e| BuildError::io("writing", &spill.dir, e))?;
        spill.len += out.len() as u64;
        spill.count += count;
        self.names.clear();
        self.files.clear();
        Ok(())
    }

    /// Calls `f` with each file's path and input value, in walk order.
    fn visit(&self, mut f: impl FnMut(&str, &str) -> io::Result<()>) -> io::Result<()> {
        let mut value = String::new();
        if let Some(Spill {
            file: Some(file),
            len,
            ..
        }) = &self.spill
        {
            let mut r = io::BufReader::with_capacity(
                1 << 16,
                SpillReader {
                    file,
                    pos: 0,
                    end: *len,
                },
            );
            let mut path = Vec::new();
            let mut link = Vec::new();
            while let Some(input) = decode_input(&mut r, &mut path, &mut link)? {
                value.clear();
                format_value(&mut value, &input);
                let path = std::str::from_utf8(&path).map_err(io::Error::other)?;
                f(path, &value)?;
            }
        }
        for i in 0..self.files.len() {
            value.clear();
            format_value(&mut value, &self.files[i]);
            f(self.name(i), &value)?;
        }
        Ok(())
    }

    /// Makes [`get`](Self::get) work: reads set-aside records back, and sorts by path.
    fn index(&mut self) -> Result<(), BuildError> {
        if let Some(spill) = self.spill.take() {
            let mut all = FileInputs::default();
            if let Some(file) = &spill.file {
                let back =
                    |e| BuildError::io("reading back the inputs set aside in", &spill.dir, e);
                let mut r = io::BufReader::new(SpillReader {
                    file,
                    pos: 0,
                    end: spill.len,
                });
                let (mut path, mut link) = (Vec::new(), Vec::new());
                while let Some(input) = decode_input(&mut r, &mut path, &mut link).map_err(back)? {
                    let path = std::str::from_utf8(&path).map_err(|e| back(io::Error::other(e)))?;
                    all.push(path, input.mode, input.what)?;
                }
            }
            let names = std::mem::take(&mut self.names);
            let mut start = 0;
            for f in std::mem::take(&mut self.files) {
                let end = f.end as usize;
                all.push(names.get(start..end).unwrap_or(""), f.mode, f.what)?;
                start = end;
            }
            *self = all;
        }
        let mut by_name: Vec<u32> = (0..self.files.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_name.sort_unstable_by(|&a, &b| self.name(a as usize).cmp(self.name(b as usize)));
        self.by_name = by_name;
        Ok(())
    }

    fn name(&self, i: usize) -> &str {
        let start = i
            .checked_sub(1)
            .and_then(|p| self.files.get(p))
            .map_or(0, |f| f.end as usize);
        let end = self.files.get(i).map_or(start, |f| f.end as usize);
        self.names.get(start..end).unwrap_or("")
    }

    /// Its input value (see [`format_value`]).
    fn value(&self, i: usize) -> String {
        let mut value = String::new();
        if let Some(f) = self.files.get(i) {
            format_value(&mut value, f);
        }
        value
    }

    fn get(&self, path: &str) -> Option<String> {
        let at = self
            .by_name
            .binary_search_by(|&i| self.name(i as usize).cmp(path))
            .ok()?;
        Some(self.value(self.by_name[at] as usize))
    }
}

/// A file's input value: `<mode> <digest>`, `<mode> dir`, `<mode> -> <target>` or
/// `<mode> special`.
fn format_value(out: &mut String, f: &FileInput) {
    use std::fmt::Write as _;
    let mode = f.mode;
    // Writing to a String cannot fail.
    let _ = match &f.what {
        FileValue::Content(h) => write!(out, "{mode:o} {}", Digest::from_raw(CONTENT, *h)),
        FileValue::Dir => write!(out, "{mode:o} dir"),
        FileValue::Link(target) => write!(out, "{mode:o} -> {target}"),
        FileValue::Special => write!(out, "{mode:o} special"),
    };
}

fn encode_input(out: &mut Vec<u8>, path: &str, f: &FileInput) -> Result<(), BuildError> {
    let len = |n: usize| {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| BuildError::Invalid("a path or link target over 4 GiB".into()))
    };
    out.extend_from_slice(&len(path.len())?);
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&f.mode.to_le_bytes());
    match &f.what {
        FileValue::Content(h) => {
            out.push(b'b');
            out.extend_from_slice(h);
        }
        FileValue::Dir => out.push(b'd'),
        FileValue::Link(target) => {
            out.push(b'l');
            out.extend_from_slice(&len(target.len())?);
            out.extend_from_slice(target.as_bytes());
        }
        FileValue::Special => out.push(b'x'),
    }
    Ok(())
}

/// The next record of a spill file (its path into `path`), or `None` at its end.
fn decode_input(
    r: &mut impl io::BufRead,
    path: &mut Vec<u8>,
    link: &mut Vec<u8>,
) -> io::Result<Option<FileInput>> {
    if r.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut word = [0u8; 4];
    let mut bytes = |r: &mut dyn io::BufRead, into: &mut Vec<u8>| -> io::Result<()> {
        r.read_exact(&mut word)?;
        into.resize(u32::from_le_bytes(word) as usize, 0);
        r.read_exact(into)
    };
    bytes(r, path)?;
    let mut mode = [0u8; 4];
    r.read_exact(&mut mode)?;
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)?;
    let what = match tag[0] {
        b'b' => {
            let mut h = [0u8; 32];
            r.read_exact(&mut h)?;
            FileValue::Content(h)
        }
        b'd' => FileValue::Dir,
        b'l' => {
            bytes(r, link)?;
            let target = std::str::from_utf8(link).map_err(io::Error::other)?;
            FileValue::Link(target.into())
        }
        b'x' => FileValue::Special,
        _ => return Err(io::Error::other("a set-aside input is damaged")),
    };
    Ok(Some(FileInput {
        end: 0,
        mode: u32::from_le_bytes(mode),
        what,
    }))
}

/// Reads a spill file from the start without moving its offset (writes go by offset too).
struct SpillReader<'a> {
    file: &'a fs::File,
    pos: u64,
    end: u64,
}

impl io::Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = std::os::unix::fs::FileExt::read_at(self.file, &mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A selected path, or one found below a selected directory.
struct ContextFile {
    rel: String,
    stat: Stat,
    /// The selection it is or lies below (an index into the selections).
    origin: usize,
    walked: bool,
    /// Its real path when `rel` does not spell it.
    real: Option<PathBuf>,
}

impl ContextFile {
    fn selected(sel: &Selected, stat: Stat, origin: usize) -> Self {
        Self {
            rel: sel.rel.clone(),
            stat,
            origin,
            walked: false,
            real: None,
        }
    }

    /// What a walk of selection `origin` makes of each path it finds.
    fn walked(origin: usize) -> impl Fn(String, Stat, Option<PathBuf>) -> Self {
        move |rel, stat, real| Self {
            rel,
            stat,
            origin,
            walked: true,
            real,
        }
    }

    fn real(&self, selected: &[Selected]) -> PathBuf {
        if let Some(real) = &self.real {
            return real.clone();
        }
        let sel = &selected[self.origin];
        if !self.walked {
            return sel.real.clone();
        }
        let below = self
            .rel
            .strip_prefix(sel.rel.as_str())
            .map_or(self.rel.as_str(), |r| r.trim_start_matches('/'));
        sel.real.join(below)
    }
}

/// What the stat fingerprint is made of (changing the encoding changes this).
const FINGERPRINT: &str = "hoist-stat-fingerprint/v4";

/// Files whose inputs are made at once: the paths and digests in flight stay bounded however
/// large the context is.
const CHUNK: usize = 4096;

/// Hashes the selected context files. An unchanged selection is recognised from its stats
/// alone — one digest over every path's (name, mode, device, inode, size, mtime, ctime) in walk
/// order, looked up in the store — so a warm rebuild reads no contents and no per-file rows,
/// and never even puts the paths in order; `per_file` forces the per-file inputs (for
/// explanations and incremental copies).
fn context_inputs(
    c: &Copy,
    tree: &SourceTree<'_>,
    store: &Store,
    per_file: bool,
) -> Result<ContextInputs, BuildError> {
    context_inputs_keeping(c, tree, store, per_file, KEPT_ENTRIES)
}

/// [`context_inputs`], whose stat walks keep at most `keep` entries listed.
fn context_inputs_keeping(
    c: &Copy,
    tree: &SourceTree<'_>,
    store: &Store,
    per_file: bool,
    keep: usize,
) -> Result<ContextInputs, BuildError> {
    let mut rec = Recording::starting_now();
    if per_file {
        return context_inputs_per_file(c, tree, store, fingerprint_start(tree, c), rec, None);
    }
    let mut fp = fingerprint_start(tree, c);
    let keep = Some(keep);
    let mut selected: Vec<(Selected, Stat, Option<StatWalk>)> = Vec::new();
    for src in &c.sources {
        for sel in tree.select(src)? {
            let stat = selection_stat(&sel, &mut fp)?;
            let walk = if stat.is_dir() {
                let mut walk = walk_stats(tree, &sel.real, &sel.in_tree, &sel.rel, keep);
                walk.fingerprint(&mut fp)?;
                Some(walk)
            } else {
                None
            };
            selected.push((sel, stat, walk));
        }
    }
    let fingerprint = fp.finish().to_string();
    if let Some(digest) = store.fingerprint_get(&fingerprint)? {
        return Ok(ContextInputs {
            digest,
            per_file: None,
        });
    }
    if selected
        .iter()
        .any(|(_, _, walk)| walk.as_ref().is_some_and(|w| !w.complete()))
    {
        // Too large to keep every listing: walk again, making the inputs as it goes.
        drop(selected);
        return context_inputs_per_file(c, tree, store, fingerprint_start(tree, c), rec, None);
    }
    // Missed: the walks' listings, kept, give the per-file inputs without listing again.
    let mut per_file = FileInputs::spilling_in(store.tmp_dir());
    let mut files: Vec<ContextFile> = Vec::with_capacity(CHUNK);
    let mut sels = Vec::with_capacity(selected.len());
    for (origin, (sel, stat, walk)) in selected.into_iter().enumerate() {
        files.push(ContextFile::selected(&sel, stat, origin));
        sels.push(sel);
        if let Some(walk) = walk {
            walk.paths_chunked(&mut files, ContextFile::walked(origin), CHUNK, |chunk| {
                add_file_inputs(&mut per_file, chunk, &sels, c, store, &mut rec, None)
            })?;
        }
    }
    add_file_inputs(&mut per_file, &mut files, &sels, c, store, &mut rec, None)?;
    finish_inputs(per_file, &fingerprint, store, &rec)
}

/// A fingerprint of `tree`'s selections for `c`, started. The files' inputs depend on
/// `--chmod` (see [`input_mode`]), so the fingerprint that stands for them does too.
fn fingerprint_start(tree: &SourceTree<'_>, c: &Copy) -> Sha256Hasher {
    let mut fp = Sha256Hasher::new();
    fp.update(FINGERPRINT.as_bytes());
    let root = tree.root.as_os_str().as_encoded_bytes();
    fp.update(&(root.len() as u64).to_le_bytes());
    fp.update(root);
    if let Some(chmod) = &c.chmod {
        let chmod = format!("{chmod:?}");
        fp.update(&(chmod.len() as u64).to_le_bytes());
        fp.update(chmod.as_bytes());
    }
    fp
}

/// The mode a selected file's input records: its type and the permissions it will have in
/// the layer. With `--chmod` those are the ones it sets, so a source's own permissions (644
/// here, 664 on a machine with another umask) do not move the key unless they change the
/// result.
fn input_mode(stat: &Stat, chmod: Option<&Chmod>) -> Result<u32, BuildError> {
    let mode = stat.mode & 0o177_777;
    match chmod {
        Some(chmod) if stat.is_file() || stat.is_dir() => {
            Ok((mode & 0o170_000) | crate::copy::file_mode(Some(chmod), mode, stat.is_dir())?)
        }
        _ => Ok(mode),
    }
}

/// [`context_inputs`] when the per-file inputs are wanted anyway: the fingerprint is made by
/// the same walks, each listing a directory only when it reaches it, so no walk holds more
/// than the listings on its way down.
fn context_inputs_per_file(
    c: &Copy,
    tree: &SourceTree<'_>,
    store: &Store,
    mut fp: Sha256Hasher,
    mut rec: Recording,
    fed: Option<&Fed>,
) -> Result<ContextInputs, BuildError> {
    let mut per_file = FileInputs::spilling_in(store.tmp_dir());
    let mut files: Vec<ContextFile> = Vec::with_capacity(CHUNK);
    let mut sels: Vec<Selected> = Vec::new();
    for src in &c.sources {
        for sel in tree.select(src)? {
            let origin = sels.len();
            let stat = selection_stat(&sel, &mut fp)?;
            files.push(ContextFile::selected(&sel, stat, origin));
            sels.push(sel);
            if !stat.is_dir() {
                continue;
            }
            let sel = &sels[origin];
            let walked = walk_stats_chunked(
                tree,
                &sel.real,
                &sel.in_tree,
                &sel.rel,
                &mut fp,
                &mut files,
                ContextFile::walked(origin),
                CHUNK,
                |chunk| add_file_inputs(&mut per_file, chunk, &sels, c, store, &mut rec, fed),
            )?;
            if !walked {
                let mut walk = walk_stats(tree, &sel.real, &sel.in_tree, &sel.rel, None);
                walk.fingerprint(&mut fp)?;
                walk.paths_chunked(&mut files, ContextFile::walked(origin), CHUNK, |chunk| {
                    add_file_inputs(&mut per_file, chunk, &sels, c, store, &mut rec, fed)
                })?;
            }
        }
    }
    add_file_inputs(&mut per_file, &mut files, &sels, c, store, &mut rec, fed)?;
    finish_inputs(per_file, &fp.finish().to_string(), store, &rec)
}

/// A selection's own stat (a symlink followed), fed to the fingerprint.
fn selection_stat(sel: &Selected, fp: &mut Sha256Hasher) -> Result<Stat, BuildError> {
    let stat = Stat::of(&sel.real, true).map_err(|e| BuildError::io("reading", &sel.real, e))?;
    let mut buf = Vec::new();
    encode_stat(&mut buf, &sel.rel, &stat);
    fp.update(&buf);
    Ok(stat)
}

/// What the stat caches may remember of one walk. A file written again within the clock
/// tick of a stat that was hashed keeps that stat (git calls such entries racy), and a
/// later build would take the earlier digest for the new content. Stats that recent are used
/// now but not remembered, and a selection that holds one is not remembered by its
/// fingerprint: the next build hashes those files again.
struct Recording {
    /// When the walk started, in nanoseconds since the epoch.
    started_ns: i64,
    /// Whether a stat too recent to remember was seen.
    racy: bool,
}

impl Recording {
    fn starting_now() -> Self {
        let started_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Self {
            started_ns,
            racy: false,
        }
    }

    /// Whether a write after the walk started would give a file a ctime other than `s`'s.
    /// File times come from a coarse clock (a tick of up to 10 ms); a file system that keeps
    /// whole seconds only shows no nanoseconds, and then a tick is taken as two seconds.
    fn remembers(&self, s: &FileStat) -> bool {
        let tick = if s.ctime_ns % 1_000_000_000 == 0 {
            2_000_000_000
        } else {
            50_000_000
        };
        s.ctime_ns.saturating_add(tick) <= self.started_ns
    }
}

/// The digest over the per-file inputs, recorded as what `fingerprint` stands for unless the
/// walk saw a stat too recent to remember.
fn finish_inputs(
    per_file: FileInputs,
    fingerprint: &str,
    store: &Store,
    rec: &Recording,
) -> Result<ContextInputs, BuildError> {
    let inputs = digest_inputs(per_file, store)?;
    if !rec.racy {
        store.fingerprint_put(fingerprint, &inputs.digest)?;
    }
    Ok(inputs)
}

/// The digest over per-file inputs, with them.
fn digest_inputs(per_file: FileInputs, store: &Store) -> Result<ContextInputs, BuildError> {
    let mut h = Sha256Hasher::new();
    per_file
        .visit(|name, value| {
            h.update(&(("file ".len() + name.len()) as u64).to_le_bytes());
            h.update(b"file ");
            h.update(name.as_bytes());
            h.update(&(value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
            Ok(())
        })
        .map_err(|e| BuildError::io("reading back the inputs set aside in", &store.tmp_dir(), e))?;
    Ok(ContextInputs {
        digest: h.finish().to_string(),
        per_file: Some(per_file),
    })
}

/// The key of a COPY from a stage or an image by what it copies: each selected path's mode,
/// content or link target, device number and, unless `--chown` sets them, owner; never its
/// time, as BuildKit's content checksum. A stage rebuilt to the same files (or an image
/// retagged to one holding them) is then a hit, and so is every step after it.
///
/// Beside a copy that reads the same tree, the digests come from `fed` (see [`Fed`]).
pub(crate) fn copy_content_key(
    parent: &str,
    c: &Copy,
    tree: &SourceTree<'_>,
    store: &Store,
    fed: Option<&Fed>,
) -> Result<Key, BuildError> {
    let mut k = copy_key_head(parent, c);
    k.partial = Some(k.peek());
    let mut per_file = FileInputs::spilling_in(store.tmp_dir());
    let mut meta = Sha256Hasher::new();
    let mut files: Vec<ContextFile> = Vec::with_capacity(CHUNK);
    let mut sels: Vec<Selected> = Vec::new();
    // The tree is the store's own: nothing is remembered of its stats, and every file the copy
    // did not hash is read.
    let mut add = |files: &mut Vec<ContextFile>, sels: &[Selected]| {
        let mut digests: Vec<Option<Digest>> = files
            .iter()
            .filter(|f| f.stat.is_file())
            .map(|f| fed.and_then(|fed| fed.take(&stat_of(&f.stat))))
            .collect();
        let regular: Vec<PathBuf> = files
            .iter()
            .filter(|f| f.stat.is_file())
            .map(|f| f.real(sels))
            .collect();
        let misses: Vec<usize> = (0..digests.len())
            .filter(|&j| digests[j].is_none())
            .collect();
        let hashed = hash_parallel(misses.len(), |m| regular[misses[m]].clone())?;
        for (j, d) in misses.into_iter().zip(hashed) {
            digests[j] = Some(d);
        }
        let meta = &mut meta;
        push_file_inputs(&mut per_file, files, digests.into_iter(), sels, c, |f| {
            // A selection is followed, as the copy follows it.
            let real = f.real(sels);
            let st = if f.walked {
                rustix::fs::lstat(&real)
            } else {
                rustix::fs::stat(&real)
            }
            .map_err(|e| BuildError::io("reading", &real, e.into()))?;
            meta.update(&(f.rel.len() as u64).to_le_bytes());
            meta.update(f.rel.as_bytes());
            if c.chown.is_none() {
                meta.update(&st.st_uid.to_le_bytes());
                meta.update(&st.st_gid.to_le_bytes());
            }
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if matches!(
                kind,
                rustix::fs::FileType::CharacterDevice | rustix::fs::FileType::BlockDevice
            ) {
                meta.update(&st.st_rdev.to_le_bytes());
            }
            Ok(())
        })
    };
    for src in &c.sources {
        for sel in tree.select(src)? {
            let origin = sels.len();
            let stat =
                Stat::of(&sel.real, true).map_err(|e| BuildError::io("reading", &sel.real, e))?;
            files.push(ContextFile::selected(&sel, stat, origin));
            sels.push(sel);
            if !stat.is_dir() {
                continue;
            }
            let sel = &sels[origin];
            walk_stats(tree, &sel.real, &sel.in_tree, &sel.rel, None).paths_chunked(
                &mut files,
                ContextFile::walked(origin),
                CHUNK,
                |chunk| add(chunk, &sels),
            )?;
        }
    }
    add(&mut files, &sels)?;
    let inputs = digest_inputs(per_file, store)?;
    k.field("files", &inputs.digest);
    k.field("meta", &meta.finish().to_string());
    // Covered by the digest field: recorded for explanations, not hashed again.
    if let Some(files) = inputs.per_file {
        k.inputs.files = files;
    }
    Ok(k)
}

fn stat_of(s: &Stat) -> FileStat {
    FileStat {
        dev: s.dev,
        ino: s.ino,
        size: s.size,
        mtime_ns: s.mtime_ns,
        ctime_ns: s.ctime_ns,
    }
}

/// Adds each of `files` to `inputs` (taking them out): its mode and its content digest (or
/// that it is a directory, a link's target, or something else), hashing only files whose stat
/// changed, in parallel.
fn add_file_inputs(
    inputs: &mut FileInputs,
    files: &mut Vec<ContextFile>,
    selected: &[Selected],
    c: &Copy,
    store: &Store,
    rec: &mut Recording,
    fed: Option<&Fed>,
) -> Result<(), BuildError> {
    rec.racy |= files
        .iter()
        .any(|f| !f.stat.is_dir() && !rec.remembers(&stat_of(&f.stat)));
    let regular: Vec<&ContextFile> = files.iter().filter(|f| f.stat.is_file()).collect();
    let keys: Vec<(String, FileStat)> = regular
        .iter()
        .map(|f| {
            (
                f.real(selected).to_string_lossy().into_owned(),
                stat_of(&f.stat),
            )
        })
        .collect();
    // A digest another version of hoist recorded with another hash is no digest here.
    let mut known: Vec<Option<Digest>> = store
        .stat_lookup(&keys)?
        .into_iter()
        .map(|d| d.filter(|d| d.algorithm() == CONTENT.name()))
        .collect();
    // Digests not known before, to remember: fed by the copy, else hashed here.
    let mut fresh: Vec<(usize, Digest)> = Vec::new();
    let mut misses = Vec::new();
    for j in (0..regular.len()).filter(|&j| known[j].is_none()) {
        match fed.and_then(|fed| fed.take(&keys[j].1)) {
            Some(d) => fresh.push((j, d)),
            None => misses.push(j),
        }
    }
    let hashed = hash_parallel(misses.len(), |m| regular[misses[m]].real(selected))?;
    fresh.extend(misses.into_iter().zip(hashed));
    let remembered = fresh.iter().filter(|(j, _)| rec.remembers(&keys[*j].1));
    match fed.and_then(|fed| fed.recorder.as_ref()) {
        Some(recorder) => {
            let rows: StatRows = remembered
                .map(|(j, d)| (keys[*j].0.clone(), keys[*j].1, d.clone()))
                .collect();
            if !rows.is_empty() {
                recorder
                    .send(rows)
                    .map_err(|_| BuildError::Invalid("the stat-cache recorder stopped".into()))?;
            }
        }
        None => {
            store.stat_record(remembered.map(|(j, d)| (keys[*j].0.as_str(), &keys[*j].1, d)))?;
        }
    }
    drop(keys);
    for (j, d) in fresh {
        known[j] = Some(d);
    }
    push_file_inputs(inputs, files, known.into_iter(), selected, c, |_| Ok(()))
}

/// Adds each of `files` to `inputs` (taking them out) with the digests of its regular files in
/// order, after showing each to `also`.
fn push_file_inputs(
    inputs: &mut FileInputs,
    files: &mut Vec<ContextFile>,
    mut digests: impl Iterator<Item = Option<Digest>>,
    selected: &[Selected],
    c: &Copy,
    mut also: impl FnMut(&ContextFile) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    for f in files.drain(..) {
        also(&f)?;
        let mode = input_mode(&f.stat, c.chmod.as_ref())?;
        let what = if f.stat.is_file() {
            digests
                .next()
                .flatten()
                .and_then(|d| d.raw(CONTENT))
                .map(FileValue::Content)
                .ok_or_else(|| BuildError::Invalid("a file was not hashed".into()))?
        } else if f.stat.is_dir() {
            FileValue::Dir
        } else if f.stat.is_symlink() {
            let real = f.real(selected);
            let target = fs::read_link(&real).map_err(|e| BuildError::io("reading", &real, e))?;
            FileValue::Link(target.display().to_string().into())
        } else {
            FileValue::Special
        };
        inputs.push(&f.rel, mode, what)?;
    }
    Ok(())
}

/// The buffer and the open parent are the caller's, reused from file to file: a fresh
/// 256 KiB buffer per file costs an mmap and 64 page faults, more than hashing a small file.
fn hash_file(path: &Path, (buf, dirs): &mut (Vec<u8>, ParentCache)) -> Result<Digest, BuildError> {
    let mut f = dirs
        .open(path, false)
        .map_err(|e| BuildError::io("reading", path, e))?;
    let mut h = blake3::Hasher::new();
    if buf.is_empty() {
        buf.resize(256 * 1024, 0);
    }
    loop {
        let n = f
            .read(buf)
            .map_err(|e| BuildError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_raw(CONTENT, *h.finalize().as_bytes()))
}

/// Hashes `n` files, the `i`th at `path(i)`, on every core.
fn hash_parallel(
    n: usize,
    path: impl Fn(usize) -> PathBuf + Sync,
) -> Result<Vec<Digest>, BuildError> {
    let hashed: Vec<std::sync::OnceLock<Digest>> =
        (0..n).map(|_| std::sync::OnceLock::new()).collect();
    let indexed: Vec<usize> = (0..n).collect();
    // One file a claim: a few large files must not land on one worker.
    crate::par::for_each_parallel(
        &indexed,
        |&i| i,
        |_| 0,
        Default::default,
        |state, &i| {
            let _ = hashed[i].set(hash_file(&path(i), state)?);
            Ok(())
        },
    )?;
    hashed
        .into_iter()
        .map(|d| {
            d.into_inner()
                .ok_or_else(|| BuildError::Invalid("a file was not hashed".into()))
        })
        .collect()
}

/// Content digests handed over by a copy that reads the context's files anyway (the early copy
/// of a step that cannot hit), so that its key, made beside it, reads none of them again. A
/// digest counts for a file whose stat is the one the copy saw. The key waits for the copy to
/// get to a file, and once the copy is done hashes what it never gave (a hard link past the
/// first of its group, a copy through the merged view, a copy that failed).
///
/// With a recorder, the digests the stat cache is to remember go to it, and are written
/// while the next step runs.
#[derive(Default)]
pub(crate) struct Fed {
    state: std::sync::Mutex<FedState>,
    more: std::sync::Condvar,
    recorder: Option<std::sync::mpsc::SyncSender<StatRows>>,
}

/// Stat-cache rows to remember: (path, stat, digest).
pub(crate) type StatRows = Vec<(String, FileStat, Digest)>;

#[derive(Default)]
struct FedState {
    /// (device, inode) → the stat the copy saw and the content's BLAKE3.
    digests: std::collections::HashMap<(u64, u64), (FileStat, [u8; 32])>,
    done: bool,
    /// How many digests the waiting key wants held before it looks again; 0 when none waits.
    wake_at: usize,
}

/// How many more digests a key that found none waits for: a wake-up a batch, not a file.
const FED_BATCH: usize = 256;

/// The most digests held (about 2 MB): the key takes them as the copy gives them, but not
/// those it knew already (from the stat cache), and a key far behind the copy hashes the
/// files itself.
const FED_HELD: usize = 16_384;

impl Fed {
    /// A Fed whose stat-cache rows go to `recorder`.
    pub(crate) fn recording_to(recorder: std::sync::mpsc::SyncSender<StatRows>) -> Self {
        Self {
            recorder: Some(recorder),
            ..Self::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FedState> {
        // A panicked holder leaves a map that is still whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The copy read all of a file whose walk gave `meta`, and its content hashes to `digest`.
    pub(crate) fn put(&self, meta: &crate::context::FileMeta, digest: &blake3::Hash) {
        let stat = stat_of(&Stat::from(meta));
        let mut st = self.state();
        if st.digests.len() >= FED_HELD {
            return;
        }
        st.digests
            .insert((stat.dev, stat.ino), (stat, *digest.as_bytes()));
        if st.wake_at != 0 && st.digests.len() >= st.wake_at {
            st.wake_at = 0;
            self.more.notify_one();
        }
    }

    /// Kept while the copy runs: when dropped (the copy done, failed or panicked) the key
    /// stops waiting for more.
    pub(crate) fn feeding(&self) -> Feeding<'_> {
        Feeding(self)
    }

    /// The digest the copy gave for the file of `stat`, waiting for the copy to get to it;
    /// `None` when the copy is done without it, gives no more (it holds all it may), or saw
    /// the file with another stat.
    fn take(&self, stat: &FileStat) -> Option<Digest> {
        let mut st = self.state();
        loop {
            if let Some((seen, digest)) = st.digests.remove(&(stat.dev, stat.ino)) {
                return (seen == *stat).then(|| Digest::from_raw(CONTENT, digest));
            }
            if st.done || st.digests.len() >= FED_HELD {
                return None;
            }
            st.wake_at = (st.digests.len() + FED_BATCH).min(FED_HELD);
            st = self
                .more
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// See [`Fed::feeding`].
pub(crate) struct Feeding<'a>(&'a Fed);

impl Drop for Feeding<'_> {
    fn drop(&mut self) {
        self.0.state().done = true;
        self.0.more.notify_all();
    }
}

/// The per-file inputs recorded alike at a step's last build and now: the files an
/// incremental COPY may link from its earlier layer. Held as hashes of their names, so that
/// comparing a large COPY's inputs keeps neither side's names and values in memory.
pub(crate) struct Unchanged(std::collections::HashSet<[u8; 32]>);

impl Unchanged {
    /// Whether the input `name` (`file <path>`) was recorded alike both times.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains(&name_hash(name))
    }
}

fn name_hash(name: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"n");
    h.update(name.as_bytes());
    h.finalize().into()
}

/// Both halves of an input, length-prefixed: no two (name, value) pairs hash alike.
fn pair_hash(name: &str, value: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"p");
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(value.as_bytes());
    h.finalize().into()
}

/// A step's inputs at its last build, read from the JSON the store keeps as it streams by (a
/// large COPY's are megabytes): the inputs that are not per-file, a hash of each per-file
/// one, and, for explaining a miss, every input by name.
pub(crate) struct Recorded {
    fields: BTreeMap<String, String>,
    files: std::collections::HashSet<[u8; 32]>,
    all: Option<BTreeMap<String, String>>,
}

impl Recorded {
    /// `None` when `r` does not hold one JSON object of names to values. `keep_all` keeps
    /// every input by name (see [`explain`]).
    pub(crate) fn read(r: impl io::Read, keep_all: bool) -> Option<Self> {
        struct Visit(bool);
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Recorded;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of input names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Recorded {
                    fields: BTreeMap::new(),
                    files: std::collections::HashSet::new(),
                    all: self.0.then(BTreeMap::new),
                };
                // One pair at a time: the per-file ones are kept as a hash each.
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if name.starts_with("file ") {
                        out.files.insert(pair_hash(&name, &value));
                        if let Some(all) = &mut out.all {
                            all.insert(name, value);
                        }
                    } else {
                        if let Some(all) = &mut out.all {
                            all.insert(name.clone(), value.clone());
                        }
                        out.fields.insert(name, value);
                    }
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_reader(r);
        let recorded = serde::Deserializer::deserialize_map(&mut de, Visit(keep_all)).ok()?;
        de.end().ok()?;
        Some(recorded)
    }

    /// The recorded inputs that are not per-file.
    pub(crate) fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }
}

/// The per-file inputs of `new` recorded alike in `old`. `None` when `new`'s cannot be read
/// back.
pub(crate) fn compare_recorded(old: &Recorded, new: &Inputs) -> Option<Unchanged> {
    let mut unchanged = std::collections::HashSet::new();
    new.visit(|name, value| {
        if name.starts_with("file ") && old.files.contains(&pair_hash(name, value)) {
            unchanged.insert(name_hash(name));
        }
        Ok(())
    })
    .ok()?;
    Some(Unchanged(unchanged))
}

/// Why a step missed, from its inputs now and at its last build.
/// `old` must have been read keeping every input.
pub(crate) fn explain(old: Option<&Recorded>, new: &Inputs) -> Option<String> {
    let old = old?.all.as_ref()?;
    let mut reasons = Vec::new();
    // Fields first, then files in walk order: the first reasons are the most telling.
    new.visit(|name, value| {
        match old.get(name) {
            None => reasons.push(describe(name, "added")),
            Some(v) if v != value => reasons.push(describe(name, "changed")),
            _ => {}
        }
        Ok(())
    })
    .ok()?;
    for name in old.keys().filter(|k| new.get(k).is_none()) {
        reasons.push(describe(name, "removed"));
    }
    // A changed parent explains everything below it, and the per-file lines explain the
    // selection's digest: say those only when nothing more precise changed.
    let precise = reasons.iter().any(|r| r.starts_with("file "));
    reasons.retain(|r| !(precise && r == "the selected files changed"));
    let own: Vec<&String> = reasons
        .iter()
        .filter(|r| !r.starts_with("a previous step"))
        .collect();
    if own.is_empty() {
        return reasons.first().cloned();
    }
    let shown: Vec<&str> = own.iter().take(5).map(|s| s.as_str()).collect();
    let more = own.len().saturating_sub(5);
    Some(if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    })
}

fn describe(name: &str, how: &str) -> String {
    match name.split_once(' ') {
        Some(("file", path)) => format!("file {path} {how}"),
        Some(("env", var)) => format!("ENV {var} {how}"),
        Some(("arg", var)) => format!("build arg {var} {how}"),
        Some(("inline", f)) => format!("inline file {f} {how}"),
        _ if name == "parent" => "a previous step or the base image changed".to_owned(),
        _ if name == "files" => "the selected files changed".to_owned(),
        _ if name == "from" => format!("the --from source {how}"),
        _ if name == "meta" => "the owner or device number of a copied file changed".to_owned(),
        _ => format!("{name} {how}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_length_prefixed_and_stable() {
        let mut a = Key::new("p", "exec");
        a.field("x", "ab");
        a.field("y", "c");
        let mut b = Key::new("p", "exec");
        b.field("x", "a");
        b.field("y", "bc");
        assert_ne!(
            a.finish().0,
            b.finish().0,
            "moving a byte between fields changes the key"
        );
        let mut c = Key::new("p", "exec");
        c.field("x", "ab");
        c.field("y", "c");
        let mut d = Key::new("p", "exec");
        d.field("x", "ab");
        d.field("y", "c");
        assert_eq!(c.finish().0, d.finish().0);
    }

    /// Recorded inputs as a step's explanation reads them.
    fn recorded(text: &str) -> Recorded {
        Recorded::read(text.as_bytes(), true).unwrap()
    }

    #[test]
    fn explains_what_changed() {
        let d = |n: u8| Digest::from_raw(CONTENT, [n; 32]);
        let old = serde_json::json!({
            "parent": "k1",
            "file a.txt": format!("644 {}", d(1)),
            "file b.txt": format!("644 {}", d(2)),
        })
        .to_string();
        let mut new = Inputs::default();
        new.fields.insert("parent".to_owned(), "k1".to_owned());
        new.files
            .push("c.txt", 0o644, FileValue::Content([3; 32]))
            .unwrap();
        new.files
            .push("a.txt", 0o644, FileValue::Content([9; 32]))
            .unwrap();
        new.files.index().unwrap();
        assert_eq!(
            explain(Some(&recorded(&old)), &new).unwrap(),
            "file c.txt added, file a.txt changed, file b.txt removed"
        );
        let mut only_parent = Inputs::default();
        only_parent
            .fields
            .insert("parent".to_owned(), "k2".to_owned());
        let old = serde_json::json!({"parent": "k1"}).to_string();
        assert_eq!(
            explain(Some(&recorded(&old)), &only_parent).unwrap(),
            "a previous step or the base image changed"
        );
    }

    /// Every kind of input, with paths that sort otherwise than they were walked.
    /// An earlier build's recorded inputs against today's, set aside and not: only names
    /// recorded with the same value both times are unchanged, whatever the order, escapes in
    /// names, or files added and removed.
    #[test]
    fn recorded_inputs_compare_by_name_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut earlier = Inputs::default();
        earlier.fields.insert("parent".to_owned(), "k1".to_owned());
        earlier.files = FileInputs::spilling_in(dir.path().to_owned());
        earlier.files.spill_at = 3;
        fill(&mut earlier.files);
        earlier
            .files
            .push("gone.txt", 0o100644, FileValue::Content([7; 32]))
            .unwrap();
        let old = earlier.to_json();
        let mut now = Inputs::default();
        now.fields.insert("parent".to_owned(), "k1".to_owned());
        now.files = FileInputs::spilling_in(dir.path().to_owned());
        now.files.spill_at = 2;
        // `fill`'s files, with one content and one mode changed, and one file added.
        fill_with(&mut now.files, |i, mode, what| match i {
            5 => (mode, FileValue::Content([99; 32])),
            9 => (0o100755, what),
            _ => (mode, what),
        });
        now.files
            .push("new.txt", 0o100644, FileValue::Content([8; 32]))
            .unwrap();
        let old = Recorded::read(old.as_bytes(), false).unwrap();
        assert!(old.all.is_none(), "only kept when asked for");
        let unchanged = compare_recorded(&old, &now).unwrap();
        let fields = old.fields();
        assert_eq!(fields.get("parent").map(String::as_str), Some("k1"));
        assert!(!fields.keys().any(|k| k.starts_with("file ")));
        for same in ["d0", "d0/f \"1\"", "l2", "a3", "d4", "l6", "a7", "d8"] {
            assert!(unchanged.contains(&format!("file {same}")), "{same}");
        }
        for differs in ["d4/f \"5\"", "d8/f \"9\"", "new.txt", "gone.txt", "parent"] {
            assert!(!unchanged.contains(&format!("file {differs}")), "{differs}");
        }
        assert!(!unchanged.contains("parent"));
        assert!(Recorded::read(&b"not json"[..], false).is_none());
        assert!(Recorded::read(&b"{} trailing"[..], false).is_none());
    }

    fn fill(files: &mut FileInputs) {
        fill_with(files, |_, mode, what| (mode, what));
    }

    /// [`fill`]'s files, each one's mode and value passed through `change` (with its number).
    fn fill_with(files: &mut FileInputs, change: impl Fn(u8, u32, FileValue) -> (u32, FileValue)) {
        for i in 0..10u8 {
            let (path, mode, what) = match i % 4 {
                0 => (format!("d{i}"), 0o40755, FileValue::Dir),
                1 => (
                    format!("d{}/f \"{i}\"", i - 1),
                    0o100644,
                    FileValue::Content([i; 32]),
                ),
                2 => (
                    format!("l{i}"),
                    0o120777,
                    FileValue::Link(format!("t{i}").into()),
                ),
                _ => (format!("a{i}"), 0o10644, FileValue::Special),
            };
            let (mode, what) = change(i, mode, what);
            files.push(&path, mode, what).unwrap();
        }
    }

    #[test]
    fn set_aside_inputs_read_back_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let mut kept = Inputs::default();
        kept.fields.insert("dest".to_owned(), "/app".to_owned());
        fill(&mut kept.files);
        let mut spilled = Inputs::default();
        spilled.fields.insert("dest".to_owned(), "/app".to_owned());
        spilled.files = FileInputs::spilling_in(tmp.path().to_owned());
        spilled.files.spill_at = 3;
        fill(&mut spilled.files);
        assert_eq!(spilled.files.files.len(), 1, "nine of ten set aside");
        assert_eq!(spilled.files.len(), 10);
        assert_eq!(spilled.to_json(), kept.to_json());

        let old = kept.to_json();
        kept.index().unwrap();
        spilled.index().unwrap();
        let want: BTreeMap<String, String> = serde_json::from_str(&old).unwrap();
        for (k, v) in &want {
            assert_eq!(spilled.get(k).as_deref(), Some(v.as_str()), "{k}");
        }
        assert_eq!(spilled.get("file zz"), None);
        assert_eq!(spilled.to_json(), old, "indexing keeps the walk order");
        assert_eq!(explain(Some(&recorded(&old)), &spilled), None);
        let mut earlier = want.clone();
        earlier.insert("file l2".to_owned(), "120777 -> elsewhere".to_owned());
        earlier.remove("file a3");
        let earlier = serde_json::to_string(&earlier).unwrap();
        let why = explain(Some(&recorded(&earlier)), &spilled).unwrap();
        assert_eq!(why, "file l2 changed, file a3 added", "in walk order");
        assert_eq!(explain(Some(&recorded(&earlier)), &kept).unwrap(), why);
    }

    /// A context too large to keep listed while it is fingerprinted is walked again on a
    /// miss: the same inputs and digest, and the next build recognises it from its stats.
    #[test]
    fn a_context_too_large_to_keep_listed_gives_the_same_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        for i in 0..40 {
            let dir = ctx.join(format!("d{}", i % 4));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("f{i}")), i.to_string()).unwrap();
        }
        let copy = Copy::from_context(vec![".".to_owned()], "/app".to_owned());
        let tree = plain_tree(&ctx);
        past_the_tick();
        let json = |i: &ContextInputs| {
            let inputs = Inputs {
                fields: BTreeMap::new(),
                files: i.per_file.as_ref().map_or_else(FileInputs::default, |f| {
                    let mut copy = FileInputs::default();
                    f.visit(|path, value| {
                        copy.push(path, 0, FileValue::Link(value.into())).unwrap();
                        Ok(())
                    })
                    .unwrap();
                    copy
                }),
            };
            inputs.to_json()
        };
        let kept_store = Store::open(&tmp.path().join("kept")).unwrap();
        let kept = context_inputs_keeping(&copy, &tree, &kept_store, false, 1000).unwrap();
        let few_store = Store::open(&tmp.path().join("few")).unwrap();
        let few = context_inputs_keeping(&copy, &tree, &few_store, false, 3).unwrap();
        assert_eq!(few.digest, kept.digest);
        assert!(json(&kept).contains("d3/f39"));
        assert_eq!(json(&few), json(&kept));
        let again = context_inputs_keeping(&copy, &tree, &few_store, false, 3).unwrap();
        assert_eq!(again.digest, kept.digest);
        assert!(again.per_file.is_none(), "recognised from its stats");
    }

    /// A key made beside the copy, from the digests the copy feeds it, is the key made by
    /// hashing. The copy's digest counts only for the stat the copy saw; what it never gave (a
    /// second hard link, a file it did not get to) is hashed once it is done. Every digest is
    /// remembered by the stat cache.
    #[test]
    fn a_key_fed_by_the_copy_is_the_key_made_by_hashing() {
        use crate::context::FileMeta;
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(ctx.join("sub")).unwrap();
        for (name, content) in [("a", "aaa"), ("b", "bbb"), ("sub/c", "ccc"), ("sub/e", "e")] {
            fs::write(ctx.join(name), content).unwrap();
        }
        fs::hard_link(ctx.join("a"), ctx.join("sub/d")).unwrap();
        let meta = |name: &str| FileMeta::from(&fs::symlink_metadata(ctx.join(name)).unwrap());
        // Seen by the copy, then written again: the copy's digest is for the old content.
        let stale = meta("b");
        fs::write(ctx.join("b"), "bbbb").unwrap();
        past_the_tick();
        let copy = Copy::from_context(vec![".".to_owned()], "/app".to_owned());
        let tree = plain_tree(&ctx);
        let hashing = Store::open(&tmp.path().join("hashing")).unwrap();
        let (want, _) = copy_key("", &copy, &tree, None, &hashing, true)
            .unwrap()
            .finish();

        let store = Store::open(&tmp.path().join("fed")).unwrap();
        let fed = Fed::default();
        let key = std::thread::scope(|s| {
            let feeding = fed.feeding();
            let key = s.spawn(|| copy_key_fed("", &copy, &tree, &store, &fed));
            // Fed after the key started: it waits for them.
            fed.put(&meta("a"), &blake3::hash(b"aaa"));
            fed.put(&stale, &blake3::hash(b"bbb"));
            fed.put(&meta("sub/c"), &blake3::hash(b"ccc"));
            // Neither sub/d (a's second link) nor sub/e is fed: the copy ends without them.
            drop(feeding);
            key.join().unwrap()
        });
        let (got, _) = key.unwrap().finish();
        assert_eq!(got, want);

        // A digest fed for the stat the key sees is taken as it is: the copy read that file.
        let fed = Fed::default();
        let feeding = fed.feeding();
        fed.put(&meta("sub/c"), &blake3::hash(b"what the copy read"));
        drop(feeding);
        let other = Store::open(&tmp.path().join("other")).unwrap();
        let (taken, _) = copy_key_fed("", &copy, &tree, &other, &fed)
            .unwrap()
            .finish();
        assert_ne!(taken, want);

        let rows = |names: &[&str]| -> Vec<(String, FileStat)> {
            names
                .iter()
                .map(|n| {
                    let p = ctx.join(n);
                    (
                        p.display().to_string(),
                        stat_of(&Stat::of(&p, false).unwrap()),
                    )
                })
                .collect()
        };
        let all = rows(&["a", "b", "sub/c", "sub/d", "sub/e"]);
        let remembered = store.stat_lookup(&all).unwrap();
        assert_eq!(remembered, hashing.stat_lookup(&all).unwrap());
        assert!(remembered.iter().all(Option::is_some));

        // With a recorder, the rows go to it (to be written later), not to the store.
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let fed = Fed::recording_to(tx);
        drop(fed.feeding());
        let elsewhere = Store::open(&tmp.path().join("elsewhere")).unwrap();
        let (recorded_key, _) = copy_key_fed("", &copy, &tree, &elsewhere, &fed)
            .unwrap()
            .finish();
        drop(fed);
        assert_eq!(recorded_key, want);
        let sent: Vec<(String, FileStat, Digest)> = rx.into_iter().flatten().collect();
        assert_eq!(sent.len(), all.len(), "{sent:?}");
        for ((path, stat, digest), want) in sent.iter().zip(&remembered) {
            assert!(all.contains(&(path.clone(), *stat)), "{path}");
            assert_eq!(Some(digest), want.as_ref(), "{path}");
        }
        assert!(
            elsewhere
                .stat_lookup(&all)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
    }

    /// `root` as a context with no .dockerignore and no --exclude.
    fn plain_tree(root: &Path) -> SourceTree<'static> {
        SourceTree {
            root: root.to_owned(),
            ignore: None,
            exclude: None,
        }
    }

    /// Waits until the files just written are old enough for the stat caches to remember.
    fn past_the_tick() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    /// Stats taken within a clock tick of the walk are used but not remembered: the file may
    /// be written again with the same stat. Once they are older, they are.
    #[test]
    fn stats_too_recent_are_not_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("f"), "one").unwrap();
        let tree = plain_tree(&ctx);
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let copy = Copy::from_context(vec![".".to_owned()], "/app".to_owned());
        let stat = || {
            let st = Stat::of(&ctx.join("f"), false).unwrap();
            vec![(ctx.join("f").display().to_string(), stat_of(&st))]
        };
        let first = context_inputs(&copy, &tree, &store, false).unwrap();
        assert!(first.per_file.is_some());
        assert_eq!(store.stat_lookup(&stat()).unwrap(), [None]);
        // Same size, same tick: a remembered stat would now stand for the wrong content.
        fs::write(ctx.join("f"), "two").unwrap();
        let second = context_inputs(&copy, &tree, &store, false).unwrap();
        assert!(second.per_file.is_some(), "not recognised from its stats");
        assert_ne!(second.digest, first.digest);
        past_the_tick();
        let third = context_inputs(&copy, &tree, &store, false).unwrap();
        assert_eq!(third.digest, second.digest);
        assert!(store.stat_lookup(&stat()).unwrap()[0].is_some());
        let fourth = context_inputs(&copy, &tree, &store, false).unwrap();
        assert!(fourth.per_file.is_none(), "recognised from its stats");
        assert_eq!(fourth.digest, second.digest);
    }

    /// Two COPYs of one tree with different `--chmod` record different inputs, so neither may
    /// be recognised from the stats the other recorded.
    #[test]
    fn a_chmod_gives_its_own_inputs_and_fingerprint() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        fs::create_dir_all(ctx.join("d")).unwrap();
        fs::write(ctx.join("d/f"), "f").unwrap();
        fs::set_permissions(ctx.join("d/f"), fs::Permissions::from_mode(0o664)).unwrap();
        let tree = plain_tree(&ctx);
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let plain = Copy::from_context(vec![".".to_owned()], "/app".to_owned());
        let mut octal = plain.clone();
        octal.chmod = Some(Chmod::Octal(0o640));
        let digest = |c: &Copy| {
            past_the_tick();
            let first = context_inputs(c, &tree, &store, false).unwrap();
            let again = context_inputs(c, &tree, &store, false).unwrap();
            assert!(again.per_file.is_none(), "recognised from its stats");
            assert_eq!(again.digest, first.digest);
            first.digest
        };
        let plain_digest = digest(&plain);
        let octal_digest = digest(&octal);
        assert_ne!(plain_digest, octal_digest);
        // The octal --chmod sets every mode: the source's own does not matter to it.
        fs::set_permissions(ctx.join("d/f"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(ctx.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(digest(&octal), octal_digest);
        assert_ne!(digest(&plain), plain_digest);
    }

    #[test]
    fn inputs_are_recorded_and_looked_up_as_named() {
        let mut inputs = Inputs::default();
        inputs.fields.insert("dest".to_owned(), "/app".to_owned());
        inputs.files.push("b", 0o40755, FileValue::Dir).unwrap();
        inputs
            .files
            .push("b/x \"q\"", 0o100600, FileValue::Content([7; 32]))
            .unwrap();
        inputs
            .files
            .push("a", 0o120777, FileValue::Link("b".into()))
            .unwrap();
        inputs.files.push("p", 0o10644, FileValue::Special).unwrap();
        inputs.files.index().unwrap();
        let json: BTreeMap<String, String> = serde_json::from_str(&inputs.to_json()).unwrap();
        let want: BTreeMap<String, String> = [
            ("dest", "/app".to_owned()),
            ("file b", "40755 dir".to_owned()),
            (
                "file b/x \"q\"",
                format!("100600 {}", Digest::from_raw(CONTENT, [7; 32])),
            ),
            ("file a", "120777 -> b".to_owned()),
            ("file p", "10644 special".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(json, want);
        for (k, v) in &want {
            assert_eq!(inputs.get(k).as_deref(), Some(v.as_str()), "{k}");
        }
        assert_eq!(inputs.get("file c"), None);
        assert_eq!(inputs.get("files"), None);
    }
}
