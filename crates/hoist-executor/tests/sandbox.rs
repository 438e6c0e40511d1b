//! Sandbox tests: real namespaces, overlayfs and a busybox root, so they need root and Debian's
//! busybox-static. They fail (never skip) without them.
//!
//! This is a `harness = false` test: `run` re-execs `/proc/self/exe` as the sandbox init, so this
//! binary's `main` must call `init_if_requested()` before anything else, exactly like `hoist`'s.
//! Usage: `cargo test -p hoist-executor --test sandbox [-- FILTER]`.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use hoist_executor::{
    ExecError, ExitStatus, Mount, Network, Output, Rootfs, RunSpec, SignalForwarder,
};

const BUSYBOX: &str = "/bin/busybox";

// A harness has to report: printing is its job.
#[allow(clippy::print_stderr)]
fn main() {
    hoist_executor::init_if_requested();

    assert!(
        rustix::process::geteuid().is_root(),
        "the sandbox tests need root (CI runs as root); refusing to skip them"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );

    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: &[(&str, fn())] = &[
        ("echo_output", echo_output),
        ("exit_codes", exit_codes),
        ("hostname", hostname),
        ("pid_namespace", pid_namespace),
        ("system_mounts", system_mounts),
        ("no_host_mounts", no_host_mounts),
        ("network_none", network_none),
        ("network_host", network_host),
        ("user_by_name", user_by_name),
        ("user_by_uid_gid", user_by_uid_gid),
        ("unknown_user", unknown_user),
        ("env_exact_with_defaults", env_exact_with_defaults),
        ("cwd_created_in_layer", cwd_created_in_layer),
        ("layer_has_changes_not_stubs", layer_has_changes_not_stubs),
        (
            "stubs_removed_with_etc_in_lower",
            stubs_removed_with_etc_in_lower,
        ),
        ("hosts_and_resolv", hosts_and_resolv),
        ("capabilities", capabilities),
        ("background_children", background_children),
        ("missing_executable", missing_executable),
        ("output_streamed", output_streamed),
        ("bind_and_tmpfs_mounts", bind_and_tmpfs_mounts),
        ("dir_rootfs_and_scratch", dir_rootfs_and_scratch),
        ("stdin_null_and_tty", stdin_null_and_tty),
        ("signals_forwarded", signals_forwarded),
        ("concurrent_threads", concurrent_threads),
        ("many_layers", many_layers),
        ("etc_symlink_stays_inside", etc_symlink_stays_inside),
    ];
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let start = Instant::now();
        let ok = std::panic::catch_unwind(test).is_ok();
        let verdict = if ok { "ok" } else { "FAILED" };
        eprintln!(
            "test {name} ... {verdict} ({:.2}s)",
            start.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(*name);
        }
    }
    eprintln!(
        "\n{} passed, {} failed: {failed:?}",
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() || ran == 0 {
        std::process::exit(1);
    }
}

// ---- fixtures ----

