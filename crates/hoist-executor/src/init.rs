//! The sandbox side: the re-exec'd init, pid 1 of the new pid namespace, and the command's last
//! steps before execve. See the crate docs for the process tree.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, WaitOptions, WaitStatus};
use rustix::thread::UnshareFlags;
use serde::{Deserialize, Serialize};

use crate::ExitStatus;
use crate::error::{Errno, SandboxError};
use crate::spec::{DEFAULT_PATH, Network, RunSpec};
use crate::sys::{self, Fork};
use crate::user::{self, ExecUser};

type Result<T> = std::result::Result<T, SandboxError>;

/// Where the parent puts the spec pipe and the result pipe.
pub(crate) const SPEC_FD: i32 = 3;
pub(crate) const RESULT_FD: i32 = 4;
/// Where the parent puts its end of the socket that receives the pty master (tty runs only).
pub(crate) const TTY_FD: i32 = 5;

/// Blocked in the init and pid 1 while they forward: the forwarded signals, and SIGCHLD so
/// `sigwaitinfo` also wakes for a child's exit.
fn forwarding_set() -> Vec<i32> {
    let mut set = crate::signals::FORWARDED_SIGNALS.to_vec();
    set.push(libc::SIGCHLD);
    set
}

/// What the parent sends on the spec pipe.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) spec: RunSpec,
    /// Host directory with `rootfs/` (the mount point) and the generated /etc files.
    pub(crate) state_dir: PathBuf,
    /// Pass the forwarded signals down to the command (the caller forwards them to the init).
    pub(crate) forward_signals: bool,
    /// The pty's initial size (rows, columns), for `spec.tty`.
    pub(crate) winsize: Option<(u16, u16)>,
}

/// One JSON line on the result pipe.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Setup or exec failed; the first one wins.
    Error(SandboxError),
    /// The command ended (sent by pid 1 after cleanup).
    Exit(ExitStatus),
}

/// Writes [`Message`]s to the result pipe.
struct Reporter(OwnedFd);

impl Reporter {
    fn send(&self, msg: &Message) -> Result<()> {
        let mut line = serde_json::to_vec(msg).expect("messages always serialise");
        line.push(b'\n');
        let mut rest = &line[..];
        while !rest.is_empty() {
            match rustix::io::write(self.0.as_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(SandboxError::Report { errno: e.into() }),
            }
        }
        Ok(())
    }

    fn error(&self, e: SandboxError) {
        // If even this fails the parent reports "no result" with our exit status.
        let _ = self.send(&Message::Error(e));
    }
}

/// Entry point of the re-exec'd init. Never returns.
pub(crate) fn main() -> ! {
    let Some(report_fd) = sys::take_inherited_fd(RESULT_FD) else {
        // Not started by `run` (someone typed the hidden argument): nothing to report to.
        std::process::exit(125);
    };
    let reporter = Reporter(report_fd);
    let tty_socket = sys::take_inherited_fd(TTY_FD);
    // Opened now: pid 1's pivot_root moves this process's root into the sandbox too.
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok();
    let code = match intermediate(&reporter, tty_socket) {
        Ok(code) => code,
        Err(e) => {
            reporter.error(e);
            125
        }
    };
    // The caller waits for its pipes to close. Closed by the exit, they would be released
    // only after the sandbox's mounts, which the exit releases first (tens of milliseconds
    // for an overlay over a large tree): let them go now, and the caller goes on while the
    // mounts are released.
    drop(reporter);
    if let Some(null) = null {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    std::process::exit(code)
}

fn read_request() -> Result<Request> {
    let bad = |message: String| SandboxError::Spec { message };
    let fd = sys::take_inherited_fd(SPEC_FD).ok_or_else(|| bad("fd 3 is not open".to_owned()))?;
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&buf).map_err(|e| bad(e.to_string()))
}

fn set(what: &str) -> impl FnOnce(rustix::io::Errno) -> SandboxError {
    let what = what.to_owned();
    move |e| SandboxError::Set {
        what,
        errno: e.into(),
    }
}

