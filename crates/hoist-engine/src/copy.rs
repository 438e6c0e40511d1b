//! COPY and ADD. The usual case writes the selected files straight into the new layer's
//! directory, on every core, with no stream and no overlay on the write path
//! ([`copy_into_layer`]). When a destination crosses a symlink (which COPY follows inside the
//! root), two sources land on one path, or ADD unpacks an archive, the sources become a tar
//! stream with their destination paths, owners and modes, applied onto the merged view of the
//! stage being built: the applier resolves every destination inside the root, so a symlink in
//! the image cannot send a write outside it, and overlayfs records what changed.

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hoist_plan::{Chmod, Copy};

use crate::BuildError;
use crate::cache::Fed;
use crate::context::{FileMeta, Selected, SourceTree, walk, walk_chunked, walk_dirwise_chunked};
use crate::fsutil::{ParentCache, clean, resolve, set_mtime};
use crate::par::for_each_parallel;
use crate::userdb::{Owner, resolve_chown};

/// One member of the stream: a file from a source tree, a directory to create, or inline text.
enum Item {
    Path { meta: FileMeta, src: Src },
    Dir { mode: u32, mtime: i64 },
    Inline { content: Vec<u8>, mode: u32 },
}

struct Member {
    dest: String,
    item: Item,
}

/// Where a planned path comes from: one of the plan's selections, and the part of the member's
/// destination that is its path below that selection. A copy plan holds one per file of the
/// context, so the source path and cache name are not stored but derived from these.
struct Src {
    /// The selection (an index into [`Plan::selected`]).
    sel: u32,
    /// Where the path below the selection starts in the destination; `NONE` for the selected
    /// path itself.
    below: u32,
    /// The real path, when the destination does not spell it (a name that is not UTF-8).
    real: Option<Box<Path>>,
}

impl Src {
    const NONE: u32 = u32::MAX;
}

impl Member {
    /// A path found below selection `sel`, at `rel` below it, copied to below `target`.
    fn walked(target: &str, rel: &str, meta: FileMeta, sel: u32, real: Option<PathBuf>) -> Self {
        let dest = dest_below(target, rel);
        let below = u32::try_from(dest.len() - rel.len()).unwrap_or(Src::NONE);
        Self {
            dest,
            item: Item::Path {
                meta,
                src: Src {
                    sel,
                    below,
                    real: real.map(PathBuf::into_boxed_path),
                },
            },
        }
    }
}

/// The destination of `rel` below `target` (either may be the layer root, empty).
fn dest_below(target: &str, rel: &str) -> String {
    match (target.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_owned(),
        (false, true) => target.to_owned(),
        (false, false) => format!("{target}/{rel}"),
    }
}

/// What one COPY writes: its members in order, the selections their sources lie in, and the
/// owner `--chown` names.
struct Plan {
    members: Vec<Member>,
    selected: Vec<Selected>,
    owner: Owner,
}

/// The real path of a member's source (`selected` its plan's selections).
fn real_of(selected: &[Selected], m: &Member) -> Option<PathBuf> {
    let Item::Path { src, .. } = &m.item else {
        return None;
    };
    if let Some(real) = &src.real {
        return Some(real.to_path_buf());
    }
    let sel = selected.get(src.sel as usize)?;
    Some(match m.dest.get(src.below as usize..) {
        Some(below) if src.below != Src::NONE => sel.real.join(below),
        _ => sel.real.clone(),
    })
}

/// The cache input naming a member's source (`file <path>`), as the key names it.
fn input_of(selected: &[Selected], m: &Member) -> Option<String> {
    let Item::Path { src, .. } = &m.item else {
        return None;
    };
    let sel = selected.get(src.sel as usize)?;
    Some(match m.dest.get(src.below as usize..) {
        Some(below) if src.below != Src::NONE && !sel.rel.is_empty() => {
            format!("file {}/{below}", sel.rel)
        }
        Some(below) if src.below != Src::NONE => format!("file {below}"),
        _ => format!("file {}", sel.rel),
    })
}

fn is_dir_in_root(root: &Path, path: &str) -> bool {
    fs::metadata(resolve(root, path, true)).is_ok_and(|m| m.is_dir())
}

fn exists_in_root(root: &Path, path: &str) -> bool {
    fs::symlink_metadata(resolve(root, path, false)).is_ok()
}

/// Applies a symbolic mode (`u=rwX,go=rX`, `+x`, `g-w`) to `mode`.
pub(crate) fn symbolic_mode(spec: &str, mode: u32, is_dir: bool) -> Result<u32, BuildError> {
    let bad = || BuildError::Invalid(format!("invalid chmod {spec:?}"));
    let mut mode = mode & 0o7777;
    for clause in spec.split(',') {
        let op_at = clause.find(['+', '-', '=']).ok_or_else(bad)?;
        let (who, rest) = clause.split_at(op_at);
        let who_mask = if who.is_empty() || who.contains('a') {
            0o7777
        } else {
            let mut m = 0;
            for c in who.chars() {
                m |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => return Err(bad()),
                };
            }
            m
        };
        let mut chars = rest.chars();
        let op = chars.next().ok_or_else(bad)?;
        let mut bits = 0u32;
        for c in chars {
            bits |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                _ => return Err(bad()),
            };
        }
        let bits = bits & who_mask;
        mode = match op {
            '+' => mode | bits,
            '-' => mode & !bits,
            _ => (mode & !(who_mask & 0o7777)) | bits,
        };
    }
    Ok(mode)
}

/// The permission bits a copied file or directory of mode `original` gets.
pub(crate) fn file_mode(
    chmod: Option<&Chmod>,
    original: u32,
    is_dir: bool,
) -> Result<u32, BuildError> {
    match chmod {
        None => Ok(original & 0o7777),
        Some(Chmod::Octal(m)) => Ok(*m & 0o7777),
        Some(Chmod::Symbolic(s)) => symbolic_mode(s, original, is_dir),
    }
}

/// `--parents` keeps a source's path, from its `/./` pivot when it has one: `./a/./b/f` → `b/f`.
fn pivoted(sources: &[String], rel: &str) -> String {
    for src in sources {
        let trimmed = src.strip_prefix("./").unwrap_or(src);
        if let Some((before, _)) = trimmed.split_once("/./") {
            let prefix = clean(before).join("/");
            if let Some(rest) = rel.strip_prefix(&format!("{prefix}/")) {
                return rest.to_owned();
            }
        }
    }
    rel.to_owned()
}

/// What one COPY's sources select, and where they go.
struct Selection {
    selected: Vec<Selected>,
    owner: Owner,
    /// The destination, cleaned.
    dest: String,
    /// Several selected paths: the destination is a directory.
    many: bool,
    dest_is_dir_syntax: bool,
}

/// Selects the sources of one COPY: `tree` is the source tree for `copy.sources` (the context
/// or a stage), `root` the merged destination view.
fn select(copy: &Copy, tree: &SourceTree<'_>, root: &Path) -> Result<Selection, BuildError> {
    let owner = copy
        .chown
        .as_deref()
        .map(|c| resolve_chown(root, c))
        .unwrap_or_default();
    let mut selected = Vec::new();
    for src in &copy.sources {
        if src.contains("://") {
            return Err(BuildError::Unsupported(format!(
                "{} from a URL ({src})",
                if copy.add { "ADD" } else { "COPY" }
            )));
        }
        selected.extend(tree.select(src)?);
    }
    // What was selected counts, not how it was spelled: `COPY target/*.jar app.jar` copies
    // the one jar there is to app.jar.
    let many = selected.len() + copy.inline.len() > 1;
    let dest_is_dir_syntax =
        copy.dest.ends_with('/') || copy.dest.ends_with("/.") || copy.dest == ".";
    let dest = clean(&copy.dest).join("/");
    if many && !dest_is_dir_syntax && !is_dir_in_root(root, &dest) {
        return Err(BuildError::Invalid(
            "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
        ));
    }
    Ok(Selection {
        selected,
        owner,
        dest,
        many,
        dest_is_dir_syntax,
    })
}

