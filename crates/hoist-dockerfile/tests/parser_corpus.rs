//! BuildKit's parser corpus: AST dumps, negative cases and parser facts.
//!
//! Every case runs; none is skipped. Deliberate differences from BuildKit
//! that no corpus case exercises:
//! - flag words are scanned as characters, not bytes, so a UTF-8 byte 0x85
//!   or 0xA0 inside a flag value is not taken for a blank;
//! - a JSON array with a lone surrogate escape (`"\ud800"`) falls back to
//!   shell form instead of decoding to U+FFFD;
//! - directive errors point at the directive's own line (BuildKit reports
//!   the line before it).

mod common;

use hoist_dockerfile::{
    Span, chomp, directives, parse, parse_heredoc, parse_json_array, parse_words,
};
use serde_json::Value;

#[test]
fn positive_testfiles_dump_like_buildkit() {
    let dir = common::corpora().join("buildkit-parser/testfiles");
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for case in entries {
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let expect = std::fs::read_to_string(case.join("result")).unwrap();
        let file = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        assert_eq!(file.dump(), expect, "case {}", case.display());
        count += 1;
    }
    assert_eq!(count, 33);
}

#[test]
fn negative_testfiles_fail() {
    let dir = common::corpora().join("buildkit-parser/testfiles-negative");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        // Some negative cases only fail once instructions are typed.
        let failed = match parse(&text) {
            Err(_) => true,
            Ok(file) => hoist_dockerfile::instructions::parse_instructions(&file).is_err(),
        };
        assert!(failed, "{} must fail", case.display());
        count += 1;
    }
    assert_eq!(count, 4);
}

fn facts() -> Value {
    common::json("buildkit-parser/parser-facts.json")
}

