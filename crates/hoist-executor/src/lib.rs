//! hoist-executor runs one command in a Linux sandbox the way BuildKit's runc executor runs a
//! Dockerfile `RUN` step.
//!
//! # Process model
//!
//! The builder is multi-threaded, and entering new namespaces (and a clean `fork`) needs a
//! single-threaded process. So [`run`] never unshares in the caller: it re-execs
//! `/proc/self/exe` with a hidden first argument ([`INIT_ARG`]). The binary's `main` calls
//! [`init_if_requested`] first thing, which turns that fresh, single-threaded process into the
//! sandbox init:
//!
//! ```text
//! caller (run)                 multi-threaded; writes the spec, streams output, reads the result
//!  └─ init        host pid ns  reads the spec (fd 3), unshares mnt/pid/uts/ipc(/net), forks
//!      └─ pid 1   new pid ns   mounts the root (overlay), /proc /dev /sys, hosts files, pivot_root,
//!          │                   reaps every zombie, removes mount stubs, reports the exit (fd 4)
//!          └─ command          user, groups, capabilities, cwd, then execve
//! ```
//!
//! The spec goes down as JSON on fd 3; results and setup errors come back as JSON lines on fd 4
//! ([`SandboxError`] is serialisable so an error in pid 1 or the command's pre-exec reaches the
//! caller typed). The command's stdout and stderr are pipes read by the caller and handed to the
//! `on_output` callback as they arrive.
//!
//! [`run_with`] adds what a foreground `docker run` needs: a [`SignalForwarder`] whose caught
//! signals travel init → pid 1 → command (each blocks them and forwards with `sigwaitinfo`), and
//! `tty`, a pty that pid 1 opens in the sandbox's devpts and passes to the caller over a unix
//! socket (fd 5), as runc's console socket does.
//!
//! This is the only crate of hoist allowed `unsafe`; it lives in the `sys` module, each block with
//! its `// SAFETY:` proof.
//!
//! Tests: `cargo test -p hoist-executor` needs root and Debian's `busybox-static`, and fails
//! without them. `tests/sandbox.rs` is a `harness = false` binary whose `main` calls
//! [`init_if_requested`] first, as `hoist`'s does, so the re-exec finds the init.

mod error;
mod init;
mod parent;
mod rootfs;
mod signals;
mod spec;
mod sys;
mod terminal;
mod user;

pub use error::{Errno, ExecError, SandboxError};
pub use parent::{run, run_with};
pub use signals::{FORWARDED_SIGNALS, SignalForwarder};
pub use spec::{DEFAULT_HOSTNAME, DEFAULT_PATH, Mount, Network, Rootfs, RunSpec, Stdin};

/// The hidden first argument that makes [`init_if_requested`] become the sandbox init.
pub const INIT_ARG: &str = "__hoist-sandbox";

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (shells report it as 128 + n).
    Signal(i32),
}

impl ExitStatus {
    /// True for `Code(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code: {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A chunk of the command's output, as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// Bytes the command wrote to its stdout.
    Stdout(&'a [u8]),
    /// Bytes the command wrote to its stderr.
    Stderr(&'a [u8]),
}

/// Call this first thing in `main`. If the process was re-exec'd by [`run`] as the sandbox init,
/// it runs the sandbox and never returns; otherwise it returns at once.
///
/// It must run before any thread is started: the init forks and unshares namespaces.
pub fn init_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(INIT_ARG)) {
        init::main();
    }
}