/// Plans the members of one COPY (see [`select`]).
fn plan(copy: &Copy, tree: &SourceTree<'_>, root: &Path) -> Result<Plan, BuildError> {
    let selection = select(copy, tree, root)?;
    plan_selected(copy, tree, root, selection)
}

fn plan_selected(
    copy: &Copy,
    tree: &SourceTree<'_>,
    root: &Path,
    selection: Selection,
) -> Result<Plan, BuildError> {
    let Selection {
        selected,
        owner,
        dest,
        many,
        dest_is_dir_syntax,
    } = selection;
    let mut members = Vec::new();
    let join = |base: &str, name: &str| {
        if base.is_empty() {
            name.to_owned()
        } else if name.is_empty() {
            // `COPY --parents . /dst/`: the context itself keeps no path of its own.
            base.to_owned()
        } else {
            format!("{base}/{name}")
        }
    };
    for (i, sel) in selected.iter().enumerate() {
        let sel_index = u32::try_from(i)
            .map_err(|_| BuildError::Invalid("too many sources in one COPY".into()))?;
        let meta = fs::metadata(&sel.real)
            .map(|m| FileMeta::from(&m))
            .map_err(|e| BuildError::io("reading", &sel.real, e))?;
        let base_rel = pivoted(&copy.sources, &sel.rel);
        if meta.is_dir() {
            // A directory's contents go into the destination (or under its path with --parents).
            let target = if copy.parents {
                join(&dest, &base_rel)
            } else {
                dest.clone()
            };
            if !target.is_empty() && !exists_in_root(root, &target) {
                // fsutil makes a missing destination 0755 (or the octal --chmod), never with
                // the source directory's mode.
                let mode = match &copy.chmod {
                    Some(Chmod::Octal(m)) => *m,
                    _ => 0o755,
                };
                members.push(Member {
                    dest: target.clone(),
                    item: Item::Dir {
                        mode,
                        mtime: jiff::Timestamp::now().as_second(),
                    },
                });
            }
            walk(
                tree,
                &sel.real,
                &sel.in_tree,
                &mut members,
                |rel, meta, real| Member::walked(&target, &rel, meta, sel_index, real),
            )?;
        } else {
            let name = Path::new(&sel.rel)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = if copy.parents {
                join(&dest, &base_rel)
            } else if dest_is_dir_syntax || many || is_dir_in_root(root, &dest) {
                join(&dest, &name)
            } else {
                dest.clone()
            };
            members.push(Member {
                dest: target,
                item: Item::Path {
                    meta,
                    src: Src {
                        sel: sel_index,
                        below: Src::NONE,
                        real: None,
                    },
                },
            });
        }
    }
    for inline in &copy.inline {
        let target = if dest_is_dir_syntax || many || is_dir_in_root(root, &dest) {
            join(&dest, &inline.name)
        } else {
            dest.clone()
        };
        members.push(Member {
            dest: target,
            item: Item::Inline {
                content: inline.content.clone().into_bytes(),
                mode: inline.mode,
            },
        });
    }
    // Parents of every destination that do not exist yet are created (0755, owned by --chown).
    let mut parents: Vec<String> = Vec::new();
    let dests: std::collections::HashSet<&str> = members.iter().map(|m| m.dest.as_str()).collect();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for m in &members {
        let mut end = 0;
        while let Some(i) = m.dest[end..].find('/') {
            end += i;
            let p = &m.dest[..end];
            end += 1;
            if seen.insert(p.to_owned()) && !dests.contains(p) && !exists_in_root(root, p) {
                parents.push(p.to_owned());
            }
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let all = if parents.is_empty() {
        members
    } else {
        let mut all: Vec<Member> = Vec::with_capacity(parents.len() + members.len());
        all.extend(parents.into_iter().map(|p| Member {
            dest: p,
            item: Item::Dir {
                mode: 0o755,
                mtime: now,
            },
        }));
        all.extend(members);
        all
    };
    Ok(Plan {
        members: all,
        selected,
        owner,
    })
}

/// Who owns what a COPY writes: `--chown`'s owner, the source's own (from a stage or image), or
/// root (from the context).
#[derive(Debug, Clone, Copy)]
enum Owners {
    Fixed(Owner),
    Preserve,
}

impl Owners {
    /// `owner` (from `--chown`, else root) for a COPY from the context or with `--chown`, the
    /// sources' own otherwise.
    fn of(copy_op: &Copy, owner: Owner) -> Self {
        if copy_op.chown.is_some() || copy_op.from == hoist_plan::SourceRef::Context {
            Self::Fixed(owner)
        } else {
            Self::Preserve
        }
    }
}

fn write_stream(
    plan: &Plan,
    owners: Owners,
    chmod: Option<Chmod>,
    out: impl io::Write,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    // Hardlinked sources stay hardlinked (within what this COPY writes).
    let mut links: std::collections::HashMap<(u64, u64), String> = std::collections::HashMap::new();
    let fixed = match owners {
        Owners::Fixed(o) => o,
        Owners::Preserve => Owner::default(),
    };
    for m in &plan.members {
        let mut h = tar::Header::new_gnu();
        h.set_uid(u64::from(fixed.uid));
        h.set_gid(u64::from(fixed.gid));
        if let (Owners::Preserve, Item::Path { meta, .. }) = (owners, &m.item) {
            h.set_uid(u64::from(meta.uid()));
            h.set_gid(u64::from(meta.gid()));
        }
        let path = &m.dest;
        match &m.item {
            Item::Dir { mode, mtime } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_mtime(u64::try_from(*mtime).unwrap_or(0));
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            Item::Inline { content, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                let mode = file_mode(chmod.as_ref(), *mode, false).map_err(io::Error::other)?;
                h.set_mode(mode);
                h.set_mtime(u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0));
                h.set_size(content.len() as u64);
                tar.append_data(&mut h, path, &content[..])?;
            }
            Item::Path { meta, .. } => {
                let real = real_of(&plan.selected, m).unwrap_or_default();
                h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
                let mode = file_mode(chmod.as_ref(), meta.mode(), meta.is_dir())
                    .map_err(io::Error::other)?;
                h.set_mode(mode);
                if meta.is_dir() {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), io::empty())?;
                } else if meta.is_symlink() {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    let target = fs::read_link(&real)?;
                    tar.append_link(&mut h, path, target)?;
                } else if meta.is_file()
                    && meta.nlink() > 1
                    && links.contains_key(&(meta.dev(), meta.ino()))
                {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    tar.append_link(&mut h, path, &links[&(meta.dev(), meta.ino())])?;
                } else if meta.is_file() {
                    if meta.nlink() > 1 {
                        links.insert((meta.dev(), meta.ino()), path.clone());
                    }
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(meta.len());
                    let f = fs::File::open(&real)?;
                    tar.append_data(&mut h, path, f.take(meta.len()))?;
                }
                // Sockets, fifos and devices in a source are skipped, as BuildKit's copy does.
            }
        }
    }
    tar.finish()
}

