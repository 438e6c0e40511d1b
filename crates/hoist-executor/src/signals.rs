//! Signal forwarding, as docker's `--sig-proxy`: the caller catches the signals a user or a
//! supervisor sends to stop or poke a foreground command and passes them down the sandbox's
//! process chain (init, pid 1, command), each link forwarding to the next.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ExecError;
use crate::sys;

/// The signals passed on to the command: docker's proxy forwards every catchable signal; these
/// are the ones a terminal, a supervisor or a user sends in practice.
pub const FORWARDED_SIGNALS: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Caught too, but handled by the caller itself: a terminal resize is copied to the pty.
const CAUGHT: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Process-wide handlers for [`FORWARDED_SIGNALS`] and SIGWINCH, installed while it lives.
///
/// While it is installed these signals no longer end the calling process; pass it to
/// [`run_with`](crate::run_with) to have them reach the command. At most one exists at a time;
/// dropping it restores the default dispositions.
#[derive(Debug)]
pub struct SignalForwarder {
    read: OwnedFd,
    // The handlers write here; kept open until the handlers are gone.
    _write: OwnedFd,
}

impl SignalForwarder {
    /// Install the handlers.
    pub fn install() -> Result<Self, ExecError> {
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Err(ExecError::ForwarderInstalled);
        }
        let fail = |e: rustix::io::Errno| {
            INSTALLED.store(false, Ordering::SeqCst);
            ExecError::Pipe { source: e.into() }
        };
        let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
        let (read, write) = rustix::pipe::pipe_with(flags).map_err(fail)?;
        if let Err(e) =
            sys::install_signal_handlers(&CAUGHT, std::os::fd::AsRawFd::as_raw_fd(&write))
        {
            sys::restore_signal_handlers(&CAUGHT);
            INSTALLED.store(false, Ordering::SeqCst);
            return Err(ExecError::Signals {
                source: std::io::Error::from_raw_os_error(e.0),
            });
        }
        Ok(SignalForwarder {
            read,
            _write: write,
        })
    }

    /// The pipe to poll for caught signals.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals caught since the last call, in order (the pipe is non-blocking).
    pub(crate) fn take(&self) -> Vec<i32> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        loop {
            match rustix::io::read(&self.read, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(buf[..n].iter().map(|b| i32::from(*b))),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        sys::restore_signal_handlers(&CAUGHT);
        INSTALLED.store(false, Ordering::SeqCst);
    }
}

/// Send `sig` to `pid`, ignoring a process that is already gone.
pub(crate) fn forward(pid: rustix::process::Pid, sig: i32) {
    if let Some(sig) = rustix::process::Signal::from_named_raw(sig) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