/// The first process: unshares the namespaces and forks pid 1, then waits for it.
fn intermediate(reporter: &Reporter, tty_socket: Option<OwnedFd>) -> Result<i32> {
    rustix::io::fcntl_setfd(&reporter.0, rustix::io::FdFlags::CLOEXEC)
        .map_err(set("close-on-exec on the result pipe"))?;
    if let Some(s) = &tty_socket {
        rustix::io::fcntl_setfd(s, rustix::io::FdFlags::CLOEXEC)
            .map_err(set("close-on-exec on the terminal socket"))?;
    }
    let req = read_request()?;
    if req.forward_signals {
        // Out of the caller's session: a terminal's ^C reaches the caller only, which forwards
        // it once (as docker's container is outside the client's process group).
        rustix::process::setsid().map_err(set("a new session"))?;
        // Already blocked by the caller's pre-exec; pid 1 inherits the mask.
        sys::block_signals(&forwarding_set()).map_err(|errno| SandboxError::Set {
            what: "the signal mask".to_owned(),
            errno,
        })?;
    }
    // Die with the caller: a killed build must not leave sandboxes behind.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(set("the parent death signal"))?;

    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    let mut names = "mount, pid, uts, ipc".to_owned();
    if req.spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
        names.push_str(", net");
    }
    sys::unshare(flags).map_err(|errno| SandboxError::Unshare {
        namespaces: names,
        errno,
    })?;

    match sys::fork().map_err(|errno| SandboxError::Fork {
        what: "sandbox pid 1".to_owned(),
        errno,
    })? {
        Fork::Child => {
            let code = match pid1(&req, reporter, tty_socket) {
                Ok(()) => 0,
                Err(e) => {
                    reporter.error(e);
                    125
                }
            };
            std::process::exit(code)
        }
        Fork::Parent(pid) => {
            drop(tty_socket);
            let status = if req.forward_signals {
                forward_until(pid, "sandbox pid 1")?
            } else {
                wait_for(pid, "sandbox pid 1")?
            };
            Ok(match status {
                ExitStatus::Code(c) => c,
                ExitStatus::Signal(s) => 128 + s,
            })
        }
    }
}

fn exit_status(st: WaitStatus) -> ExitStatus {
    match (st.exit_status(), st.terminating_signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        // Only exited/signalled statuses are asked for.
        (None, None) => ExitStatus::Code(255),
    }
}

fn wait_for(pid: Pid, what: &str) -> Result<ExitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, st))) => return Ok(exit_status(st)),
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(SandboxError::Wait {
                    what: what.to_owned(),
                    errno: e.into(),
                });
            }
        }
    }
}

/// Pid 1 of the sandbox: builds the root, runs the command, reaps, cleans up, reports.
fn pid1(req: &Request, reporter: &Reporter, tty_socket: Option<OwnedFd>) -> Result<()> {
    let spec = &req.spec;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(set("the parent death signal"))?;
    // Our own files get exactly the modes we ask for; the command gets 022 back.
    rustix::process::umask(rustix::fs::Mode::empty());

    let stubs = crate::rootfs::setup(spec, &req.state_dir)?;
    // Allocated in the sandbox's own devpts, so the command sees /dev/pts/0 as runc's does.
    let slave = match (spec.tty, tty_socket) {
        (true, Some(socket)) => Some(crate::terminal::open_pty(&socket, req.winsize)?),
        (true, None) => {
            return Err(SandboxError::Terminal {
                what: "receive the terminal socket".to_owned(),
                errno: Errno(libc::EBADF),
            });
        }
        (false, _) => None,
    };
    rustix::system::sethostname(spec.hostname.as_bytes()).map_err(set("the hostname"))?;
    if spec.network == Network::None {
        sys::loopback_up().map_err(|errno| SandboxError::Set {
            what: "the loopback interface up".to_owned(),
            errno,
        })?;
    }

    let user = resolve_user(&spec.user)?;
    crate::rootfs::create_cwd(&spec.cwd, user.uid, user.gid)?;
    let env = command_env(&spec.env, &user);
    // The command must not open /proc/1/* of a process that still holds the host's binary.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(set("pid 1 non-dumpable"))?;

    let child = match sys::fork().map_err(|errno| SandboxError::Fork {
        what: "command".to_owned(),
        errno,
    })? {
        Fork::Child => {
            let e = exec_command(spec, &user, &env, slave.as_ref());
            reporter.error(e);
            std::process::exit(127);
        }
        Fork::Parent(pid) => pid,
    };

    // The command holds the only copies now, so the caller sees EOF when it and its children
    // are gone.
    drop(slave);
    let status = if req.forward_signals {
        forward_until(child, "command")?
    } else {
        reap_until(child)?
    };
    // Whatever the command left running dies with it, as when a container's init exits.
    sys::kill_all_others();
    while !matches!(
        rustix::process::wait(WaitOptions::empty()),
        Err(rustix::io::Errno::CHILD)
    ) {}

    crate::rootfs::remove_stubs(&stubs)?;
    reporter.send(&Message::Exit(status))
}

/// Reap every child (orphans are re-parented to us) until `child` itself exits.
fn reap_until(child: Pid) -> Result<ExitStatus> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, st))) if pid == child => return Ok(exit_status(st)),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(SandboxError::Wait {
                    what: "command".to_owned(),
                    errno: e.into(),
                });
            }
        }
    }
}

