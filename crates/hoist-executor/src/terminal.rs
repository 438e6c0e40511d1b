//! The command's terminal, as runc's console: pid 1 allocates a pty in the sandbox's devpts and
//! hands the master to the caller over a unix socket (SCM_RIGHTS); the command makes the slave
//! its controlling terminal and stdio. The caller copies between the master and its own
//! terminal, which it puts in raw mode meanwhile.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios, Winsize};

use crate::error::{ExecError, SandboxError};

fn term_err(what: &str) -> impl FnOnce(rustix::io::Errno) -> SandboxError + use<> {
    let what = what.to_owned();
    move |e| SandboxError::Terminal {
        what,
        errno: e.into(),
    }
}

/// In pid 1, after the root is set up: a new pty of `/dev/ptmx`, sized, its master sent over
/// `socket`. Returns the slave.
pub(crate) fn open_pty(
    socket: &OwnedFd,
    winsize: Option<(u16, u16)>,
) -> Result<OwnedFd, SandboxError> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).map_err(term_err("open /dev/ptmx"))?;
    rustix::pty::grantpt(&master).map_err(term_err("grant the pty"))?;
    rustix::pty::unlockpt(&master).map_err(term_err("unlock the pty"))?;
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(s) => s,
        // Kernels before 4.13: open it by name.
        Err(_) => {
            let name =
                rustix::pty::ptsname(&master, Vec::new()).map_err(term_err("name the pty"))?;
            rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(term_err("open the pty"))?
        }
    };
    if let Some((rows, cols)) = winsize {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, ws).map_err(term_err("size the pty"))?;
    }
    let fds = [master.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(b"m")],
            &mut control,
            SendFlags::empty(),
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(term_err("send the pty to the caller")(e)),
        }
    }
    Ok(slave)
}

/// In the command, before exec: a new session with `slave` as controlling terminal and stdio,
/// owned by the user (runc's fixStdioPermissions), so `/dev/tty` and `/proc/self/fd/0` open.
pub(crate) fn attach(slave: &OwnedFd, uid: u32) -> Result<(), SandboxError> {
    rustix::process::setsid().map_err(term_err("start a session"))?;
    rustix::process::ioctl_tiocsctty(slave).map_err(term_err("set the controlling terminal"))?;
    rustix::fs::fchown(slave, Some(rustix::fs::Uid::from_raw(uid)), None)
        .map_err(term_err("chown the pty"))?;
    rustix::stdio::dup2_stdin(slave).map_err(term_err("attach the pty"))?;
    rustix::stdio::dup2_stdout(slave).map_err(term_err("attach the pty"))?;
    rustix::stdio::dup2_stderr(slave).map_err(term_err("attach the pty"))?;
    Ok(())
}

/// In the caller: wait for pid 1's master. `None` when the sandbox ended before sending one
/// (its result then says why).
pub(crate) fn receive_master(socket: &OwnedFd) -> Result<Option<OwnedFd>, ExecError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(ExecError::Terminal {
                    what: "receive the pty from the sandbox",
                    source: e.into(),
                });
            }
        }
    }
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// The size of the caller's terminal: stdout's, else stdin's (docker sizes from its output).
pub(crate) fn caller_winsize() -> Option<(u16, u16)> {
    [rustix::stdio::stdout(), rustix::stdio::stdin()]
        .into_iter()
        .filter(|fd| rustix::termios::isatty(fd))
        .find_map(|fd| rustix::termios::tcgetwinsize(fd).ok())
        .map(|ws| (ws.ws_row, ws.ws_col))
}

/// Copy the caller's terminal size to the pty (after SIGWINCH).
pub(crate) fn resize(master: BorrowedFd<'_>) {
    if let Some((rows, cols)) = caller_winsize() {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(master, ws);
    }
}

/// The caller's stdin terminal in raw mode until dropped, as docker's client sets it with `-it`:
/// keys (^C included) go to the command's pty, which does the line discipline.
pub(crate) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin if it is a terminal; `None` otherwise.
    pub(crate) fn enter() -> Result<Option<RawMode>, ExecError> {
        let stdin = rustix::stdio::stdin();
        if !rustix::termios::isatty(stdin) {
            return Ok(None);
        }
        let err = |what| {
            move |e: rustix::io::Errno| ExecError::Terminal {
                what,
                source: e.into(),
            }
        };
        let saved = rustix::termios::tcgetattr(stdin).map_err(err("read the terminal's mode"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin, OptionalActions::Now, &raw)
            .map_err(err("put the terminal in raw mode"))?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            rustix::termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}
