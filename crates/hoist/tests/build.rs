//! `hoist build` through the binary: its flags, context forms, RUN's sandbox as a build sees it,
//! and failures rendered as BuildKit renders them. (Byte-level agreement with docker's BuildKit
//! is the differential suite's job.)

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::{Hoist, file_in};

/// A store with the fixed busybox image loaded as `busybox`.
fn with_busybox() -> Hoist {
    let h = Hoist::new();
    let archive = hoist_test::fixed_archive(h.dir.path(), &["busybox:latest"]);
    h.ok(&["load", "-i", archive.to_str().unwrap()]);
    h
}

/// Writes a context directory with the given files.
fn context(h: &Hoist, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = h.path(name);
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

/// Every layer of an image as a list of tar entries (`path type mode uid:gid`).
fn layers(h: &Hoist, image: &str) -> Vec<Vec<String>> {
    common::saved_layers(h, image)
        .0
        .iter()
        .map(|l| l.iter().map(common::LayerEntry::summary).collect())
        .collect()
}

fn build(h: &Hoist, args: &[&str]) -> std::process::Output {
    let mut a = vec!["build", "--progress", "plain"];
    a.extend_from_slice(args);
    h.output(&a)
}

/// Builds `dockerfile` in `ctx`, expecting exit status 1 and `needle` in the error output.
fn failing_build(h: &Hoist, ctx: &Path, dockerfile: &str, needle: &str) -> String {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = build(h, &[ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    err
}

#[test]
fn tags_iidfile_quiet_and_history() {
    let h = with_busybox();
    let ctx = context(
        &h,
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nARG NAME=world\nRUN echo hello $NAME > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
        )],
    );
    let iid = h.path("iid");
    let out = h.ok(&[
        "build",
        "-q",
        "-t",
        "one",
        "-t",
        "two:v2",
        "--iidfile",
        iid.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(out, format!("{id}\n"), "-q prints the id and nothing else");
    assert!(id.starts_with("sha256:") && id.len() == 71);
    assert_eq!(
        h.ok(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            "reference=t*"
        ]),
        "two:v2\n"
    );
    assert_eq!(
        h.ok(&["inspect", "-f", "{{.Id}}", "one"]),
        format!("{id}\n")
    );
    assert_eq!(
        file_in(&h, "one", "greeting").as_deref(),
        Some("hello world\n")
    );
    let history = h.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}|{{.Comment}}",
        "one",
    ]);
    assert_eq!(
        history.lines().take(3).collect::<Vec<_>>(),
        [
            "CMD [\"cat\" \"/greeting\"]|buildkit.dockerfile.v0",
            "RUN |1 NAME=world /bin/sh -c echo hello $NAME > /greeting # buildkit|buildkit.dockerfile.v0",
            "ARG NAME=world|buildkit.dockerfile.v0",
        ]
    );
    // Plain progress names the steps as BuildKit does and ends with the export.
    let out = build(&h, &["-t", "three", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("#1 [1/2] FROM docker.io/library/busybox\n"),
        "{err}"
    );
    assert!(
        err.contains("#2 [2/2] RUN echo hello $NAME > /greeting\n"),
        "{err}"
    );
    assert!(
        regex::Regex::new(r"#3 writing image sha256:[0-9a-f]{64} done\n")
            .unwrap()
            .is_match(&err),
        "{err}"
    );
    assert!(
        err.contains("naming to docker.io/library/three:latest done"),
        "{err}"
    );
}

