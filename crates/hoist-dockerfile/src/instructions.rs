//! Typed instructions.

use crate::{Dockerfile, Error};

/// Placeholder.
pub fn parse_instructions(_file: &Dockerfile) -> Result<(), Error> {
    Ok(())
}
