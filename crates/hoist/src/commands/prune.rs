//! `hoist image prune` and `hoist builder prune`: docker's prompts, then docker's report, a
//! section for each kind of thing removed and the total reclaimed.

use std::io::{self, BufRead, Write};

use anyhow::{Result, bail};
use hoist_store::{CachePrune, Store};
use jiff::Timestamp;

use super::filters::{Filters, ImageFilter, cache_cutoff};
use super::system::cache_id;
use crate::cli::{BuilderPruneArgs, PruneArgs};

pub(crate) fn image_prune(store: &Store, args: &PruneArgs, out: &mut dyn Write) -> Result<()> {
    let filters = Filters::parse(&args.filters)?;
    filters.accept_only(ImageFilter::ACCEPTED)?;
    let filter = ImageFilter::new(&filters, Timestamp::now())?;
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !args.force && !confirm(&format!("{warning}\nAre you sure you want to continue?"))? {
        return Ok(());
    }
    let bytes = prune_images(store, args.all, &filter, out)?;
    write_total(out, bytes)
}

pub(crate) fn builder_prune(
    store: &Store,
    args: &BuilderPruneArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let keep_bytes = args.keep_storage.as_deref().map(parse_size).transpose()?;
    let filters = Filters::parse(&args.filters)?;
    let unused_since = cache_cutoff(&filters, Timestamp::now().as_second())?;
    let what = if args.all {
        "all build cache"
    } else {
        "all dangling build cache"
    };
    if !args.force
        && !confirm(&format!(
            "WARNING! This will remove {what}. Are you sure you want to continue?"
        ))?
    {
        return Ok(());
    }
    let opts = CachePrune {
        all: args.all,
        keep_bytes,
        unused_since,
    };
    let bytes = prune_cache(store, &opts, out)?;
    write_total(out, bytes)
}

/// Asks `message [y/N] ` on stderr (stdout carries only the report); true when the answer
/// is `y` or `yes`.
fn confirm(message: &str) -> Result<bool> {
    let mut err = io::stderr();
    write!(err, "{message} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Removes the dangling images (with `all`, every image) that `filter` selects, and the
/// files only they used; writes docker's "Deleted Images:" section and returns the bytes
/// freed.
fn prune_images(
    store: &Store,
    all: bool,
    filter: &ImageFilter,
    out: &mut dyn Write,
) -> Result<u64> {
    let removals = store.prune(all || filter.all, |image| {
        let labels = if filter.reads_labels() {
            store
                .config(&image.id)?
                .config
                .map(|c| c.labels.unwrap_or_default())
        } else {
            None
        };
        Ok(filter.selects(image.created, labels.as_ref()))
    })?;
    let stats = store.gc()?;
    if !removals.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for removal in &removals {
            for name in &removal.untagged {
                writeln!(out, "untagged: {}", name.familiar())?;
            }
            if let Some(id) = &removal.deleted {
                writeln!(out, "deleted: {id}")?;
            }
            for layer in &removal.deleted_layers {
                writeln!(out, "deleted: {layer}")?;
            }
        }
        writeln!(out)?;
    }
    Ok(stats.bytes)
}

/// Removes the build cache `opts` selects and the unused `RUN --mount=type=cache`
/// directories; writes docker's "Deleted build cache objects:" section and returns the bytes
/// freed.
fn prune_cache(store: &Store, opts: &CachePrune, out: &mut dyn Write) -> Result<u64> {
    let (mut deleted, mut bytes) = store.prune_cache(opts)?;
    // The cache mounts go too, as BuildKit prunes unused cache mounts with or without `--all`
    // (those `until` leaves alone stay).
    if opts.keep_bytes.is_none() {
        let (mounts, mount_bytes) = store.prune_cache_mounts(opts.unused_since)?;
        deleted.extend(mounts);
        bytes += mount_bytes;
    }
    if !deleted.is_empty() {
        writeln!(out, "Deleted build cache objects:")?;
        for id in &deleted {
            writeln!(out, "{}", cache_id(id))?;
        }
        writeln!(out)?;
    }
    Ok(bytes)
}

fn write_total(out: &mut dyn Write, bytes: u64) -> Result<()> {
    writeln!(
        out,
        "Total reclaimed space: {}",
        hoist_format::human_size(bytes as f64)
    )?;
    Ok(())
}

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