/// Runs one COPY/ADD onto the merged view `root`.
pub(crate) fn copy(copy_op: &Copy, tree: &SourceTree<'_>, root: &Path) -> Result<(), BuildError> {
    let plan = plan(copy_op, tree, root)?;
    meets_the_view(copy_op, &plan, root)?;
    if copy_op.add
        && let Some(done) = add_archives(copy_op, &plan, root)?
    {
        return done;
    }
    let (reader, writer) = io::pipe().map_err(|e| BuildError::io("making a pipe for", root, e))?;
    let chmod = copy_op.chmod.clone();
    let owners = Owners::of(copy_op, plan.owner);
    let producer = std::thread::spawn(move || write_stream(&plan, owners, chmod, writer));
    let opts = hoist_layer::ApplyOptions {
        whiteouts: hoist_layer::WhiteoutMode::Apply,
        follow_symlinks_in_root: true,
        ..hoist_layer::ApplyOptions::default()
    };
    let applied = hoist_layer::apply_layer(reader, root, &opts);
    let produced = producer
        .join()
        .map_err(|_| BuildError::Invalid("the copy stream writer panicked".into()))?;
    produced.map_err(|e| BuildError::io("reading sources for", root, e))?;
    applied?;
    Ok(())
}

/// The merged view's side of [`DirectWriter::meets_the_image`]: fails, as BuildKit does, where
/// a member would put a directory over a file of the image (or below one), or a file over one
/// of its directories. Paths are followed through the image's symlinks, as the write follows
/// them: this is the copy the direct write leaves to the merged view because of them. An
/// archive that ADD unpacks replaces what is in its way, as docker's untar does.
fn meets_the_view(copy_op: &Copy, plan: &Plan, root: &Path) -> Result<(), BuildError> {
    let root_fd = open_dir(root)?;
    let unpack = copy_op.add && copy_op.unpack != Some(false);
    // Directories met already, and paths the view does not have, so that a large copy looks
    // each up once.
    let mut dirs = std::collections::HashSet::new();
    let mut absent = std::collections::HashSet::new();
    for m in &plan.members {
        if unpack && is_archive_member(&plan.selected, m) {
            continue;
        }
        let own = m.dest.len();
        let ends = m.dest.match_indices('/').map(|(i, _)| i).chain([own]);
        for end in ends {
            let path = &m.dest[..end];
            let dir_here = end < own || is_dir_member(m);
            if absent.contains(path) {
                break;
            }
            if path.is_empty() || (dir_here && !dirs.insert(path)) {
                continue;
            }
            match kind_in_view(&root_fd, root, path, dir_here)? {
                // Nothing there, so nothing below it either.
                None => {
                    absent.insert(path);
                    break;
                }
                Some(is_dir) if dir_here && !is_dir => return Err(type_conflict(path, true)),
                Some(is_dir) if !dir_here && is_dir => return Err(type_conflict(path, false)),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Whether `path` in the view at `root` is a directory (`None`: nothing there), following
/// symlinks within the view, and at the last step too when `follow` (a directory is copied
/// into the one a symlink names; a file replaces the symlink).
fn kind_in_view(
    root_fd: &OwnedFd,
    root: &Path,
    path: &str,
    follow: bool,
) -> Result<Option<bool>, BuildError> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let fd = match rustix::fs::openat2(root_fd, path, flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        // A symlink to nothing or a loop: the write itself says what is wrong.
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return Ok(None);
        }
        Err(e) => return Err(BuildError::io("looking up", &root.join(path), e.into())),
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| BuildError::io("reading", &root.join(path), e.into()))?;
    Ok(Some(
        FileType::from_raw_mode(st.st_mode) == FileType::Directory,
    ))
}

/// Writes one COPY straight into the new layer's directory `out_dir`, with `lower` a read-only
/// view of the parent layers for the destination decisions, instead of applying a tar stream
/// onto the merged view: no stream, no overlay on the write path, and the files written on all
/// cores. overlayfs then sees the same upper directory the merged view would have left, so the
/// layer is the same.
///
/// Returns false, having written nothing, when the copy needs the merged view: a destination's
/// parent is a symlink (in the image or among the copied paths, which a COPY follows inside the
/// root), two sources land on the same path, or ADD unpacks an archive.
pub(crate) fn copy_into_layer(
    copy_op: &Copy,
    tree: &SourceTree<'_>,
    lower: &Path,
    out_dir: &Path,
    besides: Besides<'_>,
) -> Result<bool, BuildError> {
    let selection = select(copy_op, tree, lower)?;
    if let Some(done) = stream_dir(copy_op, tree, lower, out_dir, &selection, besides)? {
        return Ok(done);
    }
    let plan = plan_selected(copy_op, tree, lower, selection)?;
    if copy_op.add
        && copy_op.unpack != Some(false)
        && plan
            .members
            .iter()
            .any(|m| is_archive_member(&plan.selected, m))
    {
        return Ok(false);
    }
    let Some(parents) = direct_parents(&plan.members, lower)? else {
        return Ok(false);
    };
    let owners = Owners::of(copy_op, plan.owner);
    let w = DirectWriter::new(out_dir, owners, copy_op.chmod.as_ref(), besides);
    if !w.write(&plan, &parents, lower)? {
        give_up(besides);
        empty_dir(out_dir)?;
        return Ok(false);
    }
    if let Some(seals) = besides.seals {
        seals.finish();
    }
    Ok(true)
}

/// Most COPYs copy one directory (`COPY . /app`), and a large context makes them large: such a
/// copy is written straight into the layer a chunk of files at a time, as the walk yields them,
/// so no plan of every file is held. `None` when the copy is not of that kind, or its
/// destination crosses a symlink in the image (the planned write decides those);
/// `Some(false)` when a copied directory turns out to be a symlink in the image, which the
/// merged view must follow: `out_dir` is emptied again.
fn stream_dir(
    copy_op: &Copy,
    tree: &SourceTree<'_>,
    lower: &Path,
    out_dir: &Path,
    selection: &Selection,
    besides: Besides<'_>,
) -> Result<Option<bool>, BuildError> {
    const CHUNK: usize = 4096;
    let [sel] = selection.selected.as_slice() else {
        return Ok(None);
    };
    if copy_op.add || copy_op.parents || !copy_op.inline.is_empty() {
        return Ok(None);
    }
    let meta = fs::metadata(&sel.real).map_err(|e| BuildError::io("reading", &sel.real, e))?;
    if !meta.is_dir() {
        return Ok(None);
    }
    // The destination and its ancestors: the image's are copied up, missing ones are made
    // (0755, the destination itself with an octal --chmod), as the plan would.
    let target = &selection.dest;
    let now = jiff::Timestamp::now().as_second();
    let mut from_lower = Vec::new();
    let mut made = Vec::new();
    let ends = target
        .match_indices('/')
        .map(|(i, _)| i)
        .chain([target.len()]);
    for p in ends.map(|end| &target[..end]).filter(|p| !p.is_empty()) {
        match fs::symlink_metadata(lower.join(p)) {
            Ok(md) if md.is_dir() => from_lower.push((p.to_owned(), md)),
            Ok(_) => return Ok(None),
            Err(_) => {
                let mode = match (&copy_op.chmod, p == target) {
                    (Some(Chmod::Octal(m)), true) => *m,
                    _ => 0o755,
                };
                made.push(Member {
                    dest: p.to_owned(),
                    item: Item::Dir { mode, mtime: now },
                });
            }
        }
    }
    let owners = Owners::of(copy_op, selection.owner);
    let w = DirectWriter::new(out_dir, owners, copy_op.chmod.as_ref(), besides);
    let selected = std::slice::from_ref(sel);
    let seals = besides.seals;
    let mut done = Written::default();
    w.make_parents(&mut done, &from_lower)?;
    w.write_members(&mut done, &made, selected, None)?;
    // Directory times to set as each directory is sealed: the destination's, then those the
    // walk makes.
    let mut times = std::collections::HashMap::new();
    if let Some(seals) = seals {
        // The destination's ancestors hold nothing but the next of them: final now.
        for (p, sec, nsec) in &done.image_dir_times {
            times.insert(p.clone(), (*sec, *nsec));
        }
        for (p, sec) in &done.dir_times {
            times.insert(p.clone(), (*sec, 0));
        }
        for p in from_lower
            .iter()
            .map(|(p, _)| p)
            .chain(made.iter().map(|m| &m.dest))
        {
            if p != target {
                seal_dir(out_dir, seals, &mut times, p)?;
            }
        }
        // The layer root holds the first of them; when it is the destination itself, its
        // entries come from the walk, and it is sealed as the others are.
        if !target.is_empty() {
            seals.seal("");
        }
    }
    let mut timed = done.dir_times.len();
    let mut crossed = false;
    // The walk lists the next chunk while this thread writes the one before. For a copy its
    // digest follows, it goes a directory at a time, so that each is sealed soon after it is
    // begun.
    let (walked, written) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Member>, Vec<String>)>(1);
        let walk = s.spawn(move || {
            let send = |chunk: &mut Vec<Member>, whole: &mut Vec<String>| {
                let full = std::mem::replace(chunk, Vec::with_capacity(CHUNK));
                // The writer stopped (and says why): so does the walk.
                tx.send((full, std::mem::take(whole)))
                    .map_err(|_| BuildError::Invalid("the copy stopped".into()))
            };
            let make = |rel: String, meta, real| Member::walked(target, &rel, meta, 0, real);
            let mut chunk = Vec::with_capacity(CHUNK);
            if seals.is_some()
                && walk_dirwise_chunked(
                    tree,
                    &sel.real,
                    &sel.in_tree,
                    &mut chunk,
                    make,
                    CHUNK,
                    send,
                )?
            {
                return Ok(());
            }
            walk_chunked(
                tree,
                &sel.real,
                &sel.in_tree,
                &mut chunk,
                make,
                CHUNK,
                |c| send(c, &mut Vec::new()),
            )
        });
        let mut written = Ok(());
        for (chunk, whole) in &rx {
            match w.write_members(&mut done, &chunk, selected, Some(lower)) {
                Ok(true) => {}
                Ok(false) => {
                    crossed = true;
                    break;
                }
                Err(e) => {
                    written = Err(e);
                    break;
                }
            }
            let Some(seals) = seals else { continue };
            for (p, sec) in &done.dir_times[timed..] {
                times.insert(p.clone(), (*sec, 0));
            }
            timed = done.dir_times.len();
            for rel in whole {
                let dir = dest_below(target, &rel);
                if !done.link_dirs.contains(&dir)
                    && let Err(e) = seal_dir(out_dir, seals, &mut times, &dir)
                {
                    written = Err(e);
                    break;
                }
            }
            if written.is_err() {
                break;
            }
        }
        drop(rx);
        let walked = walk
            .join()
            .unwrap_or_else(|_| Err(BuildError::Invalid("the copy's walk panicked".into())));
        (walked, written)
    });
    written?;
    if crossed {
        give_up(besides);
        empty_dir(out_dir)?;
        return Ok(Some(false));
    }
    walked?;
    w.finish(done)?;
    if let Some(seals) = seals {
        seals.finish();
    }
    Ok(Some(true))
}

