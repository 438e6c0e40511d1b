//! A private store per test, and the busybox fixture imported into it.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Hoist {
    pub dir: tempfile::TempDir,
}

impl Hoist {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("hoist-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn cmd(&self) -> Command {
        // The machine's own docker credentials and hoist config (mirrors, insecure registries)
        // must not reach the tests: each store gets empty ones of its own.
        let config = self.dir.path().join("hoist-config.json");
        if !config.exists() {
            std::fs::write(&config, "{}").expect("write an empty hoist config");
        }
        let mut c = Command::new(env!("CARGO_BIN_EXE_hoist"));
        c.arg("--root")
            .arg(self.root())
            .env_remove("HOIST_ROOT")
            .env_remove("HOIST_INSECURE_REGISTRIES")
            .env_remove("DOCKER_AUTH_CONFIG")
            .env("HOIST_CONFIG", &config)
            .env("HOIST_CERTS_D", self.certs_d())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env("DOCKER_CONFIG", self.docker_config_dir())
            .env("TZ", "UTC");
        c
    }

    /// hoist's configuration file (mirrors, insecure registries), `{}` until written.
    pub fn hoist_config_path(&self) -> PathBuf {
        self.dir.path().join("hoist-config.json")
    }

    /// Writes hoist's configuration file.
    pub fn configure(&self, config: &serde_json::Value) {
        std::fs::write(self.hoist_config_path(), config.to_string()).expect("write config");
    }

    pub fn docker_config_dir(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// The docker `config.json` hoist wrote (logins).
    pub fn docker_config(&self) -> serde_json::Value {
        let path = self.docker_config_dir().join("config.json");
        let text = std::fs::read_to_string(path).expect("config.json");
        serde_json::from_str(&text).expect("config.json parses")
    }

    /// This store's stand-in for `/etc/docker/certs.d`.
    fn certs_d(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// `certs.d/<host>/`, created.
    pub fn certs_dir(&self, host: &str) -> PathBuf {
        let d = self.certs_d().join(host);
        std::fs::create_dir_all(&d).expect("certs.d/<host>");
        d
    }

    /// Runs hoist with `input` on stdin.
    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hoist");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("hoist")
    }

    /// `hoist login` with the password on stdin.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.with_stdin(&["login", host, "-u", user, "--password-stdin"], password)
    }

    /// Loads the fixed busybox image (the same bytes every time) as `tag`; returns its id.
    pub fn load_busybox(&self, tag: &str) -> String {
        let archive = hoist_test::fixed_archive(self.dir.path(), &[tag]);
        self.ok(&["load", "-q", "-i", archive.to_str().expect("utf-8 path")]);
        self.id(tag)
    }

    pub fn id(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_owned()
    }

    /// The ids of every image, as `images -q --no-trunc` lists them, sorted.
    pub fn image_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ok(&["images", "-q", "--no-trunc"])
            .lines()
            .map(str::to_owned)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hoist")
    }

    /// Runs hoist, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        hoist_test::success(&self.output(args))
    }

    /// Runs hoist, asserts failure with exit status 1, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "hoist {args:?} should fail: {out:?}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn rootfs(&self) -> PathBuf {
        let p = self.dir.path().join("busybox-rootfs.tar");
        if !p.exists() {
            hoist_test::busybox_rootfs_tar(self.dir.path());
        }
        p
    }

    /// Imports the busybox rootfs under `name`; returns the image id.
    pub fn import_busybox(&self, name: &str) -> String {
        let tar = self.rootfs();
        self.ok(&["import", tar.to_str().unwrap(), name])
            .trim()
            .to_owned()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// One entry of a layer tar, as `hoist save` hands it to docker.
pub struct LayerEntry {
    pub path: String,
    pub header: tar::Header,
    pub content: Vec<u8>,
}

impl LayerEntry {
    /// `path type mode uid:gid`, the form the build tests compare.
    pub fn summary(&self) -> String {
        format!(
            "{} {:?} {:o} {}:{}",
            self.path,
            self.header.entry_type(),
            self.header.mode().unwrap(),
            self.header.uid().unwrap(),
            self.header.gid().unwrap()
        )
    }
}

/// Every layer of `image`, base first, read from a `hoist save` archive; also the raw archive.
pub fn saved_layers(h: &Hoist, image: &str) -> (Vec<Vec<LayerEntry>>, Vec<u8>) {
    use std::io::Read;
    let archive = h.path(&format!("saved-{}.tar", image.replace([':', '/'], "_")));
    h.ok(&["save", "-o", archive.to_str().unwrap(), image]);
    let raw = std::fs::read(&archive).unwrap();
    let mut blobs = std::collections::BTreeMap::new();
    let mut outer = tar::Archive::new(&raw[..]);
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        blobs.insert(name, buf);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&blobs["manifest.json"]).unwrap();
    let layers = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut t = tar::Archive::new(&blobs[l.as_str().unwrap()][..]);
            t.entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let mut content = Vec::new();
                    e.read_to_end(&mut content).unwrap();
                    LayerEntry {
                        path: e.path().unwrap().to_string_lossy().into_owned(),
                        header: e.header().clone(),
                        content,
                    }
                })
                .collect()
        })
        .collect();
    (layers, raw)
}

/// The content of `path` in the image: the topmost layer that has it.
pub fn file_in(h: &Hoist, image: &str, path: &str) -> Option<String> {
    let (layers, _) = saved_layers(h, image);
    layers
        .iter()
        .flatten()
        .rfind(|e| e.path == path)
        .map(|e| String::from_utf8_lossy(&e.content).into_owned())
}
