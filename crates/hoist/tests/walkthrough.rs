//! The seed's walkthrough ("Building Container Images"), end to end, with hoist: the python
//! base is made locally (scripts/python-base: Debian 12 minbase + Debian's python3 and pip,
//! no Docker Hub) and pushed to an htpasswd registry that hoist's configuration names as Docker
//! Hub's mirror, as `library/python:3.7-slim`; then examples/python-app is built unchanged
//! (`FROM python:3.7-slim` comes from the mirror, `pip install` reaches PyPI), listed, its
//! history shown, tagged, pushed, pulled and run by docker, and run by `hoist run`, each time
//! answering an HTTP request with "Hello World!".
//!
//! Needs root, debootstrap (installed by the script), Debian's docker.io, docker-registry and
//! apache2-utils (scripts/test installs them), and PyPI reachable from the host. A missing
//! prerequisite fails the test with the reason; nothing is skipped. The base's root filesystem
//! tarball is cached in `$HOIST_CI_CACHE` (default /var/cache/hoist-ci).

// The steps and their timings are printed as they go: a long test says where it is.
#![allow(clippy::print_stderr)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hoist_test::Docker;
use hoist_test::registry::{Registry, free_port};

const USER: &str = "john";
const PASSWORD: &str = "get-started-secret";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_owned()
}

/// hoist with its own store; the docker config and hoist config of `home`.
struct Hoist<'a> {
    home: &'a Home,
    store: PathBuf,
}

/// One user's configuration: docker's config.json (credentials) and hoist's config file.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(mirror: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hoist-walkthrough-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let home = Self { dir };
        fs::write(
            home.config(),
            serde_json::json!({"registry-mirrors": {"docker.io": [format!("http://{mirror}")]}})
                .to_string(),
        )
        .expect("write hoist config");
        home
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("hoist-config.json")
    }

    fn hoist(&self, name: &str) -> Hoist<'_> {
        Hoist {
            home: self,
            store: self.dir.path().join(name),
        }
    }
}

impl Hoist<'_> {
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hoist"));
        c.env("HOIST_ROOT", &self.store)
            .env("HOIST_CONFIG", self.home.config())
            .env("DOCKER_CONFIG", self.home.dir.path().join("docker"))
            .env_remove("DOCKER_AUTH_CONFIG")
            .env_remove("HOIST_INSECURE_REGISTRIES")
            .stdin(Stdio::null());
        c
    }

    /// Runs hoist in `dir`, asserts success, returns stdout (and prints what it did).
    fn ok_in(&self, dir: &Path, args: &[&str]) -> String {
        let started = Instant::now();
        let out = self
            .cmd()
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run hoist");
        eprintln!(
            "$ hoist {}   ({:.1} s)\n{}{}",
            args.join(" "),
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "hoist {args:?} failed ({})",
            out.status
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(self.home.dir.path(), args)
    }

    fn login(&self, registry: &str) {
        let mut child = self
            .cmd()
            .args(["login", registry, "-u", USER, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hoist login");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(PASSWORD.as_bytes())
            .expect("password");
        let out = child.wait_with_output().expect("hoist login");
        let stdout = hoist_test::success(&out);
        assert!(stdout.contains("Login Succeeded"), "{stdout}");
    }
}

/// PyPI must be reachable from the host (the build's `pip install` goes there the same way).
fn check_pypi() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let pip = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q"])
        .arg("-d")
        .arg(scratch.path())
        .arg("Flask")
        .output();
    match pip {
        Ok(out) if out.status.success() => {}
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named pip") => {
            let curl = Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "https://pypi.org/simple/flask/"])
                .output();
            assert!(
                curl.as_ref().is_ok_and(|o| o.status.success()),
                "PyPI is not reachable from this machine (curl https://pypi.org/simple/flask/: \
                 {curl:?}): the walkthrough's `pip install` needs it"
            );
        }
        other => panic!(
            "PyPI is not reachable from this machine with the host's pip (`python3 -m pip \
             download Flask`: {}): the walkthrough's `pip install` needs it, through the \
             host's network and CA bundle",
            match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => e.to_string(),
            }
        ),
    }
}