/// Sets the time of the directory `dir` (relative to `out_dir`) that its last entry was
/// written into, and seals it: the digest following the copy may read it now.
fn seal_dir(
    out_dir: &Path,
    seals: &Seals,
    times: &mut std::collections::HashMap<String, (i64, i64)>,
    dir: &str,
) -> Result<(), BuildError> {
    // The layer root's own time is in no tar; a directory with no time here is left to the
    // end (see `DirectWriter::finish`).
    if dir.is_empty() {
        seals.seal(dir);
    } else if let Some((sec, nsec)) = times.remove(dir) {
        set_mtime(&out_dir.join(dir), sec, nsec)?;
        seals.seal(dir);
    }
    Ok(())
}

/// Gives the seals up when dropped, unless the copy finished: however a copy ends,
/// the digest following it does too.
pub(crate) struct GiveUp<'a>(pub(crate) &'a Seals);

impl Drop for GiveUp<'_> {
    fn drop(&mut self) {
        self.0.give_up();
    }
}

/// A copy gives its directory up to the merged view: the digest following it stops.
fn give_up(besides: Besides<'_>) {
    if let Some(seals) = besides.seals {
        seals.give_up();
    }
}

/// Removes everything in `dir`.
fn empty_dir(dir: &Path) -> Result<(), BuildError> {
    let entries = fs::read_dir(dir).map_err(|e| BuildError::io("reading", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BuildError::io("reading", dir, e))?;
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| BuildError::io("removing", &path, e))?;
    }
    Ok(())
}

fn is_archive_member(selected: &[Selected], m: &Member) -> bool {
    matches!(&m.item, Item::Path { meta, .. } if meta.is_file())
        && real_of(selected, m).is_some_and(|real| is_archive(&real))
}

fn is_dir_member(m: &Member) -> bool {
    matches!(&m.item, Item::Dir { .. })
        || matches!(&m.item, Item::Path { meta, .. } if meta.is_dir())
}

/// The error BuildKit's copy gives for a directory copied where a file is (`dir_last`), or a
/// file where a directory is: the image's or another source's.
fn type_conflict(dest: &str, dir_last: bool) -> BuildError {
    BuildError::Invalid(if dir_last {
        format!("cannot copy to non-directory: /{dest}")
    } else {
        format!("cannot replace to directory /{dest} with file")
    })
}

/// The directories a direct write must create that no member names (they exist in the image;
/// the new layer gets them with the image's attributes, as a copy-up would), or `None` when the
/// copy needs the merged view (see [`copy_into_layer`]). Sources that put a file and a
/// directory at one path (or a path below a file) fail, as in BuildKit; the merged view would
/// keep only the last.
fn direct_parents(
    members: &[Member],
    lower: &Path,
) -> Result<Option<Vec<(String, fs::Metadata)>>, BuildError> {
    let mut dests = std::collections::HashMap::with_capacity(members.len());
    let mut not_dirs = std::collections::HashSet::new();
    let mut merged = false;
    for m in members {
        let is_dir = is_dir_member(m);
        match dests.entry(m.dest.as_str()) {
            std::collections::hash_map::Entry::Occupied(first) => {
                if *first.get() != is_dir {
                    return Err(type_conflict(&m.dest, is_dir));
                }
                merged = true;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(is_dir);
            }
        }
        if !is_dir {
            not_dirs.insert(m.dest.as_str());
        }
    }
    // A path below a file another source put there.
    for m in members {
        if let Some(p) = m
            .dest
            .match_indices('/')
            .map(|(i, _)| &m.dest[..i])
            .find(|p| not_dirs.contains(p))
        {
            return Err(type_conflict(p, true));
        }
    }
    if merged {
        return Ok(None);
    }
    let mut checked = std::collections::HashSet::new();
    let mut from_lower = Vec::new();
    for m in members {
        let own = is_dir_member(m).then_some(m.dest.len());
        let ancestors = m
            .dest
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(own)
            .map(|end| &m.dest[..end]);
        for p in ancestors {
            if p.is_empty() || !checked.insert(p) {
                continue;
            }
            match fs::symlink_metadata(lower.join(p)) {
                Ok(md) if md.file_type().is_symlink() => return Ok(None),
                Ok(md) if !dests.contains_key(p) => {
                    if !md.is_dir() {
                        return Ok(None);
                    }
                    from_lower.push((p.to_owned(), md));
                }
                Ok(_) => {}
                Err(_) if dests.contains_key(p) => {}
                Err(_) => return Ok(None),
            }
        }
    }
    Ok(Some(from_lower))
}