struct Fixture {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

/// A busybox root as the single lower dir. `with_etc` adds /etc/passwd and /etc/group with a
/// user `app` (1000:1000) who is also in `extra` (2000). /data/old.txt is there to be deleted.
fn fixture(with_etc: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let bin = lower.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    std::fs::create_dir_all(lower.join("data")).unwrap();
    std::fs::write(lower.join("data/old.txt"), "old\n").unwrap();
    if with_etc {
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            lower.join("etc/group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
        )
        .unwrap();
    }
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    Fixture {
        _dir: dir,
        lower,
        upper,
        work,
    }
}

impl Fixture {
    fn spec(&self, args: &[&str]) -> RunSpec {
        RunSpec::new(
            Rootfs::Overlay {
                lowerdirs: vec![self.lower.clone()],
                upperdir: self.upper.clone(),
                workdir: self.work.clone(),
            },
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn sh(&self, script: &str) -> RunSpec {
        self.spec(&["/bin/sh", "-c", script])
    }

    /// Every path in the upper dir, relative, sorted.
    fn upper_paths(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![self.upper.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let rel = e
                    .path()
                    .strip_prefix(&self.upper)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                }
                out.insert(rel);
            }
        }
        out
    }
}

struct Ran {
    status: Result<ExitStatus, ExecError>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> &str {
        match &self.status {
            Ok(ExitStatus::Code(0)) => &self.stdout,
            other => panic!(
                "run failed: {other:?}\nstdout: {}\nstderr: {}",
                self.stdout, self.stderr
            ),
        }
    }
}

fn run(spec: &RunSpec) -> Ran {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status = hoist_executor::run(spec, &mut |o| match o {
        Output::Stdout(b) => stdout.extend_from_slice(b),
        Output::Stderr(b) => stderr.extend_from_slice(b),
    });
    Ran {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn out(spec: &RunSpec) -> String {
    run(spec).ok().to_owned()
}

// ---- tests ----

fn echo_output() {
    let f = fixture(false);
    let r = run(&f.spec(&["echo", "hello", "world"]));
    assert_eq!(r.ok(), "hello world\n");
    let r = run(&f.sh("echo to-stderr >&2"));
    assert_eq!((r.ok(), r.stderr.as_str()), ("", "to-stderr\n"));
}

fn exit_codes() {
    let f = fixture(false);
    assert_eq!(run(&f.sh("true")).status.unwrap(), ExitStatus::Code(0));
    assert_eq!(run(&f.sh("exit 3")).status.unwrap(), ExitStatus::Code(3));
    let killed = run(&f.sh("kill -9 $$")).status.unwrap();
    assert_eq!(killed, ExitStatus::Signal(9));
    assert_eq!(killed.code(), 137);
}

fn hostname() {
    let f = fixture(false);
    assert_eq!(
        out(&f.sh("hostname; cat /etc/hostname")),
        "buildkitsandbox\nbuildkitsandbox\n"
    );
    let mut spec = f.sh("hostname");
    spec.hostname = "other".into();
    assert_eq!(out(&spec), "other\n");
}

fn pid_namespace() {
    let f = fixture(false);
    // The command is pid 2: pid 1 is the sandbox init (a re-exec of this binary).
    assert_eq!(out(&f.sh("echo $$")), "2\n");
    let cmdline = out(&f.spec(&["cat", "/proc/1/cmdline"]));
    assert!(cmdline.contains(hoist_executor::INIT_ARG), "{cmdline:?}");
}

fn system_mounts() {
    let f = fixture(false);
    let mounts = out(&f.spec(&["cat", "/proc/mounts"]));
    let table: Vec<(&str, &str, &str)> = mounts
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1], f[2], f[3])
        })
        .collect();
    for (target, fstype) in [
        ("/", "overlay"),
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ] {
        assert!(
            table.iter().any(|(t, f, _)| (*t, *f) == (target, fstype)),
            "no {fstype} on {target} in\n{mounts}"
        );
    }
    assert!(
        table
            .iter()
            .any(|(t, _, o)| *t == "/sys" && o.starts_with("ro,")),
        "/sys is not read-only in\n{mounts}"
    );
    // A volatile overlay's teardown does not sync the whole disk under the upper dir (Linux
    // 6.6 and later show the option as `fsync=volatile`).
    assert!(
        table.iter().any(|(t, f, o)| (*t, *f) == ("/", "overlay")
            && o.split(',')
                .any(|o| matches!(o, "volatile" | "fsync=volatile"))),
        "the root overlay is not volatile in\n{mounts}"
    );
    let devs = out(&f.sh("echo x > /dev/null && ls /dev | tr '\\n' ' '"));
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin",
    ] {
        assert!(devs.split(' ').any(|x| x == d), "/dev lacks {d}: {devs}");
    }
    assert_eq!(out(&f.sh("head -c 3 /dev/zero | wc -c")).trim(), "3");
    let r = run(&f.sh("touch /sys/x"));
    assert_eq!(
        r.status.unwrap(),
        ExitStatus::Code(1),
        "/sys must be read-only"
    );
}

