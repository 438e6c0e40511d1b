//! `.dockerignore` matching with moby/patternmatcher's semantics: Go
//! `filepath.Match` globs plus `**`, `!` exceptions, last match wins, and a
//! pattern matching a path when it matches the path or any ancestor.
//!
//! Our own port onto `regex` instead of `globset`/`ignore`: those implement
//! gitignore rules (anchoring, directory-only patterns, `**` edge cases) that
//! differ from Docker's, and the context must be filtered exactly as Docker
//! filters it.

use regex::Regex;

/// Why a pattern list could not be built or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    #[error("syntax error in pattern {0:?}")]
    BadPattern(String),
}

/// One cleaned pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    dirs: usize,
    exclusion: bool,
    compiled: Option<Compiled>,
    /// Bytes of `cleaned` made of whole leading components without wildcards or escapes:
    /// whatever the pattern matches lies at or below them.
    literal_len: usize,
    /// The whole pattern is such a literal path (it matches that path alone).
    literal: bool,
}

#[derive(Debug, Clone)]
enum Compiled {
    Exact,
    Prefix,
    Suffix,
    Regex(Regex),
}

impl Pattern {
    /// The pattern after cleaning, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` (re-include) pattern.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let Some(compiled) = &self.compiled else {
            return Err(IgnoreError::BadPattern(self.cleaned.clone()));
        };
        Ok(match compiled {
            Compiled::Exact => path == self.cleaned,
            Compiled::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Compiled::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Compiled::Regex(regex) => regex.is_match(path),
        })
    }
}

/// Per-pattern results for a directory, passed down when walking a tree so
/// children need not re-check ancestors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentMatches(Vec<bool>);

/// An ordered list of ignore patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Builds a matcher; blank patterns are dropped, `!` alone is an error,
    /// and so is any pattern Go's `filepath.Match` would reject.
    pub fn new<I, S>(patterns: I) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut matcher = Self::default();
        for pattern in patterns {
            let pattern = pattern.as_ref().trim();
            if pattern.is_empty() {
                continue;
            }
            let mut cleaned = clean(pattern);
            let exclusion = cleaned.starts_with('!');
            if exclusion {
                if cleaned.len() == 1 {
                    return Err(IgnoreError::LoneExclamation);
                }
                cleaned.remove(0);
                matcher.exclusions = true;
            }
            validate(&cleaned).map_err(|()| IgnoreError::BadPattern(cleaned.clone()))?;
            let compiled = compile(&cleaned);
            let (literal_len, literal) = literal_prefix(&cleaned, compiled.as_ref());
            matcher.patterns.push(Pattern {
                dirs: cleaned.split('/').count(),
                cleaned,
                exclusion,
                compiled,
                literal_len,
                literal,
            });
        }
        Ok(matcher)
    }

    /// The patterns kept.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any `!` pattern is present.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether some pattern could match a path strictly below the directory `dir`
    /// (slash-separated, relative, `""` for the root). When not, every path below `dir`
    /// matches exactly as `dir` itself does, so a tree walk can stop asking.
    pub fn may_match_below(&self, dir: &str) -> bool {
        // `within(a, b)`: `a` is `b` or lies below it.
        let within = |a: &str, b: &str| {
            b.is_empty()
                || a.strip_prefix(b)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        self.patterns.iter().any(|p| {
            let prefix = &p.cleaned[..p.literal_len];
            // A pattern that cannot be used makes every match fail: keep asking.
            p.compiled.is_none()
                || (prefix != dir && within(prefix, dir))
                || (!p.literal && within(dir, prefix))
        })
    }

    /// Whether a `!` pattern could take back a path strictly below the directory `dir`: then
    /// the context holds `dir` even where it is ignored, as docker's context transfer sends
    /// such a directory (its own entries each decided by the patterns).
    pub fn may_take_back_below(&self, dir: &str) -> bool {
        let within = |a: &str, b: &str| {
            b.is_empty()
                || a.strip_prefix(b)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            let prefix = &p.cleaned[..p.literal_len];
            p.compiled.is_none()
                || (prefix != dir && within(prefix, dir))
                || (!p.literal && within(dir, prefix))
        })
    }

    /// Whether `path` (slash-separated, relative to the context) is ignored:
    /// the last pattern matching it or one of its ancestors decides.
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = dir(path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut found = pattern.matches(path)?;
            if !found && parent != "." {
                found = (1..=parent_dirs.len()).any(|depth| {
                    pattern
                        .matches(&parent_dirs[..depth].join("/"))
                        .unwrap_or(false)
                });
            }
            if found {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`Matcher::matches`] for a tree walk: `parent` holds the results
    /// of the directory containing `path` (empty for top-level entries, in
    /// which case ancestors are checked directly). Returns the result for
    /// `path` and what to pass to its children.
    pub fn matches_with_parent(
        &self,
        path: &str,
        parent: &ParentMatches,
    ) -> Result<(bool, ParentMatches), IgnoreError> {
        let known = !parent.0.is_empty();
        if known && parent.0.len() != self.patterns.len() {
            return Err(IgnoreError::BadPattern(
                "wrong number of values in parent matches".to_owned(),
            ));
        }
        let mut matched = false;
        let mut results = vec![false; self.patterns.len()];
        for (index, pattern) in self.patterns.iter().enumerate() {
            let mut found = known && parent.0[index];
            if !found {
                if pattern.exclusion != matched {
                    continue;
                }
                found = pattern.matches(path)?;
                let parent_path = dir(path);
                if !found && !known && parent_path != "." {
                    let dirs: Vec<&str> = parent_path.split('/').collect();
                    found = (1..=dirs.len())
                        .any(|depth| pattern.matches(&dirs[..depth].join("/")).unwrap_or(false));
                }
            }
            results[index] = found;
            if found {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, ParentMatches(results)))
    }

    /// patternmatcher's older rule: the path is cleaned, `.` never matches,
    /// and an ancestor is tried only at the pattern's own depth.
    pub fn matches_legacy(&self, path: &str) -> Result<bool, IgnoreError> {
        let path = clean(path);
        if path == "." {
            return Ok(false);
        }
        let parent = dir(&path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut found = pattern.matches(&path)?;
            if !found && parent != "." && pattern.dirs <= parent_dirs.len() {
                found = pattern
                    .matches(&parent_dirs[..pattern.dirs].join("/"))
                    .unwrap_or(false);
            }
            if found {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }
}

/// Reads ignore-file text into patterns: BOM stripped, `#` in column 0 is a
/// comment, lines trimmed and cleaned, one leading `/` dropped. `None` (no
/// file) gives no patterns.
pub fn read_ignore_file(text: Option<&str>) -> Vec<String> {
    let Some(text) = text else {
        return Vec::new();
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        patterns.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    patterns
}

/// Which ignore file a build reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreFile {
    /// `<Dockerfile-name>.dockerignore` next to the Dockerfile (preferred).
    NextToDockerfile(String),
    /// `.dockerignore` at the context root.
    ContextRoot,
}

/// Picks the ignore file: `<Dockerfile-name>.dockerignore` when `exists`
/// says it is there, else `.dockerignore` at the context root, else none.
/// `exists` is asked about names relative to the Dockerfile's directory
/// (for the first) and the context root (for `.dockerignore`).
pub fn choose_ignore_file(
    dockerfile_name: &str,
    exists: impl Fn(&IgnoreFile) -> bool,
) -> Option<IgnoreFile> {
    let base = dockerfile_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(dockerfile_name);
    let specific = IgnoreFile::NextToDockerfile(format!("{base}.dockerignore"));
    if exists(&specific) {
        return Some(specific);
    }
    exists(&IgnoreFile::ContextRoot).then_some(IgnoreFile::ContextRoot)
}

/// Go's `path.Clean`: lexical, collapses `//`, drops `.`, resolves `..`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `path.Dir`.
fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(index) => clean(&path[..=index]),
        None => ".".to_owned(),
    }
}

