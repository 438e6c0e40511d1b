//! Errors. [`SandboxError`] happens inside the sandbox and crosses the result pipe as JSON, so its
//! causes are errno values ([`Errno`]) rather than `io::Error`s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An OS error number that survives serialisation; displays like `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errno(pub i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

impl std::error::Error for Errno {}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno(e.raw_os_error())
    }
}

impl From<&std::io::Error> for Errno {
    fn from(e: &std::io::Error) -> Self {
        // Errors without an errno (rare: e.g. invalid data) become EIO.
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// A failure inside the sandbox, before the command was exec'd (or while cleaning up after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SandboxError {
    /// The spec could not be read from the parent.
    #[error("failed to read the sandbox spec: {message}")]
    Spec { message: String },
    /// `unshare` of the namespaces failed.
    #[error("failed to create the {namespaces} namespaces")]
    Unshare {
        namespaces: String,
        #[source]
        errno: Errno,
    },
    /// `fork` failed.
    #[error("failed to fork the {what}")]
    Fork {
        what: String,
        #[source]
        errno: Errno,
    },
    /// Waiting for a child failed.
    #[error("failed to wait for the {what}")]
    Wait {
        what: String,
        #[source]
        errno: Errno,
    },
    /// A mount failed.
    #[error("failed to mount {what} on {target}")]
    Mount {
        what: String,
        target: String,
        #[source]
        errno: Errno,
    },
    /// An unmount failed.
    #[error("failed to unmount {target}")]
    Unmount {
        target: String,
        #[source]
        errno: Errno,
    },
    /// Creating a file, directory, device or symlink failed.
    #[error("failed to create {path}")]
    Create {
        path: String,
        #[source]
        errno: Errno,
    },
    /// A mount target exists with the wrong type.
    #[error("cannot mount {what} on {target}: {problem}")]
    Target {
        what: String,
        target: String,
        problem: String,
    },
    /// Removing a mount stub after the run failed.
    #[error("failed to remove the mount stub {path}")]
    RemoveStub {
        path: String,
        #[source]
        errno: Errno,
    },
    /// `pivot_root` into the new root failed.
    #[error("failed to pivot_root into {path}")]
    PivotRoot {
        path: String,
        #[source]
        errno: Errno,
    },
    /// A process attribute (hostname, loopback, dumpable, death signal) could not be set.
    #[error("failed to set {what}")]
    Set {
        what: String,
        #[source]
        errno: Errno,
    },
    /// Reading the image's /etc/passwd or /etc/group failed.
    #[error("failed to read {path} in the image")]
    UserFile {
        path: String,
        #[source]
        errno: Errno,
    },
    /// A user name not in /etc/passwd (runc's wording).
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser { name: String },
    /// A group name not in /etc/group (runc's wording).
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup { name: String },
    /// A numeric id out of range.
    #[error("invalid user spec {spec}: id out of range")]
    BadId { spec: String },
    /// setgroups/setgid/setuid failed.
    #[error("failed to switch to {what}")]
    SetIds {
        what: String,
        #[source]
        errno: Errno,
    },
    /// Changing capabilities failed.
    #[error("failed to set capabilities: {message}")]
    Capabilities { message: String },
    /// The working directory could not be created or entered.
    #[error("failed to enter the working directory {path}")]
    Cwd {
        path: String,
        #[source]
        errno: Errno,
    },
    /// `argv[0]` is not in PATH (runc's wording).
    #[error("exec: \"{name}\": executable file not found in $PATH")]
    NotFound { name: String },
    /// execve failed.
    #[error("exec: \"{path}\"")]
    Exec {
        path: String,
        #[source]
        errno: Errno,
    },
    /// Allocating or attaching the command's terminal failed.
    #[error("failed to {what}")]
    Terminal {
        what: String,
        #[source]
        errno: Errno,
    },
    /// The result pipe could not be written.
    #[error("failed to report to the parent")]
    Report {
        #[source]
        errno: Errno,
    },
}

/// Why [`run`](crate::run) failed. The command's own exit code is not an error.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The sandbox needs real root (no user namespaces).
    #[error("the sandbox needs root privileges (running as uid {uid})")]
    NotRoot { uid: u32 },
    /// A second [`SignalForwarder`](crate::SignalForwarder) while one is installed.
    #[error("signal forwarding is already installed in this process")]
    ForwarderInstalled,
    /// Installing the signal handlers failed.
    #[error("failed to install the signal handlers")]
    Signals {
        #[source]
        source: std::io::Error,
    },
    /// The caller's terminal or the command's pty could not be handled.
    #[error("failed to {what}")]
    Terminal {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// argv is empty.
    #[error("no command to run: argv is empty")]
    EmptyArgs,
    /// A mount target or the cwd is not an absolute path.
    #[error("{what} {path} is not an absolute path")]
    RelativePath { what: &'static str, path: String },
    /// A path of the spec is not UTF-8 (the spec travels as JSON).
    #[error("cannot pass the spec to the sandbox")]
    EncodeSpec {
        #[source]
        source: serde_json::Error,
    },
    /// Preparing the sandbox's state directory or files on the host failed.
    #[error("failed to prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Creating a pipe to the init failed.
    #[error("failed to create a pipe to the sandbox")]
    Pipe {
        #[source]
        source: std::io::Error,
    },
    /// Spawning the init (`/proc/self/exe`) failed.
    #[error("failed to start the sandbox init {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Talking to the init failed.
    #[error("failed to {what} the sandbox init")]
    Channel {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The init reported something unreadable.
    #[error("the sandbox init sent an invalid message: {line}")]
    BadMessage { line: String },
    /// The init ended without reporting how the command ended.
    #[error(
        "the sandbox init ended without a result ({status}); was init_if_requested() called first in main?"
    )]
    NoResult { status: std::process::ExitStatus },
    /// Setting up the sandbox or starting the command failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}