fn no_host_mounts() {
    let f = fixture(false);
    let mounts = out(&f.spec(&["cat", "/proc/mounts"]));
    for line in mounts.lines() {
        let target = line.split(' ').nth(1).unwrap();
        let allowed = [
            "/",
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ];
        let generated = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];
        assert!(
            allowed.contains(&target) || generated.contains(&target),
            "unexpected mount {line}"
        );
    }
}

fn interfaces(proc_net_dev: &str) -> BTreeSet<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_owned())
        .collect()
}

fn network_none() {
    let f = fixture(false);
    let mut spec = f.spec(&["cat", "/proc/net/dev"]);
    spec.network = Network::None;
    assert_eq!(interfaces(&out(&spec)), BTreeSet::from(["lo".to_owned()]));
    let mut spec = f.sh("ls /sys/class/net; cat /sys/class/net/lo/flags");
    spec.network = Network::None;
    let o = out(&spec);
    let mut lines = o.lines();
    assert_eq!(lines.next(), Some("lo"));
    let flags = u32::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is not up: flags {flags:#x}");
}

fn network_host() {
    let f = fixture(false);
    let host = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert!(host.len() > 1, "the host has only {host:?}");
    assert_eq!(interfaces(&out(&f.spec(&["cat", "/proc/net/dev"]))), host);
}

fn user_by_name() {
    let f = fixture(true);
    let mut spec = f.sh("id -u; id -g; id -G; echo $HOME");
    spec.user = "app".into();
    assert_eq!(out(&spec), "1000\n1000\n1000 2000\n/home/app\n");
    let mut spec = f.spec(&["id"]);
    spec.user = "app".into();
    assert_eq!(
        out(&spec),
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n"
    );
    // The default user is root, with HOME from passwd.
    assert_eq!(out(&f.sh("id -u; echo $HOME")), "0\n/root\n");
}

fn user_by_uid_gid() {
    let f = fixture(true);
    let mut spec = f.sh("id -u; id -g; id -G; echo $HOME");
    spec.user = "1000:2000".into();
    assert_eq!(out(&spec), "1000\n2000\n2000\n/home/app\n");
    spec.user = "4242".into();
    assert_eq!(out(&spec), "4242\n0\n0\n/\n");
}

fn unknown_user() {
    let f = fixture(true);
    let mut spec = f.sh("true");
    spec.user = "ghost".into();
    let err = run(&spec).status.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
    spec.user = "app:ghosts".into();
    let err = run(&spec).status.unwrap_err();
    assert!(
        err.to_string().contains("unable to find group ghosts"),
        "{err}"
    );
}

fn env_lines(s: &str) -> BTreeSet<&str> {
    s.lines().collect()
}

fn env_exact_with_defaults() {
    let f = fixture(true);
    let mut spec = f.spec(&["env"]);
    spec.env = vec!["FOO=bar baz".into(), "EMPTY=".into()];
    let o = out(&spec);
    assert_eq!(
        env_lines(&o),
        BTreeSet::from([
            "FOO=bar baz",
            "EMPTY=",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
        ])
    );
    spec.env = vec!["PATH=/bin".into(), "HOME=/custom".into()];
    spec.user = "app".into();
    assert_eq!(
        env_lines(&out(&spec)),
        BTreeSet::from(["PATH=/bin", "HOME=/custom"])
    );
    // PATH from the env is the one argv[0] is looked up in.
    spec.env = vec!["PATH=/nowhere".into()];
    assert!(run(&spec).status.is_err());
}

fn cwd_created_in_layer() {
    let f = fixture(true);
    let mut spec = f.spec(&["pwd"]);
    spec.cwd = "/srv/app/dir".into();
    spec.user = "app".into();
    assert_eq!(out(&spec), "/srv/app/dir\n");
    let meta = std::fs::metadata(f.upper.join("srv/app/dir")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 1000, 0o755)
    );
}

