//! Interop with a real Docker engine (Debian's docker.io, a private dockerd per test): what hoist
//! writes, docker loads and runs; what docker writes, hoist loads with the same id, config,
//! history and files. Every prerequisite (dockerd, busybox, gzip, skopeo) is required: a missing
//! one fails the test with the reason, it never skips.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Hoist;
use hoist_test::{Docker, compact_json, success};
use serde_json::Value;

fn hoist_inspect(h: &Hoist, image: &str) -> Value {
    first(&h.ok(&["inspect", image]), "hoist inspect")
}

fn first(json: &str, what: &str) -> Value {
    let v: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {json}"));
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("{what}: not a one-element array: {json}"))
}

fn docker_inspect(d: &Docker, image: &str) -> Value {
    first(&d.run(&["image", "inspect", image]), "docker image inspect")
}

/// The history table both tools print, with every column but SIZE (docker counts symlink
/// lengths into layer sizes on overlay2; see the report).
const HISTORY_FORMAT: &str = "{{.ID}}|{{.CreatedAt}}|{{.CreatedBy}}|{{.Comment}}";

fn docker_history(d: &Docker, image: &str) -> String {
    d.run(&["history", "--no-trunc", "--format", HISTORY_FORMAT, image])
}

fn hoist_history(h: &Hoist, image: &str) -> String {
    h.ok(&["history", "--no-trunc", "--format", HISTORY_FORMAT, image])
}

/// Mismatches between hoist and docker, gathered so that one difference does not hide the
/// others; `finish` (or drop at the end of a passing test body) fails the test listing them all.
#[derive(Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, hoist: T, docker: T, what: &str) {
        if hoist != docker {
            self.0.push(format!(
                "{what}:\n  hoist:            {hoist:?}\n  docker/expected:  {docker:?}"
            ));
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} difference(s) between hoist and docker:\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

/// Checks that docker and hoist describe one image the same way: id, tags, created, platform,
/// author, comment, config, layers and history.
fn same_image(diffs: &mut Diffs, d: &Docker, h: &Hoist, docker_name: &str, hoist_name: &str) {
    let dk = docker_inspect(d, docker_name);
    let hs = hoist_inspect(h, hoist_name);
    let what = format!("`hoist inspect {hoist_name}` vs `docker image inspect {docker_name}`");
    for key in [
        "Id",
        "Created",
        "Author",
        "Comment",
        "Architecture",
        "Variant",
        "Os",
        "RootFS",
        "RepoDigests",
        "Config",
    ] {
        diffs.eq(
            compact_json(&hs[key]),
            compact_json(&dk[key]),
            &format!("{key} of {what}"),
        );
    }
    let tags = |v: &Value| {
        let mut t: Vec<String> = v["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        t.sort();
        t
    };
    diffs.eq(tags(&hs), tags(&dk), &format!("RepoTags of {what}"));
    diffs.eq(
        hoist_history(h, hoist_name),
        docker_history(d, docker_name),
        &format!("`history --format '{HISTORY_FORMAT}'` of {hoist_name}"),
    );
}

/// One line per path under `paths` inside a container of `image`: name, mode, owner, size, type,
/// link count, mtime and symlink target; then the inode check that hardlinks share one file.
fn listing(d: &Docker, image: &str, paths: &str) -> String {
    let script = format!(
        "/bin/busybox find {paths} -exec /bin/busybox stat -c '%n %a %u %g %s %F %h %Y %N %t,%T' {{}} \\; | /bin/busybox sort"
    );
    d.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/busybox",
        image,
        "sh",
        "-c",
        &script,
    ])
}

fn require_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package}"
    );
}

/// `docker build` with BuildKit, the Dockerfile on stdin.
fn docker_build(d: &Docker, tag: &str, dockerfile: &str, context: &Path) {
    let mut child = d
        .cmd()
        .env("DOCKER_BUILDKIT", "1")
        .args([
            "build",
            "--network",
            "host",
            "--progress",
            "plain",
            "-t",
            tag,
            "-f",
            "-",
        ])
        .arg(context)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker build");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dockerfile.as_bytes())
        .expect("write Dockerfile");
    let out = child.wait_with_output().expect("docker build");
    success(&out);
}

