//! From Dockerfile text to a syntax tree of raw instructions: directives,
//! comments, continuations, flags, JSON exec form and heredocs.
//!
//! Written by hand rather than with a parser crate because BuildKit's rules
//! are line-oriented and full of quirks (blank-split vs. quote-aware words
//! per instruction, JSON that silently falls back to shell form, heredocs
//! read after the logical line), and the AST must dump byte-for-byte like
//! BuildKit's for the conformance corpus.

use std::fmt::Write;

use crate::directives::{Directive, DirectiveScanner};
use crate::error::{Error, ErrorKind, Span};
use crate::quote::go_quote;
use crate::shell::{EmptyEnv, Lexer};

/// Longest physical line BuildKit's scanner accepts, in bytes.
const MAX_LINE: usize = 65535;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The directives found at the top.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// The instructions in file order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings, such as empty continuation lines.
    pub warnings: Vec<Warning>,
    /// From the first instruction's first line to the last one's last line.
    pub span: Span,
}

impl Dockerfile {
    /// The value of directive `name`, if present.
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }

    /// The AST in BuildKit's dump format, one line per instruction.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push('(');
            out.push_str(&node.dump());
            out.push_str(")\n");
        }
        out
    }
}

/// One instruction as written, before typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction word as written (not case-folded).
    pub keyword: String,
    /// Leading `--flag[=value]` words, quotes removed.
    pub flags: Vec<String>,
    /// The argument nodes (see the dump format).
    pub args: Vec<String>,
    /// For `ONBUILD`, the trigger instruction.
    pub nested: Option<Box<Node>>,
    /// Whether the arguments came from a JSON array.
    pub json: bool,
    /// Heredoc bodies attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line, continuations joined.
    pub original: String,
    /// Physical lines covered, heredoc bodies included.
    pub span: Span,
}

impl Node {
    /// The keyword lower-cased, for matching.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// BuildKit's dump of this instruction, without the parentheses.
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|flag| go_quote(flag)).collect();
            let _ = write!(out, " [{}]", flags.join(" "));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        if let Some(nested) = &self.nested {
            let _ = write!(out, " ({})", nested.dump());
        }
        out.trim().to_owned()
    }
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, quotes removed.
    pub name: String,
    /// `3<<EOF` gives 3; 0 when not given.
    pub file_descriptor: u32,
    /// False when any part of the terminator was quoted.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body.
    pub chomp: bool,
    /// The body exactly as written, each line with its newline.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed from each line when `chomp` is set.
    pub fn chomped_content(&self) -> String {
        if self.chomp {
            chomp(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// A non-fatal finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One-line description.
    pub short: String,
    /// Longer explanation.
    pub detail: String,
    /// Documentation link.
    pub url: String,
    /// Where it was found.
    pub span: Span,
}

/// Removes leading tabs from every line.
pub fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// Parses Dockerfile text.
pub fn parse(text: &str) -> Result<Dockerfile, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let mut scanner = DirectiveScanner::new("#", 0);
    let mut directives = Vec::new();
    let mut escape = '\\';
    let mut nodes: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut current = 0usize;

    while let Some(raw) = lines.next() {
        check_length(raw, current + 1)?;
        let line = trim_newline(raw).trim_start();
        if !scanner.done() {
            let found = scanner
                .scan_line(line)
                .map_err(|kind| Error::at(kind, Span::line(current + 1)))?;
            if let Some(directive) = found {
                if directive.name == "escape" {
                    escape = match directive.value.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        other => {
                            return Err(Error::at(
                                ErrorKind::InvalidEscape(other.to_owned()),
                                Span::line(current + 1),
                            ));
                        }
                    };
                }
                directives.push(directive);
            }
        }
        let line = if is_comment(line) { "" } else { line };
        current += 1;
        let start = current;

        let (first, mut ended) = trim_continuation(line, escape);
        if ended && first.is_empty() {
            continue;
        }
        let mut logical = first.to_owned();
        let mut empty_continuation = false;
        while !ended {
            let Some(raw) = lines.next() else { break };
            check_length(raw, current + 1)?;
            current += 1;
            if is_comment(raw) {
                continue;
            }
            let line = trim_newline(raw);
            if line.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, end) = trim_continuation(line, escape);
            logical.push_str(part);
            ended = end;
        }

        if empty_continuation {
            warnings.push(Warning {
                short: format!("Empty continuation line found in: {logical}"),
                detail: "Empty continuation lines will become errors in a future release"
                    .to_owned(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".to_owned(),
                span: Span::line(current),
            });
        }

        let mut node = node_from_line(&logical, escape)
            .map_err(|error| error.with_span(Span::new(start, current)))?;

        if can_contain_heredoc(&node) && logical.contains("<<") {
            let heredocs = heredocs_from_line(&logical)
                .map_err(|error| error.with_span(Span::new(start, current)))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                let mut content = String::new();
                for raw in lines.by_ref() {
                    check_length(raw, current + 1)?;
                    current += 1;
                    let mut candidate = trim_newline(raw);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    return Err(Error::at(
                        ErrorKind::UnterminatedHeredoc,
                        Span::new(start, current),
                    )
                    .with_hint(format!(
                        "end the heredoc with a line that is exactly `{}`",
                        heredoc.name
                    )));
                }
                heredoc.content = content;
                node.heredocs.push(heredoc);
            }
        }
        node.span = Span::new(start, current);
        nodes.push(node);
    }

    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        let error = Error::new(ErrorKind::NoInstructions);
        return Err(if current > 0 {
            error.with_span(Span::line(current))
        } else {
            error
        });
    };
    let span = Span::new(first.span.start, last.span.end);
    Ok(Dockerfile {
        directives,
        escape,
        nodes,
        warnings,
        span,
    })
}