fn layer_has_changes_not_stubs() {
    let f = fixture(false);
    out(&f.sh("echo hi > /a.txt && rm /data/old.txt && cat /etc/hosts >/dev/null"));
    assert_eq!(
        std::fs::read_to_string(f.upper.join("a.txt")).unwrap(),
        "hi\n"
    );
    let wh = std::fs::symlink_metadata(f.upper.join("data/old.txt")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "no whiteout for old.txt"
    );
    let paths = f.upper_paths();
    assert!(
        !paths.contains("etc"),
        "stub /etc left in the layer: {paths:?}"
    );
    // BuildKit (runc) leaves the created /proc /sys /dev mount points; nothing else.
    let expected: BTreeSet<String> = ["a.txt", "data", "data/old.txt", "dev", "proc", "sys"]
        .map(String::from)
        .into();
    assert_eq!(paths, expected);
}

fn stubs_removed_with_etc_in_lower() {
    let f = fixture(true);
    out(&f.sh("mkdir -p /proc /sys /dev; cat /etc/hosts /etc/resolv.conf /etc/hostname >/dev/null"));
    let paths = f.upper_paths();
    for stub in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(!paths.contains(stub), "{stub} left in the layer: {paths:?}");
    }
    // Files the command writes to /etc stay.
    out(&f.sh("echo x > /etc/motd"));
    assert!(f.upper.join("etc/motd").exists());
    assert!(!f.upper.join("etc/hosts").exists());
    // Existing files in the lower are hidden by the mount, not copied up.
    std::fs::write(f.lower.join("etc/hosts"), "lower hosts\n").unwrap();
    let g = fixture(true);
    std::fs::write(g.lower.join("etc/hosts"), "lower hosts\n").unwrap();
    assert!(out(&g.spec(&["cat", "/etc/hosts"])).contains("buildkitsandbox"));
    assert!(!g.upper.join("etc/hosts").exists());
}

