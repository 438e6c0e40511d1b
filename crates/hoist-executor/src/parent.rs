//! The caller's side of [`run`]: prepare the state directory, start the init, feed it the spec,
//! stream the command's output and collect the result. Safe to call from any thread.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::event::{PollFd, PollFlags};

use crate::error::ExecError;
use crate::init::{Message, RESULT_FD, Request, SPEC_FD};
use crate::spec::{Network, RunSpec, Stdin};
use crate::{ExitStatus, INIT_ARG, Output, sys};

const INIT_EXE: &str = "/proc/self/exe";

/// Run `spec.args` in a fresh sandbox, passing its output to `on_output` as it arrives.
///
/// Blocks until the command and everything it started have ended. The command's exit code (or
/// the signal that killed it) is `Ok`; failing to set up the sandbox or to exec the command is an
/// `Err`. The calling binary's `main` must call [`init_if_requested`](crate::init_if_requested)
/// first, since the sandbox init is a re-exec of `/proc/self/exe`.
pub fn run(spec: &RunSpec, on_output: &mut dyn FnMut(Output<'_>)) -> Result<ExitStatus, ExecError> {
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

    let request = serde_json::to_vec(&Request {
        spec: spec.clone(),
        state_dir: state.path().to_path_buf(),
    })
    .map_err(|source| ExecError::EncodeSpec { source })?;

    let mut cmd = Command::new(INIT_EXE);
    cmd.arg(INIT_ARG)
        .env_clear()
        .current_dir("/")
        .stdin(match spec.stdin {
            Stdin::Null => Stdio::null(),
            Stdin::Inherit => Stdio::inherit(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sys::pass_fds(&mut cmd, vec![(spec_r, SPEC_FD), (result_w, RESULT_FD)]);
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
    let pumped = pump(stdout, stderr, std::fs::File::from(result_r), on_output);
    let status = child.wait().map_err(|source| ExecError::Channel {
        what: "wait for",
        source,
    })?;
    let result = pumped?;
    drop(state);
    interpret(&result, status)
}

fn validate(spec: &RunSpec) -> Result<(), ExecError> {
    let uid = rustix::process::geteuid();
    if !uid.is_root() {
        return Err(ExecError::NotRoot { uid: uid.as_raw() });
    }
    if spec.tty {
        return Err(ExecError::TtyUnsupported);
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

/// Read stdout, stderr and the result pipe until all three reach EOF, handing output on as it
/// comes. Returns the result pipe's bytes.
fn pump(
    mut stdout: impl Read + AsFd,
    mut stderr: impl Read + AsFd,
    mut result: impl Read + AsFd,
    on_output: &mut dyn FnMut(Output<'_>),
) -> Result<Vec<u8>, ExecError> {
    let mut open = [true; 3];
    let mut buf = vec![0u8; 64 * 1024];
    let mut collected = Vec::new();
    let channel = |source: std::io::Error| ExecError::Channel {
        what: "read from",
        source,
    };
    while open.iter().any(|o| *o) {
        let ready = {
            let flags = |o: bool| if o { PollFlags::IN } else { PollFlags::empty() };
            let mut fds = [
                PollFd::new(&stdout, flags(open[0])),
                PollFd::new(&stderr, flags(open[1])),
                PollFd::new(&result, flags(open[2])),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(channel(e.into())),
            }
            fds.map(|f| !f.revents().is_empty())
        };
        for (i, is_ready) in ready.into_iter().enumerate() {
            if !is_ready || !open[i] {
                continue;
            }
            let n = match i {
                0 => stdout.read(&mut buf),
                1 => stderr.read(&mut buf),
                _ => result.read(&mut buf),
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
                0 => on_output(Output::Stdout(&buf[..n])),
                1 => on_output(Output::Stderr(&buf[..n])),
                _ => collected.extend_from_slice(&buf[..n]),
            }
        }
    }
    Ok(collected)
}

fn interpret(result: &[u8], status: std::process::ExitStatus) -> Result<ExitStatus, ExecError> {
    let mut exit = None;
    for line in result.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Message>(line) {
            Ok(Message::Error(e)) => return Err(e.into()),
            Ok(Message::Exit(s)) => exit = Some(s),
            Err(_) => {
                return Err(ExecError::BadMessage {
                    line: String::from_utf8_lossy(line).into_owned(),
                });
            }
        }
    }
    exit.ok_or(ExecError::NoResult { status })
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
