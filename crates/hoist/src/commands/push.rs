//! `hoist push`: an image from the store to a registry, reported as docker does.

use std::io::Write;

use anyhow::{Result, bail};
use hoist_oci::Reference;
use hoist_registry::{Client, Compression, Event, PushOptions, UploadMode};
use hoist_store::{Store, StoreError};

use super::pull::{registry_options, with_progress};
use crate::cli::PushArgs;

pub(crate) fn run(store: &Store, args: &PushArgs, out: &mut dyn Write) -> Result<()> {
    let reference = Reference::parse(&args.name)?;
    let compression = match args.compression.as_deref() {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some(other) => bail!("unsupported compression {other:?}: use gzip or zstd"),
    };
    let targets: Vec<Reference> = if args.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            bail!("tag can't be used with --all-tags/-a");
        }
        let repo = reference.repository();
        let mut tags: Vec<Reference> = store
            .images()?
            .into_iter()
            .flat_map(|i| i.tags)
            .filter(|t| t.repository() == repo)
            .collect();
        tags.sort_by_key(ToString::to_string);
        if tags.is_empty() {
            bail!(
                "An image does not exist locally with the tag: {}",
                reference.familiar_repository()
            );
        }
        tags
    } else {
        if reference.tag().is_none() && reference.digest().is_none() && !args.quiet {
            writeln!(out, "Using default tag: latest")?;
        }
        vec![reference.clone().with_default_tag()]
    };
    let mut images = Vec::new();
    for t in &targets {
        match store.resolve(&t.to_string()) {
            Ok(id) => images.push((t.clone(), id)),
            Err(StoreError::NoSuchImage(_)) => {
                bail!(
                    "An image does not exist locally with the tag: {}",
                    t.familiar_repository()
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut options = registry_options()?;
    options.skip_tls_verify = !args.tls_verify;
    let client = Client::connect(reference.domain(), &options)?;
    if !args.quiet {
        writeln!(
            out,
            "The push refers to repository [{}]",
            reference.repository()
        )?;
    }
    for (target, id) in &images {
        let pushed = with_progress(out, args.quiet, |report: &(dyn Fn(&Event) + Sync)| {
            hoist_registry::push_with(
                &client,
                store,
                id,
                target,
                PushOptions {
                    registry: Some(&options),
                    compression,
                    upload: chunk_mode(),
                    progress: Some(report),
                    concurrency: 0,
                },
            )
        })??;
        if args.quiet {
            writeln!(out, "{target}")?;
        } else {
            writeln!(
                out,
                "{}: digest: {} size: {}",
                pushed.tag, pushed.digest, pushed.size
            )?;
        }
    }
    Ok(())
}

/// `HOIST_PUSH_CHUNK_SIZE=<bytes>` uploads in PATCH chunks of that size (registries that
/// limit request sizes); by default a blob goes in one PUT.
fn chunk_mode() -> UploadMode {
    std::env::var("HOIST_PUSH_CHUNK_SIZE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .map_or(UploadMode::Monolithic, UploadMode::Chunked)
}
