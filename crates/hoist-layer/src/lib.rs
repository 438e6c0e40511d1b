//! hoist-layer
