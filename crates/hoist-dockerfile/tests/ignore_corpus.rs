//! moby/patternmatcher's cases: matching, legacy matching, building and
//! reading ignore files.

mod common;

use hoist_dockerfile::ignore::{Matcher, ParentMatches, read_ignore_file};
use serde_json::Value;

fn cases() -> Value {
    common::json("dockerignore/cases.json")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Walks from the top directory down to `path`, passing parent results on.
fn walk(matcher: &Matcher, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut parent = ParentMatches::default();
    let mut result = false;
    for depth in 1..=parts.len() {
        let prefix = parts[..depth].join("/");
        if depth < parts.len() && prefix.is_empty() {
            continue;
        }
        let (matched, next) = matcher.matches_with_parent(&prefix, &parent).unwrap();
        result = matched;
        parent = next;
    }
    result
}

#[test]
fn matcher_cases() {
    let cases = cases();
    let mut ran = 0;
    for case in cases["matcher_cases"].as_array().unwrap() {
        let patterns = strings(&case["patterns"]);
        let path = case["path"].as_str().unwrap();
        let expect = case["expect"].as_bool().unwrap();
        let matcher = Matcher::new(&patterns).unwrap();
        assert_eq!(
            matcher.matches(path).unwrap(),
            expect,
            "{patterns:?} {path:?}"
        );
        let (direct, _) = matcher
            .matches_with_parent(path, &ParentMatches::default())
            .unwrap();
        assert_eq!(direct, expect, "no parent info: {patterns:?} {path:?}");
        if !path.ends_with('/') && !path.starts_with('/') {
            assert_eq!(walk(&matcher, path), expect, "walk: {patterns:?} {path:?}");
        }
        ran += 1;
    }
    assert_eq!(ran, 72);
}

#[test]
fn legacy_matches_cases() {
    let cases = cases();
    let mut ran = 0;
    for case in cases["legacy_matches_cases"].as_array().unwrap() {
        let patterns = strings(&case["patterns"]);
        let path = case["path"].as_str().unwrap();
        let result = Matcher::new(&patterns).and_then(|m| m.matches_legacy(path));
        match &case["expect"] {
            Value::Bool(expect) => {
                assert_eq!(result, Ok(*expect), "{patterns:?} {path:?}");
                // Every legacy case agrees with the modern rule too.
                let modern = Matcher::new(&patterns).unwrap().matches(path);
                assert_eq!(modern, Ok(*expect), "modern: {patterns:?} {path:?}");
            }
            _ => assert!(result.is_err(), "{patterns:?} {path:?} should fail"),
        }
        ran += 1;
    }
    assert_eq!(ran, 65);
}

#[test]
fn new_errors() {
    let cases = cases();
    for case in cases["new_errors"].as_array().unwrap() {
        let patterns = strings(&case["patterns"]);
        let built = Matcher::new(&patterns);
        let expect = &case["expect"];
        if expect == "error" {
            assert!(built.is_err(), "{patterns:?}");
            continue;
        }
        let matcher = built.unwrap();
        if let Some(count) = expect["pattern_count"].as_u64() {
            assert_eq!(matcher.patterns().len() as u64, count);
        }
        if let Some(exclusions) = expect["has_exclusions"].as_bool() {
            assert_eq!(matcher.has_exclusions(), exclusions);
        }
        if let Some(path) = expect["match_path"].as_str() {
            for _ in 0..3 {
                assert!(matcher.matches(path).is_err());
            }
        }
    }
}

#[test]
fn ignorefile_read_all() {
    let cases = cases();
    for case in cases["ignorefile_readall_cases"].as_array().unwrap() {
        let got = read_ignore_file(case["input"].as_str());
        assert_eq!(got, strings(&case["expect"]));
    }
}

#[test]
fn compile_classification_informative() {
    // Not observable behaviour; we only check that each pattern builds.
    let cases = cases();
    for case in cases["compile_cases_informative"].as_array().unwrap() {
        let pattern = case["pattern"].as_str().unwrap();
        assert!(Matcher::new([pattern]).is_ok(), "{pattern}");
    }
}
