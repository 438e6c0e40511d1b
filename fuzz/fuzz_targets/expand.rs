//! Expand arbitrary words in every lexer mode.
#![no_main]

use std::collections::BTreeMap;

use hoist_dockerfile::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> = [("A", "abc abc"), ("B", ""), ("C", "*?\\")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for escape in ['\\', '`'] {
        let base = Lexer::new(escape);
        for lexer in [
            base,
            base.raw_quotes(true).raw_escapes(true).skip_unset(true),
            base.skip_quotes(true),
        ] {
            let _ = lexer.expand(text, &env);
        }
    }
    let _ = hoist_dockerfile::parse_heredoc(text);
    let _ = hoist_dockerfile::heredocs_from_line(text);
});
