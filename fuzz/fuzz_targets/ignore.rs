//! Build ignore matchers from arbitrary pattern lists and match paths.
#![no_main]

use hoist_dockerfile::ignore::{Matcher, ParentMatches, read_ignore_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (patterns, path) = text.split_once('\0').unwrap_or((text, "a/b/c"));
    let patterns = read_ignore_file(Some(patterns));
    if let Ok(matcher) = Matcher::new(&patterns) {
        let _ = matcher.matches(path);
        let _ = matcher.matches_legacy(path);
        let _ = matcher.matches_with_parent(path, &ParentMatches::default());
    }
});