/// A bracket expression `[...]` starting after `[`; returns the regex class
/// and the index after `]`, or `Err` when Go's `filepath.Match` rejects it.
fn parse_class(chars: &[char], mut index: usize) -> Result<(String, usize), ()> {
    let mut out = String::from("[");
    if chars.get(index) == Some(&'^') {
        out.push('^');
        index += 1;
    }
    let mut ranges = 0;
    loop {
        if chars.get(index) == Some(&']') && ranges > 0 {
            out.push(']');
            return Ok((out, index + 1));
        }
        let (low, next) = class_char(chars, index)?;
        index = next;
        push_class_char(&mut out, low);
        if chars.get(index) == Some(&'-') {
            let (high, next) = class_char(chars, index + 1)?;
            index = next;
            out.push('-');
            push_class_char(&mut out, high);
        }
        ranges += 1;
    }
}

fn class_char(chars: &[char], index: usize) -> Result<(char, usize), ()> {
    match chars.get(index) {
        None | Some('-' | ']') => Err(()),
        Some('\\') => match chars.get(index + 1) {
            Some(&ch) if index + 2 < chars.len() => Ok((ch, index + 2)),
            _ => Err(()),
        },
        Some(&ch) if index + 1 < chars.len() => Ok((ch, index + 1)),
        Some(_) => Err(()),
    }
}

fn push_class_char(out: &mut String, ch: char) {
    if matches!(ch, '\\' | '[' | ']' | '^' | '-' | '&' | '~') {
        out.push('\\');
    }
    out.push(ch);
}

/// The syntax check of Go's `filepath.Match`.
fn validate(pattern: &str) -> Result<(), ()> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut index = 0;
    while index < chars.len() {
        match chars[index] {
            '\\' => {
                if index + 1 >= chars.len() {
                    return Err(());
                }
                index += 2;
            }
            '[' => index = parse_class(&chars, index + 1)?.1,
            _ => index += 1,
        }
    }
    Ok(())
}

/// The length of the leading components of `pattern` that match only themselves, and whether
/// that is all of it. Anything a regex could treat specially counts as a wildcard.
fn literal_prefix(pattern: &str, compiled: Option<&Compiled>) -> (usize, bool) {
    let mut len = 0;
    for (i, component) in pattern.split('/').enumerate() {
        if component.contains(['*', '?', '[', ']', '\\', '^']) {
            return (len, false);
        }
        len = if i == 0 { 0 } else { len + 1 };
        len += component.len();
    }
    (len, matches!(compiled, Some(Compiled::Exact)))
}

