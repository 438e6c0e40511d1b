//! Shell-word expansion as BuildKit does it: quotes, escapes, `$var`,
//! `${var…}` with every modifier, and optional word splitting.
//!
//! This is a port of the behaviour pinned down by BuildKit's `envVarTest`,
//! `wordsTest` and lexer tests rather than a POSIX shell: no command
//! substitution, no arithmetic, no bracket expressions in patterns.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex::Regex;

use crate::quote::go_quote;

/// Where variable values come from during expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An environment that has no variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// An environment read from `NAME=value` entries: a name without `=` is set
/// to the empty string, and a repeated name takes its last value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    entries: BTreeMap<String, String>,
}

impl EnvList {
    /// Reads `NAME=value` entries in order.
    pub fn from_entries<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut map = BTreeMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
            map.insert(name.to_owned(), value.to_owned());
        }
        Self { entries: map }
    }
}

impl Env for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }
}

/// A failed expansion; `Display` reads like BuildKit's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {message}", go_quote(input))]
pub struct ShellError {
    /// The text that was being expanded.
    pub input: String,
    /// What went wrong, e.g. `syntax error: missing '}'`.
    pub message: String,
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text, quotes removed, spaces kept.
    pub value: String,
    /// The same text split into words (unquoted whitespace separates words).
    pub words: Vec<String>,
    /// Variable names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Variable names that were looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// A configured expander. The defaults match how BuildKit expands
/// instruction arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    skip_quotes: bool,
}

impl Lexer {
    /// An expander with the given escape character (`\` or `` ` ``).
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// Treat quotes as ordinary characters (heredoc bodies).
    pub fn skip_quotes(mut self, yes: bool) -> Self {
        self.skip_quotes = yes;
        self
    }

    /// Keep quote characters in the output.
    pub fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// Keep escape characters in the output.
    pub fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Leave references to unset variables as they were written.
    pub fn skip_unset(mut self, yes: bool) -> Self {
        self.skip_unset = yes;
        self
    }

    /// Expands `word`, giving both the single-word value and the split words.
    pub fn expand(&self, word: &str, env: &dyn Env) -> Result<Expansion, ShellError> {
        // Go's text scanner skips a byte-order mark at the very start.
        let text = word.strip_prefix('\u{feff}').unwrap_or(word);
        let mut scan = Scan {
            chars: text.chars().collect(),
            pos: 0,
            lexer: self,
            env,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match scan.process_until(None, self.raw_escapes) {
            Ok((value, words)) => Ok(Expansion {
                value,
                words,
                matched: scan.matched,
                unmatched: scan.unmatched,
            }),
            Err(message) => Err(ShellError {
                input: word.to_owned(),
                message,
            }),
        }
    }

    /// Expands `word` as one word (inner spaces survive).
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        self.expand(word, env).map(|expansion| expansion.value)
    }

