//! Where COPY reads from: the build context (filtered by .dockerignore) or the root filesystem of
//! another stage or image, and the selection of files a source pattern names.

use std::fs;
use std::path::{Path, PathBuf};

use hoist_dockerfile::ignore::Matcher;

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
}

impl SourceTree<'_> {
    pub(crate) fn ignored(&self, rel: &str) -> bool {
        // An unusable pattern was refused when the matcher was built; a path it cannot match
        // counts as included.
        let hit = |m: &Matcher| !rel.is_empty() && m.matches(rel).unwrap_or(false);
        self.ignore.is_some_and(hit) || self.exclude.as_ref().is_some_and(hit)
    }

    fn excluded_below(&self, rel_in_dir: &str) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|m| !rel_in_dir.is_empty() && m.matches(rel_in_dir).unwrap_or(false))
    }

    /// Expands a COPY source (wildcards in any component) into existing paths, sorted.
    pub(crate) fn select(&self, pattern: &str) -> Result<Vec<Selected>, BuildError> {
        let parts = clean(pattern);
        let mut found = vec![(Vec::<String>::new(), self.root.clone())];
        for part in &parts {
            let wild = part.contains(['*', '?', '[']);
            let mut next = Vec::new();
            for (rel, _) in &found {
                let rel_str = rel.join("/");
                let dir = resolve(&self.root, &rel_str, true);
                if wild {
                    let Ok(entries) = fs::read_dir(&dir) else {
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
            if self.ignored(&rel) {
                continue;
            }
            // The source itself is followed if it is a symlink (docker's COPY does).
            let real = resolve(&self.root, &rel, true);
            if fs::symlink_metadata(&real).is_ok() {
                out.push(Selected { real, rel });
            }
        }
        if out.is_empty() {
            let shown = format!("/{}", parts.join("/"));
            return Err(BuildError::SourceNotFound(shown));
        }
        Ok(out)
    }
}

/// Walks `dir` (a selected directory), yielding paths relative to it, parents before children,
/// in name order, skipping what .dockerignore excludes (`base_rel` is `dir`'s path in the tree).
pub(crate) fn walk(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    out: &mut Vec<(PathBuf, String, fs::Metadata)>,
) -> Result<(), BuildError> {
    walk_prefixed(tree, dir, base_rel, "", out)
}

/// [`walk`], with every reported path under `prefix` (saves re-joining them afterwards).
pub(crate) fn walk_prefixed(
    tree: &SourceTree<'_>,
    dir: &Path,
    base_rel: &str,
    prefix: &str,
    out: &mut Vec<(PathBuf, String, fs::Metadata)>,
) -> Result<(), BuildError> {
    let start = out.len();
    walk_inner(tree, dir, base_rel, prefix, out)?;
    // `--exclude` also matches relative to the directory being copied.
    if tree.exclude.is_some() {
        let below = |rel: &str| {
            let rel = if prefix.is_empty() {
                rel
            } else {
                rel.strip_prefix(prefix)
                    .map_or(rel, |r| r.trim_start_matches('/'))
            };
            tree.excluded_below(rel)
        };
        let kept: Vec<_> = out
            .drain(start..)
            .filter(|(_, rel, _)| !below(rel))
            .collect();
        out.extend(kept);
    }
    Ok(())
}

/// `tree_rel` is `dir`'s path in the tree (for .dockerignore), `out_rel` its path relative to
/// the walked directory (what is reported); entries go straight into `out`.
fn walk_inner(
    tree: &SourceTree<'_>,
    dir: &Path,
    tree_rel: &str,
    out_rel: &str,
    out: &mut Vec<(PathBuf, String, fs::Metadata)>,
) -> Result<(), BuildError> {
    let mut entries: Vec<(String, fs::DirEntry)> = fs::read_dir(dir)
        .map_err(|e| BuildError::io("reading", dir, e))?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let join = |base: &str, name: &str| {
        if base.is_empty() {
            name.to_owned()
        } else {
            format!("{base}/{name}")
        }
    };
    for (name, entry) in entries {
        let rel_in_tree = join(tree_rel, &name);
        // One lstat per path (relative to the open directory), handed on to the hashing and
        // the copy.
        let Ok(meta) = entry.metadata() else { continue };
        let is_dir = meta.is_dir();
        let ignored = tree.ignored(&rel_in_tree);
        // An excluded directory may still hold re-included paths (`!` patterns); it is sent
        // only when something inside it is.
        if ignored && !(is_dir && tree.ignore.is_some_and(Matcher::has_exclusions)) {
            continue;
        }
        let rel = join(out_rel, &name);
        let path = entry.path();
        let at = out.len();
        out.push((path.clone(), rel.clone(), meta));
        if is_dir {
            walk_inner(tree, &path, &rel_in_tree, &rel, out)?;
        }
        if ignored && out.len() == at + 1 {
            out.truncate(at);
        }
    }
    Ok(())
}
