//! Parse, type and lower arbitrary Dockerfile text: errors are fine,
//! panics are not.
#![no_main]

use hoist_dockerfile::hoist_plan::Platform;
use hoist_dockerfile::lower::{LowerOptions, lower};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = hoist_dockerfile::parse(text) {
        let _ = file.dump();
        let _ = hoist_dockerfile::instructions::parse_instructions(&file);
    }
    let mut options = LowerOptions::new(Platform::new("linux", "amd64"));
    options.build_args = vec![("A".to_owned(), Some("x y".to_owned()))];
    let _ = lower(text, &options);
});
