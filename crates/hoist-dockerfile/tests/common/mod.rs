//! Shared helpers for the corpus tests.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The in-repo copy of the conformance corpora.
pub fn corpora() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora")
}

pub fn read(relative: &str) -> String {
    let path = corpora().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read(relative)).expect("corpus JSON parses")
}