/// What a direct write leaves for its end: directory times (in the order made), and hard links
/// to make once their first destination is written.
#[derive(Default)]
struct Written {
    dir_times: Vec<(String, i64)>,
    /// The image's directories the copy writes into, with their times in the image (seconds,
    /// nanoseconds): they keep them, so that a layer depends on its inputs, not on when it was
    /// made, and a rebuild from an earlier layer gives the same bytes.
    image_dir_times: Vec<(String, i64, i64)>,
    /// Destinations that are directories in the image (besides its root): only below them can
    /// a copied path meet one of the image's.
    in_image: std::collections::HashSet<String>,
    /// (device, inode) of a multiply-linked source → the first destination written for it.
    first_of: std::collections::HashMap<(u64, u64), String>,
    links: Vec<(String, String)>,
    /// The directories that hold a name of a multiply-linked source: final only once the
    /// links are made (see `DirectWriter::finish`).
    link_dirs: std::collections::HashSet<String>,
}

/// What a copy does besides writing every file it selects.
#[derive(Clone, Copy, Default)]
pub(crate) struct Besides<'a> {
    /// Links what did not change from an earlier layer.
    pub(crate) reuse: Option<&'a Reuse<'a>>,
    /// Feeds the key made beside the copy the digests of what it reads.
    pub(crate) fed: Option<&'a Fed>,
    /// Tells the layer's digest, which follows the copy, the directories it has finished.
    pub(crate) seals: Option<&'a Seals>,
}

/// The directories of a copy's layer that are final, for its digest to follow the copy
/// (see [`hoist_layer::digest_layer_gated`]). A copy seals a directory once it has written all
/// of its entries and set its time, and writes nothing of it after.
#[derive(Default)]
pub(crate) struct Seals {
    state: std::sync::Mutex<SealState>,
    more: std::sync::Condvar,
}

#[derive(Default)]
struct SealState {
    /// Destinations relative to the layer root; its root is `""`.
    sealed: std::collections::HashSet<String>,
    /// `Some(true)` once the copy wrote the whole layer itself; `Some(false)` when it gave the
    /// directory up (it failed, or the merged view writes it).
    end: Option<bool>,
}

impl Seals {
    fn state(&self) -> std::sync::MutexGuard<'_, SealState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seal(&self, dir: &str) {
        self.state().sealed.insert(dir.to_owned());
        self.more.notify_all();
    }

    fn end(&self, whole: bool) {
        let mut st = self.state();
        if st.end.is_none() {
            st.end = Some(whole);
        }
        drop(st);
        self.more.notify_all();
    }

    /// Every directory is final: the copy wrote the layer whole.
    pub(crate) fn finish(&self) {
        self.end(true);
    }

    /// The copy will not finish the directory (failed, or copies through the merged view):
    /// its digest stops. Nothing once it finished.
    pub(crate) fn give_up(&self) {
        self.end(false);
    }

    /// Whether the copy finished the layer itself (and its gated digest is the layer's).
    pub(crate) fn whole(&self) -> bool {
        self.state().end == Some(true)
    }

    /// What the layer's digest waits on.
    pub(crate) fn gate(self: &std::sync::Arc<Self>) -> hoist_layer::Gate {
        let seals = self.clone();
        std::sync::Arc::new(move |dir: &[u8]| {
            let mut st = seals.state();
            loop {
                match st.end {
                    Some(true) => return Ok(()),
                    Some(false) => return Err(hoist_layer::LayerError::Abandoned),
                    None if std::str::from_utf8(dir).is_ok_and(|d| st.sealed.contains(d)) => {
                        return Ok(());
                    }
                    None => {
                        st = seals
                            .more
                            .wait(st)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                }
            }
        })
    }
}

/// The layer an earlier build of the same COPY made, and which of its inputs are as they were
/// then: a rebuild whose files changed in part links each unchanged file from that layer
/// (snapshots are immutable, so sharing an inode is safe) and writes the rest, so that the
/// result is the layer a full copy makes, made by the same writer.
pub(crate) struct Reuse<'a> {
    pub(crate) previous: &'a Path,
    /// Whether a source input (`file <path>`) was recorded alike both times.
    pub(crate) unchanged: &'a (dyn Fn(&str) -> bool + Sync),
}

struct DirectWriter<'a> {
    out_dir: &'a Path,
    owners: Owners,
    chmod: Option<&'a Chmod>,
    /// Who a file this process creates belongs to, unless its directory gives it its group.
    creator: (u32, u32),
    /// The process's umask, when it could be read: a file created with a mode it leaves whole
    /// needs no chmod.
    umask: Option<u32>,
    reuse: Option<&'a Reuse<'a>>,
    /// Where the contents' digests go, read as they are copied (see [`Fed`]).
    fed: Option<&'a Fed>,
}

/// The process's umask, from `/proc/self/status`: setting it to learn it would change it
/// under the other threads' feet.
fn current_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// A worker's open parents (in the new layer, its sources, and the earlier layer it may link
/// from) and its buffer for copies that hash.
type WorkerDirs<'m> = (Parent<'m>, ParentCache, Parent<'m>, Vec<u8>);

impl<'a> DirectWriter<'a> {
    fn new(
        out_dir: &'a Path,
        owners: Owners,
        chmod: Option<&'a Chmod>,
        besides: Besides<'a>,
    ) -> Self {
        Self {
            out_dir,
            owners,
            chmod,
            reuse: besides.reuse,
            fed: besides.fed,
            creator: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
            umask: current_umask(),
        }
    }

    /// A directory member's mode, owner and time. A planned directory has the mode the plan
    /// chose (0755, or an octal --chmod); a copied one its source's, --chmod applied.
    fn dir_attributes(&self, item: &Item) -> Result<(u32, (u32, u32), i64), BuildError> {
        let (mode, mtime) = match item {
            Item::Dir { mode, mtime } => (*mode, *mtime),
            Item::Path { meta, .. } => (file_mode(self.chmod, meta.mode(), true)?, meta.mtime()),
            Item::Inline { .. } => {
                return Err(BuildError::Invalid(
                    "an inline file is not a directory".into(),
                ));
            }
        };
        Ok((mode, self.owner_of(item), mtime))
    }

    fn owner_of(&self, item: &Item) -> (u32, u32) {
        match (self.owners, item) {
            (Owners::Preserve, Item::Path { meta, .. }) => (meta.uid(), meta.gid()),
            (Owners::Fixed(o), _) => (o.uid, o.gid),
            (Owners::Preserve, _) => (0, 0),
        }
    }