fn loaded_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn hoist_import_save_runs_in_docker() {
    let d = Docker::start();
    let h = Hoist::new();
    let rootfs = hoist_test::busybox_rootfs_tar(h.dir.path());
    let rootfs = rootfs.to_str().expect("utf-8 path");

    let id = h.ok(&["import", rootfs, "hoisted/busybox:1.0"]);
    let id = id.trim();
    assert!(id.starts_with("sha256:"), "import printed {id:?}");
    // A second, different image in the same archive.
    h.ok(&["import", "-m", "second one", rootfs, "second"]);

    let archive = h.path("out.tar");
    h.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "hoisted/busybox:1.0",
        "second",
    ]);
    let loaded = d.run(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        loaded_lines(&loaded),
        [
            "Loaded image: hoisted/busybox:1.0",
            "Loaded image: second:latest"
        ],
        "docker load said: {loaded}"
    );

    let out = d.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "hoisted/busybox:1.0",
        "sh",
        "-c",
        "echo hello from hoist; id -u; cat /etc/passwd | head -1; ls /bin/busybox",
    ]);
    assert_eq!(
        out,
        "hello from hoist\n0\nroot:x:0:0:root:/root:/bin/sh\n/bin/busybox\n"
    );

    let docker_id = d.run(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "hoisted/busybox:1.0",
    ]);
    let mut diffs = Diffs::default();
    diffs.eq(
        id,
        docker_id.trim(),
        "`hoist import`'s id vs docker's Id after loading hoist's archive",
    );
    same_image(
        &mut diffs,
        &d,
        &h,
        "hoisted/busybox:1.0",
        "hoisted/busybox:1.0",
    );
    same_image(&mut diffs, &d, &h, "second", "second");

    // The layer is the tarball as given, as with `docker import`.
    d.run(&["import", rootfs, "docker-imported:1"]);
    diffs.eq(
        hoist_inspect(&h, "hoisted/busybox:1.0")["RootFS"].clone(),
        docker_inspect(&d, "docker-imported:1")["RootFS"].clone(),
        "layers of `hoist import` and `docker import` of one tarball",
    );

    // `hoist save` to stdout piped into `docker load`.
    d.run(&["rmi", "second"]);
    let mut save = h
        .cmd()
        .args(["save", "second"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hoist save");
    let out = d
        .cmd()
        .arg("load")
        .stdin(save.stdout.take().expect("hoist stdout"))
        .output()
        .expect("docker load");
    let saved = save.wait().expect("wait for hoist save");
    assert!(saved.success(), "hoist save to stdout failed: {saved}");
    assert_eq!(success(&out), "Loaded image: second:latest\n");
    let out = d.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "second",
        "sh",
        "-c",
        "echo ok",
    ]);
    assert_eq!(out, "ok\n");
    diffs.finish();
}

#[test]
fn hoist_import_changes_apply_in_docker() {
    let d = Docker::start();
    let h = Hoist::new();
    let rootfs = hoist_test::busybox_rootfs_tar(h.dir.path());
    let rootfs = rootfs.to_str().expect("utf-8 path");
    let changes = [
        "ENV GREETING=hello",
        "WORKDIR /tmp",
        "LABEL team=hoist",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        r#"CMD ["echo $GREETING from $(pwd)"]"#,
    ];
    let mut args = vec!["import"];
    for c in &changes {
        args.extend(["--change", c]);
    }
    args.extend([rootfs, "changed:1"]);
    h.ok(&args);
    let mut args = vec!["import"];
    for c in &changes {
        args.extend(["--change", c]);
    }
    args.extend([rootfs, "changed:docker"]);
    d.run(&args);

    let archive = h.path("changed.tar");
    h.ok(&["save", "-o", archive.to_str().unwrap(), "changed:1"]);
    d.run(&["load", "-i", archive.to_str().unwrap()]);
    let out = d.run(&["run", "--rm", "--network", "none", "changed:1"]);
    assert_eq!(out, "hello from /tmp\n");
    let mut diffs = Diffs::default();
    diffs.eq(
        compact_json(&hoist_inspect(&h, "changed:1")["Config"]),
        compact_json(&docker_inspect(&d, "changed:docker")["Config"]),
        "Config of `hoist import --change …` vs `docker import --change …`",
    );
    diffs.finish();
}

