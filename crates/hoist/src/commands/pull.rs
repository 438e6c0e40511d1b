//! `hoist pull`: an image from a registry into the store, reported as docker does.

use std::io::Write;
use std::sync::mpsc;

use anyhow::{Result, bail};
use hoist_oci::{Platform, Reference};
use hoist_registry::{Event, PullOptions, RegistryOptions};
use hoist_store::Store;

use crate::cli::PullArgs;

/// Registry settings: hoist's configuration file (mirrors, insecure registries; see
/// `hoist_registry::config` for where it lives) and `HOIST_INSECURE_REGISTRIES`
/// (comma-separated `host[:port]`), adding to the loopback hosts that are always insecure.
pub(crate) fn registry_options() -> Result<RegistryOptions> {
    let config = hoist_registry::HoistConfig::load()?;
    let mut insecure_registries = config.insecure_registries;
    insecure_registries.extend(
        std::env::var("HOIST_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned),
    );
    Ok(RegistryOptions {
        insecure_registries,
        mirrors: config.registry_mirrors,
        ..RegistryOptions::default()
    })
}

/// docker's non-tty line for a pull event (progress counts are not shown without a tty).
fn line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Pulling {
            tag_or_digest,
            repository,
        } => format!("{tag_or_digest}: Pulling from {repository}"),
        Event::LayerExists { id } => format!("{id}: Already exists"),
        Event::LayerQueued { id } => format!("{id}: Pulling fs layer"),
        Event::Downloaded { id } => format!("{id}: Verifying Checksum\n{id}: Download complete"),
        Event::Extracted { id } => format!("{id}: Pull complete"),
        Event::Preparing { id } => format!("{id}: Preparing"),
        Event::Pushed { id, outcome } => match outcome {
            hoist_registry::BlobPush::Exists => format!("{id}: Layer already exists"),
            hoist_registry::BlobPush::Mounted { from } => format!("{id}: Mounted from {from}"),
            hoist_registry::BlobPush::Uploaded => format!("{id}: Pushed"),
        },
        Event::PushingTo { repository } => {
            format!("The push refers to repository [{repository}]")
        }
        Event::Downloading { .. } | Event::Uploading { .. } => return None,
    })
}

/// Runs `work` on a thread while its progress lines are written to `out` as they come.
pub(crate) fn with_progress<T: Send>(
    out: &mut dyn Write,
    quiet: bool,
    work: impl FnOnce(&(dyn Fn(&Event) + Sync)) -> T + Send,
) -> Result<T> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let report = move |e: &Event| {
                if let Some(l) = line(e).filter(|_| !quiet) {
                    let _ = tx.send(l);
                }
            };
            work(&report)
        });
        for l in rx {
            writeln!(out, "{l}")?;
            out.flush()?;
        }
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("the registry worker panicked"))
    })
}

pub(crate) fn run(store: &Store, args: &PullArgs, out: &mut dyn Write) -> Result<()> {
    let reference = Reference::parse(&args.name)?;
    let platform = match &args.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let mut options = registry_options()?;
    options.skip_tls_verify = !args.tls_verify;
    if args.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            bail!("tag can't be used with --all-tags/-a");
        }
        let pulled = with_progress(out, args.quiet, |report| {
            hoist_registry::pull_all_tags(
                store,
                &reference,
                &platform,
                PullOptions {
                    registry: Some(&options),
                    progress: Some(report),
                    concurrency: 0,
                },
            )
        })??;
        if !args.quiet {
            for p in &pulled {
                writeln!(out, "Digest: {}", p.digest)?;
            }
            let status = if pulled.iter().any(|p| p.updated) {
                "Downloaded newer image for"
            } else {
                "Image is up to date for"
            };
            writeln!(out, "Status: {status} {}", reference.familiar_repository())?;
        }
        writeln!(out, "{}", reference.repository())?;
        return Ok(());
    }
    if reference.tag().is_none() && reference.digest().is_none() && !args.quiet {
        writeln!(out, "Using default tag: latest")?;
    }
    let pulled = with_progress(out, args.quiet, |report| {
        hoist_registry::pull_image(
            store,
            &reference,
            &platform,
            PullOptions {
                registry: Some(&options),
                progress: Some(report),
                concurrency: 0,
            },
        )
    })??;
    if !args.quiet {
        writeln!(out, "Digest: {}", pulled.digest)?;
        let status = if pulled.updated {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        writeln!(out, "Status: {status} {}", pulled.reference.familiar())?;
    }
    writeln!(out, "{}", pulled.reference)?;
    Ok(())
}