    /// Writes `plan`; false, as [`DirectWriter::write_members`], when it needs the merged view.
    fn write(
        &self,
        plan: &Plan,
        parents: &[(String, fs::Metadata)],
        lower: &Path,
    ) -> Result<bool, BuildError> {
        let mut done = Written::default();
        self.make_parents(&mut done, parents)?;
        if !self.write_members(&mut done, &plan.members, &plan.selected, Some(lower))? {
            return Ok(false);
        }
        self.finish(done)?;
        Ok(true)
    }

    /// Makes the image's directories that the copy writes into, with the image's owner and
    /// mode, as a copy-up would, and its time (see [`Written::image_dir_times`]).
    fn make_parents(
        &self,
        done: &mut Written,
        parents: &[(String, fs::Metadata)],
    ) -> Result<(), BuildError> {
        for (p, md) in parents {
            self.make_dir(p, md.mode(), (md.uid(), md.gid()))?;
            done.image_dir_times
                .push((p.clone(), md.mtime(), md.mtime_nsec()));
            done.in_image.insert(p.clone());
        }
        Ok(())
    }

    /// Writes `members`, which come with directories before what they hold (as a walk yields
    /// them, and later calls may bring more): the directories in order, then the files on
    /// every core. With `lower`, a directory that is a symlink there stops it before anything
    /// is written for it, returning false: a COPY follows it, which needs the merged view.
    fn write_members(
        &self,
        done: &mut Written,
        members: &[Member],
        selected: &[Selected],
        lower: Option<&Path>,
    ) -> Result<bool, BuildError> {
        let mut files = Vec::new();
        for m in members {
            if let Some(lower) = lower
                && !self.meets_the_image(done, lower, m)?
            {
                return Ok(false);
            }
            match &m.item {
                _ if is_dir_member(m) => {
                    let (mode, owner, mtime) = self.dir_attributes(&m.item)?;
                    self.make_dir(&m.dest, mode, owner)?;
                    done.dir_times.push((m.dest.clone(), mtime));
                }
                Item::Path { meta, .. } if meta.is_file() && meta.nlink() > 1 => {
                    // The first name too: a tar reads a file as linked by its link count,
                    // which a later name raises.
                    done.link_dirs.insert(split_dest(&m.dest).0.to_owned());
                    match done.first_of.entry((meta.dev(), meta.ino())) {
                        std::collections::hash_map::Entry::Occupied(first) => {
                            done.links.push((first.get().clone(), m.dest.clone()));
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(m.dest.clone());
                            files.push(m);
                        }
                    }
                }
                _ => files.push(m),
            }
        }
        self.write_parallel(&files, selected)?;
        Ok(true)
    }

    /// Whether `m` can be written over what the image (`lower`) has at its destination: a
    /// directory merges into a directory and a file replaces a file, as BuildKit's copy does.
    /// BuildKit fails on a directory over a file ("cannot copy to non-directory") and a file
    /// over a directory ("cannot replace to directory … with file"), and so does this, rather
    /// than drop what the image had. False when the image has a symlink where a directory is
    /// copied: a COPY follows it, which needs the merged view.
    fn meets_the_image(
        &self,
        done: &mut Written,
        lower: &Path,
        m: &Member,
    ) -> Result<bool, BuildError> {
        let parent = split_dest(&m.dest).0;
        if !parent.is_empty() && !done.in_image.contains(parent) {
            // A directory the image does not have: nothing below it meets the image.
            return Ok(true);
        }
        let Ok(there) = fs::symlink_metadata(lower.join(&m.dest)) else {
            return Ok(true);
        };
        if is_dir_member(m) {
            if there.is_symlink() {
                return Ok(false);
            }
            if !there.is_dir() {
                return Err(type_conflict(&m.dest, true));
            }
            done.in_image.insert(m.dest.clone());
        } else if there.is_dir() {
            return Err(type_conflict(&m.dest, false));
        }
        Ok(true)
    }

    /// The hard links, once every first link is written, then the directories' times last:
    /// writing into a directory moved its time.
    fn finish(&self, done: Written) -> Result<(), BuildError> {
        for (first, dest) in done.links {
            let (from, to) = (self.out_dir.join(first), self.out_dir.join(dest));
            fs::hard_link(&from, &to).map_err(|e| BuildError::io("linking", &to, e))?;
        }
        for (dest, mtime) in done.dir_times.into_iter().rev() {
            set_mtime(&self.out_dir.join(dest), mtime, 0)?;
        }
        for (dest, sec, nsec) in done.image_dir_times {
            set_mtime(&self.out_dir.join(dest), sec, nsec)?;
        }
        Ok(())
    }

    /// Makes the directory `dest` of the layer with its owner and mode, owner first: chown
    /// clears setgid.
    fn make_dir(&self, dest: &str, mode: u32, (uid, gid): (u32, u32)) -> Result<(), BuildError> {
        let path = self.out_dir.join(dest);
        fs::create_dir(&path).map_err(|e| BuildError::io("creating", &path, e))?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(|e| BuildError::io("chown", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| BuildError::io("chmod", &path, e))
    }

    /// Writes the non-directory members on every core.
    fn write_parallel(&self, files: &[&Member], selected: &[Selected]) -> Result<(), BuildError> {
        let root = open_dir(self.out_dir)?;
        let earlier = self.reuse.map(|r| open_dir(r.previous)).transpose()?;
        for_each_parallel(
            files,
            |m| split_dest(&m.dest).0,
            |m| match &m.item {
                Item::Path { meta, .. } if meta.is_file() => meta.len(),
                _ => 0,
            },
            || (None, ParentCache::default(), None, Vec::new()),
            |dirs: &mut WorkerDirs<'_>, m| {
                if let (Some(reuse), Some(earlier)) = (self.reuse, &earlier)
                    && self.link_earlier(reuse, earlier, &root, dirs, m, selected)?
                {
                    return Ok(());
                }
                self.write_one(&root, &mut dirs.0, &mut dirs.1, &mut dirs.3, m, selected)
            },
        )
    }

