//! Rendering of Dockerfile errors, the way BuildKit prints them: the file
//! and line, a snippet with the failing lines marked `>>>`, the message and
//! a hint.

use std::fmt::Write;

/// Renders `err` about `source` (the Dockerfile text) named `file_name`.
pub(crate) fn render_dockerfile_error(
    err: &hoist_dockerfile::Error,
    file_name: &str,
    source: &str,
) -> String {
    let mut out = String::new();
    if let Some(span) = err.span() {
        out.push_str(&snippet(file_name, source, span.start, span.end));
    }
    let _ = writeln!(out, "ERROR: failed to parse {file_name}: {}", err.kind());
    if let Some(hint) = err.hint() {
        let _ = writeln!(out, "hint: {hint}");
    }
    out
}

/// BuildKit's source snippet: a few lines of context (more for a one-line
/// error), line numbers right-aligned in four columns.
pub(crate) fn snippet(file_name: &str, source: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = source.split('\n').collect();
    if start < 1 || start > lines.len() {
        return String::new();
    }
    let marked = start..=end.max(start);
    let mut first = start;
    let mut last = end.max(start).min(lines.len());
    let pad = if last == start { 4 } else { 2 };
    // Same widening loop as BuildKit, so the context matches line for line.
    let mut grown = 0;
    while grown < pad {
        if first > 1 {
            first -= 1;
            grown += 1;
        }
        if last != lines.len() {
            last += 1;
            grown += 1;
        }
        grown += 1;
    }
    let mut out = format!("{file_name}:{start}\n--------------------\n");
    for number in first..=last {
        let marker = if marked.contains(&number) {
            ">>>"
        } else {
            "   "
        };
        let text = lines.get(number - 1).copied().unwrap_or_default();
        let _ = writeln!(out, " {number:>3} | {marker} {text}");
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use hoist_dockerfile::hoist_plan::Platform;
    use hoist_dockerfile::lower::{LowerOptions, lower};

    use super::render_dockerfile_error;

    fn render(source: &str) -> String {
        let options = LowerOptions::new(Platform::new("linux", "amd64"));
        let Err(error) = lower(source, &options) else {
            panic!("expected an error for {source:?}");
        };
        render_dockerfile_error(&error, "Dockerfile", source)
    }

    #[test]
    fn unterminated_heredoc() {
        insta::assert_snapshot!(render("FROM alpine\nRUN <<EOF\necho hi\nEOFF\n"));
    }

    #[test]
    fn json_array_of_non_strings() {
        insta::assert_snapshot!(render("FROM alpine\nCMD [\"echo\", 1]\n"));
    }

    #[test]
    fn unknown_flag() {
        insta::assert_snapshot!(render("FROM alpine\nRUN true\n\nCOPY --chmood=755 a /b\n"));
    }

    #[test]
    fn unknown_instruction_did_you_mean() {
        insta::assert_snapshot!(render("FROM alpine\nRUNN make\n"));
    }

    #[test]
    fn missing_stage_name_after_as() {
        insta::assert_snapshot!(render("FROM golang:1.22 AS\nRUN go build\n"));
    }

    #[test]
    fn onbuild_from() {
        insta::assert_snapshot!(render("FROM alpine\nONBUILD FROM busybox\n"));
    }

    #[test]
    fn bad_chmod() {
        insta::assert_snapshot!(render(
            "FROM alpine\nWORKDIR /app\nRUN true\n\nCOPY --chmod=abc a /b\n\nRUN ls\n"
        ));
    }

    #[test]
    fn bad_substitution_modifier() {
        insta::assert_snapshot!(render("FROM alpine\nARG B\nENV A=${B:=x}\n"));
    }

    #[test]
    fn unknown_stage_index_in_from() {
        insta::assert_snapshot!(render(
            "FROM alpine AS build\nFROM scratch\nCOPY --from=2 /out /\n"
        ));
    }

    #[test]
    fn continuation_at_eof_swallows_destination() {
        insta::assert_snapshot!(render("FROM alpine\nCOPY app.tar.gz \\\n"));
    }

    #[test]
    fn invalid_escape_directive() {
        insta::assert_snapshot!(render("# escape=x\nFROM alpine\n"));
    }

    #[test]
    fn duplicate_directive() {
        insta::assert_snapshot!(render(
            "# syntax=docker/dockerfile:1\n# syntax=x\nFROM alpine\n"
        ));
    }

    #[test]
    fn shell_not_json() {
        insta::assert_snapshot!(render("FROM alpine\nSHELL /bin/bash -c\n"));
    }

    #[test]
    fn variable_in_mount_from() {
        insta::assert_snapshot!(render(
            "FROM alpine\nARG S=build\nRUN --mount=from=$S,target=/s \\\n    ls /s\n"
        ));
    }

    #[test]
    fn instruction_before_from() {
        insta::assert_snapshot!(render("RUN echo hi\nFROM alpine\n"));
    }

    #[test]
    fn no_instructions_has_no_snippet() {
        insta::assert_snapshot!(render(""));
    }
}
