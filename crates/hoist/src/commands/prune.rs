//! `hoist image prune`, `hoist builder prune` and `hoist system prune`: docker's prompts, then
//! docker's report, a section for each kind of thing removed and the total reclaimed.
//!
//! hoist keeps no containers, networks or volumes (`hoist run` removes its container when it
//! exits), so `system prune` is the image prune and the build cache prune, in docker's order:
//! the images go first, so the build cache they held becomes dangling and goes too.

use std::io::{self, BufRead, Write};

use anyhow::{Result, bail};
use hoist_store::{CachePrune, Store};
use jiff::Timestamp;

use super::filters::{Filters, ImageFilter, cache_cutoff};
use super::system::cache_id;
use crate::cli::{BuilderPruneArgs, PruneArgs, SystemPruneArgs};

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

pub(crate) fn system_prune(
    store: &Store,
    args: &SystemPruneArgs,
    out: &mut dyn Write,
) -> Result<()> {
    if args.volumes {
        bail!(
            "hoist has no volumes to prune: it keeps none (`hoist run` removes its container and \
             what it made when it exits); leave out --volumes"
        );
    }
    let filters = Filters::parse(&args.filters)?;
    // docker hands the filters to each prune in turn; the first, the container prune, takes
    // only these names.
    filters.accept_only(&["label", "label!", "until"])?;
    let now = Timestamp::now();
    let images = ImageFilter::new(&filters, now)?;
    // docker's build cache prune accepts `label` and `label!` but does not apply them (moby
    // 20.10: "TODO(tiborvass): handle label"), so only `until` reaches the cache, and there
    // as a duration. A time there fails, as in docker; docker says so after it has pruned the
    // images, hoist before it removes anything.
    let unused_since = cache_cutoff(&filters.only(&["until"]), now.as_second())?;
    if !args.force && !confirm(&system_prompt(args.all, &filters))? {
        return Ok(());
    }
    let cache = CachePrune {
        all: args.all,
        keep_bytes: None,
        unused_since,
    };
    let bytes = prune_images(store, args.all, &images, out)? + prune_cache(store, &cache, out)?;
    write_total(out, bytes)
}

/// `docker system prune`'s question. docker lists stopped containers and unused networks
/// (and, with `--volumes`, volumes) as well; hoist keeps none of those, so only the lines
/// for images and build cache apply and only they are shown.
fn system_prompt(all: bool, filters: &Filters) -> String {
    let removed = if all {
        [
            "all images without at least one container associated to them",
            "all build cache",
        ]
    } else {
        ["all dangling images", "all dangling build cache"]
    };
    let mut prompt = String::from("WARNING! This will remove:\n");
    for what in removed {
        prompt += &format!("  - {what}\n");
    }
    let listed = filters.listed();
    if !listed.is_empty() {
        prompt += "\n  Items to be pruned will be filtered with:\n";
        for filter in listed {
            prompt += &format!("  - {filter}\n");
        }
    }
    prompt + "\nAre you sure you want to continue?"
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
    use super::{Filters, parse_size, system_prompt};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2g").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }

    /// docker 20.10's `confirmationTemplate`, less the containers and networks lines.
    #[test]
    fn system_prompts() {
        assert_eq!(
            system_prompt(false, &Filters::default()),
            "WARNING! This will remove:\n  - all dangling images\n  - all dangling build cache\n\
             \nAre you sure you want to continue?"
        );
        let filters = Filters::parse(&["until=24h".into(), "label=a".into(), "label!=b".into()]);
        assert_eq!(
            system_prompt(true, &filters.unwrap()),
            "WARNING! This will remove:\n\
             \x20 - all images without at least one container associated to them\n\
             \x20 - all build cache\n\
             \n\
             \x20 Items to be pruned will be filtered with:\n\
             \x20 - label!=b\n\
             \x20 - label=a\n\
             \x20 - until=24h\n\
             \n\
             Are you sure you want to continue?"
        );
    }
}