/// With the forwarded signals and SIGCHLD blocked: pass each forwarded signal to `child` and
/// reap children (every one, as pid 1 must) until `child` has exited.
fn forward_until(child: Pid, what: &str) -> Result<ExitStatus> {
    let set = forwarding_set();
    let wait_err = |errno: Errno| SandboxError::Wait {
        what: what.to_owned(),
        errno,
    };
    loop {
        // Reap first: the child may have exited before SIGCHLD was waited for.
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, st))) if pid == child => return Ok(exit_status(st)),
                Ok(Some(_)) | Err(rustix::io::Errno::INTR) => {}
                Ok(None) => break,
                Err(e) => return Err(wait_err(e.into())),
            }
        }
        let sig = sys::wait_signal(&set).map_err(wait_err)?;
        if sig != libc::SIGCHLD {
            crate::signals::forward(child, sig);
        }
    }
}

fn read_image_file(path: &str) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::UserFile {
            path: path.to_owned(),
            errno: Errno::from(&e),
        }),
    }
}

fn resolve_user(spec: &str) -> Result<ExecUser> {
    let passwd = read_image_file("/etc/passwd")?;
    let group = read_image_file("/etc/group")?;
    user::resolve(spec, passwd.as_deref(), group.as_deref())
}

/// The spec's env plus PATH and HOME when absent (as BuildKit and runc add them).
pub(crate) fn command_env(env: &[String], user: &ExecUser) -> Vec<String> {
    let has = |k: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
    };
    let mut out = env.to_vec();
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        out.push(format!("HOME={}", user.home));
    }
    out
}

/// Go's `exec.LookPath` as runc uses it: the first PATH entry holding a non-directory with an
/// execute bit.
fn look_path(name: &str, env: &[String]) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if !meta.is_dir() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(SandboxError::NotFound {
        name: name.to_owned(),
    })
}

/// Docker's default capability set (moby `oci/caps/defaults.go`).
const DEFAULT_CAPS: [caps::Capability; 14] = {
    use caps::Capability::*;
    [
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_MKNOD,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
};

fn caps_err(e: caps::errors::CapsError) -> SandboxError {
    SandboxError::Capabilities {
        message: e.to_string(),
    }
}

/// Runc's order: bounding set, keep caps across setuid, groups/gid/uid, then the sets.
/// As with BuildKit, inheritable and ambient are empty (CVE-2022-24769), so a non-root user's
/// execve of a binary without file capabilities ends with none but the bounding set.
fn drop_privileges(user: &ExecUser) -> Result<()> {
    use caps::CapSet;
    let keep: caps::CapsHashSet = DEFAULT_CAPS.into_iter().collect();
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err)?;
        }
    }
    rustix::thread::set_keep_capabilities(true).map_err(set("keep-capabilities"))?;
    let ids = |what: String| {
        move |e: rustix::io::Errno| SandboxError::SetIds {
            what,
            errno: e.into(),
        }
    };
    let groups: Vec<rustix::process::Gid> = user
        .groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    rustix::thread::set_thread_groups(&groups)
        .map_err(ids(format!("supplementary groups {:?}", user.groups)))?;
    let gid = rustix::process::Gid::from_raw(user.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(ids(format!("gid {}", user.gid)))?;
    let uid = rustix::process::Uid::from_raw(user.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(ids(format!("uid {}", user.uid)))?;
    // Effective first: each step must keep effective within permitted.
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err)?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new()).map_err(caps_err)?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    rustix::thread::set_keep_capabilities(false).map_err(set("keep-capabilities"))
}

/// The command's process after fork: only returns the error that prevented the exec.
fn exec_command(
    spec: &RunSpec,
    user: &ExecUser,
    env: &[String],
    tty: Option<&OwnedFd>,
) -> SandboxError {
    match prepare_exec(spec, user, env, tty) {
        Ok((path, argv, envp)) => SandboxError::Exec {
            path: path.to_string_lossy().into_owned(),
            errno: sys::execve(&path, &argv, &envp),
        },
        Err(e) => e,
    }
}

fn prepare_exec(
    spec: &RunSpec,
    user: &ExecUser,
    env: &[String],
    tty: Option<&OwnedFd>,
) -> Result<(CString, Vec<CString>, Vec<CString>)> {
    sys::reset_signals();
    if let Some(slave) = tty {
        crate::terminal::attach(slave, user.uid)?;
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::chdir(spec.cwd.as_str()).map_err(|e| SandboxError::Cwd {
        path: spec.cwd.clone(),
        errno: e.into(),
    })?;
    drop_privileges(user)?;
    let path = look_path(&spec.args[0], env)?;
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| SandboxError::Exec {
            path: spec.args[0].clone(),
            errno: Errno(libc::EINVAL),
        })
    };
    let argv = spec
        .args
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|e| cstr(e.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    Ok((cstr(path.as_os_str().as_bytes())?, argv, envp))
}
