//! One module per verb; each takes its parsed arguments and the store, prints to stdout, and
//! returns an error for `main` to render.

mod build;
mod changes;
mod filters;
mod history;
mod images;
mod import;
mod inspect;
mod login;
mod prune;
mod pull;
mod push;
mod rmi;
mod run;
mod save_load;
mod system;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use hoist_store::Store;

use crate::cli::{Cli, Command, ImageCommand};
pub(crate) use run::RunArgs;

/// Opens the store, and says what a reboot cost it: layers written just before one are
/// checked when the store is next opened.
pub(crate) fn open_store(root: &std::path::Path) -> Result<Store> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let settled = store.settled_at_open();
    let mut err = io::stderr().lock();
    for layer in &settled.dropped {
        let _ = writeln!(
            err,
            "WARNING: layer {layer} lost data in a power loss and was dropped; build again the images that use it"
        );
    }
    if !settled.unpacked.is_empty() {
        let _ = writeln!(
            err,
            "WARNING: {} layer(s) written just before the last reboot were unpacked again from their blobs",
            settled.unpacked.len()
        );
    }
    Ok(store)
}

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let root = cli.root.clone().unwrap_or_else(Store::default_root);
    let open = || open_store(&root);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match cli.command {
        Command::Build(a)
        | Command::Image {
            command: ImageCommand::Build(a),
        } => {
            return build::run(&open()?, &a, &mut out);
        }
        Command::Images(a)
        | Command::Image {
            command: ImageCommand::Ls(a),
        } => images::run(&open()?, &a, &mut out)?,
        Command::History(a)
        | Command::Image {
            command: ImageCommand::History(a),
        } => {
            history::run(&open()?, &a, &mut out)?;
        }
        Command::Tag(a)
        | Command::Image {
            command: ImageCommand::Tag(a),
        } => rmi::tag(&open()?, &a)?,
        Command::Rmi(a)
        | Command::Image {
            command: ImageCommand::Rm(a),
        } => {
            return rmi::rmi(&open()?, &a, &mut out);
        }
        Command::Image {
            command: ImageCommand::Prune(a),
        } => prune::image_prune(&open()?, &a, &mut out)?,
        Command::Builder {
            command: crate::cli::BuilderCommand::Prune(a),
        } => prune::builder_prune(&open()?, &a, &mut out)?,
        Command::System {
            command: crate::cli::SystemCommand::Df(a),
        } => system::df(&open()?, &a, &mut out)?,
        Command::System {
            command: crate::cli::SystemCommand::Prune(a),
        } => prune::system_prune(&open()?, &a, &mut out)?,
        Command::Inspect(a)
        | Command::Image {
            command: ImageCommand::Inspect(a),
        } => {
            return inspect::run(&open()?, &a, &mut out);
        }
        Command::Import(a)
        | Command::Image {
            command: ImageCommand::Import(a),
        } => {
            import::run(&open()?, &a, &mut out)?;
        }
        Command::Save(a)
        | Command::Image {
            command: ImageCommand::Save(a),
        } => {
            save_load::save(&open()?, &a, &mut out)?;
        }
        Command::Load(a)
        | Command::Image {
            command: ImageCommand::Load(a),
        } => {
            save_load::load(&open()?, &a, &mut out)?;
        }
        Command::Pull(a)
        | Command::Image {
            command: ImageCommand::Pull(a),
        } => pull::run(&open()?, &a, &mut out)?,
        Command::Push(a)
        | Command::Image {
            command: ImageCommand::Push(a),
        } => push::run(&open()?, &a, &mut out)?,
        Command::Login(a) => login::login(&a, &mut out)?,
        Command::Logout(a) => login::logout(&a, &mut out)?,
        Command::Run(a) => {
            drop(out);
            return Ok(run::run(&root, &a));
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
