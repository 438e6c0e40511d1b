//! The Dockerfile frontend: text in, a build plan out, with BuildKit's
//! semantics and no I/O.
//!
//! - [`parse`] turns text into a syntax tree of raw instructions
//!   ([`Dockerfile`], [`Node`]) with line spans, directives and heredocs.
//! - [`instructions`] types every instruction and flag.
//! - [`shell`] expands `$var`/`${var…}` words exactly as BuildKit does.
//! - [`lower`] resolves ARG/ENV scoping, platforms and stage references into
//!   a [`hoist_plan::Plan`].
//! - [`ignore`] matches paths against `.dockerignore` patterns.

pub mod directives;
mod error;
mod flags;
pub mod ignore;
pub mod instructions;
pub mod lower;
pub mod mount;
mod parser;
mod quote;
pub mod shell;

pub use error::{Error, ErrorKind, Span};
pub use parser::{
    Dockerfile, Heredoc, Node, Warning, chomp, heredocs_from_line, parse, parse_heredoc,
    parse_json_array, parse_words,
};
pub use quote::go_quote;

/// The plan types lowering produces, re-exported so users need one crate.
pub use hoist_plan;
