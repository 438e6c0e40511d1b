//! The caller's side of [`run`]: prepare the state directory, start the init, feed it the spec,
//! stream the command's output and collect the result. Safe to call from any thread.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::event::{PollFd, PollFlags};

use crate::error::ExecError;
use crate::init::{Message, RESULT_FD, Request, SPEC_FD, TTY_FD};
use crate::signals::{FORWARDED_SIGNALS, SignalForwarder};
use crate::spec::{Network, RunSpec, Stdin};
use crate::terminal::{self, RawMode};
use crate::{ExitStatus, INIT_ARG, Output, sys};

const INIT_EXE: &str = "/proc/self/exe";

/// Run `spec.args` in a fresh sandbox, passing its output to `on_output` as it arrives.
///
/// Blocks until the command and everything it started have ended. The command's exit code (or
/// the signal that killed it) is `Ok`; failing to set up the sandbox or to exec the command is an
/// `Err`. The calling binary's `main` must call [`init_if_requested`](crate::init_if_requested)
/// first, since the sandbox init is a re-exec of `/proc/self/exe`.
pub fn run(spec: &RunSpec, on_output: &mut dyn FnMut(Output<'_>)) -> Result<ExitStatus, ExecError> {
    run_with(spec, on_output, None)
}

/// [`run`] for a foreground command, as `docker run` runs one.
///
/// With `signals`, the signals it catches ([`FORWARDED_SIGNALS`]) are passed to the command
/// (through the sandbox's init and pid 1), and the sandbox leaves the caller's session so a
/// terminal's ^C reaches the command once, by way of the caller.
///
/// With `spec.tty`, the command runs on a new pty of the sandbox (its controlling terminal,
/// stdin, stdout and stderr) whose output comes to `on_output` as [`Output::Stdout`]. With
/// `spec.stdin` [`Stdin::Inherit`] the caller's stdin is copied to the pty, and when stdin is a
/// terminal it is in raw mode meanwhile. The pty gets the caller's terminal size, and with
/// `signals` follows its resizes.
pub fn run_with(
    spec: &RunSpec,
    on_output: &mut dyn FnMut(Output<'_>),
    signals: Option<&SignalForwarder>,
) -> Result<ExitStatus, ExecError> {
    validate(spec)?;
    let state = tempfile::Builder::new()
        .prefix("hoist-sandbox-")
        .tempdir()
        .map_err(|source| ExecError::Prepare {
            path: std::env::temp_dir(),
            source,
        })?;
    write_state_files(spec, state.path())?;

    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| ExecError::Pipe { source: e.into() })
    };
    // Numbered above 4 so the child's dup2 onto 3 and 4 cannot clobber a source.
    let high = |fd: OwnedFd| {
        rustix::io::fcntl_dupfd_cloexec(&fd, 10).map_err(|e| ExecError::Pipe { source: e.into() })
    };
    let (spec_r, spec_w) = pipe()?;
    let (result_r, result_w) = pipe()?;
    let (spec_r, result_w) = (high(spec_r)?, high(result_w)?);

    // The caller's end, and the one the init gets at TTY_FD.
    let tty_socket = if spec.tty {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| ExecError::Pipe { source: e.into() })?;
        Some((ours, high(theirs)?))
    } else {
        None
    };

    let request = serde_json::to_vec(&Request {
        spec: spec.clone(),
        state_dir: state.path().to_path_buf(),
        forward_signals: signals.is_some(),
        winsize: if spec.tty {
            terminal::caller_winsize()
        } else {
            None
        },
    })
    .map_err(|source| ExecError::EncodeSpec { source })?;

    let mut cmd = Command::new(INIT_EXE);
    cmd.arg(INIT_ARG)
        .env_clear()
        .current_dir("/")
        .stdin(match spec.stdin {
            // With a tty the caller copies stdin to the pty itself.
            Stdin::Inherit if !spec.tty => Stdio::inherit(),
            _ => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut fds = vec![(spec_r, SPEC_FD), (result_w, RESULT_FD)];
    let tty_socket = tty_socket.map(|(ours, theirs)| {
        fds.push((theirs, TTY_FD));
        ours
    });
    sys::pass_fds(&mut cmd, fds);
    if signals.is_some() {
        // Pending, not fatal, until the init is ready to forward them.
        let mut set = FORWARDED_SIGNALS.to_vec();
        set.push(libc::SIGCHLD);
        sys::block_signals_on_exec(&mut cmd, &set);
    }
    let spawned = cmd.spawn();
    // Dropping the command closes our copies of the child's pipe ends, so EOF means the
    // sandbox is gone.
    drop(cmd);
    let mut child = spawned.map_err(|source| ExecError::Spawn {
        exe: PathBuf::from(INIT_EXE),
        source,
    })?;

    // A failed write means the init died early; its result (or lack of one) explains why.
    let _ = std::fs::File::from(spec_w).write_all(&request);

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let init_pid = rustix::process::Pid::from_raw(child.id() as i32);
    let pumped = (|| {
        let master = match &tty_socket {
            Some(socket) => terminal::receive_master(socket)?,
            None => None,
        };
        drop(tty_socket);
        let raw = match &master {
            Some(_) if spec.stdin == Stdin::Inherit => RawMode::enter()?,
            _ => None,
        };
        let pumped = pump(Pump {
            stdout,
            stderr,
            result: std::fs::File::from(result_r),
            master,
            copy_stdin: spec.tty && spec.stdin == Stdin::Inherit,
            signals: signals.zip(init_pid),
            on_output,
        });
        drop(raw);
        pumped
    })();
    if let Ok(result) = &pumped
        && let Some(exit) = reported(result)
    {
        // Every pipe is closed, so pid 1 has been reaped and nothing of the sandbox runs:
        // the init is in its exit, where tearing down the namespaces takes tens of
        // milliseconds (an RCU grace period). Nothing waits for that; a thread reaps it.
        std::thread::spawn(move || child.wait());
        drop(state);
        return exit;
    }
    let status = child.wait().map_err(|source| ExecError::Channel {
        what: "wait for",
        source,
    })?;
    let result = pumped?;
    drop(state);
    interpret(&result, status)
}

/// What the sandbox reported on its result channel, if it reported anything.
fn reported(result: &[u8]) -> Option<Result<ExitStatus, ExecError>> {
    let mut exit = None;
    for line in result.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Message>(line) {
            Ok(Message::Error(e)) => return Some(Err(e.into())),
            Ok(Message::Exit(s)) => exit = Some(s),
            Err(_) => {
                return Some(Err(ExecError::BadMessage {
                    line: String::from_utf8_lossy(line).into_owned(),
                }));
            }
        }
    }
    exit.map(Ok)
}

