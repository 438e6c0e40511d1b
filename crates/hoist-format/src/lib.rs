//! hoist-format