/// An HTTP GET of `http://127.0.0.1:port/`, retried until `deadline`: the body of a 200.
fn get_until(port: u16, deadline: Instant, server: &mut dyn FnMut() -> Option<String>) -> String {
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut response = String::new();
            if s.read_to_string(&mut response).is_ok() && response.starts_with("HTTP/1.") {
                assert!(
                    response.lines().next().is_some_and(|l| l.contains(" 200 ")),
                    "{response}"
                );
                return response;
            }
        }
        if let Some(exited) = server() {
            panic!("the app exited before answering: {exited}");
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn child_output(child: Child) -> String {
    let out: Output = child.wait_with_output().expect("wait");
    format!(
        "{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_seed_walkthrough_with_hoist() {
    let started = Instant::now();
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the walkthrough needs root (debootstrap, the sandbox); run scripts/test as root"
    );
    check_pypi();
    let registry = Registry::start_basic(USER, PASSWORD);
    let reg = registry.host();
    let home = Home::new(&reg);

    // The base image, made locally and published on the mirror under the name the Dockerfile
    // uses. (One store for publishing the base and for the seed's steps: a second would only
    // download the base again; the build still resolves python:3.7-slim on the mirror, the
    // only place that has that name.)
    let hoist = home.hoist("store");
    hoist.login(&reg);
    let script = repo_root().join("scripts/python-base");
    let base_started = Instant::now();
    let out = Command::new(&script)
        .arg("python-base:3.11")
        .env(
            "HOIST",
            format!(
                "{} --root {}",
                env!("CARGO_BIN_EXE_hoist"),
                hoist.store.display()
            ),
        )
        .env("HOIST_CONFIG", home.config())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/python-base");
    eprintln!(
        "$ scripts/python-base python-base:3.11   ({:.1} s)\n{}",
        base_started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    hoist_test::success(&out);
    let python = format!("{reg}/library/python:3.7-slim");
    hoist.ok(&["tag", "python-base:3.11", &python]);
    hoist.ok(&["push", &python]);
    let base_cmd = hoist.ok(&[
        "inspect",
        "-f",
        "{{json .Config.Cmd}} {{json .Config.Env}}",
        "python-base:3.11",
    ]);
    assert!(
        base_cmd.starts_with(r#"["python3"] ["PATH=/usr/local/bin:"#)
            && base_cmd.contains("LANG=C.UTF-8"),
        "{base_cmd}"
    );

    // The seed's steps, with the registry as Docker Hub's mirror in hoist's configuration (and
    // logged in: one registry serves as the mirror and as the place to push).
    let app = repo_root().join("examples/python-app");
    let build_started = Instant::now();
    hoist.ok_in(&app, &["build", "-t", "friendlyhello", "."]);
    let build_time = build_started.elapsed();
    let images = hoist.ok(&["images"]);
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("friendlyhello ") && l.contains(" latest ")),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("python ") && l.contains(" 3.7-slim ")),
        "FROM pulled python:3.7-slim from the mirror: {images}"
    );
    // Docker Hub's name was resolved on the mirror (docker.io itself is never reached here).
    let log = registry.log();
    assert!(
        log.contains("\"GET /v2/library/python/manifests/3.7-slim?ns=docker.io HTTP/1.1\" 200"),
        "the build's FROM went to the mirror: {log}"
    );
    let history = hoist.ok(&["history", "--no-trunc", "friendlyhello"]);
    for step in [
        r#"CMD ["python" "app.py"]"#,
        "ENV NAME=World",
        "EXPOSE [80/tcp]",
        "RUN /bin/sh -c pip install --trusted-host pypi.python.org -r requirements.txt # buildkit",
        "COPY . /app # buildkit",
        "WORKDIR /app",
    ] {
        assert!(history.contains(step), "history lacks {step:?}:\n{history}");
    }
    let pushed_name = format!("{reg}/john/get-started:part2");
    hoist.ok(&["tag", "friendlyhello", &pushed_name]);
    let pushed = hoist.ok(&["push", &pushed_name]);
    assert!(
        pushed.starts_with(&format!(
            "The push refers to repository [{reg}/john/get-started]\n"
        )) && pushed.contains("part2: digest: sha256:"),
        "{pushed}"
    );

    // docker pulls and runs what hoist pushed.
    let docker = Docker::start();
    let mut login = docker
        .cmd()
        .args(["login", &reg, "-u", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker login");
    login
        .stdin
        .take()
        .expect("stdin")
        .write_all(PASSWORD.as_bytes())
        .expect("password");
    hoist_test::success(&login.wait_with_output().expect("docker login"));
    docker.run(&["pull", &pushed_name]);
    let port = free_port();
    let port_env = format!("PORT={port}");
    docker.run(&[
        "run",
        "-d",
        "--name",
        "friendlyhello",
        "--network",
        "host",
        "-e",
        &port_env,
        "-e",
        "HOST=127.0.0.1",
        &pushed_name,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = get_until(port, deadline, &mut || {
        let state = docker.run(&["inspect", "-f", "{{.State.Running}}", "friendlyhello"]);
        (state.trim() != "true").then(|| docker.run(&["logs", "friendlyhello"]))
    });
    docker.run(&["rm", "-f", "friendlyhello"]);
    assert!(page.contains("<h3>Hello World!</h3>"), "docker run: {page}");

    // hoist runs the pushed image.
    let port = free_port();
    let port_env = format!("PORT={port}");
    let mut child = hoist
        .cmd()
        .args([
            "run",
            "--rm",
            "-e",
            &port_env,
            "-e",
            "HOST=127.0.0.1",
            &pushed_name,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoist run");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited = None;
    let page = get_until(port, deadline, &mut || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status.to_string());
        }
        exited.clone()
    });
    // Ctrl-C: Flask's server stops on SIGINT (as pid 1 it would ignore a SIGTERM it has no
    // handler for, in hoist as in docker).
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let stop_deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            panic!("hoist run did not stop on SIGINT: {}", child_output(child));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let run_output = child_output(child);
    assert!(
        page.contains("<h3>Hello World!</h3>"),
        "hoist run: {page}\n{run_output}"
    );
    eprintln!(
        "walkthrough: build {:.1} s, all {:.1} s",
        build_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