fn validate(spec: &RunSpec) -> Result<(), ExecError> {
    let uid = rustix::process::geteuid();
    if !uid.is_root() {
        return Err(ExecError::NotRoot { uid: uid.as_raw() });
    }
    if spec.args.is_empty() {
        return Err(ExecError::EmptyArgs);
    }
    if !spec.cwd.starts_with('/') {
        return Err(ExecError::RelativePath {
            what: "working directory",
            path: spec.cwd.clone(),
        });
    }
    for m in &spec.mounts {
        if !m.target().starts_with('/') {
            return Err(ExecError::RelativePath {
                what: "mount target",
                path: m.target().to_owned(),
            });
        }
    }
    Ok(())
}

/// BuildKit's /etc/hosts: localhost with the hostname, the IPv6 names, then the extra hosts.
pub(crate) fn hosts_file(spec: &RunSpec) -> String {
    let mut s = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        spec.hostname
    );
    for (host, ip) in &spec.extra_hosts {
        s.push_str(&format!("{ip}\t{host}\n"));
    }
    s
}

/// The host's resolv.conf; outside the host network, loopback nameservers are unreachable and
/// dropped, and with no nameserver left Google's are used (BuildKit's legacy-network transform).
pub(crate) fn resolv_conf(host: &str, network: Network) -> String {
    let is_loopback_ns = |line: &str| {
        let mut f = line.split_whitespace();
        f.next() == Some("nameserver")
            && f.next()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback())
    };
    let mut out = String::new();
    for line in host.lines() {
        if network == Network::None && is_loopback_ns(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let has_ns = out
        .lines()
        .any(|l| l.split_whitespace().next() == Some("nameserver"));
    if !has_ns {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn write_state_files(spec: &RunSpec, state: &Path) -> Result<(), ExecError> {
    let prepare = |path: PathBuf| move |source| ExecError::Prepare { path, source };
    let rootfs = state.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(prepare(rootfs.clone()))?;
    let host_resolv = match std::fs::read_to_string("/etc/resolv.conf") {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(prepare("/etc/resolv.conf".into())(e)),
    };
    let files = [
        hosts_file(spec),
        resolv_conf(&host_resolv, spec.network),
        format!("{}\n", spec.hostname),
    ];
    for (name, content) in crate::rootfs::GENERATED.iter().zip(files) {
        let path = state.join(name);
        std::fs::write(&path, content).map_err(prepare(path.clone()))?;
    }
    Ok(())
}

/// What [`pump`] copies.
struct Pump<'a, 'o> {
    stdout: std::process::ChildStdout,
    stderr: std::process::ChildStderr,
    result: std::fs::File,
    /// The command's pty (tty runs): its output goes on as stdout.
    master: Option<OwnedFd>,
    /// Copy the caller's stdin to `master`.
    copy_stdin: bool,
    /// Caught signals, forwarded to the init's pid.
    signals: Option<(&'a SignalForwarder, rustix::process::Pid)>,
    on_output: &'o mut dyn FnMut(Output<'_>),
}

/// Slots of the poll set.
const STDOUT: usize = 0;
const STDERR: usize = 1;
const RESULT: usize = 2;
const MASTER: usize = 3;
const STDIN: usize = 4;
const SIGNALS: usize = 5;

/// Read stdout, stderr, the result pipe (and the pty master) until all reach EOF, handing output
/// on as it comes, copying stdin to the pty and forwarding caught signals meanwhile. Returns the
/// result pipe's bytes.
fn pump(mut p: Pump<'_, '_>) -> Result<Vec<u8>, ExecError> {
    let mut open = [
        true,
        true,
        true,
        p.master.is_some(),
        p.copy_stdin && p.master.is_some(),
        p.signals.is_some(),
    ];
    if let Some(m) = &p.master {
        // Writes of stdin must not block while the command's output waits to be read.
        rustix::fs::fcntl_setfl(m, rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| ExecError::Pipe { source: e.into() })?;
    }
    let stdin = rustix::stdio::stdin();
    let mut to_master: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut collected = Vec::new();
    let channel = |source: std::io::Error| ExecError::Channel {
        what: "read from",
        source,
    };
    // The sandbox's pipes decide the end; stdin and signals only matter while it runs.
    while open[..=MASTER].iter().any(|o| *o) {
        let ready = {
            let flags = |o: bool| if o { PollFlags::IN } else { PollFlags::empty() };
            let master_flags = if open[MASTER] && !to_master.is_empty() {
                PollFlags::IN | PollFlags::OUT
            } else {
                flags(open[MASTER])
            };
            let signal_fd = match p.signals {
                Some((s, _)) => s.fd(),
                None => stdin,
            };
            let master_fd = p.master.as_ref().map_or(stdin, |m| m.as_fd());
            // Reading stdin pauses while the pty has a backlog.
            let read_stdin = open[STDIN] && open[MASTER] && to_master.len() < buf.len();
            let mut fds = [
                PollFd::new(&p.stdout, flags(open[STDOUT])),
                PollFd::new(&p.stderr, flags(open[STDERR])),
                PollFd::new(&p.result, flags(open[RESULT])),
                PollFd::from_borrowed_fd(master_fd, master_flags),
                PollFd::from_borrowed_fd(stdin, flags(read_stdin)),
                PollFd::from_borrowed_fd(signal_fd, flags(open[SIGNALS])),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(channel(e.into())),
            }
            fds.map(|f| f.revents())
        };
        if let Some((forwarder, init)) = p.signals.filter(|_| !ready[SIGNALS].is_empty()) {
            for sig in forwarder.take() {
                match (&p.master, sig) {
                    (Some(m), libc::SIGWINCH) => terminal::resize(m.as_fd()),
                    (None, libc::SIGWINCH) => {}
                    _ => crate::signals::forward(init, sig),
                }
            }
        }
        if let Some(m) = &p.master
            && !ready[MASTER].is_empty()
            && open[MASTER]
            && !to_master.is_empty()
        {
            match rustix::io::write(m, &to_master) {
                Ok(n) => {
                    to_master.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                // The pty is gone; its read side notices below.
                Err(_) => to_master.clear(),
            }
        }
        for i in [STDOUT, STDERR, RESULT, MASTER, STDIN] {
            if ready[i].is_empty() || !open[i] {
                continue;
            }
            let n = match i {
                STDOUT => p.stdout.read(&mut buf),
                STDERR => p.stderr.read(&mut buf),
                RESULT => p.result.read(&mut buf),
                MASTER => match p.master.as_ref().map(|m| rustix::io::read(m, &mut buf)) {
                    Some(Ok(n)) => Ok(n),
                    Some(Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR)) => continue,
                    // EIO: every slave is closed, the command and its children are gone.
                    Some(Err(_)) | None => Ok(0),
                },
                _ => match rustix::io::read(stdin, &mut buf) {
                    Ok(n) => Ok(n),
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
                    Err(_) => Ok(0),
                },
            };
            let n = match n {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(channel(e)),
            };
            if n == 0 {
                open[i] = false;
                continue;
            }
            match i {
                STDOUT | MASTER => (p.on_output)(Output::Stdout(&buf[..n])),
                STDERR => (p.on_output)(Output::Stderr(&buf[..n])),
                RESULT => collected.extend_from_slice(&buf[..n]),
                _ => to_master.extend_from_slice(&buf[..n]),
            }
        }
    }
    Ok(collected)
}

fn interpret(result: &[u8], status: std::process::ExitStatus) -> Result<ExitStatus, ExecError> {
    reported(result).unwrap_or(Err(ExecError::NoResult { status }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Rootfs;

    #[test]
    fn hosts_like_buildkit() {
        let mut spec = RunSpec::new(Rootfs::Dir("/x".into()), vec!["true".into()]);
        spec.extra_hosts = vec![("db".into(), "10.0.0.5".parse().unwrap())];
        assert_eq!(
            hosts_file(&spec),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.5\tdb\n"
        );
    }

    #[test]
    fn resolv_drops_loopback_outside_host_network() {
        let host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n";
        assert_eq!(resolv_conf(host, Network::Host), host);
        assert_eq!(
            resolv_conf(host, Network::None),
            "search example.com\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let host = "nameserver 10.1.1.1\n";
        assert_eq!(resolv_conf(host, Network::None), host);
    }
}
