//! Inputs that stress the parser and expander at their edges. The fuzz
//! targets in `fuzz/` found no crash; these keep the hand-picked edge cases
//! (deep JSON, lone escapes, unterminated constructs, huge lines) from
//! regressing into panics.

use std::collections::BTreeMap;

use hoist_dockerfile::hoist_plan::Platform;
use hoist_dockerfile::lower::{LowerOptions, lower};
use hoist_dockerfile::shell::Lexer;

fn survives(text: &str) {
    let _ = lower(text, &LowerOptions::new(Platform::new("linux", "amd64")));
}

#[test]
fn parser_edge_cases_do_not_panic() {
    let deep_json = format!("FROM a\nCMD {}\n", "[".repeat(5000));
    let long_line = format!("FROM a\nRUN {}\n", "x".repeat(70_000));
    for text in [
        "",
        "\\",
        "\u{feff}",
        "FROM",
        "FROM a AS",
        "ONBUILD",
        "ONBUILD ONBUILD",
        "FROM a\nCOPY <<",
        "FROM a\nCOPY <<EOF",
        "FROM a\nRUN <<'EOF\n",
        "FROM a\nRUN 99999999999999999999<<EOF\nEOF\n",
        "FROM a\nHEALTHCHECK",
        "FROM a\nHEALTHCHECK --interval=99999999999999h CMD x",
        "FROM a\nRUN --mount=type=tmpfs,target=/t,size=1e400 x",
        "FROM a\nRUN --mount=\"",
        "FROM a\nCOPY --chmod=77777777777777777777 a b",
        "FROM a\nENV ${",
        "FROM a\nEXPOSE ${A:-1 2}",
        "FROM a\nCOPY --from=99999999999999999999999 a b",
        "# escape=`\nFROM a`\n`\n",
        "FROM a\nRUN x \\\n\n\n",
        &deep_json,
        &long_line,
    ] {
        survives(text);
    }
}

#[test]
fn expander_edge_cases_do_not_panic() {
    let env: BTreeMap<String, String> = [("A".to_owned(), "é*?".to_owned())].into();
    let lexer = Lexer::default();
    for word in [
        "$",
        "${",
        "${A",
        "${A:",
        "${A/",
        "${A//",
        "${A/x",
        "${A#\\",
        "${A%\\",
        "${A%%\\\\\\",
        "\\",
        "'",
        "\"",
        "\"\\",
        "${A/*/$}",
        "${A//?/$1}",
        "${A%é}",
        "$999999999999999999999",
    ] {
        let _ = lexer.expand(word, &env);
        let _ = lexer
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset(true)
            .expand(word, &env);
    }
}

#[test]
fn nested_modifier_words_split_whole() {
    let env: BTreeMap<String, String> = BTreeMap::new();
    assert_eq!(
        Lexer::default().expand_words("a${X:-b} c", &env).unwrap(),
        ["ab", "c"]
    );
}
