//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`): recognised
//! only at the very top of the file, each at most once.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::ErrorKind;

/// One directive found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trailing blanks trimmed.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A directive value found by [`detect_syntax`] or [`find_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveValue {
    /// The value up to its first space (for `syntax`, the frontend image).
    pub reference: String,
    /// The full value.
    pub cmdline: String,
    /// 1-based line number, 0 when the value came from a JSON document.
    pub line: usize,
}

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

// Go's `\s` is ASCII-only, and leftmost-first matching gives the same
// captures in both engines.
static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$")
        .unwrap_or_else(|_| unreachable!("the directive regex is valid"))
});

/// Scans lines for directives until the first line that is not one.
#[derive(Debug, Clone)]
pub(crate) struct DirectiveScanner {
    prefix: &'static str,
    line: usize,
    done: bool,
    seen: Vec<String>,
}

impl DirectiveScanner {
    pub(crate) fn new(prefix: &'static str, line: usize) -> Self {
        Self {
            prefix,
            line,
            done: false,
            seen: Vec::new(),
        }
    }

    /// Looks at the next line; `Ok(None)` when it is not a directive.
    pub(crate) fn scan_line(&mut self, line: &str) -> Result<Option<Directive>, ErrorKind> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix(self.prefix) else {
            self.done = true;
            return Ok(None);
        };
        let rest = rest.trim_start();
        let Some(captures) = DIRECTIVE.captures(rest) else {
            self.done = true;
            return Ok(None);
        };
        let name = captures
            .get(1)
            .map_or("", |m| m.as_str())
            .to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&name) {
            return Err(ErrorKind::DuplicateDirective(name));
        }
        self.seen.push(name.clone());
        let value = captures.get(2).map_or("", |m| m.as_str()).to_owned();
        Ok(Some(Directive {
            name,
            value,
            line: self.line,
        }))
    }

    pub(crate) fn done(&self) -> bool {
        self.done
    }
}

/// Finds the `syntax` directive: `# syntax=`, then `// syntax=`, then a
/// whole-file JSON object with a `"syntax"` string. A leading shebang line is
/// skipped.
pub fn detect_syntax(text: &str) -> Option<DirectiveValue> {
    find(text, "syntax", true)
}

/// Finds the directive `name` (e.g. `check`) in its `#` form only.
pub fn find_directive(text: &str, name: &str) -> Option<DirectiveValue> {
    find(text, name, false)
}

fn find(text: &str, name: &str, any_format: bool) -> Option<DirectiveValue> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (text, first_line) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => (rest, 1),
        None if text.starts_with("#!") => ("", 1),
        _ => (text, 0),
    };
    if let Some(found) = scan_all(text, name, "#", first_line) {
        return Some(found);
    }
    if !any_format {
        return None;
    }
    if let Some(found) = scan_all(text, name, "//", first_line) {
        return Some(found);
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let value = object.get(name)?.as_str()?;
    Some(DirectiveValue {
        reference: value.to_owned(),
        cmdline: value.to_owned(),
        line: first_line,
    })
}

fn scan_all(text: &str, name: &str, prefix: &'static str, line: usize) -> Option<DirectiveValue> {
    let mut scanner = DirectiveScanner::new(prefix, line);
    for raw in text.lines() {
        if scanner.done() {
            break;
        }
        match scanner.scan_line(raw) {
            Ok(Some(directive)) if directive.name == name => {
                let reference = directive
                    .value
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return Some(DirectiveValue {
                    reference,
                    cmdline: directive.value,
                    line: directive.line,
                });
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}