    /// Links `m` from the earlier layer when its input is unchanged and that layer has a
    /// regular file there of the time a copy would give; false when it must be written. A
    /// hard-linked source is always written, with its group, as a full copy links it to the
    /// group's first member: the earlier layer may have grouped it otherwise.
    fn link_earlier<'m>(
        &self,
        reuse: &Reuse<'_>,
        earlier: &OwnedFd,
        root: &OwnedFd,
        (parent, _, earlier_parent, _): &mut WorkerDirs<'m>,
        m: &'m Member,
        selected: &[Selected],
    ) -> Result<bool, BuildError> {
        use rustix::fs::{AtFlags, FileType};
        let Item::Path { meta, .. } = &m.item else {
            return Ok(false);
        };
        if !meta.is_file()
            || meta.nlink() != 1
            || !input_of(selected, m).is_some_and(|i| (reuse.unchanged)(&i))
        {
            return Ok(false);
        }
        let (dir_path, name) = split_dest(&m.dest);
        let Ok((old_dir, _)) = cached_parent(earlier, reuse.previous, earlier_parent, dir_path)
        else {
            return Ok(false);
        };
        // Touched since, a file is the same in the key, but a copy gives it its new time.
        let same = rustix::fs::statat(old_dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_mtime == meta.mtime()
        });
        if !same {
            return Ok(false);
        }
        let (new_dir, _) = cached_parent(root, self.out_dir, parent, dir_path)?;
        rustix::fs::linkat(old_dir, name, new_dir, name, AtFlags::empty())
            .map_err(|e| BuildError::io("linking", &self.out_dir.join(&m.dest), e.into()))?;
        Ok(true)
    }

    /// One file, symlink or inline file, created in its parent (opened beneath the layer root
    /// without following any symlink) and given its owner, mode and time.
    fn write_one<'m>(
        &self,
        root: &OwnedFd,
        parent: &mut Parent<'m>,
        sources: &mut ParentCache,
        buf: &mut Vec<u8>,
        m: &'m Member,
        selected: &[Selected],
    ) -> Result<(), BuildError> {
        use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
        let path = || self.out_dir.join(&m.dest);
        let (dir_path, name) = split_dest(&m.dest);
        let (dir, dir_gid) = cached_parent(root, self.out_dir, parent, dir_path)?;
        let (uid, gid) = self.owner_of(&m.item);
        // A new file is its creator's, its group the directory's where that one passes its
        // group on (setgid, or a grpid mount): when both give the owner wanted, a chown would
        // change nothing.
        let owned = (uid, gid) == self.creator && dir_gid == self.creator.1;
        let create = |mode: u32| {
            rfs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            )
            .map(fs::File::from)
            .map_err(|e| BuildError::io("creating", &path(), e.into()))
        };
        // A plain mode the umask leaves whole is given at creation, and a chown keeps it; a
        // setuid, setgid or sticky bit is set after the owner (chown clears the first two).
        let created_whole =
            |mode: u32| mode & !0o777 == 0 && self.umask.is_some_and(|u| mode & u == 0);
        let finish = |f: &fs::File, mode: u32, mtime: i64| -> Result<(), BuildError> {
            // Owner before mode: chown clears setuid and setgid.
            if !owned {
                rfs::fchown(
                    f,
                    Some(rfs::Uid::from_raw(uid)),
                    Some(rfs::Gid::from_raw(gid)),
                )
                .map_err(|e| BuildError::io("chown", &path(), e.into()))?;
            }
            if !created_whole(mode) {
                rfs::fchmod(f, Mode::from_raw_mode(mode & 0o7777))
                    .map_err(|e| BuildError::io("chmod", &path(), e.into()))?;
            }
            let t = rfs::Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            };
            rfs::futimens(
                f,
                &rfs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .map_err(|e| BuildError::io("setting the time of", &path(), e.into()))
        };
        match &m.item {
            Item::Inline { content, mode } => {
                let mode = file_mode(self.chmod, *mode, false)?;
                let mut f = create(if created_whole(mode) { mode } else { 0o600 })?;
                io::Write::write_all(&mut f, content)
                    .map_err(|e| BuildError::io("writing", &path(), e))?;
                finish(&f, mode, jiff::Timestamp::now().as_second())
            }
            Item::Path { meta, .. } if meta.is_file() => {
                let real = &real_of(selected, m).unwrap_or_default();
                let src = sources
                    .open(real, true)
                    .map_err(|e| BuildError::io("reading", real, e))?;
                let mode = file_mode(self.chmod, meta.mode(), false)?;
                let mut f = create(if created_whole(mode) { mode } else { 0o600 })?;
                let want = meta.len();
                let got = match self.fed {
                    Some(fed) => {
                        let (got, digest) = copy_hashing(src, &mut f, want, buf)
                            .map_err(|e| BuildError::io("copying", real, e))?;
                        if got == want {
                            fed.put(meta, &digest);
                        }
                        got
                    }
                    None => copy_exactly(src, &mut f, want)
                        .map_err(|e| BuildError::io("copying", real, e))?,
                };
                if got != want {
                    return Err(BuildError::Invalid(format!(
                        "{} changed while it was copied ({want} bytes expected, {got} read)",
                        real.display()
                    )));
                }
                finish(&f, mode, meta.mtime())
            }
            Item::Path { meta, .. } if meta.is_symlink() => {
                let real = &real_of(selected, m).unwrap_or_default();
                let target = fs::read_link(real).map_err(|e| BuildError::io("reading", real, e))?;
                rfs::symlinkat(&target, dir, name)
                    .map_err(|e| BuildError::io("creating", &path(), e.into()))?;
                if !owned {
                    rfs::chownat(
                        dir,
                        name,
                        Some(rfs::Uid::from_raw(uid)),
                        Some(rfs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| BuildError::io("chown", &path(), e.into()))?;
                }
                let t = rfs::Timespec {
                    tv_sec: meta.mtime(),
                    tv_nsec: 0,
                };
                rfs::utimensat(
                    dir,
                    name,
                    &rfs::Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| BuildError::io("setting the time of", &path(), e.into()))
            }
            // Sockets, fifos and devices in a source are skipped, as BuildKit's copy does;
            // directories were made before.
            _ => Ok(()),
        }
    }
}

/// A worker's open parent directory (its path in the layer and descriptor): neighbouring
/// members share one.
type Parent<'a> = Option<(&'a str, OwnedFd, u32)>;

fn split_dest(dest: &str) -> (&str, &str) {
    dest.rsplit_once('/').unwrap_or(("", dest))
}

fn open_dir(path: &Path) -> Result<OwnedFd, BuildError> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BuildError::io("opening", path, e.into()))
}

/// `dir_path` opened beneath `root` without following any symlink, and its group, reusing the
/// worker's descriptor when the previous member had the same parent.
fn cached_parent<'p, 'a>(
    root: &OwnedFd,
    root_path: &Path,
    parent: &'p mut Parent<'a>,
    dir_path: &'a str,
) -> Result<(&'p OwnedFd, u32), BuildError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    if parent.as_ref().is_none_or(|(p, _, _)| *p != dir_path) {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = if dir_path.is_empty() {
            rustix::fs::openat(root, ".", flags, Mode::empty())
        } else {
            rustix::fs::openat2(
                root,
                dir_path,
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
        }
        .map_err(|e| BuildError::io("opening", &root_path.join(dir_path), e.into()))?;
        let gid = rustix::fs::fstat(&fd)
            .map_err(|e| BuildError::io("reading", &root_path.join(dir_path), e.into()))?
            .st_gid;
        *parent = Some((dir_path, fd, gid));
    }
    match parent {
        Some((_, fd, gid)) => Ok((fd, *gid)),
        None => Err(BuildError::Invalid("no parent directory".into())),
    }
}

