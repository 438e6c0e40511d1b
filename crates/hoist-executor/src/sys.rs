//! The crate's only `unsafe`: thin wrappers over the few syscalls rustix does not offer safely
//! (fork, execve, signal dispositions, kill(-1), the loopback ioctl, fd hand-over across exec).
//! Each wrapper is safe to call; its proof is next to its block, and only these functions opt
//! out of the crate's `deny(unsafe_code)`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::error::Errno;

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// The outcome of [`fork`].
pub(crate) enum Fork {
    Parent(rustix::process::Pid),
    Child,
}

/// Number of threads of this process, from procfs.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

/// `fork()`, refused unless the process is provably single-threaded.
#[expect(unsafe_code)]
pub(crate) fn fork() -> Result<Fork, Errno> {
    if thread_count() != Some(1) {
        // Forking a multi-threaded process leaves locks held by other threads locked forever.
        return Err(Errno(libc::EDEADLK));
    }
    // SAFETY: the process has exactly one thread (checked just above, and the sandbox init never
    // starts threads), so the child inherits no lock held by another thread and may run any code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(last_errno()),
        0 => Ok(Fork::Child),
        p => Ok(Fork::Parent(
            rustix::process::Pid::from_raw(p).ok_or(Errno(libc::EIO))?,
        )),
    }
}

/// `unshare(flags)`. Only namespace flags are accepted.
#[expect(unsafe_code)]
pub(crate) fn unshare(flags: rustix::thread::UnshareFlags) -> Result<(), Errno> {
    use rustix::thread::UnshareFlags as F;
    let namespaces = F::NEWNS | F::NEWPID | F::NEWUTS | F::NEWIPC | F::NEWNET | F::NEWCGROUP;
    if !namespaces.contains(flags) {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: the hazard of unshare_unsafe is CLONE_FILES/CLONE_FS splitting fd tables or fs
    // state between threads; only namespace flags pass the check above.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(Errno::from)
}

/// Reset every signal disposition to default and unblock all signals, so the command does not
/// inherit Rust's ignored SIGPIPE.
#[expect(unsafe_code)]
pub(crate) fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code; invalid signal numbers only return EINVAL.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: `set` is a local, initialised by sigemptyset before use; a null old-set pointer is
    // allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `execve(path, argv, envp)`; returns only on failure.
#[expect(unsafe_code)]
pub(crate) fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: `path` and every element are NUL-terminated C strings borrowed for the whole call;
    // both pointer arrays are NULL-terminated and outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    last_errno()
}

/// `kill(-1, SIGKILL)`: from pid 1 of a pid namespace, kills every other process in it.
#[expect(unsafe_code)]
pub(crate) fn kill_all_others() {
    // SAFETY: kill takes no pointers; pid -1 from the namespace's init never signals the caller.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// Bring `lo` up in the current network namespace (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP).
#[expect(unsafe_code)]
pub(crate) fn loopback_up() -> Result<(), Errno> {
    use rustix::net::{AddressFamily, SocketType, socket};
    let sock = socket(AddressFamily::INET, SocketType::DGRAM, None).map_err(Errno::from)?;
    // SAFETY: ifreq is plain old data, so all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket; `req` is a valid, NUL-terminated ifreq that the kernel
    // fills (GET) or reads (SET) within its size.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(last_errno());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(last_errno());
        }
    }
    Ok(())
}

/// Take ownership of an fd the parent placed at `fd` across exec.
///
/// Returns `None` if it is not open. Must be called at most once per fd (the init does, at start).
#[expect(unsafe_code)]
pub(crate) fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the fd is open (checked above), was dup2'd there for us by the parent's pre_exec,
    // and nothing else in this fresh process refers to it, so this OwnedFd is its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make `cmd` receive each `(fd, at)` at descriptor number `at` (without close-on-exec).
/// Every `fd` must be numbered above every `at`, so no dup2 clobbers a later source.
#[expect(unsafe_code)]
pub(crate) fn pass_fds(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    let max_target = fds.iter().map(|(_, at)| *at).max().unwrap_or(0);
    assert!(
        fds.iter().all(|(fd, _)| fd.as_raw_fd() > max_target),
        "pass_fds sources must be above their targets"
    );
    // SAFETY: the closure runs in the forked child before exec and only calls dup2, which is
    // async-signal-safe and allocates nothing; the OwnedFds it captures stay open in the child
    // until exec (they are close-on-exec), so each source fd is valid.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, at) in &fds {
                if libc::dup2(fd.as_raw_fd(), *at) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Where [`on_forwarded_signal`] writes; -1 while no forwarder is installed.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The handler of forwarded signals: one byte, the signal number, to the self-pipe.
#[expect(unsafe_code)]
extern "C" fn on_forwarded_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // SAFETY: write(2) and errno access are async-signal-safe; `byte` lives across the call and
    // the length is 1. The pipe is non-blocking, so a full pipe drops the byte instead of
    // hanging in the handler. errno is saved and restored for the interrupted code.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&raw const byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// Route `signals` to the self-pipe whose (non-blocking) write end is `pipe`.
/// The caller keeps `pipe` open until [`restore_signal_handlers`].
#[expect(unsafe_code)]
pub(crate) fn install_signal_handlers(signals: &[i32], pipe: RawFd) -> Result<(), Errno> {
    SIGNAL_PIPE.store(pipe, std::sync::atomic::Ordering::SeqCst);
    for &sig in signals {
        // SAFETY: `action` is a local, zero-initialised (valid for sigaction) and fully set
        // before use; the handler only does async-signal-safe work; a null old-action pointer is
        // allowed.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_forwarded_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(last_errno());
        }
    }
    Ok(())
}

/// Give `signals` their default disposition back and detach the self-pipe.
#[expect(unsafe_code)]
pub(crate) fn restore_signal_handlers(signals: &[i32]) {
    for &sig in signals {
        // SAFETY: SIG_DFL installs no handler code; invalid signal numbers only return EINVAL.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    SIGNAL_PIPE.store(-1, std::sync::atomic::Ordering::SeqCst);
}

/// A signal set holding `signals`.
#[expect(unsafe_code)]
fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it before the adds, and
    // invalid numbers only make sigaddset return EINVAL.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Block `signals` in this (single-threaded) process so [`wait_signal`] can take them.
#[expect(unsafe_code)]
pub(crate) fn block_signals(signals: &[i32]) -> Result<(), Errno> {
    let set = sigset(signals);
    // SAFETY: `set` is an initialised sigset_t borrowed for the call; a null old-set pointer is
    // allowed.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Wait for one of `signals` (which must be blocked) and return its number.
#[expect(unsafe_code)]
pub(crate) fn wait_signal(signals: &[i32]) -> Result<i32, Errno> {
    let set = sigset(signals);
    loop {
        // SAFETY: `set` is an initialised sigset_t; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig >= 0 {
            return Ok(sig);
        }
        let e = last_errno();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// Make `cmd`'s child start with `signals` blocked, so a signal sent before it is ready to
/// forward stays pending instead of killing it.
#[expect(unsafe_code)]
pub(crate) fn block_signals_on_exec(cmd: &mut Command, signals: &[i32]) {
    let set = sigset(signals);
    // SAFETY: the closure runs in the forked child before exec and only calls sigprocmask, which
    // is async-signal-safe and allocates nothing; `set` is moved in, initialised.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