    /// Expands `word` and splits it into words.
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        self.expand(word, env).map(|expansion| expansion.words)
    }
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, text: &str) {
        self.buf.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct Scan<'a> {
    chars: Vec<char>,
    pos: usize,
    lexer: &'a Lexer,
    env: &'a dyn Env,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = Result<T, String>;

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes text until `stop` (consumed) or the end of input.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        let escape = self.lexer.escape;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '<' => {
                    let value = self.possible_heredoc();
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '\'' if !self.lexer.skip_quotes => {
                    let value = self.single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' if !self.lexer.skip_quotes => {
                    let value = self.double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // A lone escape at the end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    );
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn double_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        let escape = self.lexer.escape;
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // The loop reports the missing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == escape => {
                                ch = next;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.pos += 1;
        let mut result = "<<".to_owned();
        while let Some(ch @ ('\t' | '\r' | ' ')) = self.peek() {
            result.push(ch);
            self.pos += 1;
        }
        result
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(value) => {
                self.matched.insert(name.to_owned());
                Some(value.to_owned())
            }
            None => {
                self.unmatched.insert(name.to_owned());
                None
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                // Positional parameters take every digit that follows.
                while let Some(digit) = self.peek().filter(char::is_ascii_digit) {
                    name.push(digit);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Step<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.name();
        let first = self.next();
        if first.is_none() {
            return Err("syntax error: missing '}'".to_owned());
        }
        let mut modifier = first
            .map(String::from)
            .unwrap_or_else(|| "\u{fffd}".to_owned());
        match first {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut op = first;
                let null_is_unset = op == Some(':');
                if null_is_unset {
                    op = self.next();
                    match op {
                        Some(ch) => modifier.push(ch),
                        None => modifier.push('\u{fffd}'),
                    }
                }
                let pattern_op = matches!(op, Some('#' | '%'));
                if null_is_unset && pattern_op {
                    return Err(format!("unsupported modifier ({modifier}) in substitution"));
                }
                let word = match self.process_until(Some('}'), pattern_op) {
                    Ok((word, _)) => word,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '}'".to_owned());
                    }
                    Err(message) => return Err(message),
                };
                let value = self.lookup(&name);
                let Some(value) = value else {
                    if self.lexer.skip_unset {
                        return Ok(format!("${{{name}{modifier}{word}}}"));
                    }
                    return self.apply_unset(op, &name, &modifier, word);
                };
                let empty = null_is_unset && value.is_empty();
                match op {
                    Some('-') => Ok(if empty { word } else { value }),
                    Some('+') => Ok(if empty { String::new() } else { word }),
                    Some('?') if empty => {
                        let message = if word.is_empty() {
                            "is not allowed to be empty".to_owned()
                        } else {
                            word
                        };
                        Err(format!("{name}: {message}"))
                    }
                    Some('?') => Ok(value),
                    Some(ch @ ('#' | '%')) => {
                        let (pattern, greedy) = match word.strip_prefix(ch) {
                            Some(rest) => (rest.to_owned(), true),
                            None => (word, false),
                        };
                        if ch == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_until(Some('/'), true) {
                    Ok((pattern, _)) => pattern,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '/' in ${}".to_owned());
                    }
                    Err(message) => return Err(message),
                };
                let replacement = match self.process_until(Some('}'), true) {
                    Ok((replacement, _)) => replacement,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '}'".to_owned());
                    }
                    Err(message) => return Err(message),
                };
                let value = match self.lookup(&name) {
                    Some(value) => value,
                    None if self.lexer.skip_unset => {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    None => String::new(),
                };
                let regex = pattern_regex(&pattern, true, false).map_err(|message| {
                    format!("invalid pattern ({pattern}) in substitution: {message}")
                })?;
                if replace_all {
                    // Like Go's ReplaceAllString, `$name` in the replacement
                    // refers to capture groups.
                    Ok(regex.replace_all(&value, replacement.as_str()).into_owned())
                } else if let Some(found) = regex.find(&value) {
                    Ok(format!(
                        "{}{}{}",
                        &value[..found.start()],
                        replacement,
                        &value[found.end()..]
                    ))
                } else {
                    Ok(value)
                }
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    fn apply_unset(
        &self,
        op: Option<char>,
        name: &str,
        modifier: &str,
        word: String,
    ) -> Step<String> {
        match op {
            Some('-') => Ok(word),
            Some('+') => Ok(String::new()),
            Some('?') => {
                let message = if word.is_empty() {
                    "is not allowed to be unset".to_owned()
                } else {
                    word
                };
                Err(format!("{name}: {message}"))
            }
            Some(ch @ ('#' | '%')) => {
                let (pattern, greedy) = match word.strip_prefix(ch) {
                    Some(rest) => (rest.to_owned(), true),
                    None => (word, false),
                };
                if ch == '%' {
                    trim_suffix(&pattern, "", greedy)
                } else {
                    trim_prefix(&pattern, "", greedy)
                }
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }
}

/// Turns a `${var#pattern}` glob (`*`, `?`, `\` escapes) into a regex.
fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // An escaped `}` or `/` belongs to the `${}` syntax.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(escaped);
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\'".to_owned()),
                }
            }
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    Regex::new(&out).map_err(|error| error.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let regex = pattern_regex(pattern, greedy, true)
        .map_err(|message| format!("invalid pattern ({pattern}) in substitution: {message}"))?;
    Ok(match regex.find(value) {
        Some(found) => value[found.end()..].to_owned(),
        None => value.to_owned(),
    })
}

/// Regexes find the leftmost match only, so the shortest or longest suffix is
/// found as a prefix of the reversed value with the reversed pattern.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern while keeping each escape in front of what it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<String> = Vec::with_capacity(chars.len());
    let mut index = 0;
    while index < chars.len() {
        if chars[index] == '\\' && index + 1 < chars.len() {
            units.push(chars[index..index + 2].iter().collect());
            index += 2;
        } else {
            units.push(chars[index].to_string());
            index += 1;
        }
    }
    units.into_iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn modifiers() {
        let lexer = Lexer::default();
        let env = env(&[("v", "abcabc"), ("e", "")]);
        let cases = [
            ("${v#*b}", "cabc"),
            ("${v##*b}", "c"),
            ("${v%b*}", "abca"),
            ("${v%%b*}", "a"),
            ("${v/b/X}", "aXcabc"),
            ("${v//b/X}", "aXcaXc"),
            ("${e:-d}", "d"),
            ("${e-d}", ""),
            ("${u+x}", ""),
            ("${e+x}", "x"),
        ];
        for (input, expect) in cases {
            assert_eq!(lexer.expand_word(input, &env).unwrap(), expect, "{input}");
        }
    }

    #[test]
    fn errors_name_the_input() {
        let error = Lexer::default().expand_word("${x", &EmptyEnv).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"failed to process "${x": syntax error: missing '}'"#
        );
    }
}