fn check_length(raw: &str, line: usize) -> Result<(), Error> {
    if trim_newline(raw).len() > MAX_LINE {
        return Err(Error::at(ErrorKind::LineTooLong, Span::line(line)));
    }
    Ok(())
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing escape (plus blanks) and says whether the instruction
/// ends on this line. An escaped escape (`\\`) does not continue.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, false);
    }
    (line, true)
}

/// Characters BuildKit's blank-split uses (no newline, ASCII only).
fn is_blank(ch: char) -> bool {
    matches!(ch, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn blank_split(text: &str) -> Vec<String> {
    text.split(is_blank)
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Builds the node for one logical line.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, Error> {
    let trimmed = line.trim();
    let (keyword, rest) = match trimmed.find(is_blank) {
        Some(index) => (
            &trimmed[..index],
            trimmed[index..].trim_start_matches(is_blank),
        ),
        None => (trimmed, ""),
    };
    let (rest, flags) = if rest.is_empty() && keyword.len() == trimmed.len() {
        (String::new(), Vec::new())
    } else {
        let (rest, flags) = extract_flags(rest, escape);
        (rest.trim().to_owned(), flags)
    };

    let mut node = Node {
        keyword: keyword.to_owned(),
        flags,
        args: Vec::new(),
        nested: None,
        json: false,
        heredocs: Vec::new(),
        original: line.to_owned(),
        span: Span::line(0),
    };
    match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => match parse_json(&rest)? {
            Some(args) => {
                node.args = args;
                node.json = true;
            }
            None => node.args = blank_split(&rest),
        },
        "from" | "expose" => node.args = blank_split(&rest),
        "run" | "cmd" | "entrypoint" | "shell" => {
            (node.args, node.json) = parse_maybe_json(&rest)?;
        }
        "healthcheck" => {
            let kind_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if kind_end > 0 {
                let command = rest[kind_end..].trim_start();
                let (args, json) = parse_maybe_json(command)?;
                node.args.push(rest[..kind_end].to_owned());
                node.args.extend(args);
                node.json = json;
            }
        }
        "env" => node.args = parse_name_value(&rest, "ENV", escape)?,
        "label" => node.args = parse_name_value(&rest, "LABEL", escape)?,
        "arg" => node.args = parse_words(&rest, escape),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                node.args.push(rest);
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                node.nested = Some(Box::new(node_from_line(&rest, escape)?));
            }
        }
        _ => node.args.push(String::new()),
    }
    Ok(node)
}

