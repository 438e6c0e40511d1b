//! The one error type of the frontend: what went wrong, where (a line range)
//! and, when one helps, a hint.

use std::fmt;

use crate::shell::ShellError;

/// An inclusive range of 1-based line numbers in the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First line.
    pub start: usize,
    /// Last line (equal to `start` for a one-line node).
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`; `end` is raised to `start` if lower.
    pub fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    /// A one-line span.
    pub fn line(line: usize) -> Self {
        Self::new(line, line)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// What failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    #[error("{0}")]
    Heredoc(String),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    #[error("{0} must have two arguments")]
    MissingValue(String),
    #[error("Syntax error - can't find = in {word}. Must be of the form: name=value")]
    MissingEquals { word: String },
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    #[error("unknown flag: {0}")]
    UnknownFlag(String),
    #[error("duplicate flag specified: {0}")]
    DuplicateFlag(String),
    #[error("missing a value on flag: {0}")]
    MissingFlagValue(String),
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    BadBool { flag: String, value: String },
    #[error("{0}")]
    Arguments(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Mount(String),
    #[error("invalid chmod value {value:?}: {reason}")]
    Chmod { value: String, reason: String },
    #[error("base name ({0}) should not be blank")]
    BlankBase(String),
    #[error("no build stage in current context")]
    NoStage,
    #[error("duplicate stage name {0:?}")]
    DuplicateStage(String),
    #[error("target stage {0:?} could not be found")]
    UnknownTarget(String),
    #[error("invalid stage reference {0:?}")]
    UnknownStage(String),
    #[error("circular dependency detected on stage: {0}")]
    Cycle(String),
    #[error("invalid platform {0:?}")]
    Platform(String),
    #[error(transparent)]
    Expand(#[from] ShellError),
}

/// A frontend error: a kind, the lines it is about, and an optional hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    span: Option<Span>,
    hint: Option<String>,
}

impl Error {
    /// An error without a location.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            span: None,
            hint: None,
        }
    }

    /// An error about `span`.
    pub fn at(kind: ErrorKind, span: Span) -> Self {
        Self::new(kind).with_span(span)
    }

    /// Sets the location unless one is already set (the innermost wins).
    pub fn with_span(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    /// Adds a hint for the reader.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The lines the error is about.
    pub fn span(&self) -> Option<Span> {
        self.span
    }

    /// A suggestion such as `did you mean RUN?`.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(span) => write!(
                f,
                "dockerfile parse error on line {}: {}",
                span.start, self.kind
            ),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl From<ShellError> for Error {
    fn from(error: ShellError) -> Self {
        Self::new(ErrorKind::Expand(error))
    }
}

/// The closest of `candidates` to `word`, if it is close enough to suggest.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = levenshtein(&lower, &candidate.to_lowercase());
        if best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    let (distance, candidate) = best?;
    // Same threshold idea as BuildKit's suggest: about a third of the word.
    let limit = (word.chars().count().max(candidate.chars().count()) / 3).max(1);
    (distance <= limit && distance > 0 || (distance == 0 && word != candidate)).then_some(candidate)
}

/// Edit distance counting an adjacent transposition as one edit.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in table.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in table[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[i - 1][j] + 1)
                .min(table[i][j - 1] + 1)
                .min(table[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggests_close_words() {
        let words = ["RUN", "COPY", "ENTRYPOINT", "WORKDIR"];
        assert_eq!(suggest("RUNN", &words), Some("RUN"));
        assert_eq!(suggest("entrypont", &words), Some("ENTRYPOINT"));
        assert_eq!(suggest("copy", &words), Some("COPY"));
        assert_eq!(suggest("XYZZY", &words), None);
    }
}
