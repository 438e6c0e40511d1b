//! The `hoist` binary: command line, printing and the one error renderer.

mod cli;
mod commands;
mod diagnostic;
mod progress;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Must come first: the sandbox init is this binary re-executed, and it must stay
    // single-threaded until it has set up its namespaces.
    hoist_executor::init_if_requested();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let mut stderr = std::io::stderr().lock();
            // Errors that carry their own rendering (Dockerfile snippets) print as they are.
            let _ = writeln!(stderr, "Error: {}", render_chain(&err));
            ExitCode::from(1)
        }
    }
}

/// `outer: cause: root cause`, skipping causes already spelled out by their parent.
fn render_chain(err: &anyhow::Error) -> String {
    error_chain(err.as_ref())
}

/// `outer: cause: root cause` of any error, skipping causes already spelled out by their parent.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
        cur = cause.source();
    }
    out
}
