//! `hoist builder prune` and `hoist system df`.

use std::io::{self, BufRead, Write};

use anyhow::{Result, bail};
use hoist_store::Store;

use crate::cli::BuilderPruneArgs;

/// Parses docker-style sizes: `500MB`, `2GB`, `1.5g`, `1024` (bytes; decimal units as docker's
/// go-units `FromHumanSize`).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size: {s:?}"))?;
    let mult = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        _ => bail!("invalid size: {s:?}"),
    };
    Ok((n * mult) as u64)
}

pub(crate) fn builder_prune(
    store: &Store,
    args: &BuilderPruneArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let keep = args.keep_storage.as_deref().map(parse_size).transpose()?;
    if !args.force {
        let mut err = io::stderr();
        let what = if args.all {
            "all build cache"
        } else {
            "all dangling build cache"
        };
        write!(
            err,
            "WARNING! This will remove {what}. Are you sure you want to continue? [y/N] "
        )?;
        err.flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Ok(());
        }
    }
    let (entries, mut bytes) = store.prune_cache(keep)?;
    // `--all` also empties the RUN --mount=type=cache directories, as BuildKit's prune of all
    // records does.
    if args.all && keep.is_none() {
        bytes += store.prune_cache_mounts()?;
    }
    if entries > 0 {
        writeln!(out, "Deleted build cache objects: {entries}")?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        hoist_format::human_size(bytes as f64)
    )?;
    Ok(())
}

pub(crate) fn df(store: &Store, out: &mut dyn Write) -> Result<()> {
    let images = store.images()?;
    let size = store.images_size()?;
    let cache = store.cache_usage()?;
    let mut w = hoist_format::TabWriter::docker(out);
    writeln!(w, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE")?;
    // No containers outlive `hoist run`, so every image is reclaimable.
    let h = |b: u64| hoist_format::human_size(b as f64);
    let pct = if size == 0 { 0 } else { 100 };
    writeln!(
        w,
        "Images\t{}\t0\t{}\t{} ({pct}%)",
        images.len(),
        h(size),
        h(size)
    )?;
    writeln!(w, "Containers\t0\t0\t0B\t0B")?;
    writeln!(w, "Local Volumes\t0\t0\t0B\t0B")?;
    writeln!(
        w,
        "Build Cache\t{}\t0\t{}\t{}",
        cache.entries,
        h(cache.reclaimable),
        h(cache.reclaimable)
    )?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2g").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }
}
