//! The `hoist` binary: command line, printing and the one error renderer.

mod diagnostic;

fn main() {}
