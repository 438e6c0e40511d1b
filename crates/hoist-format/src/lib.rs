//! hoist-format renders command output exactly as the docker CLI does:
//! human sizes and ages, Go templates for `--format`, and aligned tables.
//!
//! `hoist images`, `hoist history` and `hoist image inspect` promise
//! byte-identical output to docker, so scripts that parse docker's output
//! keep working. Every rule here is taken from the docker CLI and go-units
//! sources, including their quirks (`1e+03kB`, `About an hour`, the header
//! row rendered from the same template, unpadded last columns).
//!
//! Data flows one way: the caller builds rows (any `Serialize` value whose
//! keys are docker's field names, such as `ID`, `Repository` or `Size`),
//! picks a [`Format`], and [`render`] writes the result to a `Write`. This
//! crate never prints on its own.
//!
//! ```
//! use hoist_format::{Format, IMAGES_HEADERS, render};
//!
//! let rows = [serde_json::json!({
//!     "Repository": "busybox", "Tag": "latest", "ID": "a416a98b71e2",
//!     "CreatedSince": "2 months ago", "Size": "4.26MB",
//! })];
//! let mut out = Vec::new();
//! render(&Format::images("", false, false), IMAGES_HEADERS, &rows, &mut out)?;
//! assert_eq!(
//!     String::from_utf8(out).unwrap(),
//!     "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE\n\
//!      busybox      latest    a416a98b71e2   2 months ago   4.26MB\n",
//! );
//! # Ok::<(), hoist_format::Error>(())
//! ```

mod display;
mod format;
mod json;
mod size;
mod tabwriter;
mod template;
mod time;

pub use display::{ellipsis, truncate_id};
pub use format::{
    DEFAULT_HISTORY_TABLE, DEFAULT_IMAGES_TABLE, DEFAULT_IMAGES_TABLE_WITH_DIGEST, Format,
    HISTORY_HEADERS, IMAGES_HEADERS, NON_HUMAN_HISTORY_TABLE, render, render_inspect, render_whole,
};
pub use size::{bytes_size, human_size, human_size_with_precision};
pub use tabwriter::TabWriter;
pub use template::Template;
pub use time::{
    created_since, go_time_string, go_zero_time, history_created_since, human_duration, rfc3339,
};

/// Why output could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--format` template does not parse. Docker exits 64 for this in
    /// `inspect`.
    #[error("template parsing error: {message}")]
    Parse { message: String },
    /// The template failed on a row (docker words this as a parsing error too).
    #[error("template parsing error: {message}")]
    Execute { message: String },
    /// A row could not be turned into template data.
    #[error("row {index} cannot be used as template data: {message}")]
    Data { index: usize, message: String },
    /// Writing the output failed.
    #[error("failed to write output")]
    Write(#[source] std::io::Error),
}
