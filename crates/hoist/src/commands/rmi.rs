//! `hoist tag`, `hoist rmi`.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use hoist_oci::Reference;
use hoist_store::{Removal, Store};

use crate::cli::{RmiArgs, TagArgs};

/// Parses a name the user wants to create, with docker's message.
pub(crate) fn parse_target(s: &str) -> Result<Reference> {
    let r = Reference::parse(s).map_err(|e| {
        anyhow!("Error parsing reference: {s:?} is not a valid repository/tag: {e}")
    })?;
    if r.digest().is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    Ok(r.with_default_tag())
}

pub(crate) fn tag(store: &Store, args: &TagArgs) -> Result<()> {
    let target = parse_target(&args.target)?;
    let id = store.resolve(&args.source)?;
    store.tag(&target, &id)?;
    Ok(())
}

fn print_removal(r: &Removal, out: &mut dyn Write) -> io::Result<()> {
    for u in &r.untagged {
        writeln!(out, "Untagged: {}", u.familiar())?;
    }
    if let Some(id) = &r.deleted {
        writeln!(out, "Deleted: {id}")?;
        for l in &r.deleted_layers {
            writeln!(out, "Deleted: {l}")?;
        }
    }
    Ok(())
}

pub(crate) fn rmi(store: &Store, args: &RmiArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let mut failed = false;
    for name in &args.images {
        match store.remove(name, args.force) {
            Ok(r) => print_removal(&r, out)?,
            Err(e) => {
                out.flush()?;
                let _ = writeln!(io::stderr(), "Error: {e}");
                failed = true;
            }
        }
    }
    out.flush()?;
    // Files of what was removed go now, or at the next sweep if another process is busy.
    store.gc()?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