const DOCKERFILE: &str = r#"FROM base:1
RUN mkdir -p /data/gone /data/opq /data/keep && echo a > /data/gone/f && echo b > /data/opq/old \
 && echo c > /data/keep/k && echo x > /data/rmme && echo y > /data/replaced
RUN rm -rf /data/gone /data/rmme && rm -rf /data/opq && mkdir /data/opq && echo new > /data/opq/new \
 && rm /data/replaced && mkdir /data/replaced && echo z > /data/replaced/inside
COPY --chown=1000:2000 hello.txt /data/owned.txt
RUN echo content > /data/hl1 && ln /data/hl1 /data/hl2 && ln -s ../data/hl1 /data/sym \
 && ln -s /nonexistent /data/dangling && chmod 4755 /data/hl1 && chmod 0600 /data/owned.txt \
 && mkdir -m 1777 /data/sticky && mkdir -p /data/deep/a/b && chmod 0700 /data/deep \
 && chown 33:44 /data/deep/a && touch /data/empty && chmod 0 /data/empty \
 && mkdir -p /data/long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb \
 && echo long > /data/long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/file-with-a-long-name.txt \
 && echo sp > '/data/with space' && echo u > /data/ünïcode \
 && mknod /data/null c 1 3 && chmod 0666 /data/null
ENV FOO=bar PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /data
LABEL org.test.one="1" two=deux
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
USER 0:0
EXPOSE 8080/tcp
STOPSIGNAL SIGQUIT
"#;

/// Builds `built:1` (several layers, whiteouts, an opaque dir, hardlinks, symlinks, modes,
/// owners, a device, long and odd names, and most config fields) on a `docker import`ed busybox.
fn build_fixture(d: &Docker, dir: &Path) {
    let rootfs = hoist_test::busybox_rootfs_tar(dir);
    d.run(&["import", rootfs.to_str().unwrap(), "base:1"]);
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    docker_build(d, "built:1", DOCKERFILE, &ctx);
}

#[test]
fn docker_build_loads_into_hoist_and_back() {
    let d = Docker::start();
    let h = Hoist::new();
    build_fixture(&d, h.dir.path());

    let archive = h.path("built.tar");
    d.run(&["save", "-o", archive.to_str().unwrap(), "built:1"]);
    let mut diffs = Diffs::default();
    diffs.eq(
        h.ok(&["load", "-i", archive.to_str().unwrap()]).as_str(),
        "Loaded image: built:1\n",
        "`hoist load` output",
    );
    same_image(&mut diffs, &d, &h, "built:1", "built:1");
    let hs = hoist_inspect(&h, "built:1");
    assert_eq!(
        hs["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(6),
        "expected the base layer, four RUN/COPY layers and WORKDIR's: {hs:#}"
    );

    // The files, as docker shows them, in the original...
    let paths = "/data /bin /etc/passwd /etc/group";
    let before = listing(&d, "built:1", paths);
    for gone in [
        "/data/gone ",
        "/data/rmme ",
        "/data/opq/old ",
        "/data/gone/f ",
    ] {
        assert!(
            !before.contains(gone),
            "{gone} should be whited out:\n{before}"
        );
    }
    for kept in [
        "/data/opq/new ",
        "/data/keep/k ",
        "/data/replaced/inside ",
        "/data/owned.txt 600 1000 2000 6 regular file",
        "/data/hl1 4755 0 0 8 regular file 2 ",
        "/data/hl2 4755 0 0 8 regular file 2 ",
        "/data/sym 777 0 0 11 symbolic link",
        "/data/deep/a 755 33 44 ",
        "/data/null 666 0 0 0 character special file",
        "/data/with space ",
        "/data/ünïcode ",
        "/file-with-a-long-name.txt ",
    ] {
        assert!(
            before.contains(kept),
            "{kept} missing from the original:\n{before}"
        );
    }

    // ...and in a fresh engine that only ever saw what hoist wrote.
    let back = h.path("back.tar");
    h.ok(&["save", "-o", back.to_str().unwrap(), "built:1"]);
    let d2 = Docker::start();
    assert_eq!(
        d2.run(&["load", "-i", back.to_str().unwrap()]),
        "Loaded image: built:1\n"
    );
    diffs.eq(
        &hs["Id"],
        &docker_inspect(&d2, "built:1")["Id"],
        "image id in hoist vs in a second docker that loaded hoist's archive",
    );
    diffs.eq(
        docker_history(&d2, "built:1"),
        docker_history(&d, "built:1"),
        "docker history after the round trip (round-tripped, original)",
    );
    let after = listing(&d2, "built:1", paths);
    diffs.eq(
        after,
        before,
        "files after docker save → hoist load → hoist save → docker load (round-tripped, original)",
    );
    let ran = d2.run(&["run", "--rm", "--network", "none", "built:1"]);
    assert_eq!(ran, "hi\n");
    let ran = d2.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "built:1",
        "echo $FOO; pwd; cat /data/hl2 /data/opq/new; test \"$(stat -c %i hl1)\" = \"$(stat -c %i hl2)\" && echo same-inode",
    ]);
    assert_eq!(ran, "bar\n/data\ncontent\nnew\nsame-inode\n");
    diffs.finish();
}

