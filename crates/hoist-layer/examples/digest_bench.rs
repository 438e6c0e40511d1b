//! Times full against resumed layer digests.
//!
//! `cargo run --release -p hoist-layer --example digest_bench -- OLD NEW` where NEW is a
//! hard-linked copy of OLD (`cp -al`) with a change: digests OLD (making its checkpoints),
//! then NEW in full and resumed from OLD's checkpoints, checks they agree and prints the
//! times (best of a few runs, page cache warm).

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hoist_layer::{WriteOptions, digest_layer, write_layer};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed());
        out = Some(v);
    }
    (best, out.expect("at least one run"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(old), Some(new)) = (args.next(), args.next()) else {
        return Err("usage: digest_bench OLD NEW".into());
    };
    let runs = 5;
    let opts = WriteOptions::default();
    let mut out = io::stdout().lock();

    let (t, summary) = best(runs, || write_layer(&old, io::sink(), &opts));
    let summary = summary?;
    writeln!(
        out,
        "old: {} entries, {} tar bytes, {}",
        summary.entries, summary.size, summary.diff_id
    )?;
    writeln!(out, "write_layer(old, sink)          {t:>10.1?}")?;
    let (t, r) = best(runs, || digest_layer(&old, &opts, None));
    let (old_summary, old_cp) = r?;
    assert_eq!(old_summary, summary);
    writeln!(
        out,
        "digest_layer(old, None)         {t:>10.1?}  ({} checkpoints, {} bytes stored)",
        old_cp.len(),
        old_cp.to_bytes().len()
    )?;

    let (t, r) = best(runs, || digest_layer(&new, &opts, None));
    let (full, full_cp) = r?;
    writeln!(
        out,
        "digest_layer(new, None)         {t:>10.1?}  {}",
        full.diff_id
    )?;
    let (t, r) = best(runs, || digest_layer(&new, &opts, Some(&old_cp)));
    let (resumed, resumed_cp) = r?;
    writeln!(
        out,
        "digest_layer(new, Some(old))    {t:>10.1?}  {}",
        resumed.diff_id
    )?;
    assert_eq!(resumed, full);
    assert_eq!(resumed_cp, full_cp);
    assert_eq!(full, write_layer(&new, io::sink(), &opts)?);
    // The tree itself, unchanged, resumed from its own checkpoints: two metadata walks and
    // the tail after the last checkpoint, i.e. the fixed cost of a resume.
    let (t, r) = best(runs, || digest_layer(&new, &opts, Some(&full_cp)));
    assert_eq!(r?.0, full);
    writeln!(
        out,
        "digest_layer(new, Some(new))    {t:>10.1?}  (unchanged tree)"
    )?;
    Ok(())
}
