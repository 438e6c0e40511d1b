//! BuildKit's shell-word expansion corpus: envVarTest, wordsTest and the
//! lexer facts.
//!
//! Every A and U row runs; W rows are Windows-only. One deliberate
//! difference no case exercises: in word-splitting mode BuildKit shares one
//! word buffer between nested `${…}` words, so `a${X:-b}` splits to `["b"]`;
//! we give `["ab"]`.

mod common;

use std::collections::BTreeMap;

use hoist_dockerfile::shell::{EnvList, Lexer};
use serde_json::Value;

#[test]
fn env_var_test_single_word() {
    let env: BTreeMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    for line in common::read("buildkit-shell/envVarTest").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "malformed row {line:?}");
        let (platform, input, expect) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("unknown platform tag {other}"),
        }
        let got = lexer.expand_word(input, &env);
        if expect == "error" {
            assert!(got.is_err(), "{input:?} should fail, got {got:?}");
        } else {
            assert_eq!(
                got.as_deref().map_err(ToString::to_string),
                Ok(expect),
                "{input:?}"
            );
        }
        ran += 1;
    }
    assert_eq!(ran, 228);
}

#[test]
fn words_test_splitting() {
    let lexer = Lexer::new('\\');
    let mut entries: Vec<String> = Vec::new();
    let mut ran = 0;
    for line in common::read("buildkit-shell/wordsTest").lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(entry) = line.strip_prefix("ENV ") {
            entries.push(entry.trim_start().to_owned());
            continue;
        }
        let (input, expect) = line.split_once('|').expect("one | per case");
        let input = input.trim();
        let expect: Vec<&str> = expect.trim_start().split(',').collect();
        let env = EnvList::from_entries(&entries);
        let got = lexer.expand_words(input, &env);
        if expect == ["error"] {
            assert!(got.is_err(), "{input:?}");
        } else {
            assert_eq!(got.unwrap(), expect, "{input:?}");
        }
        ran += 1;
    }
    assert_eq!(ran, 24);
}

fn facts() -> Value {
    common::json("buildkit-shell/lexer-facts.json")
}

fn env_object(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn process_word_with_matches() {
    let lexer = Lexer::new('\\');
    for case in facts()["process_word_with_matches"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let env = env_object(&case["env"]);
        let got = lexer.expand(input, &env);
        let expect = &case["expect"];
        if expect["error"].as_bool() == Some(true) {
            assert!(got.is_err(), "{input:?} should fail, got {got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got.value, expect["result"].as_str().unwrap(), "{input:?}");
        assert_eq!(
            got.matched.into_iter().collect::<Vec<_>>(),
            strings(&expect["matched"]),
            "{input:?}"
        );
        assert_eq!(
            got.unmatched.into_iter().collect::<Vec<_>>(),
            strings(&expect["unmatched"]),
            "{input:?}"
        );
    }
}

#[test]
fn mandatory_vars() {
    let lexer = Lexer::new('\\');
    for case in facts()["mandatory_vars"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let env = EnvList::from_entries(strings(&case["env"]));
        let got = lexer.expand_word(input, &env);
        let expect = &case["expect"];
        if let Some(needle) = expect["error_contains"].as_str() {
            let error = got.unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
            assert!(
                error.starts_with(&format!("failed to process {:?}: ", input)),
                "{error}"
            );
        } else {
            assert_eq!(got.unwrap(), expect["result"].as_str().unwrap());
        }
    }
}

#[test]
fn platform_filename() {
    let lexer = Lexer::new('\\');
    for case in facts()["platform_filename"].as_array().unwrap() {
        let env = env_object(&case["env"]);
        let got = lexer
            .expand_word(case["input"].as_str().unwrap(), &env)
            .unwrap();
        assert_eq!(got, case["expect"]["result"].as_str().unwrap());
    }
}

#[test]
fn env_list_lookup() {
    use hoist_dockerfile::shell::Env;
    for case in facts()["env_list_lookup"].as_array().unwrap() {
        let env = EnvList::from_entries(strings(&case["env"]));
        let got = env.lookup(case["lookup"].as_str().unwrap());
        let expect = &case["expect"];
        if expect["found"].as_bool().unwrap() {
            assert_eq!(got, Some(expect["value"].as_str().unwrap()));
        } else {
            assert_eq!(got, None);
        }
    }
}

#[test]
fn invalid_patterns_are_errors() {
    let lexer = Lexer::new('\\');
    let env: BTreeMap<String, String> = [("v".to_owned(), "abc".to_owned())].into();
    for pattern in strings(&facts()["shell_pattern_to_regex_informative"]["invalid"]) {
        // Escapes are kept raw inside `#` patterns, so the pattern reaches
        // the glob converter unchanged.
        let input = format!("${{v#{pattern}}}");
        assert!(lexer.expand_word(&input, &env).is_err(), "{input:?}");
    }
}
