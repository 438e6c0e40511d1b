//! What to run and in which sandbox. Serialised as JSON to the sandbox init.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// BuildKit's hostname for build containers.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// The PATH a command gets when its env has none (BuildKit's and docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One command to run in a fresh sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The root filesystem; writes land in the overlay's upper dir (or the directory itself).
    pub rootfs: Rootfs,
    /// argv; `argv[0]` is looked up in the env's PATH when it has no `/`.
    pub args: Vec<String>,
    /// `K=V` entries, exactly what the command gets, plus PATH and HOME when absent.
    pub env: Vec<String>,
    /// Working directory, created (0755, owned by the user) when missing.
    pub cwd: String,
    /// `""`, `name`, `uid`, `name:group`, `uid:gid`, resolved in the rootfs's /etc/passwd and /etc/group.
    pub user: String,
    /// The sandbox's hostname, also in its /etc/hosts and /etc/hostname.
    pub hostname: String,
    /// Which network namespace the command sees.
    pub network: Network,
    /// Extra `/etc/hosts` entries.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// Mounts on top of the root, in order.
    pub mounts: Vec<Mount>,
    /// The command's stdin.
    pub stdin: Stdin,
    /// Run the command on a new pty of the sandbox (see [`run_with`](crate::run_with)).
    pub tty: bool,
}

impl RunSpec {
    /// A spec with BuildKit's defaults: cwd `/`, root user, hostname `buildkitsandbox`, host
    /// network, no mounts, stdin from /dev/null.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        RunSpec {
            rootfs,
            args,
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: String::new(),
            hostname: DEFAULT_HOSTNAME.to_owned(),
            network: Network::Host,
            extra_hosts: Vec::new(),
            mounts: Vec::new(),
            stdin: Stdin::Null,
            tty: false,
        }
    }
}

/// The root filesystem of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// An overlay: read-only `lowerdirs` (topmost first) under a writable `upperdir`.
    ///
    /// The overlay is volatile: nothing syncs `upperdir` when the sandbox ends, so after a
    /// machine crash its contents are undefined until the caller syncs it. An upper and work
    /// directory pair may serve several sandboxes one after another.
    Overlay {
        /// Read-only layers, topmost first. May be empty only if `upperdir` is the whole root.
        lowerdirs: Vec<PathBuf>,
        /// Receives every change, with overlayfs whiteouts for deletions.
        upperdir: PathBuf,
        /// overlayfs's scratch directory, on the same filesystem as `upperdir`.
        workdir: PathBuf,
    },
    /// A plain directory used read-write as the root.
    Dir(PathBuf),
}

/// The sandbox's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (BuildKit's `default` and `host` for builds).
    Host,
    /// A new, empty network namespace with only `lo`, which is up.
    None,
}

/// A mount on top of the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// A recursive bind mount of a host path.
    Bind {
        /// Host path (file or directory).
        source: PathBuf,
        /// Absolute path inside the sandbox; created when missing and removed again afterwards.
        target: String,
        /// Refuse writes (the top mount is read-only; submounts keep their flags).
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path inside the sandbox; created when missing and removed again afterwards.
        target: String,
        /// Size limit in bytes (the kernel's default, half of RAM, when absent).
        size: Option<u64>,
    },
}

impl Mount {
    pub(crate) fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// Where the command's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdin {
    /// /dev/null.
    Null,
    /// The caller's stdin.
    Inherit,
}
