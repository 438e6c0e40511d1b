//! hoist-dockerfile