#[test]
fn docker_save_of_several_images_loads_every_tag() {
    let d = Docker::start();
    let h = Hoist::new();
    let rootfs = hoist_test::busybox_rootfs_tar(h.dir.path());
    let rootfs = rootfs.to_str().unwrap();
    d.run(&["import", rootfs, "one:1"]);
    d.run(&[
        "import",
        "--change",
        "ENV SECOND=yes",
        rootfs,
        "localhost:5000/team/two:v2",
    ]);
    d.run(&["tag", "one:1", "one:also"]);

    let archive = h.path("multi.tar");
    d.run(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "one:1",
        "localhost:5000/team/two:v2",
        "one:also",
    ]);
    let out = h.ok(&["load", "-i", archive.to_str().unwrap()]);
    let mut diffs = Diffs::default();
    diffs.eq(
        loaded_lines(&out),
        [
            "Loaded image: localhost:5000/team/two:v2",
            "Loaded image: one:1",
            "Loaded image: one:also",
        ]
        .map(str::to_owned)
        .to_vec(),
        "`hoist load` output (sorted) vs the tags in the archive",
    );
    let fmt = "{{.Repository}}:{{.Tag}} {{.ID}}";
    let mut dk: Vec<String> = d
        .run(&["images", "--format", fmt])
        .lines()
        .map(str::to_owned)
        .collect();
    let mut hs: Vec<String> = h
        .ok(&["images", "--format", fmt])
        .lines()
        .map(str::to_owned)
        .collect();
    dk.sort();
    hs.sort();
    diffs.eq(hs, dk, &format!("`images --format '{fmt}'` (sorted)"));
    same_image(&mut diffs, &d, &h, "one:also", "one:also");
    same_image(
        &mut diffs,
        &d,
        &h,
        "localhost:5000/team/two:v2",
        "localhost:5000/team/two:v2",
    );
    diffs.finish();
}

