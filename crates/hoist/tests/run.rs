//! `hoist run` through the binary: exit codes, ENTRYPOINT/CMD, env, workdir, user, binds,
//! networks, signals, a pty, refused flags, the store left clean, and a missing image pulled
//! first. They need root, Debian's busybox-static, util-linux's `script` and docker-registry,
//! and fail (never skip) without them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::{Hoist, files_in};

/// A store with the fixture busybox image as `busybox:latest` (CMD sh).
fn with_busybox() -> Hoist {
    let h = Hoist::new();
    let archive = hoist_test::fixed_archive(h.dir.path(), &["busybox:latest"]);
    h.ok(&["load", "-i", archive.to_str().unwrap()]);
    h
}

fn run(h: &Hoist, args: &[&str]) -> Output {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    h.output(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts exit 0; returns stdout.
fn ok(h: &Hoist, args: &[&str]) -> String {
    let o = run(h, args);
    assert!(o.status.success(), "hoist run {args:?}: {o:?}");
    stdout(&o)
}

#[test]
fn exit_codes_pass_through() {
    let h = with_busybox();
    assert_eq!(run(&h, &["busybox", "true"]).status.code(), Some(0));
    assert_eq!(
        run(&h, &["busybox", "sh", "-c", "exit 3"]).status.code(),
        Some(3)
    );
    // Killed by a signal: 128 + n, as a shell (and docker) reports it.
    assert_eq!(
        run(&h, &["busybox", "sh", "-c", "kill -9 $$"])
            .status
            .code(),
        Some(137)
    );
    // Output streams to hoist's stdout and stderr.
    let o = run(&h, &["busybox", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!((stdout(&o), stderr(&o)), ("out\n".into(), "err\n".into()));
    // stdin is /dev/null without -i, the caller's with it.
    let o = h
        .cmd()
        .args(["run", "-i", "busybox", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"piped in\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(stdout(&o), "piped in\n");
    assert_eq!(ok(&h, &["busybox", "cat"]), "");
}

#[test]
fn command_not_found_or_not_executable() {
    let h = with_busybox();
    let o = run(&h, &["busybox", "nope"]);
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    assert!(
        stderr(&o).contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{o:?}"
    );
    let o = run(&h, &["busybox", "/nope"]);
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    let o = run(&h, &["busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{o:?}");
    let o = run(&h, &["busybox", "/etc"]);
    assert_eq!(o.status.code(), Some(126), "{o:?}");
    // An unknown user is hoist's error before the command starts.
    let o = run(&h, &["-u", "nobody-here", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(
        stderr(&o).contains("unable to find user nobody-here"),
        "{o:?}"
    );
}

/// busybox with ENTRYPOINT, CMD, ENV, WORKDIR and USER set.
fn build_app(h: &Hoist) {
    let ctx = h.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         ENV FOO=image BAR=image\n\
         WORKDIR /app\n\
         USER nobody\n\
         ENTRYPOINT [\"echo\", \"ep\"]\n\
         CMD [\"c1\", \"c2\"]\n",
    )
    .unwrap();
    h.ok(&["build", "-q", "-t", "app", ctx.to_str().unwrap()]);
}

#[test]
fn entrypoint_and_cmd_like_docker() {
    let h = with_busybox();
    build_app(&h);
    assert_eq!(ok(&h, &["app"]), "ep c1 c2\n");
    // Arguments replace CMD only.
    assert_eq!(ok(&h, &["app", "x", "-e", "--rm"]), "ep x -e --rm\n");
    // --entrypoint replaces ENTRYPOINT and drops the image's CMD.
    assert_eq!(ok(&h, &["--entrypoint", "echo", "app"]), "\n");
    assert_eq!(ok(&h, &["--entrypoint", "echo", "app", "a", "b"]), "a b\n");
    // --entrypoint "" clears it.
    assert_eq!(
        ok(&h, &["--entrypoint", "", "app", "echo", "plain"]),
        "plain\n"
    );
    let o = run(&h, &["--entrypoint", "", "app"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(stderr(&o).contains("No command specified"), "{o:?}");
    // The fixture's CMD is sh: with stdin at /dev/null it reads EOF and exits 0.
    assert_eq!(ok(&h, &["busybox"]), "");
}

#[test]
fn env_workdir_user_like_docker() {
    let h = with_busybox();
    build_app(&h);
    let env_file = h.path("env.list");
    std::fs::write(
        &env_file,
        "# a comment\n\nBAR=file\nFILE_ONLY=yes it is\nFROM_HOST_FILE\n",
    )
    .unwrap();
    let o = h
        .cmd()
        .args(["run", "--entrypoint", "env", "--env-file"])
        .arg(&env_file)
        .args([
            "-e",
            "FOO=cli",
            "-e",
            "FROM_HOST",
            "-e",
            "NOT_SET_ON_HOST",
            "--hostname",
            "box",
            "app",
        ])
        .env("FROM_HOST", "host value")
        .env("FROM_HOST_FILE", "from file")
        .env_remove("NOT_SET_ON_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&o),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         HOSTNAME=box\n\
         FOO=cli\n\
         BAR=file\n\
         FILE_ONLY=yes it is\n\
         FROM_HOST_FILE=from file\n\
         FROM_HOST=host value\n\
         HOME=/nonexistent\n"
    );
    // The image's WORKDIR and USER, then -w (created if missing) and -u.
    let script = ["sh", "-c", "pwd; id -u; hostname"];
    let mut args = vec!["--entrypoint", "", "--hostname", "h1", "app"];
    args.extend(script);
    assert_eq!(ok(&h, &args), "/app\n65534\nh1\n");
    let mut args = vec!["--entrypoint", "", "-w", "/made/here", "-u", "0", "app"];
    args.extend(script);
    let out = ok(&h, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["/made/here", "0"]);
    // The default hostname: the first 12 hex digits of a random container id.
    assert_eq!(lines[2].len(), 12, "{out}");
    assert!(lines[2].bytes().all(|b| b.is_ascii_hexdigit()), "{out}");
    assert_ne!(
        ok(&h, &["busybox", "hostname"]),
        ok(&h, &["busybox", "hostname"])
    );
    let o = run(&h, &["-w", "relative", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let h = with_busybox();
    let host = h.path("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host\n").unwrap();
    let rw = format!("{}:/data", host.display());
    assert_eq!(
        ok(
            &h,
            &[
                "-v",
                &rw,
                "busybox",
                "sh",
                "-c",
                "cat /data/in.txt; echo new > /data/out.txt"
            ]
        ),
        "from host\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "new\n"
    );
    let ro = format!("{}:/data:ro", host.display());
    let o = run(
        &h,
        &[
            "-v",
            &ro,
            "busybox",
            "sh",
            "-c",
            "cat /data/in.txt; echo x > /data/x",
        ],
    );
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), "from host\n");
    assert!(stderr(&o).contains("Read-only file system"), "{o:?}");
    assert!(!host.join("x").exists());
    // A missing host directory is created, as docker does for -v.
    let fresh = h.path("fresh/dir");
    let spec = format!("{}:/mnt/fresh", fresh.display());
    ok(&h, &["-v", &spec, "busybox", "touch", "/mnt/fresh/made"]);
    assert!(fresh.join("made").exists());
    // The mount point made in the image does not outlive the run, nor does anything else.
    assert_eq!(
        ok(&h, &["busybox", "sh", "-c", "[ -e /mnt ] || echo gone"]),
        "gone\n"
    );
    for bad in ["relative:/data", "/tmp:relative", "/tmp", "/tmp:/x:zz"] {
        let o = run(&h, &["-v", bad, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "{bad}: {o:?}");
    }
}

#[test]
fn networks() {
    let h = with_busybox();
    let devs = |network: &str| {
        let out = ok(
            &h,
            &["--network", network, "busybox", "cat", "/proc/net/dev"],
        );
        let mut names: Vec<String> = out
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(devs("none"), ["lo"]);
    // host (the default): the host's interfaces.
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut want: Vec<String> = host
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect();
    want.sort();
    assert_eq!(devs("host"), want);
    let o = run(&h, &["--network", "bridge", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
}

#[test]
fn sigterm_reaches_the_command() {
    let h = with_busybox();
    for (script, want_code, want_out) in [
        (
            "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
            42,
            "ready\ngot TERM\n",
        ),
        // No handler: the command dies of it, reported as 128 + 15.
        ("echo ready; exec sleep 1000", 143, "ready\n"),
    ] {
        let mut child = h
            .cmd()
            .args(["run", "--rm", "busybox", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first, "ready\n");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(format!("{first}{rest}"), want_out);
        assert_eq!(status.code(), Some(want_code), "{script}");
    }
}

/// `cmd` in a shell on a new pty, as a terminal would run it (util-linux `script`).
fn on_a_terminal(cmd: &str, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script is missing: install util-linux");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn tty_with_it() {
    let h = with_busybox();
    let hoist = format!(
        "{} --root {} run --rm",
        env!("CARGO_BIN_EXE_hoist"),
        h.root().display()
    );
    // A pty of the container's own devpts, TERM=xterm, the terminal's size, the exit code.
    let o = on_a_terminal(
        &format!(
            "stty rows 30 cols 100; {hoist} -it busybox sh -c 'busybox tty; echo $TERM; busybox stty size; exit 4'"
        ),
        b"",
    );
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    // (script may echo a NUL for its closed stdin before hoist's raw mode starts.)
    assert!(
        stdout(&o).ends_with("/dev/pts/0\r\nxterm\r\n30 100\r\n"),
        "{o:?}"
    );
    // Keys typed on the terminal reach the command through its pty.
    let o = on_a_terminal(
        &format!("{hoist} -it busybox sh"),
        b"echo typed-$((6*7))\nexit 6\n",
    );
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(stdout(&o).contains("typed-42\r\n"), "{o:?}");
    // -it needs a terminal on stdin, as docker says.
    let o = run(&h, &["-it", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("the input device is not a TTY"),
        "{o:?}"
    );
    // -t alone: a pty, stdin not copied.
    let o = run(&h, &["-t", "busybox", "sh", "-c", "[ -t 1 ] && echo tty"]);
    assert_eq!(stdout(&o), "tty\r\n", "{o:?}");
}

#[test]
fn refused_flags_are_explained() {
    let h = with_busybox();
    for (flags, message) in [
        (
            &["-p", "8080:80"][..],
            "-p is not supported: hoist run uses the host's network, so the container's ports are the host's",
        ),
        (&["--publish=80"][..], "-p is not supported"),
        (&["-P"][..], "-P is not supported"),
        (&["-d"][..], "-d is not supported"),
        (&["--detach"][..], "-d is not supported"),
    ] {
        let mut args = flags.to_vec();
        args.extend(["busybox", "true"]);
        let o = run(&h, &args);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {o:?}");
        assert!(stderr(&o).contains(message), "{flags:?}: {o:?}");
    }
    let help = h.ok(&["run", "--help"]);
    assert!(help.contains("hoist keeps no containers"), "{help}");
    let o = run(&h, &["no-such-image-id-0000", "true"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    let id = "0".repeat(64);
    let o = run(&h, &[&id, "true"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(
        stderr(&o).contains(&format!("No such image: {id}")),
        "{o:?}"
    );
}

#[test]
fn nothing_of_the_container_stays_in_the_store() {
    let h = with_busybox();
    let store = std::fs::read_dir(h.root())
        .unwrap()
        .flatten()
        .find(|e| e.path().join("snapshots").is_dir())
        .expect("store format dir")
        .path();
    let snapshots = files_in(&store.join("snapshots"));
    ok(
        &h,
        &[
            "busybox",
            "sh",
            "-c",
            "echo x > /new; mkdir -p /a/b; rm /bin/ls",
        ],
    );
    let o = run(&h, &["busybox", "sh", "-c", "echo x > /new2; exit 9"]);
    assert_eq!(o.status.code(), Some(9));
    assert_eq!(files_in(&store.join("tmp")), Vec::<String>::new());
    assert_eq!(files_in(&store.join("snapshots")), snapshots);
    // And the image is as it was.
    assert_eq!(
        ok(
            &h,
            &["busybox", "sh", "-c", "ls /new /new2 2>&1; ls /bin/ls"]
        ),
        "ls: /new: No such file or directory\nls: /new2: No such file or directory\n/bin/ls\n"
    );
    assert!(!h.ok(&["images", "-q"]).is_empty());
}

#[test]
fn missing_image_is_pulled_first() {
    let registry = hoist_test::registry::Registry::start_open();
    let host = registry.host();
    let config = tempfile::tempdir().unwrap();
    let h = with_busybox();
    let name = format!("{host}/pulled/busybox");
    h.ok(&["tag", "busybox", &name]);
    let o = h
        .cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["push", &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    h.ok(&["rmi", &name, "busybox"]);

    let o = h
        .cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["run", "--rm", &name, "echo", "pulled and ran"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "pulled and ran\n");
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "Unable to find image '{name}:latest' locally\nlatest: Pulling from pulled/busybox\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Status: Downloaded newer image for {name}:latest\n"
        )),
        "{err}"
    );
    // Now it is local: no pull.
    let o = h
        .cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["run", "--rm", &name, "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stderr(&o), "");
    // A name no registry has: docker's 125.
    let o = h
        .cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["run", "--rm", &format!("{host}/not/there"), "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(
        stderr(&o).starts_with(&format!(
            "Unable to find image '{host}/not/there:latest' locally\n"
        )),
        "{o:?}"
    );
}