#[test]
fn build_args_labels_and_target() {
    let h = with_busybox();
    let df = "ARG BASE=busybox\nFROM $BASE AS first\nARG GREETING\nARG UNUSED=x\nRUN echo \"$GREETING\" > /g\n\
              FROM first AS second\nRUN exit 7\n\
              FROM busybox AS final\nCOPY --from=first /g /copied\n";
    let ctx = context(&h, "ctx", &[("Dockerfile", df)]);
    let out = h
        .cmd()
        .args([
            "build",
            "-q",
            "--build-arg",
            "GREETING",
            "--label",
            "team=tools",
            "--label",
            "empty=",
            "-t",
            "final",
        ])
        .arg(&ctx)
        .env("GREETING", "from the environment")
        .output()
        .unwrap();
    // The failing `second` stage is not needed by `final`, so it never runs.
    hoist_test::success(&out);
    assert_eq!(
        file_in(&h, "final", "copied").as_deref(),
        Some("from the environment\n")
    );
    assert_eq!(
        h.ok(&["inspect", "-f", "{{json .Config.Labels}}", "final"]),
        "{\"empty\":\"\",\"org.example.fixture\":\"yes\",\"team\":\"tools\"}\n"
    );
    let out = h.ok(&[
        "build",
        "-q",
        "--target",
        "first",
        "--build-arg",
        "GREETING=hi",
        "-t",
        "first",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.starts_with("sha256:"));
    assert_eq!(file_in(&h, "first", "g").as_deref(), Some("hi\n"));
    let out = build(&h, &["--target", "nope", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
}

#[test]
fn run_sandbox_as_a_build_sees_it() {
    let h = with_busybox();
    let df = "FROM busybox\n\
              RUN hostname > /hostname && cat /etc/hosts > /hosts && cat /proc/net/dev > /netdev\n\
              USER nobody\nWORKDIR /work/dir\nENV FOO=bar\n\
              RUN id > /tmp/id && pwd > /tmp/pwd && env > /tmp/env\n";
    let ctx = context(&h, "ctx", &[("Dockerfile", df)]);
    let out = build(
        &h,
        &[
            "--network",
            "none",
            "--add-host",
            "db.internal:10.1.2.3",
            "-t",
            "sandbox",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        file_in(&h, "sandbox", "hostname").as_deref(),
        Some("buildkitsandbox\n")
    );
    let hosts = file_in(&h, "sandbox", "hosts").unwrap();
    assert!(
        hosts.contains("10.1.2.3\tdb.internal") || hosts.contains("10.1.2.3 db.internal"),
        "{hosts}"
    );
    let netdev = file_in(&h, "sandbox", "netdev").unwrap();
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "--network none leaves only lo");
    assert_eq!(
        file_in(&h, "sandbox", "tmp/id").as_deref(),
        Some("uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n")
    );
    assert_eq!(
        file_in(&h, "sandbox", "tmp/pwd").as_deref(),
        Some("/work/dir\n")
    );
    let env = file_in(&h, "sandbox", "tmp/env").unwrap();
    assert!(
        env.contains("FOO=bar\n") && env.contains("PATH=/usr/local/sbin:"),
        "{env}"
    );
    // The sandbox's generated files never land in a layer.
    for layer in layers(&h, "sandbox") {
        for entry in layer {
            assert!(
                !entry.starts_with("etc/hosts ")
                    && !entry.starts_with("etc/resolv.conf ")
                    && !entry.starts_with("etc/hostname "),
                "{entry}"
            );
        }
    }
    // WORKDIR made the directory as the USER, as BuildKit does.
    let all: Vec<String> = layers(&h, "sandbox").concat();
    assert!(
        all.iter()
            .any(|e| e == "work/dir/ Directory 755 65534:65534"),
        "{all:?}"
    );
}

#[test]
fn whiteouts_and_opaque_directories_in_layers() {
    let h = with_busybox();
    let df = "FROM busybox\nRUN rm /etc/group && mkdir -p /data/keep && echo x > /data/keep/f\n\
              RUN rm -rf /data && mkdir /data && echo new > /data/only\n";
    let ctx = context(&h, "ctx", &[("Dockerfile", df)]);
    let out = build(&h, &["-t", "wh", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = layers(&h, "wh");
    assert_eq!(l.len(), 3);
    assert!(
        l[1].iter().any(|e| e.starts_with("etc/.wh.group Regular")),
        "{:?}",
        l[1]
    );
    assert!(
        l[2].iter()
            .any(|e| e.starts_with("data/.wh..wh..opq Regular")),
        "{:?}",
        l[2]
    );
    assert!(
        l[2].iter().any(|e| e.starts_with("data/only Regular")),
        "{:?}",
        l[2]
    );
}

/// A copied directory that is a symlink to a directory in the image, met after a few thousand
/// files were already written straight into the layer: that write is dropped and the copy goes
/// through the merged view, where the link stays and what the copy holds for that directory
/// lands where it leads (`COPY rootfs/ /` over a `/bin` that links to `/usr/bin` keeps the
/// image's `/bin`). Docker's BuildKit refuses this copy ("cannot copy to non-directory",
/// moby/moby#47367); its legacy builder replaced the link with a directory, hiding what it named.
#[test]
fn copy_onto_a_symlinked_directory_goes_through_it() {
    let h = with_busybox();
    // ADD unpacking an archive goes through such a link too.
    let df = "FROM busybox\nRUN mkdir -p /data/real /app && echo kept > /data/real/old && \
              ln -s /data/real /app/sub\nCOPY tree/ /app/\n\
              RUN mkdir -p /opt/real && ln -s real /opt/link\nADD arch.tar /opt/\n";
    let mut files: Vec<(String, &str)> = (0..4200)
        .map(|i| (format!("tree/a/f{i:04}"), "a"))
        .collect();
    files.push(("tree/sub/f.txt".to_owned(), "f"));
    files.push(("tree/top.txt".to_owned(), "top"));
    files.push(("Dockerfile".to_owned(), df));
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let ctx = context(&h, "ctx", &files);
    let arch = h.path("arch");
    std::fs::create_dir_all(arch.join("link")).unwrap();
    std::fs::write(arch.join("link/added.txt"), "added").unwrap();
    let tarred = std::process::Command::new("tar")
        .arg("-cf")
        .arg(ctx.join("arch.tar"))
        .arg("-C")
        .arg(&arch)
        .arg("link")
        .status()
        .unwrap();
    assert!(tarred.success());
    let out = build(&h, &["-t", "through", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = layers(&h, "through");
    let copied: Vec<&String> = l[2].iter().filter(|e| !e.starts_with("app/a/f")).collect();
    assert_eq!(
        copied,
        [
            "app/ Directory 755 0:0",
            "app/a/ Directory 755 0:0",
            "app/top.txt Regular 644 0:0",
            "data/ Directory 755 0:0",
            "data/real/ Directory 755 0:0",
            "data/real/f.txt Regular 644 0:0",
        ]
    );
    assert_eq!(
        l[2].iter().filter(|e| e.starts_with("app/a/f")).count(),
        4200
    );
    let ran = h
        .cmd()
        .args([
            "run",
            "--rm",
            "through",
            "sh",
            "-c",
            "readlink /app/sub && readlink /opt/link && cat /app/sub/f.txt /app/sub/old /opt/real/added.txt",
        ])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "/data/real\nreal\nfkept\nadded"
    );
}

#[test]
fn copy_owners_modes_and_dockerignore() {
    let h = with_busybox();
    let df = "FROM busybox\nCOPY --chown=nobody:nogroup --chmod=640 a.txt /files/\nCOPY dir /d\nCOPY --chown=1234 dir/ /numeric/\n";
    let ctx = context(
        &h,
        "ctx",
        &[
            ("Dockerfile", df),
            ("a.txt", "a"),
            ("dir/keep.txt", "k"),
            ("dir/skip.log", "s"),
            ("dir/sub/x", "x"),
            (".dockerignore", "**/*.log\n"),
        ],
    );
    let out = build(&h, &["-t", "cp", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<String> = layers(&h, "cp").concat();
    assert!(
        all.contains(&"files/a.txt Regular 640 65534:65534".to_owned()),
        "{all:?}"
    );
    assert!(
        all.contains(&"d/keep.txt Regular 644 0:0".to_owned()),
        "{all:?}"
    );
    assert!(
        all.contains(&"numeric/sub/x Regular 644 1234:1234".to_owned()),
        "{all:?}"
    );
    assert!(
        !all.iter().any(|e| e.contains("skip.log")),
        ".dockerignore hides skip.log: {all:?}"
    );
    // <Dockerfile>.dockerignore wins over .dockerignore.
    std::fs::write(ctx.join("Other.Dockerfile"), "FROM busybox\nCOPY dir /d\n").unwrap();
    std::fs::write(ctx.join("Other.Dockerfile.dockerignore"), "dir/keep.txt\n").unwrap();
    let out = build(
        &h,
        &[
            "-f",
            ctx.join("Other.Dockerfile").to_str().unwrap(),
            "-t",
            "other",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<String> = layers(&h, "other").concat();
    assert!(all.iter().any(|e| e.starts_with("d/skip.log ")), "{all:?}");
    assert!(!all.iter().any(|e| e.starts_with("d/keep.txt ")), "{all:?}");
}

/// The copy gives a plain mode at creation when the umask leaves it whole, and sets it after
/// otherwise: under any umask the layers hold the same modes (setuid and setgid bits too,
/// and owners given with --chown, which must not clear them).
#[test]
fn copied_modes_do_not_depend_on_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let h = with_busybox();
    let df = "FROM busybox\nCOPY m /m/\nCOPY --chown=1234:5678 m /o/\nCOPY --chmod=664 m/f600 /c/\nCOPY <<EOF /h/x\nhi\nEOF\n";
    let ctx = context(&h, "ctx", &[("Dockerfile", df)]);
    let modes = [
        0o600, 0o644, 0o664, 0o666, 0o755, 0o777, 0o4755, 0o2711, 0o1777, 0o444,
    ];
    std::fs::create_dir(ctx.join("m")).unwrap();
    for mode in modes {
        let p = ctx.join(format!("m/f{mode:o}"));
        std::fs::write(&p, format!("{mode:o}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut seen = Vec::new();
    for umask in [0o022, 0o077, 0o000] {
        let tag = format!("u{umask:o}");
        // The shell sets the umask hoist starts with.
        let base = h.cmd();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask:03o}; exec \"$0\" \"$@\""))
            .arg(base.get_program())
            .args(base.get_args())
            .args([
                "build",
                "--no-cache",
                "-q",
                "-t",
                &tag,
                ctx.to_str().unwrap(),
            ]);
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut all: Vec<String> = layers(&h, &tag)
            .concat()
            .into_iter()
            .filter(|e| e.contains("Regular"))
            .collect();
        all.sort();
        seen.push(all);
    }
    for mode in modes {
        let name = format!("f{mode:o}");
        assert!(
            seen[0].contains(&format!("m/{name} Regular {mode:o} 0:0")),
            "{name}: {:?}",
            seen[0]
        );
        assert!(
            seen[0].contains(&format!("o/{name} Regular {mode:o} 1234:5678")),
            "{name}: {:?}",
            seen[0]
        );
    }
    assert!(
        seen[0].contains(&"c/f600 Regular 664 0:0".to_owned()),
        "{:?}",
        seen[0]
    );
    assert!(
        seen[0].contains(&"h/x Regular 644 0:0".to_owned()),
        "{:?}",
        seen[0]
    );
    assert_eq!(seen[0], seen[1], "umask 077");
    assert_eq!(seen[0], seen[2], "umask 000");
}

/// A file copied into a setgid directory of another group keeps its own group: the copy
/// skips a chown only where the new file is already owned as wanted.
#[test]
fn copy_into_a_setgid_directory_keeps_each_owner() {
    let h = with_busybox();
    let df = "FROM busybox AS src\n\
              RUN mkdir -p /top/sg && chown 0:1234 /top/sg && chmod 2775 /top/sg && \
              echo x > /top/sg/f && chown 0:0 /top/sg/f && echo y > /top/sg/g && \
              ln -s f /top/sg/l && chown -h 0:0 /top/sg/l\n\
              FROM busybox\nCOPY --from=src /top /top\nCOPY top /ctx\n";
    let ctx = context(&h, "ctx", &[("Dockerfile", df), ("top/sg/f", "x")]);
    let sg = ctx.join("top/sg");
    std::os::unix::fs::chown(&sg, Some(0), Some(1234)).unwrap();
    std::fs::set_permissions(&sg, std::os::unix::fs::PermissionsExt::from_mode(0o2775)).unwrap();
    let out = build(&h, &["-t", "sg", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers = layers(&h, "sg");
    let copied = &layers[layers.len() - 2];
    for want in [
        "top/sg/ Directory 2775 0:1234",
        "top/sg/f Regular 644 0:0",
        "top/sg/g Regular 644 0:1234",
        "top/sg/l Symlink 777 0:0",
    ] {
        assert!(
            copied.contains(&want.to_owned()),
            "{want} not in {copied:?}"
        );
    }
    // From the context, everything is root's; the directory keeps its setgid bit.
    let ctx_layer = &layers[layers.len() - 1];
    for want in ["ctx/sg/ Directory 2775 0:0", "ctx/sg/f Regular 644 0:0"] {
        assert!(
            ctx_layer.contains(&want.to_owned()),
            "{want} not in {ctx_layer:?}"
        );
    }
}

#[test]
fn contexts_from_tar_and_stdin() {
    let h = with_busybox();
    let ctx = context(
        &h,
        "ctx",
        &[
            ("Dockerfile", "FROM busybox\nCOPY hello /hello\n"),
            ("hello", "hi from a tar\n"),
        ],
    );
    let tarball = h.path("ctx.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -czf {} .",
            ctx.display(),
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    h.ok(&["build", "-q", "-t", "fromtar", tarball.to_str().unwrap()]);
    assert_eq!(
        file_in(&h, "fromtar", "hello").as_deref(),
        Some("hi from a tar\n")
    );
    let out = h
        .cmd()
        .args(["build", "-q", "-t", "fromstdin", "-"])
        .stdin(std::fs::File::open(&tarball).unwrap())
        .output()
        .unwrap();
    hoist_test::success(&out);
    assert_eq!(
        file_in(&h, "fromstdin", "hello").as_deref(),
        Some("hi from a tar\n")
    );
    // A lone Dockerfile on stdin: no context.
    let mut child = h
        .cmd()
        .args(["build", "-q", "-t", "lone", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nRUN echo lone > /lone\n")
        .unwrap();
    hoist_test::success(&child.wait_with_output().unwrap());
    assert_eq!(file_in(&h, "lone", "lone").as_deref(), Some("lone\n"));
    // -f - with a directory context.
    let mut child = h
        .cmd()
        .args(["build", "-q", "-t", "dashf", "-f", "-"])
        .arg(&ctx)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nCOPY hello /again\n")
        .unwrap();
    hoist_test::success(&child.wait_with_output().unwrap());
    assert_eq!(
        file_in(&h, "dashf", "again").as_deref(),
        Some("hi from a tar\n")
    );
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    let h = with_busybox();
    let parent = context(
        &h,
        "parent",
        &[(
            "Dockerfile",
            "FROM busybox\nONBUILD RUN echo triggered > /trigger\n",
        )],
    );
    h.ok(&["build", "-q", "-t", "parent", parent.to_str().unwrap()]);
    assert_eq!(
        h.ok(&["inspect", "-f", "{{json .Config.OnBuild}}", "parent"]),
        "[\"RUN echo triggered > /trigger\"]\n"
    );
    let child = context(
        &h,
        "child",
        &[("Dockerfile", "FROM parent\nRUN cat /trigger > /seen\n")],
    );
    h.ok(&["build", "-q", "-t", "child", child.to_str().unwrap()]);
    assert_eq!(file_in(&h, "child", "seen").as_deref(), Some("triggered\n"));
    assert_eq!(
        h.ok(&["inspect", "-f", "{{json .Config.OnBuild}}", "child"]),
        "null\n",
        "triggers are consumed"
    );
}

#[test]
fn failures_render_like_buildkit() {
    let h = with_busybox();
    let ctx = context(
        &h,
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo before\nRUN echo oops >&2; exit 3\nRUN echo after\n",
        )],
    );
    let out = build(&h, &["-t", "broken", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let tail = &err[err.find("------\n > [3/4]").expect("failure block")..];
    let tail = regex::Regex::new(r"#3 \d+\.\d{3} ")
        .unwrap()
        .replace_all(tail, "#3 T ");
    assert_eq!(
        tail,
        "------\n > [3/4] RUN echo oops >&2; exit 3:\n#3 T oops\n------\nDockerfile:3\n--------------------\n   1 |     FROM busybox\n   2 |     RUN echo before\n   3 | >>> RUN echo oops >&2; exit 3\n   4 |     RUN echo after\n   5 |     \n--------------------\nERROR: failed to solve: process \"/bin/sh -c echo oops >&2; exit 3\" did not complete successfully: exit code: 3\n"
    );
    assert_eq!(
        h.ok(&["images", "-q", "broken"]),
        "",
        "nothing is tagged after a failure"
    );
    // Steps after FROM busybox that fail with `error`, as BuildKit words it.
    let fails_with = |steps: &str, error: &str| {
        std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\n{steps}\n")).unwrap();
        let out = build(&h, &[ctx.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .ends_with(&format!("ERROR: failed to solve: {error}\n")),
            "{steps}: {out:?}"
        );
    };
    // Steps after FROM busybox that build; what `sh -c script` prints in the image.
    let builds_to = |steps: &str, script: &str| {
        std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\n{steps}\n")).unwrap();
        let out = build(&h, &["-t", "built", ctx.to_str().unwrap()]);
        assert!(out.status.success(), "{steps}: {out:?}");
        h.ok(&["run", "--rm", "built", "sh", "-c", script])
    };
    let not_found = |path: &str| format!("failed to compute cache key: \"{path}\": not found");
    fails_with("COPY missing.txt /", &not_found("/missing.txt"));
    // A wildcard may match nothing, but not a link to nothing (BuildKit fails on both alike).
    std::os::unix::fs::symlink("nowhere", ctx.join("dangling.txt")).unwrap();
    fails_with("COPY *.txt /dst/", &not_found("/dangling.txt"));
    std::fs::remove_file(ctx.join("dangling.txt")).unwrap();
    // A copied file does not replace a directory, the image's or another source's, nor a
    // copied directory a file, as in BuildKit: what was there would be lost.
    std::fs::create_dir_all(ctx.join("tree/file")).unwrap();
    std::fs::write(ctx.join("tree/file/inner"), "i").unwrap();
    std::fs::write(ctx.join("y"), "y").unwrap();
    std::fs::write(ctx.join("file"), "f").unwrap();
    let file_over_dir = |p: &str| format!("cannot replace to directory {p} with file");
    let dir_over_file = |p: &str| format!("cannot copy to non-directory: {p}");
    fails_with(
        "RUN mkdir -p /t/y/inner\nCOPY y /t/",
        &file_over_dir("/t/y"),
    );
    fails_with(
        "RUN mkdir -p /t && echo f > /t/file\nCOPY tree /t/",
        &dir_over_file("/t/file"),
    );
    fails_with("COPY file tree/ /t/", &dir_over_file("/t/file"));
    fails_with("COPY tree/ file /t/", &file_over_dir("/t/file"));
    // The same through a symlink in the image, which the copy follows (onto the merged view).
    let linked = "RUN mkdir -p /real/y/inner && echo f > /real/file && ln -s /real /via";
    fails_with(&format!("{linked}\nCOPY y /via/"), &file_over_dir("/via/y"));
    fails_with(
        &format!("{linked}\nCOPY tree /via/"),
        &dir_over_file("/via/file"),
    );
    fails_with(
        &format!("{linked}\nCOPY y /via/file/y"),
        &dir_over_file("/via/file"),
    );
    // What meets nothing of another kind is copied through the link, and an archive that ADD
    // unpacks replaces what is in its way, as docker's untar does.
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    archive
        .append_data(&mut header, "file/", std::io::empty())
        .unwrap();
    std::fs::write(ctx.join("a.tar"), archive.into_inner().unwrap()).unwrap();
    assert_eq!(
        builds_to(
            &format!("{linked}\nCOPY y tree/ /via/y/inner/\nADD a.tar /via/"),
            "ls /real/y/inner; test -d /real/file && echo dir"
        ),
        "file\ny\ndir\n"
    );
    // A source that links to a file .dockerignore leaves out finds nothing there, as in
    // BuildKit: the link must not bring the file in.
    std::fs::write(ctx.join("secret.txt"), "s").unwrap();
    std::os::unix::fs::symlink("secret.txt", ctx.join("to-secret")).unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    fails_with("COPY to-secret /x", &not_found("/to-secret"));
    // Nor through a link to a directory: .dockerignore applies below where the link leads.
    std::fs::create_dir_all(ctx.join("real")).unwrap();
    std::fs::write(ctx.join("real/secret"), "s").unwrap();
    std::fs::write(ctx.join("real/pub"), "p").unwrap();
    std::os::unix::fs::symlink("real", ctx.join("to-real")).unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\nreal/secret\n").unwrap();
    assert_eq!(
        builds_to("COPY to-real /x/", "ls /x"),
        "pub\n",
        "the ignored file stays out"
    );
    // A directory .dockerignore leaves out is not in the context, for a wildcard below it
    // too. One that a `!` pattern may take something back from is, as docker's context
    // transfer sends it, with what the patterns keep of it (maybe nothing).
    std::fs::create_dir_all(ctx.join("gone")).unwrap();
    std::fs::write(ctx.join("gone/kept.txt"), "k").unwrap();
    std::fs::write(ctx.join("gone/left.txt"), "l").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "gone\n").unwrap();
    fails_with("COPY gone/* /g/", &not_found("/gone/*"));
    fails_with("COPY gone /g/", &not_found("/gone"));
    for (ignore, kept) in [
        ("gone\n!gone/kept.txt\n", "kept.txt\n"),
        ("!gone/kept.txt\ngone\n", ""),
    ] {
        std::fs::write(ctx.join(".dockerignore"), ignore).unwrap();
        // A wildcard matching nothing copies nothing, not even /w.
        let want = if kept.is_empty() {
            "ls: /w: No such file or directory\n".to_owned()
        } else {
            format!("{kept}{kept}")
        };
        assert_eq!(
            builds_to("COPY gone /g/\nCOPY gone/* /w/", "ls /g; ls /w 2>&1; true"),
            want,
            "{ignore}"
        );
    }
    std::fs::remove_file(ctx.join(".dockerignore")).unwrap();
    // Nor may the path before a wildcard be missing or a file.
    for source in ["nodir/*.txt", "file/*"] {
        fails_with(
            &format!("COPY {source} /dst/"),
            &not_found(&format!("/{source}")),
        );
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --security=insecure true\n",
    )
    .unwrap();
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .ends_with("ERROR: failed to solve: RUN --security=insecure is not supported yet\n"),
        "unsupported flags are errors: {out:?}"
    );
    std::fs::write(ctx.join("Dockerfile"), "FROM nothere:1.0\n").unwrap();
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothere:1.0"),
        "{out:?}"
    );
    let out = build(&h, &["--platform", "linux/s390x", ctx.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not supported yet"),
        "{out:?}"
    );
    let out = build(&h, &["--network", "bridge", ctx.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("network mode \"bridge\" not supported"),
        "{out:?}"
    );
}

#[test]
fn from_pulls_a_missing_base_image_from_its_registry() {
    let registry = hoist_test::registry::Registry::start_open();
    let h = with_busybox();
    let remote = format!("{}/base/busybox:1", registry.host());
    h.ok(&["tag", "busybox", &remote]);
    h.ok(&["push", "-q", &remote]);
    h.ok(&["rmi", &remote]);
    h.ok(&["rmi", "busybox"]);
    assert_eq!(h.ok(&["images", "-q"]), "");
    let ctx = context(
        &h,
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {remote}\nRUN echo pulled > /p\n"),
        )],
    );
    let out = build(&h, &["-t", "frompull", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(file_in(&h, "frompull", "p").as_deref(), Some("pulled\n"));
    assert!(
        h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .contains(&remote),
        "the base is kept, as docker does"
    );
    // --pull fetches again even when the image is here.
    let out = build(&h, &["--pull", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A base that exists nowhere fails with the registry's answer.
    failing_build(
        &h,
        &ctx,
        &format!("FROM {}/nothing/here:1\n", registry.host()),
        "nothing/here",
    );
}

#[test]
fn add_downloads_urls_with_checksums() {
    use hoist_test::registry::{HttpResponse, HttpServer};
    let body = std::sync::Arc::new(std::sync::Mutex::new(b"downloaded content\n".to_vec()));
    let served = body.clone();
    let server = HttpServer::start(move |req| {
        if req.path.starts_with("/files/hello.txt") {
            let mut r = HttpResponse::status(200)
                .with_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT");
            r.body = served.lock().unwrap().clone();
            r
        } else {
            HttpResponse::status(404)
        }
    });
    let h = with_busybox();
    let url = format!("http://{}/files/hello.txt?x=1", server.addr());
    let digest = "sha256:8be5d1e6da3c4aa0d0bdf52ebc1ef0a7e7bba4b2e9b9dbf3b0a8f9bfe6c1d6a0";
    let ctx = context(
        &h,
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD {url} /dl/\nADD --chmod=644 {url} /renamed.txt\n"),
        )],
    );
    let out = build(&h, &["-t", "added", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (layers, _) = common::saved_layers(&h, "added");
    let all: Vec<&common::LayerEntry> = layers.iter().flatten().collect();
    let dl = all
        .iter()
        .find(|e| e.path == "dl/hello.txt")
        .expect("dl/hello.txt");
    assert_eq!(dl.content, b"downloaded content\n");
    assert_eq!(
        dl.header.mode().unwrap(),
        0o600,
        "docker gives downloads mode 600"
    );
    assert_eq!(
        dl.header.mtime().unwrap(),
        1_445_412_480,
        "Last-Modified becomes the mtime"
    );
    let renamed = all
        .iter()
        .find(|e| e.path == "renamed.txt")
        .expect("renamed.txt");
    assert_eq!(renamed.header.mode().unwrap(), 0o644);
    // Unchanged content hits the cache; changed content misses.
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("CACHED")
            .count(),
        2
    );
    *body.lock().unwrap() = b"new content\n".to_vec();
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("CACHED")
            .count(),
        0
    );
    // --checksum is verified.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nADD --checksum={digest} {url} /x\n"),
    )
    .unwrap();
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("digest mismatch") && err.contains(digest),
        "{err}"
    );
    let real = format!("sha256:{}", hex_sha256(b"new content\n"));
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nADD --checksum={real} {url} /x\n"),
    )
    .unwrap();
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A URL that is not there fails with the server's answer.
    failing_build(
        &h,
        &ctx,
        &format!("FROM busybox\nADD http://{}/missing /x\n", server.addr()),
        "404",
    );
}

/// The image's diff ids, each checked to be the sha256 of the layer tar `hoist save` writes.
fn diff_ids_are_the_saved_tars(h: &Hoist, image: &str) -> Vec<String> {
    let config: serde_json::Value =
        serde_json::from_str(&h.ok(&["inspect", "--format", "{{json .RootFS}}", image])).unwrap();
    let (_, raw) = common::saved_layers(h, image);
    let mut blobs = std::collections::BTreeMap::new();
    for e in tar::Archive::new(&raw[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
        blobs.insert(name, buf);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&blobs["manifest.json"]).unwrap();
    let saved: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("sha256:{}", hex_sha256(&blobs[l.as_str().unwrap()])))
        .collect();
    let diff_ids: Vec<String> = config["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(saved, diff_ids, "{image}");
    diff_ids
}

fn hex_sha256(data: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn add_checksum_of_a_local_file_is_refused() {
    let h = with_busybox();
    let ctx = context(
        &h,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 f /f\n",
            ),
            ("f", "x"),
        ],
    );
    let out = build(&h, &[ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with(
            "ERROR: failed to solve: checksum can't be specified for non-HTTP(S) sources\n"
        ),
        "{out:?}"
    );
}

/// An early copy's layer (nothing to hit: a fresh store) is hashed as the copy finishes its
/// directories. Its diff id is the sha256 of the tar `hoist save` writes from the finished
/// layer, whatever the tree holds: nested directories, files sorted after directories, hard
/// links (made last), symlinks, a destination the image has and one it has not, and a walk
/// in tree order (a `!` pattern in .dockerignore).
#[test]
fn an_early_copys_digest_is_the_saved_layers() {
    let h = with_busybox();
    let mut files = vec![
        ("a/z.txt", "after the directories".to_owned()),
        ("top.txt", "top".to_owned()),
        ("ignored/kept.txt", "re-included".to_owned()),
        ("ignored/dropped.txt", "ignored".to_owned()),
    ];
    for i in 0..40 {
        files.push((
            Box::leak(format!("a/b{}/f{i}.txt", i % 5).into_boxed_str()),
            i.to_string(),
        ));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let ctx = context(&h, "ctx", &files);
    std::fs::hard_link(ctx.join("top.txt"), ctx.join("a/b1/linked.txt")).unwrap();
    // Its first name comes first in the tar, in a directory finished long before the second.
    std::fs::create_dir(ctx.join("zz")).unwrap();
    std::fs::hard_link(ctx.join("a/z.txt"), ctx.join("zz/link.txt")).unwrap();
    std::os::unix::fs::symlink("../top.txt", ctx.join("a/to-top")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY . /new/app\nCOPY a /tmp/\nCOPY a/b1 /b1\n",
    )
    .unwrap();
    for (image, ignore) in [
        ("plain", "Dockerfile\n"),
        ("reincluded", "ignored\n!ignored/kept.txt\n"),
    ] {
        std::fs::write(ctx.join(".dockerignore"), ignore).unwrap();
        let out = build(&h, &["--no-cache", "-t", image, ctx.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let diff_ids = diff_ids_are_the_saved_tars(&h, image);
        assert_eq!(diff_ids.len(), 4, "{image}: busybox and three copies");
    }
    // Two names of one file, the first in a directory finished long before the second's: the
    // first must be read as linked (it is once the copy ends).
    let linked = h.path("linked");
    for dir in ["a", "m", "zz"] {
        std::fs::create_dir_all(linked.join(dir)).unwrap();
    }
    std::fs::write(linked.join("a/x"), "linked").unwrap();
    // A chunk of their own for `a`, several for `m`.
    for (dir, n) in [("a", 5000), ("m", 10_000)] {
        for i in 0..n {
            std::fs::write(linked.join(format!("{dir}/f{i:05}")), i.to_string()).unwrap();
        }
    }
    std::fs::hard_link(linked.join("a/x"), linked.join("zz/y")).unwrap();
    std::fs::write(linked.join("Dockerfile"), "FROM busybox\nCOPY . /app\n").unwrap();
    let out = build(
        &h,
        &["--no-cache", "-t", "linked", linked.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (layers, _) = common::saved_layers(&h, "linked");
    let y = layers[1].iter().find(|e| e.path == "app/zz/y").unwrap();
    assert_eq!(y.header.entry_type(), tar::EntryType::Link);
    diff_ids_are_the_saved_tars(&h, "linked");
    // A copy into the layer root: the root's own listing is the walk's first, 3000 files
    // long, and nothing may read it before it is whole.
    let wide = h.path("wide");
    std::fs::create_dir_all(&wide).unwrap();
    for i in 0..3000 {
        std::fs::write(wide.join(format!("f{i:04}")), i.to_string()).unwrap();
    }
    std::fs::write(wide.join("Dockerfile"), "FROM busybox\nCOPY . /\n").unwrap();
    let out = build(&h, &["--no-cache", "-t", "wide", wide.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (layers, _) = common::saved_layers(&h, "wide");
    assert_eq!(layers[1].len(), 3001, "every file and the Dockerfile");
    diff_ids_are_the_saved_tars(&h, "wide");
    assert_eq!(
        file_in(&h, "reincluded", "new/app/ignored/kept.txt").as_deref(),
        Some("re-included")
    );
    assert_eq!(
        file_in(&h, "plain", "b1/linked.txt").as_deref(),
        Some("top")
    );
    let (layers, _) = common::saved_layers(&h, "plain");
    let linked = layers[1]
        .iter()
        .find(|e| e.path == "new/app/top.txt")
        .unwrap();
    assert_eq!(
        linked.header.entry_type(),
        tar::EntryType::Link,
        "the later of the two links"
    );
}