#[test]
fn gzipped_docker_save_and_oci_archive_load() {
    require_tool("/usr/bin/gzip", "gzip");
    require_tool("/usr/bin/skopeo", "skopeo");
    let d = Docker::start();
    build_fixture(&d, tempfile::tempdir().unwrap().path());
    let h = Hoist::new();

    // gzip over the whole `docker save` stream, from a file and from stdin.
    let plain = h.path("built.tar");
    d.run(&["save", "-o", plain.to_str().unwrap(), "built:1"]);
    let gz = h.path("built.tar.gz");
    let out = Command::new("gzip")
        .args(["-k", "-6"])
        .arg(&plain)
        .output()
        .expect("gzip");
    success(&out);
    let mut diffs = Diffs::default();
    diffs.eq(
        h.ok(&["load", "-i", gz.to_str().unwrap()]).as_str(),
        "Loaded image: built:1\n",
        "`hoist load -i FILE.tar.gz` output",
    );
    same_image(&mut diffs, &d, &h, "built:1", "built:1");
    for args in [&[][..], &["-i", "-"][..]] {
        let h2 = Hoist::new();
        let out = h2
            .cmd()
            .arg("load")
            .args(args)
            .stdin(fs::File::open(&gz).unwrap())
            .output()
            .unwrap();
        diffs.eq(
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                out.status.code(),
            ),
            ("Loaded image: built:1\n".to_owned(), String::new(), Some(0)),
            &format!(
                "`hoist load {}` < FILE.tar.gz: (stdout, stderr, status)",
                args.join(" ")
            ),
        );
        if out.status.success() {
            same_image(&mut diffs, &d, &h2, "built:1", "built:1");
        }
    }

    // A plain OCI image layout archive (gzip layers, OCI config) written by skopeo.
    let oci = h.path("built-oci.tar");
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", plain.display()))
        .arg(format!("oci-archive:{}:fromoci", oci.display()))
        .output()
        .expect("skopeo");
    success(&out);
    let manifest_digest = {
        let out = Command::new("tar")
            .args(["-xOf"])
            .arg(&oci)
            .arg("index.json")
            .output()
            .expect("tar");
        let index: Value = serde_json::from_str(&success(&out)).expect("index.json");
        index["manifests"][0]["digest"]
            .as_str()
            .expect("manifest digest")
            .to_owned()
    };
    let manifest: Value = {
        let out = Command::new("tar")
            .args(["-xOf"])
            .arg(&oci)
            .arg(format!(
                "blobs/sha256/{}",
                &manifest_digest["sha256:".len()..]
            ))
            .output()
            .expect("tar");
        serde_json::from_str(&success(&out)).expect("manifest")
    };
    assert!(
        manifest["layers"][0]["mediaType"]
            .as_str()
            .is_some_and(|m| m.ends_with("tar+gzip")),
        "skopeo was expected to compress the layers: {manifest:#}"
    );
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");

    let h3 = Hoist::new();
    let out = h3.ok(&["load", "-i", oci.to_str().unwrap()]);
    diffs.eq(
        out,
        format!("Loaded image ID: {config_digest}\n"),
        "`hoist load` of an untagged OCI archive",
    );
    let hs = hoist_inspect(&h3, config_digest);
    let dk = docker_inspect(&d, "built:1");
    for key in ["RootFS", "Config", "Created", "Architecture", "Os"] {
        diffs.eq(
            compact_json(&hs[key]),
            compact_json(&dk[key]),
            &format!("{key} of skopeo's OCI archive in hoist vs docker's original"),
        );
    }
    let strip_id = |s: String| {
        s.lines()
            .map(|l| l.split_once('|').unwrap().1.to_owned())
            .collect::<Vec<_>>()
    };
    diffs.eq(
        strip_id(hoist_history(&h3, config_digest)),
        strip_id(docker_history(&d, "built:1")),
        "history (without ids) of skopeo's OCI archive in hoist vs docker's original",
    );

    // hoist's copy runs in docker with the same files.
    h3.ok(&["tag", config_digest, "fromoci:1"]);
    let back = h3.path("back.tar");
    h3.ok(&["save", "-o", back.to_str().unwrap(), "fromoci:1"]);
    assert_eq!(
        d.run(&["load", "-i", back.to_str().unwrap()]),
        "Loaded image: fromoci:1\n"
    );
    let paths = "/data /bin";
    diffs.eq(
        listing(&d, "fromoci:1", paths),
        listing(&d, "built:1", paths),
        "files of OCI archive → hoist → docker vs docker's original",
    );
    diffs.finish();
}