fn hosts_and_resolv() {
    let f = fixture(false);
    let mut spec = f.spec(&["cat", "/etc/hosts"]);
    spec.extra_hosts = vec![
        ("db".into(), "10.0.0.5".parse().unwrap()),
        ("v6".into(), "fd00::1".parse().unwrap()),
    ];
    assert_eq!(
        out(&spec),
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         10.0.0.5\tdb\nfd00::1\tv6\n"
    );
    let r = run(&f.sh("echo x >> /etc/hosts"));
    assert_ne!(
        r.status.unwrap(),
        ExitStatus::Code(0),
        "/etc/hosts must be read-only"
    );
    let resolv = out(&f.spec(&["cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver"), "{resolv}");
    let mut spec = f.spec(&["cat", "/etc/resolv.conf"]);
    spec.network = Network::None;
    assert!(out(&spec).contains("nameserver"));
}

fn capabilities() {
    let f = fixture(true);
    let want = [
        "CapInh:\t0000000000000000",
        "CapPrm:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
    ];
    let o = out(&f.sh("grep ^Cap /proc/self/status"));
    assert_eq!(o.lines().collect::<Vec<_>>(), want);
    // A non-root USER keeps the bounding set, but execve of a binary without file capabilities
    // leaves it no permitted or effective ones (as with BuildKit: no ambient set).
    let mut spec = f.sh("grep ^Cap /proc/self/status; grep NoNewPrivs /proc/self/status");
    spec.user = "app".into();
    let o = out(&spec);
    let mut non_root = want.to_vec();
    non_root[1] = "CapPrm:\t0000000000000000";
    non_root[2] = "CapEff:\t0000000000000000";
    assert_eq!(o.lines().take(5).collect::<Vec<_>>(), non_root);
    assert!(o.contains("NoNewPrivs:\t0"), "{o}");
}

fn background_children() {
    let f = fixture(false);
    // A daemon that outlives the command and holds stdout, and an orphan that becomes a zombie
    // of pid 1: the run still returns once the command exits.
    let r = run(&f.sh("sleep 1000 & (sleep 0.1 &) ; sh -c 'sleep 0.2 & exec true'; echo done"));
    assert_eq!(r.ok(), "done\n");
}

fn missing_executable() {
    let f = fixture(false);
    let err = run(&f.spec(&["nosuchcmd", "arg"])).status.unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    let err = run(&f.spec(&["/no/such"])).status.unwrap_err();
    assert!(err.to_string().starts_with("exec: \"/no/such\""), "{err}");
}

fn output_streamed() {
    let f = fixture(false);
    let (tx, rx) = mpsc::channel();
    let spec = f.sh("echo a; sleep 1; echo b");
    let mut chunks = Vec::new();
    let status = hoist_executor::run(&spec, &mut |o| {
        if let Output::Stdout(b) = o {
            chunks.push(String::from_utf8_lossy(b).into_owned());
            tx.send(()).unwrap();
        }
    })
    .unwrap();
    assert!(status.success());
    // "a" reached the callback on its own, before "b" was written: it was not buffered.
    assert_eq!(chunks, ["a\n", "b\n"]);
    assert_eq!(rx.try_iter().count(), 2);
}

fn bind_and_tmpfs_mounts() {
    let f = fixture(false);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from host\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut spec = f.sh(
        "cat /mnt/ro/in.txt; touch /mnt/ro/x 2>/dev/null && echo ro-writable; \
         echo out > /mnt/rw/out.txt; echo t > /scratch/t && grep ' /scratch ' /proc/mounts",
    );
    spec.mounts = vec![
        Mount::Bind {
            source: host.path().to_path_buf(),
            target: "/mnt/ro".into(),
            readonly: true,
        },
        Mount::Bind {
            source: rw.path().to_path_buf(),
            target: "/mnt/rw".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
        },
    ];
    let o = out(&spec);
    let mut lines = o.lines();
    assert_eq!(lines.next(), Some("from host"));
    let tmpfs = lines.next().unwrap();
    assert!(
        tmpfs.starts_with("tmpfs /scratch tmpfs rw,nosuid,nodev"),
        "{tmpfs}"
    );
    assert!(tmpfs.contains("size=1024k"), "{tmpfs}");
    assert_eq!(lines.next(), None, "{o}");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out.txt")).unwrap(),
        "out\n"
    );
    // Mount points that did not exist are removed again.
    let paths = f.upper_paths();
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("mnt") || p.starts_with("scratch")),
        "{paths:?}"
    );
    // A file bind.
    let mut spec = f.spec(&["cat", "/data/old.txt", "/data/bound"]);
    spec.mounts = vec![Mount::Bind {
        source: host.path().join("in.txt"),
        target: "/data/bound".into(),
        readonly: true,
    }];
    assert_eq!(out(&spec), "old\nfrom host\n");
    assert!(!f.upper.join("data/bound").exists());
}

fn dir_rootfs_and_scratch() {
    let f = fixture(false);
    let mut spec = f.sh("echo x > /new.txt; cat /etc/hosts | head -1");
    spec.rootfs = Rootfs::Dir(f.lower.clone());
    assert_eq!(out(&spec), "127.0.0.1\tlocalhost buildkitsandbox\n");
    assert!(f.lower.join("new.txt").exists());
    assert!(
        !f.lower.join("etc").exists(),
        "stubs left in the directory root"
    );
    // No lower dirs at all (FROM scratch): the upper dir is the whole root.
    let g = fixture(false);
    std::fs::rename(g.lower.join("bin"), g.upper.join("bin")).unwrap();
    let spec = RunSpec::new(
        Rootfs::Overlay {
            lowerdirs: vec![],
            upperdir: g.upper.clone(),
            workdir: g.work.clone(),
        },
        vec!["echo".into(), "scratch".into()],
    );
    assert_eq!(out(&spec), "scratch\n");
}

