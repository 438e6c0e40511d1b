//! hoist-test
