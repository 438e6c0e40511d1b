//! hoist-oci
