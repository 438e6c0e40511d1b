//! hoist-test: fixtures shared by hoist's integration tests — a busybox root filesystem from
//! Debian's busybox-static, a private dockerd for interop, and filters that make output with ids
//! and ages stable for snapshots. Everything here fails loudly when a prerequisite is missing:
//! a skipped interop test must never count as a pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The busybox applets the fixture links.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "mkdir", "rm", "touch", "chmod", "chown", "ln", "id", "env",
    "sleep", "true", "false", "test", "stat", "wc", "head", "grep", "sed", "printf", "pwd",
    "whoami", "hostname",
];

const PASSWD: &[u8] =
    b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\n";

/// Bytes of file content in [`busybox_rootfs_tar`]: what docker reports as the image's size.
#[must_use]
pub fn busybox_rootfs_bytes() -> u64 {
    let bb = fs::metadata(busybox()).expect("busybox").len();
    // Symlinks count with their target's length, as docker's overlay2 size does.
    bb + PASSWD.len() as u64 + GROUP.len() as u64 + APPLETS.len() as u64 * "busybox".len() as u64
}

fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox is missing: install Debian's busybox-static (the README's test command does)");
}

/// Writes a deterministic tarball of a small busybox root filesystem and returns its path.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let out = dir.join("busybox-rootfs.tar");
    let file = fs::File::create(&out).expect("create rootfs tar");
    let mut tar = tar::Builder::new(file);
    let mut dir_entry = |name: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        tar.append_data(&mut h, name, std::io::empty())
            .expect("append dir");
    };
    for d in ["bin/", "etc/", "tmp/", "root/", "home/", "var/"] {
        dir_entry(d, if d == "tmp/" { 0o1777 } else { 0o755 });
    }
    let file_entry = |tar: &mut tar::Builder<fs::File>, name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        tar.append_data(&mut h, name, data).expect("append file");
    };
    let bb = fs::read(busybox()).expect("read busybox");
    file_entry(&mut tar, "bin/busybox", &bb, 0o755);
    file_entry(&mut tar, "etc/passwd", PASSWD, 0o644);
    file_entry(&mut tar, "etc/group", GROUP, 0o644);
    for a in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        tar.append_link(&mut h, format!("bin/{a}"), "busybox")
            .expect("append link");
    }
    tar.finish().expect("finish tar");
    out
}

/// A private dockerd (Debian's docker.io) with its own data root, stopped on drop.
pub struct Docker {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

impl Docker {
    /// Starts dockerd; panics with the reason when it cannot.
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/sbin/dockerd").exists() || which("dockerd"),
            "dockerd is missing: install Debian's docker.io (the README's test command does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("hoist-dockerd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sock = dir.path().join("docker.sock");
        let log = fs::File::create(dir.path().join("dockerd.log")).expect("log file");
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let host = format!("unix://{}", sock.display());
        let docker = Self { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = docker
                .cmd()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                docker.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        docker
    }

    /// A `docker` command talking to this daemon.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(docker_client());
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.dir.path().join("config"));
        c
    }

    /// Runs docker with `args`; panics with its stderr on failure; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

/// Mount points at or below `dir`, outermost first.
fn mounts_below(dir: &Path) -> Vec<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        // By whole components: another fixture's directory may share the name's prefix.
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

impl Drop for Docker {
    fn drop(&mut self) {
        // SIGTERM lets dockerd unmount its data root before the temp dir goes.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // dockerd leaves its network namespace (exec/netns/default) mounted, which would keep
        // the whole temp dir, data root included, in /tmp.
        for target in mounts_below(self.dir.path()).iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
    }
}

fn docker_client() -> &'static str {
    // Debian's client matches Debian's daemon; another client on PATH may be newer.
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Replaces what changes from run to run (ids, digests, ages, dates) with placeholders.
#[must_use]
pub fn stable(text: &str) -> String {
    let rules: &[(&str, &str)] = &[
        (r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]"),
        (r"\b[0-9a-f]{64}\b", "[HEX]"),
        (r"\b[0-9a-f]{12}\b", "[ID]"),
        (
            r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( [+-]\d{4} \w+|Z|[+-]\d\d:\d\d)",
            "[DATE]",
        ),
        (
            r"(Less than a second|About a minute|\d+ seconds?|\d+ minutes?) ago",
            "[AGE]",
        ),
    ];
    let mut s = text.to_owned();
    for (re, with) in rules {
        s = regex::Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

/// Asserts that a command succeeded and returns its stdout.
pub fn success(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The creation time of [`fixed_archive`]'s image: far enough back that `docker images` shows
/// a two-digit number of years for the rest of the century.
pub const FIXED_CREATED: &str = "2001-02-03T04:05:06Z";

/// Writes a docker-archive (legacy layout) holding one busybox image with a fixed config
/// (created [`FIXED_CREATED`], CMD sh, an env and a label), tagged with `tags`, so ids and
/// tables are the same on every run.
pub fn fixed_archive(dir: &Path, tags: &[&str]) -> PathBuf {
    let layer_path = busybox_rootfs_tar(dir);
    let layer = fs::read(&layer_path).expect("read layer");
    let diff_id = sha256_hex(&layer);
    let config = format!(
        concat!(
            r#"{{"architecture":"amd64","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"#,
            r#""Cmd":["sh"],"Labels":{{"org.example.fixture":"yes"}}}},"created":"{created}","#,
            r#""history":[{{"created":"{created}","created_by":"/bin/sh -c #(nop) ADD file:fixture in / "}},"#,
            r#"{{"created":"{created}","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}}],"#,
            r#""os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{diff}"]}}}}"#
        ),
        created = FIXED_CREATED,
        diff = diff_id
    );
    let config_hex = sha256_hex(config.as_bytes());
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": tags,
        "Layers": [format!("{diff_id}/layer.tar")],
    }]);
    let out = dir.join(format!(
        "fixed-{}.tar",
        tags.join("_").replace(['/', ':'], "-")
    ));
    let mut tar = tar::Builder::new(fs::File::create(&out).expect("create archive"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(981_173_106);
        tar.append_data(&mut h, name, data).expect("append");
    };
    add(&format!("{config_hex}.json"), config.as_bytes());
    add(&format!("{diff_id}/layer.tar"), &layer);
    add("manifest.json", manifest.to_string().as_bytes());
    tar.finish().expect("finish archive");
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
/// Drops what carries no information (null, "", false, [], {}) from JSON, recursively, so that
/// docker 20.10's always-present empty fields (its legacy container-config struct: Hostname,
/// AttachStdin, OnBuild null …) compare equal to the ones BuildKit and hoist omit.
pub fn compact_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let informative = |v: &Value| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::Number(_) => true,
    };
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), compact_json(v)))
                .filter(|(_, v)| informative(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(compact_json).collect()),
        other => other.clone(),
    }
}

pub mod registry;

/// Deterministic bytes, different per seed (xorshift): contents that do not compress and do not
/// repeat between seeds, the same on every run.
#[must_use]
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A fixed sequence of choices from a seed (xorshift64*), for randomised tests that must
/// repeat a failure.
pub struct Rng(u64);

impl Rng {
    /// A sequence for `seed`; any seed, zero included, gives a usable one.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number below `n` (which must not be zero).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