/// Splits the leading `--flag` words off `line`; returns the rest and the
/// flags. Quotes in flags are removed, the escape character escapes.
fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut index = 0;
    while index < chars.len() {
        let (offset, ch) = chars[index];
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                index += 1;
                continue;
            }
            let starts_flag = ch == '-' && chars.get(index + 1).is_some_and(|&(_, c)| c == '-');
            if !starts_flag {
                return (&line[offset..], words);
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (&line[offset..], words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                } else if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                } else if ch == escape {
                    if let Some(&(_, next)) = chars.get(index + 1) {
                        word.push(next);
                        index += 1;
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                } else if ch == escape {
                    match chars.get(index + 1) {
                        Some(&(_, next)) => {
                            word.push(next);
                            index += 1;
                        }
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Spaces => {}
        }
        index += 1;
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    ("", words)
}

/// A JSON array of strings, `None` when `text` is not a JSON array at all.
fn parse_json(text: &str) -> Result<Option<Vec<String>>, Error> {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(text) => Ok(text),
            _ => Err(Error::new(ErrorKind::JsonNotStrings)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Parses a JSON array of strings as the exec form does; `Ok(None)` when the
/// text is not a valid JSON array.
pub fn parse_json_array(text: &str) -> Result<Option<Vec<String>>, Error> {
    parse_json(text)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), Error> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        Some(args) => (args, true),
        None => (vec![rest.to_owned()], false),
    })
}

/// Splits on whitespace outside quotes; quotes and escapes are kept.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut index = 0;
    while index < chars.len() {
        let mut ch = chars[index];
        let last = index + 1 == chars.len();
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                index += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                index += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if last {
                    index += 1;
                    continue;
                }
                word.push(ch);
                index += 1;
                ch = chars[index];
            }
            word.push(ch);
            index += 1;
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if last {
                phase = Phase::Word;
                index += 1;
                continue;
            }
            word.push(ch);
            index += 1;
            ch = chars[index];
        }
        word.push(ch);
        index += 1;
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV/LABEL arguments: `key value` (old form) or `k=v …`, as triples of
/// key, value and `=` (or `""` for the old form).
fn parse_name_value(rest: &str, instruction: &str, escape: char) -> Result<Vec<String>, Error> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(index) = rest.find(is_blank) else {
            return Err(Error::new(ErrorKind::MissingValue(instruction.to_owned())));
        };
        let key = &rest[..index];
        let value = rest[index..].trim_start_matches(is_blank);
        return Ok(vec![key.to_owned(), value.to_owned(), String::new()]);
    }
    let mut nodes = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(Error::new(ErrorKind::MissingEquals {
                word: go_quote(&word),
            }));
        };
        nodes.extend([key.to_owned(), value.to_owned(), "=".to_owned()]);
    }
    Ok(nodes)
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.nested {
        Some(nested) if node.name() == "onbuild" => nested,
        _ => node,
    };
    matches!(node.name().as_str(), "add" | "copy" | "run") && !node.json
}

/// The heredocs named on an instruction line, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, Error> {
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset(true);
    let words = lexer.expand_words(line, &EmptyEnv).unwrap_or_default();
    let mut heredocs = Vec::new();
    for word in words {
        if let Some(heredoc) = parse_heredoc(&word)? {
            heredocs.push(heredoc);
        }
    }
    Ok(heredocs)
}

/// Reads one word such as `<<EOF`, `<<-'EOF'` or `3<<EOF` as a heredoc
/// start; `Ok(None)` when the word is not one.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, Error> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let file_descriptor = word[..digits].parse::<u32>().unwrap_or(0);

    let lexer = Lexer::new('\\').skip_unset(true);
    let heredoc_error =
        |error: crate::shell::ShellError| Error::new(ErrorKind::Heredoc(error.to_string()));
    let words = lexer.expand_words(rest, &EmptyEnv).map_err(heredoc_error)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lexer
        .raw_quotes(true)
        .expand_words(rest, &EmptyEnv)
        .map_err(heredoc_error)?;
    let [raw_name] = raw.as_slice() else {
        return Err(Error::new(ErrorKind::Heredoc(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ))));
    };
    let quotes = |text: &str| text.chars().filter(|c| matches!(c, '\'' | '"')).count();
    Ok(Some(Heredoc {
        name: name.clone(),
        file_descriptor,
        expand: quotes(name) == quotes(raw_name),
        chomp,
        content: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_double_dash() {
        let node = node_from_line("COPY --doit=true -- foo /tmp/", '\\').unwrap();
        assert_eq!(node.flags, ["--doit=true"]);
        assert_eq!(node.args, ["foo", "/tmp/"]);
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
    }

    #[test]
    fn heredoc_bodies_attach() {
        let file = parse("FROM x\nRUN <<A <<-B\none\nA\n\ttwo\n\tB\n").unwrap();
        let run = &file.nodes[1];
        assert_eq!(run.span, Span::new(2, 6));
        assert_eq!(run.heredocs[0].content, "one\n");
        assert_eq!(run.heredocs[1].chomped_content(), "two\n");
    }
}
