//! `hoist save` and `hoist load`.

use std::fs::File;
use std::io::{self, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use hoist_oci::Reference;
use hoist_store::Store;

use crate::cli::{LoadArgs, SaveArgs};

pub(crate) fn save(store: &Store, args: &SaveArgs, out: &mut dyn Write) -> Result<()> {
    let mut images: Vec<(hoist_oci::Digest, Vec<Reference>)> = Vec::new();
    for name in &args.images {
        let id = store.resolve(name)?;
        // A name saves that name; an id saves every tag of the image (docker).
        let tags = match Reference::parse(name) {
            Ok(r)
                if store
                    .image(&id)?
                    .tags
                    .contains(&r.clone().with_default_tag()) =>
            {
                vec![r.with_default_tag()]
            }
            _ if name.starts_with("sha256:") || id.hex().starts_with(name) => {
                store.image(&id)?.tags
            }
            _ => Vec::new(),
        };
        match images.iter_mut().find(|(i, _)| *i == id) {
            Some((_, t)) => t.extend(
                tags.into_iter()
                    .filter(|x| !t.contains(x))
                    .collect::<Vec<_>>(),
            ),
            None => images.push((id, tags)),
        }
    }
    match &args.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".hoist-save-")
                .tempfile_in(dir)
                .with_context(|| {
                    format!("failed to save image: creating a file in {}", dir.display())
                })?;
            let mut w = io::BufWriter::with_capacity(256 * 1024, tmp.as_file());
            hoist_store::save_archive(store, &images, &mut w)?;
            w.flush()?;
            drop(w);
            tmp.persist(path)
                .with_context(|| format!("failed to save image: writing {}", path.display()))?;
        }
        None => {
            if io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            hoist_store::save_archive(store, &images, out)?;
        }
    }
    Ok(())
}

pub(crate) fn load(store: &Store, args: &LoadArgs, out: &mut dyn Write) -> Result<()> {
    let loaded = match args
        .input
        .as_deref()
        .filter(|p| *p != std::path::Path::new("-"))
    {
        Some(path) => {
            let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
            store.load_archive(f)?
        }
        None => {
            if io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            store.load_archive(io::stdin().lock())?
        }
    };
    if !args.quiet {
        for img in &loaded {
            if img.tags.is_empty() {
                writeln!(out, "Loaded image ID: {}", img.id)?;
            }
            for t in &img.tags {
                writeln!(out, "Loaded image: {}", t.familiar())?;
            }
        }
    }
    Ok(())
}