/// Classifies and compiles a cleaned pattern; `None` when the regex does not
/// compile (every match attempt then fails, as upstream).
fn compile(pattern: &str) -> Option<Compiled> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut index = 0;
    let mut first = true;
    while index < chars.len() {
        let ch = chars[index];
        index += 1;
        match ch {
            '*' if chars.get(index) == Some(&'*') => {
                index += 1;
                if chars.get(index) == Some(&'/') {
                    index += 1;
                }
                if index == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(ch);
            }
            '\\' => match chars.get(index) {
                Some(&next) => {
                    index += 1;
                    if next.is_ascii_alphanumeric() {
                        regex.push('\\');
                        regex.push(next);
                    } else {
                        regex.push_str(&regex::escape(next.encode_utf8(&mut [0; 4])));
                    }
                    kind = Kind::Regex;
                }
                None => regex.push_str("\\\\"),
            },
            '[' => {
                let (class, next) = parse_class(&chars, index).ok()?;
                index = next;
                regex.push_str(&class);
                kind = Kind::Regex;
            }
            ']' => {
                regex.push_str("\\]");
                kind = Kind::Regex;
            }
            other => regex.push(other),
        }
        first = false;
    }
    Some(match kind {
        Kind::Exact => Compiled::Exact,
        Kind::Prefix => Compiled::Prefix,
        Kind::Suffix => Compiled::Suffix,
        Kind::Regex => {
            regex.push('$');
            Compiled::Regex(Regex::new(&regex).ok()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean("../x/"), "../x");
        assert_eq!(clean(""), ".");
        assert_eq!(dir("file/"), "file");
        assert_eq!(dir("/"), "/");
    }

    #[test]
    fn below_a_directory_no_pattern_reaches_every_path_matches_as_it_does() {
        let sets: &[&[&str]] = &[
            &["Dockerfile", ".dockerignore"],
            &["a/b", "!a/b/c"],
            &["a/*.log", "x"],
            &["a/**", "!a/b/**"],
            &["**/c", "a^b"],
            &["a/b*", "/a/c", "a/[bc]/d"],
            &["*", "!a"],
            &["a\\b/c"],
        ];
        let paths = [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/d",
            "a/c",
            "a/c/d",
            "a/x.log",
            "a/x.log/y",
            "ab",
            "ab/c",
            "x",
            "x/y",
            "Dockerfile",
            "Dockerfile/z",
            "a/bb",
            "a/bb/c",
            "a^b",
            "a^b/c",
            "a/b/d",
        ];
        for set in sets {
            let m = Matcher::new(*set).unwrap();
            assert!(m.may_match_below(""), "{set:?}");
            for dir in paths {
                if m.may_match_below(dir) {
                    continue;
                }
                let want = m.matches(dir).unwrap();
                for path in paths.iter().filter(|p| p.starts_with(&format!("{dir}/"))) {
                    assert_eq!(m.matches(path).unwrap(), want, "{set:?}: {dir} then {path}");
                }
            }
        }
        let m = Matcher::new(["Dockerfile", ".dockerignore"]).unwrap();
        assert!(!m.may_match_below("src"));
        assert!(!m.may_match_below("Dockerfile"));
        let m = Matcher::new(["src/*.log"]).unwrap();
        assert!(m.may_match_below("src") && !m.may_match_below("lib"));
        assert!(
            !Matcher::new(Vec::<String>::new())
                .unwrap()
                .may_match_below("")
        );
        // Only `!` patterns take back: a directory left out stays out unless one may.
        let m = Matcher::new(["d1", "d1/x", "d2", "!d2/keep"]).unwrap();
        assert!(
            !m.may_take_back_below("d1"),
            "d1/x leaves out, never takes back"
        );
        assert!(m.may_take_back_below("d2") && !m.may_take_back_below("d2/keep"));
        assert!(m.may_take_back_below("") && !m.may_take_back_below("d3"));
        let m = Matcher::new(["*", "!*/deep/y"]).unwrap();
        assert!(
            m.may_take_back_below("d3"),
            "a wildcard may take back below any directory"
        );
        assert!(
            !Matcher::new(["d1", "d1/x"])
                .unwrap()
                .may_take_back_below("")
        );
    }

    #[test]
    fn prefers_the_dockerfile_specific_ignore_file() {
        let both = |_: &IgnoreFile| true;
        assert_eq!(
            choose_ignore_file("sub/app.Dockerfile", both),
            Some(IgnoreFile::NextToDockerfile(
                "app.Dockerfile.dockerignore".to_owned()
            ))
        );
        let root_only = |file: &IgnoreFile| *file == IgnoreFile::ContextRoot;
        assert_eq!(
            choose_ignore_file("Dockerfile", root_only),
            Some(IgnoreFile::ContextRoot)
        );
        assert_eq!(choose_ignore_file("Dockerfile", |_| false), None);
    }
}