/// Copies at most `want` bytes of `src` into `dst` and says how many: with copy_file_range, so
/// the bytes never pass through this process and nothing is asked of either file first (std's
/// copy stats both), else (across filesystems, or where the kernel has no such copy) with
/// std's copy.
fn copy_exactly(src: fs::File, dst: &mut fs::File, want: u64) -> io::Result<u64> {
    let mut got = 0;
    while got < want {
        let ask = usize::try_from(want - got)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(&src, None, &*dst, None, ask) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) if got == 0 => return io::copy(&mut src.take(want), dst),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// [`copy_exactly`] through `buf`, hashing what passes (BLAKE3): the digest an early copy's
/// key takes instead of reading the file again. Costs a pass through this process's memory,
/// which the key's own read would cost too.
fn copy_hashing(
    mut src: fs::File,
    dst: &mut fs::File,
    want: u64,
    buf: &mut Vec<u8>,
) -> io::Result<(u64, blake3::Hash)> {
    use std::io::Write;
    if buf.is_empty() {
        buf.resize(256 * 1024, 0);
    }
    let mut hasher = blake3::Hasher::new();
    let mut got = 0;
    while got < want {
        let ask = usize::try_from(want - got).map_or(buf.len(), |left| left.min(buf.len()));
        let n = match src.read(&mut buf[..ask]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        got += n as u64;
    }
    Ok((got, hasher.finalize()))
}

/// ADD of a local archive unpacks it into the destination directory instead of copying it.
fn add_archives(
    copy_op: &Copy,
    plan: &Plan,
    root: &Path,
) -> Result<Option<Result<(), BuildError>>, BuildError> {
    if copy_op.unpack == Some(false) {
        return Ok(None);
    }
    let archives: Vec<PathBuf> = plan
        .members
        .iter()
        .filter(|m| is_archive_member(&plan.selected, m))
        .filter_map(|m| real_of(&plan.selected, m))
        .collect();
    if archives.is_empty() {
        return Ok(None);
    }
    if archives.len()
        != plan
            .members
            .iter()
            .filter(|m| matches!(m.item, Item::Path { .. } | Item::Inline { .. }))
            .count()
    {
        return Err(BuildError::Unsupported(
            "ADD of archives mixed with other sources".into(),
        ));
    }
    let dest = clean(&copy_op.dest).join("/");
    let target = resolve(root, &dest, true);
    fs::create_dir_all(&target).map_err(|e| BuildError::io("creating", &target, e))?;
    for real in &archives {
        let f = fs::File::open(real).map_err(|e| BuildError::io("opening", real, e))?;
        let decoded = hoist_layer::decompress(io::BufReader::new(f))
            .map_err(|e| BuildError::io("reading", real, e))?;
        let opts = hoist_layer::ApplyOptions {
            whiteouts: hoist_layer::WhiteoutMode::Apply,
            follow_symlinks_in_root: true,
            ..hoist_layer::ApplyOptions::default()
        };
        hoist_layer::apply_layer(decoded, &target, &opts)?;
    }
    Ok(Some(Ok(())))
}

/// Whether a file is a tar archive, plain or compressed (the test docker's ADD applies).
fn is_archive(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let Ok(mut decoded) = hoist_layer::decompress(io::BufReader::new(f)) else {
        return false;
    };
    let mut block = vec![0u8; 512];
    let mut got = 0;
    while got < 512 {
        match decoded.read(&mut block[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got == 512 && &block[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::{copy_exactly, symbolic_mode};
    use std::io::{Read, Seek, Write};

    /// Same filesystem (copy_file_range) and from a memfd, which the kernel refuses to copy
    /// that way into another filesystem (std's copy then): the same bytes, never more than
    /// asked, and a short count when the source is shorter.
    #[test]
    fn copies_exactly_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let on_disk = dir.path().join("src");
        std::fs::write(&on_disk, &data).unwrap();
        let memfd: std::fs::File = rustix::fs::memfd_create("src", rustix::fs::MemfdFlags::CLOEXEC)
            .unwrap()
            .into();
        (&memfd).write_all(&data).unwrap();
        for (i, want) in [0, 1, 4096, 123_457, 300_000, 400_000]
            .into_iter()
            .enumerate()
        {
            for from_memfd in [false, true] {
                let src = if from_memfd {
                    let mut f = memfd.try_clone().unwrap();
                    f.rewind().unwrap();
                    f
                } else {
                    std::fs::File::open(&on_disk).unwrap()
                };
                let path = dir.path().join(format!("dst-{i}-{from_memfd}"));
                let mut dst = std::fs::File::create(&path).unwrap();
                let got = copy_exactly(src, &mut dst, want).unwrap();
                let n = want.min(data.len() as u64);
                assert_eq!(got, n, "want {want}, memfd {from_memfd}");
                let mut back = Vec::new();
                std::fs::File::open(&path)
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, data[..n as usize], "want {want}, memfd {from_memfd}");
            }
        }
    }

    #[test]
    fn symbolic_modes() {
        assert_eq!(symbolic_mode("u=rwX,go=rX", 0o600, false).unwrap(), 0o644);
        assert_eq!(symbolic_mode("u=rwX,go=rX", 0o700, true).unwrap(), 0o755);
        assert_eq!(symbolic_mode("+x", 0o644, false).unwrap(), 0o755);
        assert_eq!(symbolic_mode("g-w,o-r", 0o664, false).unwrap(), 0o640);
        assert_eq!(symbolic_mode("a=r", 0o777, false).unwrap(), 0o444);
        assert!(symbolic_mode("q+x", 0o644, false).is_err());
    }
}

#[cfg(test)]
mod seal_tests {
    use super::{Besides, Seals, copy_into_layer};
    use crate::context::SourceTree;
    use hoist_plan::Copy;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// What a layer's tar takes from a directory: its time (but the root's), and its entries'
    /// names with, for all but directories (which have their own turn), link count and time.
    fn state(upper: &Path, dir: &str) -> (Option<i64>, Vec<(String, u64, i64)>) {
        let path = upper.join(dir);
        let own = (!dir.is_empty()).then(|| std::fs::symlink_metadata(&path).unwrap().mtime());
        let mut entries: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                if m.is_dir() {
                    (name, 0, 0)
                } else {
                    (name, m.nlink(), m.mtime())
                }
            })
            .collect();
        entries.sort();
        (own, entries)
    }

    /// A directory the copy seals is final: read the moment its seal lets it through, its
    /// entries, their link counts and times are those it ends with. Into the layer root and
    /// below it, with a hard link whose first name lies in a directory sealed long before the
    /// second's could be.
    #[test]
    fn a_sealed_directory_is_final() {
        for (dest, root) in [("/app", "app"), ("/", "")] {
            let tmp = tempfile::tempdir().unwrap();
            let ctx = tmp.path().join("ctx");
            for dir in ["a", "m", "zz"] {
                std::fs::create_dir_all(ctx.join(dir)).unwrap();
            }
            std::fs::write(ctx.join("a/x"), "x").unwrap();
            for i in 0..3000 {
                std::fs::write(ctx.join(format!("m/f{i:04}")), "m").unwrap();
                std::fs::write(ctx.join(format!("f{i:04}")), "top").unwrap();
            }
            std::fs::hard_link(ctx.join("a/x"), ctx.join("zz/y")).unwrap();
            let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
            std::fs::create_dir_all(&lower).unwrap();
            std::fs::create_dir_all(&upper).unwrap();
            let copy = Copy::from_context(vec![".".to_owned()], dest.to_owned());
            let tree = SourceTree {
                root: ctx.clone(),
                ignore: None,
                exclude: None,
            };
            let seals = std::sync::Arc::new(Seals::default());
            let join = |d: &str| {
                if root.is_empty() {
                    d.to_owned()
                } else {
                    format!("{root}/{d}")
                }
            };
            let dirs: Vec<String> = ["", root]
                .into_iter()
                .map(str::to_owned)
                .chain(["a", "m", "zz"].map(join))
                .collect();
            let seen = std::thread::scope(|s| {
                let readers: Vec<_> = dirs
                    .iter()
                    .map(|d| {
                        let (gate, upper) = (seals.gate(), &upper);
                        s.spawn(move || {
                            gate(d.as_bytes()).unwrap();
                            (d.clone(), state(upper, d))
                        })
                    })
                    .collect();
                let besides = Besides {
                    seals: Some(&seals),
                    ..Besides::default()
                };
                assert!(copy_into_layer(&copy, &tree, &lower, &upper, besides).unwrap());
                readers
                    .into_iter()
                    .map(|r| r.join().unwrap())
                    .collect::<Vec<_>>()
            });
            assert!(seals.whole());
            for (d, at_seal) in seen {
                assert_eq!(at_seal, state(&upper, &d), "{dest}: {d:?}");
            }
        }
    }
}
