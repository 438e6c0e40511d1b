//! `--change` instructions for `import` (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL,
//! USER, VOLUME, WORKDIR), applied to a container config.

use anyhow::{Result, bail};
use hoist_oci::ContainerConfig;

pub(crate) fn apply(_config: &mut ContainerConfig, change: &str) -> Result<()> {
    bail!("--change {change:?}: not available in this build yet")
}
