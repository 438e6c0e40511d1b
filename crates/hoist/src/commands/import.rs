//! `hoist import`: a root filesystem tarball becomes a one-layer image.

use std::fs::File;
use std::io::{self, Write};

use anyhow::{Context, Result, bail};
use hoist_oci::{ContainerConfig, History, ImageConfig, Platform, RootFs};
use hoist_store::Store;

use crate::cli::ImportArgs;

pub(crate) fn run(store: &Store, args: &ImportArgs, out: &mut dyn Write) -> Result<()> {
    let target = args
        .reference
        .as_deref()
        .map(super::rmi::parse_target)
        .transpose()?;
    let platform = match &args.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    if args.file.contains("://") {
        bail!("importing from a URL is not supported: download the file and import it");
    }
    let mut config = ContainerConfig::default();
    for change in &args.changes {
        super::changes::apply(&mut config, change)?;
    }
    let layer = if args.file == "-" {
        store.import_layer(&mut io::stdin().lock(), None)?
    } else {
        let mut f = File::open(&args.file).with_context(|| format!("open {}", args.file))?;
        store.import_layer(&mut f, None)?
    };
    let created = jiff::Timestamp::now().to_string();
    let comment = args
        .message
        .clone()
        .unwrap_or_else(|| "Imported from -".to_owned());
    let image = ImageConfig {
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone(),
        os: platform.os.clone(),
        config: Some(config),
        created: Some(created.clone()),
        comment: Some(comment.clone()),
        history: vec![History {
            created: Some(created),
            comment: Some(comment),
            ..History::default()
        }],
        rootfs: RootFs {
            diff_ids: vec![layer.diff_id],
            ..RootFs::default()
        },
        ..ImageConfig::default()
    };
    let id = store.put_image(&image.to_bytes(), None)?;
    if let Some(t) = target {
        store.tag(&t, &id)?;
    }
    writeln!(out, "{id}")?;
    Ok(())
}
