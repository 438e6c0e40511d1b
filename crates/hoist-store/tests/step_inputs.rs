//! A step's recorded inputs: written in place in pieces, read back as the previous build's,
//! and swapped with its key.

use hoist_store::Store;

fn swap(store: &Store, id: &str, key: &str, text: &str, want_old: bool) -> Option<String> {
    let pieces: Vec<String> = text
        .as_bytes()
        .chunks(7)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let mut old = None;
    let mut read = |r: &mut dyn std::io::Read| {
        let mut text = String::new();
        r.read_to_string(&mut text)?;
        old = Some(text);
        Ok(())
    };
    store
        .swap_step_inputs(
            id,
            key,
            text.len(),
            |w| {
                for p in &pieces {
                    w.write_all(p.as_bytes())?;
                }
                Ok(())
            },
            want_old.then_some(&mut read as &mut hoist_store::ReadOld<'_>),
        )
        .unwrap();
    old
}

#[test]
fn inputs_are_swapped_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = format!(r#"{{"parent":"k0","file a":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(swap(&store, "s1", "k1", &first, true), None);
    assert_eq!(store.step_key("s1").unwrap().as_deref(), Some("k1"));
    let second = r#"{"parent":"k0","file a":"é"}"#;
    assert_eq!(
        swap(&store, "s1", "k2", second, true).as_deref(),
        Some(first.as_str())
    );
    assert_eq!(store.step_key("s1").unwrap().as_deref(), Some("k2"));
    // Not asked for, the old inputs are not read; they are still replaced.
    assert_eq!(swap(&store, "s1", "k3", "{}", false), None);
    assert_eq!(swap(&store, "s1", "k4", "{}", true).as_deref(), Some("{}"));
    // Another step's inputs are its own.
    assert_eq!(swap(&store, "s2", "k1", second, true), None);
}

#[test]
fn inputs_shorter_or_longer_than_announced_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let too_long = store.swap_step_inputs("s", "k", 3, |w| w.write_all(b"{...}"), None);
    assert!(too_long.is_err());
    let too_short = store.swap_step_inputs("s", "k", 30, |w| w.write_all(b"{}"), None);
    assert!(too_short.is_err());
    // Nothing of the failed swaps was kept.
    assert_eq!(store.step_key("s").unwrap(), None);
}
