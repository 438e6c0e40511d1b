//! Cache keys: sha256 over a versioned, length-prefixed encoding of everything a step's result
//! depends on — the key of the step before it (a chain back to the base image's digest), the
//! operation and its arguments, the environment and build args that reach it, and for COPY/ADD
//! the content digests, modes and names of exactly the files selected. Never mtimes, never a
//! std hasher. Each key comes with its named inputs, so a miss can say what changed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

use hoist_oci::{Digest, Sha256Hasher};
use hoist_plan::{Copy, Exec, SourceRef};
use hoist_store::{FileStat, Store};

use crate::BuildError;
use crate::context::{Selected, SourceTree, Stat, StatWalk, encode_stat, walk_stats};

const VERSION: &str = "hoist-cache/v1";

/// A key under construction, with the inputs that explain it.
pub(crate) struct Key {
    hasher: Sha256Hasher,
    inputs: Inputs,
}

impl Key {
    pub(crate) fn new(parent: &str, op: &str) -> Self {
        let mut k = Self {
            hasher: Sha256Hasher::new(),
            inputs: Inputs::default(),
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
        !self.inputs.files.files.is_empty()
    }

    pub(crate) fn finish(self) -> (String, Inputs) {
        (self.hasher.finish().to_string(), self.inputs)
    }
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
    match (&c.from, from) {
        (SourceRef::Context, _) => {
            let inputs = context_inputs(c, tree, store, per_file)?;
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
    /// The value of a named input.
    pub(crate) fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(path) = name.strip_prefix("file ")
            && let Some(value) = self.files.get(path)
        {
            return Some(value.into());
        }
        self.fields.get(name).map(|v| v.as_str().into())
    }

    /// The inputs that are not per-file.
    pub(crate) fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// Every input, fields first, then files in walk order.
    fn each(&self) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
        self.fields
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .chain((0..self.files.files.len()).map(|i| {
                (
                    format!("file {}", self.files.name(i)).into(),
                    self.files.value(i).into(),
                )
            }))
    }

    /// As a JSON object of names to values (what the store records): its length, and the
    /// text written a pair at a time (a large COPY's inputs are megabytes).
    pub(crate) fn json(&self) -> (usize, impl FnOnce(&mut dyn io::Write) -> io::Result<()>) {
        let len = self.json_pairs().map(|p| p.len()).sum::<usize>() + 2;
        let write = move |w: &mut dyn io::Write| {
            w.write_all(b"{")?;
            for pair in self.json_pairs() {
                w.write_all(pair.as_bytes())?;
            }
            w.write_all(b"}")
        };
        (len, write)
    }

    /// `"name":"value"` of each input, with a comma before all but the first.
    fn json_pairs(&self) -> impl Iterator<Item = String> + '_ {
        // Serialising a string cannot fail.
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        self.each().enumerate().map(move |(i, (k, v))| {
            let comma = if i > 0 { "," } else { "" };
            format!("{comma}{}:{}", quoted(&k), quoted(&v))
        })
    }

    #[cfg(test)]
    fn to_json(&self) -> String {
        let (len, write) = self.json();
        let mut out = Vec::new();
        write(&mut out).unwrap();
        assert_eq!(out.len(), len);
        String::from_utf8(out).unwrap()
    }
}

/// Per-file inputs, in walk order: the paths one after another in one string, and a fixed-size
/// record per file.
#[derive(Default)]
pub(crate) struct FileInputs {
    names: String,
    files: Vec<FileInput>,
    /// Indices into `files` in path order, for lookups.
    by_name: Vec<u32>,
}

struct FileInput {
    /// Where its path ends in `names` (it starts where the one before ends).
    end: u32,
    mode: u32,
    what: FileValue,
}

enum FileValue {
    Sha256([u8; 32]),
    Dir,
    Link(Box<str>),
    Special,
}

impl FileInputs {
    fn push(&mut self, path: &str, mode: u32, what: FileValue) -> Result<(), BuildError> {
        self.names.push_str(path);
        let end = u32::try_from(self.names.len())
            .map_err(|_| BuildError::Invalid("more than 4 GiB of paths in one COPY".into()))?;
        self.files.push(FileInput { end, mode, what });
        Ok(())
    }