#[test]
fn line_numbers() {
    let facts = facts();
    let facts = &facts["line_numbers"];
    let file = parse(&common::read("buildkit-parser/testfile-line/Dockerfile")).unwrap();
    assert_eq!(
        file.span.start as u64,
        facts["root"]["start_line"].as_u64().unwrap()
    );
    assert_eq!(
        file.span.end as u64,
        facts["root"]["end_line"].as_u64().unwrap()
    );
    let spans: Vec<Span> = file.nodes.iter().map(|n| n.span).collect();
    let expect: Vec<Span> = facts["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            Span::new(
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(spans, expect);
}

fn check_heredoc_document(section: &Value) {
    let file = parse(section["dockerfile"].as_str().unwrap()).unwrap();
    for child in section["children"].as_array().unwrap() {
        let index = child["child_index"].as_u64().unwrap() as usize;
        let node = &file.nodes[index];
        if let Some(line) = child["instruction_line"].as_str() {
            assert_eq!(node.original, line);
        }
        let expect = child["heredocs"].as_array().unwrap();
        assert_eq!(node.heredocs.len(), expect.len(), "child {index}");
        for (got, want) in node.heredocs.iter().zip(expect) {
            assert_eq!(got.name, want["name"].as_str().unwrap(), "child {index}");
            assert_eq!(
                got.content,
                want["content"].as_str().unwrap(),
                "child {index}"
            );
            assert_eq!(
                got.expand,
                want["expand"].as_bool().unwrap(),
                "child {index}"
            );
            assert_eq!(got.chomp, want["chomp"].as_bool().unwrap(), "child {index}");
            assert_eq!(
                u64::from(got.file_descriptor),
                want["file_descriptor"].as_u64().unwrap(),
                "child {index}"
            );
        }
    }
}

#[test]
fn heredoc_document() {
    check_heredoc_document(&facts()["heredoc_document"]);
}

#[test]
fn heredoc_json_form() {
    check_heredoc_document(&facts()["heredoc_json_form"]);
}

#[test]
fn heredoc_chomp() {
    let facts = facts();
    let section = &facts["heredoc_chomp"];
    assert_eq!(
        chomp(section["input"].as_str().unwrap()),
        section["expect"].as_str().unwrap()
    );
}

#[test]
fn heredoc_word() {
    let facts = facts();
    let section = &facts["heredoc_word"];
    for word in section["valid_name_EOF"].as_array().unwrap() {
        let word = word.as_str().unwrap();
        let heredoc = parse_heredoc(word)
            .unwrap()
            .unwrap_or_else(|| panic!("{word}"));
        assert_eq!(heredoc.name, "EOF", "{word}");
    }
    for word in section["invalid_error"].as_array().unwrap() {
        let word = word.as_str().unwrap();
        assert!(parse_heredoc(word).is_err(), "{word}");
    }
    for word in section["not_heredoc"].as_array().unwrap() {
        let word = word.as_str().unwrap();
        assert_eq!(parse_heredoc(word).unwrap(), None, "{word}");
    }
}

#[test]
fn heredocs_from_line() {
    let facts = facts();
    for case in facts["heredocs_from_line"]["cases"].as_array().unwrap() {
        let line = case["line"].as_str().unwrap();
        let names: Vec<String> = hoist_dockerfile::heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        let expect: Vec<&str> = case["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names, expect, "{line}");
    }
}

#[test]
fn parse_words_keeps_quotes() {
    let facts = facts();
    for case in facts["parse_words"]["cases"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let expect: Vec<&str> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(parse_words(input, '\\'), expect, "{input}");
    }
}

#[test]
fn json_arrays() {
    let facts = facts();
    for case in facts["json_arrays"]["valid"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let expect: Vec<&str> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(parse_json_array(input).unwrap().unwrap(), expect, "{input}");
    }
    for input in facts["json_arrays"]["not_string_array_error"]
        .as_array()
        .unwrap()
    {
        let input = input.as_str().unwrap();
        assert!(parse_json_array(input).is_err(), "{input}");
    }
}

#[test]
fn name_value() {
    let facts = facts();
    for case in facts["name_value"]["cases"].as_array().unwrap() {
        let line = format!(
            "{} {}",
            case["instruction"].as_str().unwrap(),
            case["args"].as_str().unwrap()
        );
        let result = parse(&line);
        if let Some(message) = case["expect_error"].as_str() {
            let error = result.unwrap_err();
            assert!(error.to_string().contains(message), "{error}");
        } else {
            let expect: Vec<&str> = case["expect_nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            assert_eq!(result.unwrap().nodes[0].args, expect, "{line}");
        }
    }
}

#[test]
fn directives_parse_all() {
    let facts = facts();
    for case in facts["directives"]["parse_all"].as_array().unwrap() {
        let input = format!("{}FROM x\n", case["input"].as_str().unwrap());
        let file = parse(&input).unwrap();
        let got: Vec<(String, String)> = file
            .directives
            .iter()
            .map(|d| (d.name.clone(), d.value.clone()))
            .collect();
        let expect: Vec<(String, String)> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_owned(),
                    d["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, expect);
    }
}

fn check_found(found: Option<directives::DirectiveValue>, expect: &Value, input: &str) {
    let want_found = expect["found"].as_bool().unwrap();
    assert_eq!(found.is_some(), want_found, "{input:?}");
    let Some(found) = found else { return };
    if let Some(reference) = expect["ref"].as_str() {
        assert_eq!(found.reference, reference, "{input:?}");
    }
    if let Some(cmdline) = expect["cmdline"].as_str() {
        assert_eq!(found.cmdline, cmdline, "{input:?}");
    }
    if let Some(line) = expect["line"].as_u64() {
        assert_eq!(found.line as u64, line, "{input:?}");
    }
}

#[test]
fn directives_detect_syntax() {
    let facts = facts();
    for case in facts["directives"]["detect_syntax"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        check_found(directives::detect_syntax(input), &case["expect"], input);
    }
    for case in facts["directives"]["parse_directive_check"]
        .as_array()
        .unwrap()
    {
        let input = case["input"].as_str().unwrap();
        check_found(
            directives::find_directive(input, "check"),
            &case["expect"],
            input,
        );
    }
}

#[test]
fn warnings_on_empty_continuation() {
    let facts = facts();
    let section = &facts["warnings"];
    let file = parse(section["dockerfile"].as_str().unwrap()).unwrap();
    assert_eq!(
        file.warnings.len() as u64,
        section["expect_warning_count"].as_u64().unwrap()
    );
    for (warning, needles) in file
        .warnings
        .iter()
        .zip(section["expect_warning_short_contains"].as_array().unwrap())
    {
        for needle in needles.as_array().unwrap() {
            assert!(
                warning.short.contains(needle.as_str().unwrap()),
                "{}",
                warning.short
            );
        }
        assert!(
            warning
                .detail
                .contains(section["expect_detail_contains"].as_str().unwrap())
        );
    }
}

#[test]
fn line_too_long() {
    let facts = facts();
    let section = &facts["line_too_long"];
    let text = section["dockerfile_template"]
        .as_str()
        .unwrap()
        .replace("{65536 times the letter a}", &"a".repeat(65536));
    let error = parse(&text).unwrap_err();
    assert_eq!(
        error.kind().to_string(),
        section["expect_error"].as_str().unwrap()
    );
}

/// The in-repo copy must stay identical to the shared corpora when those
/// are present (they are not on a clean clone).
#[test]
fn copies_match_shared_corpora() {
    let shared =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
    if !shared.exists() {
        return;
    }
    for relative in [
        "buildkit-parser/parser-facts.json",
        "buildkit-shell/envVarTest",
        "buildkit-shell/wordsTest",
        "buildkit-shell/lexer-facts.json",
        "dockerignore/cases.json",
    ] {
        let ours = std::fs::read(common::corpora().join(relative)).unwrap();
        let theirs = std::fs::read(shared.join(relative)).unwrap();
        assert!(ours == theirs, "{relative} differs from shared/conformance");
    }
}