fn stdin_null_and_tty() {
    let f = fixture(true);
    assert_eq!(out(&f.sh("cat; echo end")), "end\n");
    // A pty of the sandbox's own devpts, the controlling terminal, owned by the user; its
    // output (stderr included) arrives as stdout with the pty's CRLF.
    let mut spec = f.sh("tty; [ -t 0 ] && [ -t 1 ] && echo t; echo e >&2; stat -c %u /dev/pts/0; : </dev/tty && echo ctty");
    spec.tty = true;
    spec.user = "app".into();
    let r = run(&spec);
    assert_eq!(r.ok(), "/dev/pts/0\r\nt\r\ne\r\n1000\r\nctty\r\n");
    assert_eq!(r.stderr, "");
    spec.args = vec!["sh".into(), "-c".into(), "exit 5".into()];
    assert_eq!(run(&spec).status.unwrap(), ExitStatus::Code(5));
}

fn signals_forwarded() {
    let f = fixture(false);
    let forwarder = SignalForwarder::install().unwrap();
    assert!(matches!(
        SignalForwarder::install(),
        Err(ExecError::ForwarderInstalled)
    ));
    for (tty, script, want) in [
        (
            false,
            "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
            ExitStatus::Code(42),
        ),
        (false, "echo ready; exec sleep 100", ExitStatus::Signal(15)),
        (
            true,
            "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
            ExitStatus::Code(42),
        ),
    ] {
        let mut spec = f.sh(script);
        spec.tty = tty;
        let mut stdout = Vec::new();
        let mut sent = false;
        let status = hoist_executor::run_with(
            &spec,
            &mut |o| {
                if let Output::Stdout(b) = o {
                    stdout.extend_from_slice(b);
                }
                if !sent && stdout.starts_with(b"ready") {
                    sent = true;
                    rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::TERM,
                    )
                    .unwrap();
                }
            },
            Some(&forwarder),
        );
        assert_eq!(
            status.unwrap(),
            want,
            "{script}: {}",
            String::from_utf8_lossy(&stdout)
        );
        if want == ExitStatus::Code(42) {
            assert!(String::from_utf8_lossy(&stdout).contains("got TERM"));
        }
    }
    drop(forwarder);
    assert!(SignalForwarder::install().is_ok());
}

fn concurrent_threads() {
    // The builder calls run from several threads at once.
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let f = fixture(false);
                out(&f.sh(&format!("sleep 0.2; echo {i}")))
            })
        })
        .collect();
    let outs: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outs, ["0\n", "1\n", "2\n"]);
}

fn many_layers() {
    // 120 lower dirs with long names: far beyond mount(2)'s one-page option string.
    let f = fixture(false);
    let mut lowerdirs = Vec::new();
    for i in 0..120 {
        let d = f
            ._dir
            .path()
            .join(format!("layer-{i:03}-{}", "x".repeat(40)));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("{i}\n")).unwrap();
        std::fs::write(d.join("top"), format!("{i}\n")).unwrap();
        lowerdirs.push(d);
    }
    lowerdirs.push(f.lower.clone());
    let mut spec = f.sh("cat /f0 /f119 /top");
    spec.rootfs = Rootfs::Overlay {
        lowerdirs,
        upperdir: f.upper.clone(),
        workdir: f.work.clone(),
    };
    // Topmost first: layer 0 wins for /top.
    assert_eq!(out(&spec), "0\n119\n0\n");
}

fn etc_symlink_stays_inside() {
    // An image whose /etc is a dangling symlink out of the root: the stubs are created at the
    // link's destination resolved inside the sandbox, never on the host, and removed again.
    let f = fixture(false);
    let escape = format!("hoist-escape-{}", std::process::id());
    std::os::unix::fs::symlink(format!("/../../../../{escape}/etc"), f.lower.join("etc")).unwrap();
    assert_eq!(out(&f.spec(&["cat", "/etc/hostname"])), "buildkitsandbox\n");
    assert!(
        !Path::new("/").join(&escape).exists(),
        "a stub escaped to the host"
    );
    let paths = f.upper_paths();
    assert!(
        !paths.iter().any(|p| p.starts_with(&escape)),
        "stubs left: {paths:?}"
    );
}