    /// Makes [`get`](Self::get) work.
    fn index(&mut self) {
        let mut by_name: Vec<u32> = (0..self.files.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_name.sort_unstable_by(|&a, &b| self.name(a as usize).cmp(self.name(b as usize)));
        self.by_name = by_name;
    }

    fn name(&self, i: usize) -> &str {
        let start = i
            .checked_sub(1)
            .and_then(|p| self.files.get(p))
            .map_or(0, |f| f.end as usize);
        let end = self.files.get(i).map_or(start, |f| f.end as usize);
        self.names.get(start..end).unwrap_or("")
    }

    /// Its input value: `<mode> <digest>`, `<mode> dir`, `<mode> -> <target>` or
    /// `<mode> special`.
    fn value(&self, i: usize) -> String {
        let Some(f) = self.files.get(i) else {
            return String::new();
        };
        let mode = f.mode;
        match &f.what {
            FileValue::Sha256(h) => format!("{mode:o} {}", Digest::from_sha256(*h)),
            FileValue::Dir => format!("{mode:o} dir"),
            FileValue::Link(target) => format!("{mode:o} -> {target}"),
            FileValue::Special => format!("{mode:o} special"),
        }
    }

    fn get(&self, path: &str) -> Option<String> {
        let at = self
            .by_name
            .binary_search_by(|&i| self.name(i as usize).cmp(path))
            .ok()?;
        Some(self.value(self.by_name[at] as usize))
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
const FINGERPRINT: &str = "hoist-stat-fingerprint/v2";

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
    let mut fp = Sha256Hasher::new();
    fp.update(FINGERPRINT.as_bytes());
    let root = tree.root.as_os_str().as_encoded_bytes();
    fp.update(&(root.len() as u64).to_le_bytes());
    fp.update(root);
    let mut selected: Vec<(Selected, Stat, Option<StatWalk>)> = Vec::new();
    let mut buf = Vec::new();
    for src in &c.sources {
        for sel in tree.select(src)? {
            // The source itself is followed if it is a symlink.
            let stat =
                Stat::of(&sel.real, true).map_err(|e| BuildError::io("reading", &sel.real, e))?;
            buf.clear();
            encode_stat(&mut buf, &sel.rel, &stat);
            fp.update(&buf);
            let walk = if stat.is_dir() {
                let mut walk = walk_stats(tree, &sel.real, &sel.rel, &sel.rel);
                walk.fingerprint(&mut fp)?;
                Some(walk)
            } else {
                None
            };
            selected.push((sel, stat, walk));
        }
    }
    let fingerprint = fp.finish().to_string();
    if !per_file && let Some(digest) = store.fingerprint_get(&fingerprint)? {
        return Ok(ContextInputs {
            digest,
            per_file: None,
        });
    }
    // The files go a chunk at a time from the walk to their inputs: the paths and digests
    // in flight stay bounded however large the context is.
    const CHUNK: usize = 4096;
    let mut per_file = FileInputs::default();
    let mut files: Vec<ContextFile> = Vec::with_capacity(CHUNK);
    let mut sels = Vec::with_capacity(selected.len());
    for (origin, (sel, stat, walk)) in selected.into_iter().enumerate() {
        files.push(ContextFile {
            rel: sel.rel.clone(),
            stat,
            origin,
            walked: false,
            real: None,
        });
        sels.push(sel);
        if let Some(walk) = walk {
            // The selection itself is in `files` too.
            per_file.files.reserve(walk.upper_bound() + 1);
            walk.paths_chunked(
                &mut files,
                |rel, stat, real| ContextFile {
                    rel,
                    stat,
                    origin,
                    walked: true,
                    real,
                },
                CHUNK,
                |chunk| add_file_inputs(&mut per_file, chunk, &sels, store),
            )?;
        }
    }
    add_file_inputs(&mut per_file, &mut files, &sels, store)?;
    per_file.index();
    let mut h = Sha256Hasher::new();
    for i in 0..per_file.files.len() {
        let name = per_file.name(i);
        let value = per_file.value(i);
        h.update(&(("file ".len() + name.len()) as u64).to_le_bytes());
        h.update(b"file ");
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    }
    let digest = h.finish().to_string();
    store.fingerprint_put(&fingerprint, &digest)?;
    Ok(ContextInputs {
        digest,
        per_file: Some(per_file),
    })
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
    store: &Store,
) -> Result<(), BuildError> {
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
    let mut known = store.stat_lookup(&keys)?;
    let misses: Vec<usize> = (0..regular.len()).filter(|&j| known[j].is_none()).collect();
    let hashed = hash_parallel(misses.len(), |m| regular[misses[m]].real(selected))?;
    store.stat_record(
        misses
            .iter()
            .zip(&hashed)
            .map(|(&j, d)| (keys[j].0.as_str(), &keys[j].1, d)),
    )?;
    drop(keys);
    for (&j, d) in misses.iter().zip(hashed) {
        known[j] = Some(d);
    }
    let mut known = known.into_iter();
    for f in files.drain(..) {
        let mode = f.stat.mode & 0o177_777;
        let what = if f.stat.is_file() {
            known
                .next()
                .flatten()
                .and_then(|d| d.sha256_bytes())
                .map(FileValue::Sha256)
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

/// `buf` is the caller's, reused from file to file: a fresh 256 KiB buffer per file costs an
/// mmap and 64 page faults, more than hashing a small file.
fn hash_file(path: &PathBuf, buf: &mut Vec<u8>) -> Result<Digest, BuildError> {
    let mut f = fs::File::open(path).map_err(|e| BuildError::io("reading", path, e))?;
    let mut h = Sha256Hasher::new();
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
    Ok(h.finish())
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
        Vec::new,
        |buf, &i| {
            let _ = hashed[i].set(hash_file(&path(i), buf)?);
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

/// Why a step missed, from its inputs now and at its last build.
pub(crate) fn explain(old: Option<&str>, new: &Inputs) -> Option<String> {
    let old: BTreeMap<String, String> = serde_json::from_str(old?).ok()?;
    let mut reasons = Vec::new();
    // Fields first, then files in walk order: the first reasons are the most telling.
    for (name, value) in new.each() {
        match old.get(&*name) {
            None => reasons.push(describe(&name, "added")),
            Some(v) if *v != *value => reasons.push(describe(&name, "changed")),
            _ => {}
        }
    }
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

    #[test]
    fn explains_what_changed() {
        let d = |n: u8| Digest::from_sha256([n; 32]);
        let old = serde_json::json!({
            "parent": "k1",
            "file a.txt": format!("644 {}", d(1)),
            "file b.txt": format!("644 {}", d(2)),
        })
        .to_string();
        let mut new = Inputs::default();
        new.fields.insert("parent".to_owned(), "k1".to_owned());
        new.files
            .push("c.txt", 0o644, FileValue::Sha256([3; 32]))
            .unwrap();
        new.files
            .push("a.txt", 0o644, FileValue::Sha256([9; 32]))
            .unwrap();
        new.files.index();
        assert_eq!(
            explain(Some(&old), &new).unwrap(),
            "file c.txt added, file a.txt changed, file b.txt removed"
        );
        let mut only_parent = Inputs::default();
        only_parent
            .fields
            .insert("parent".to_owned(), "k2".to_owned());
        let old = serde_json::json!({"parent": "k1"}).to_string();
        assert_eq!(
            explain(Some(&old), &only_parent).unwrap(),
            "a previous step or the base image changed"
        );
    }

    #[test]
    fn inputs_are_recorded_and_looked_up_as_named() {
        let mut inputs = Inputs::default();
        inputs.fields.insert("dest".to_owned(), "/app".to_owned());
        inputs.files.push("b", 0o40755, FileValue::Dir).unwrap();
        inputs
            .files
            .push("b/x \"q\"", 0o100600, FileValue::Sha256([7; 32]))
            .unwrap();
        inputs
            .files
            .push("a", 0o120777, FileValue::Link("b".into()))
            .unwrap();
        inputs.files.push("p", 0o10644, FileValue::Special).unwrap();
        inputs.files.index();
        let json: BTreeMap<String, String> = serde_json::from_str(&inputs.to_json()).unwrap();
        let want: BTreeMap<String, String> = [
            ("dest", "/app".to_owned()),
            ("file b", "40755 dir".to_owned()),
            (
                "file b/x \"q\"",
                format!("100600 {}", Digest::from_sha256([7; 32])),
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
