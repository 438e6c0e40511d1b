//! The store under concurrency, crashes and hostile input: nothing is lost, nothing half-written
//! becomes visible, nothing escapes the root.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::{Hoist, files_in};

/// A tar entry written header-first, so names the `tar` builder would refuse (`../x`) can be made.
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn assert_store_empty(h: &Hoist) {
    assert_eq!(h.ok(&["images", "-a", "-q"]), "");
    assert_eq!(
        files_in(&h.root().join("v1/blobs/sha256")),
        Vec::<String>::new(),
        "no blob was committed"
    );
    assert_eq!(
        files_in(&h.root().join("v1/snapshots")),
        Vec::<String>::new(),
        "no snapshot was committed"
    );
}

#[test]
fn hostile_layers_are_refused_and_change_nothing() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let marker = format!("hoist-escape-{}", std::process::id());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot entry", {
            let mut t = Vec::new();
            raw_entry(&mut t, "ok/", Directory, None, b"");
            raw_entry(
                &mut t,
                &format!("../../../../../../tmp/{marker}"),
                Regular,
                None,
                b"pwned",
            );
            finish(t)
        }),
        ("absolute symlink, then a write through it", {
            let mut t = Vec::new();
            raw_entry(&mut t, "etc", Symlink, Some("/tmp"), b"");
            raw_entry(&mut t, &format!("etc/{marker}"), Regular, None, b"pwned");
            finish(t)
        }),
        ("relative symlink climbing out, then a write through it", {
            let mut t = Vec::new();
            raw_entry(&mut t, "a/", Directory, None, b"");
            raw_entry(
                &mut t,
                "a/up",
                Symlink,
                Some("../../../../../../../tmp"),
                b"",
            );
            raw_entry(&mut t, &format!("a/up/{marker}"), Regular, None, b"pwned");
            finish(t)
        }),
        ("hardlink to a host file", {
            let mut t = Vec::new();
            raw_entry(&mut t, "passwd", Link, Some("/etc/passwd"), b"");
            finish(t)
        }),
        ("hardlink climbing out", {
            let mut t = Vec::new();
            raw_entry(
                &mut t,
                "passwd",
                Link,
                Some("../../../../../../etc/passwd"),
                b"",
            );
            finish(t)
        }),
    ];
    for (what, bytes) in cases {
        let h = Hoist::new();
        let path = h.path("evil.tar");
        std::fs::write(&path, &bytes).unwrap();
        let err = h.fails(&["import", path.to_str().unwrap(), "evil"]);
        assert!(
            err.contains("escapes the root")
                || err.contains("cannot be linked")
                || err.contains("outside"),
            "{what}: the error names the escape: {err}"
        );
        assert!(
            !Path::new("/tmp").join(&marker).exists(),
            "{what}: a file was written outside the root"
        );
        assert_store_empty(&h);
        // Through `load` too: the hostile layer inside a docker archive.
        let mut archive = Vec::new();
        raw_entry(&mut archive, "layer/layer.tar", Regular, None, &bytes);
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["evil:latest"],"Layers":["layer/layer.tar"]}]"#;
        raw_entry(&mut archive, "manifest.json", Regular, None, manifest);
        std::fs::write(h.path("evil-archive.tar"), finish(archive)).unwrap();
        let err = h.fails(&["load", "-i", h.path("evil-archive.tar").to_str().unwrap()]);
        assert!(err.starts_with("Error: "), "{what}: {err}");
        assert!(
            !Path::new("/tmp").join(&marker).exists(),
            "{what}: load wrote outside the root"
        );
        assert_store_empty(&h);
    }
}

#[test]
fn concurrent_tagging_and_importing_lose_nothing() {
    let h = Hoist::new();
    h.import_busybox("base");
    let rootfs = h.rootfs();
    let mut children = Vec::new();
    for i in 0..6 {
        let script = format!(
            "for j in 1 2 3 4 5; do {bin} --root {root} tag base p{i}:t$j || exit 1; done",
            bin = env!("CARGO_BIN_EXE_hoist"),
            root = h.root().display()
        );
        children.push(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .spawn()
                .unwrap(),
        );
    }
    for i in 0..3 {
        children.push(
            h.cmd()
                .args([
                    "import",
                    "-m",
                    &format!("import {i}"),
                    rootfs.to_str().unwrap(),
                    &format!("imp{i}"),
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a concurrent hoist failed");
    }
    let names = h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for i in 0..6 {
        for j in 1..=5 {
            assert!(
                names.contains(&format!("p{i}:t{j}\n")),
                "p{i}:t{j} lost:\n{names}"
            );
        }
    }
    for i in 0..3 {
        assert!(
            names.contains(&format!("imp{i}:latest\n")),
            "imp{i} lost:\n{names}"
        );
    }
    // The same layer imported four times is stored once.
    assert_eq!(files_in(&h.root().join("v1/snapshots")).len(), 1);
}

#[test]
fn a_killed_import_leaves_the_store_readable_and_nothing_half_written() {
    let h = Hoist::new();
    let id = h.import_busybox("before");
    let blobs_before = files_in(&h.root().join("v1/blobs/sha256"));
    // A large layer fed slowly: half of it, then the process is killed.
    let mut big = Vec::new();
    let chunk: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    raw_entry(&mut big, "big.bin", tar::EntryType::Regular, None, &chunk);
    let big = finish(big);
    let mut child = h
        .cmd()
        .args(["import", "-", "half"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&big[..big.len() / 2]).unwrap();
    stdin.flush().unwrap();
    // Wait until the import is demonstrably under way (it has staged a file), then kill it.
    let tmp = h.root().join("v1/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while files_in(&tmp).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "import never started staging"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(
        files_in(&h.root().join("v1/blobs/sha256")),
        blobs_before,
        "no partial blob is visible"
    );
    assert_eq!(h.ok(&["images", "--format", "{{.Repository}}"]), "before\n");
    assert_eq!(
        h.ok(&["inspect", "-f", "{{.Id}}", "before"]),
        format!("{id}\n")
    );
    assert!(
        !files_in(&tmp).is_empty(),
        "the killed import left its staging files"
    );
    // The next sweep (here through prune) removes the leftovers.
    h.ok(&["image", "prune", "-f"]);
    assert_eq!(files_in(&tmp), Vec::<String>::new());
    assert_eq!(files_in(&h.root().join("v1/snapshots")).len(), 1);
    // And a complete import of the same content works afterwards.
    let mut child = h
        .cmd()
        .args(["import", "-", "whole"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&big).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(h.ok(&["images"]).contains("whole"));
}

/// The snapshot directory holding `rel` (layers are unpacked under `v1/snapshots/<n>/`).
fn snapshot_holding(h: &Hoist, rel: &str) -> std::path::PathBuf {
    let snaps = h.root().join("v1/snapshots");
    std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join(rel).exists())
        .unwrap_or_else(|| panic!("no snapshot holds {rel}"))
}

/// Layers are recorded without an fsync. After a reboot (simulated: the store's notes of
/// layers not yet known to be on disk are given another boot id) with data lost (simulated:
/// files zeroed), the next command settles them: the loaded base layer is unpacked again from
/// its blob, the built layer is dropped, the image reports it missing instead of serving it
/// damaged, and a rebuild makes it again.
#[test]
fn layers_damaged_by_a_power_loss_are_restored_or_rebuilt() {
    let h = Hoist::new();
    h.load_busybox("busybox");
    let ctx = h.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY data.txt /data.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.join("data.txt"), "the data\n").unwrap();
    h.ok(&["build", "-q", "-t", "app", ctx.to_str().unwrap()]);
    let db = rusqlite::Connection::open(h.root().join("v1/meta.db")).unwrap();
    let noted: i64 = db
        .query_row("SELECT COUNT(*) FROM unsettled_snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(noted, 2, "the base layer and the COPY layer");
    db.execute(
        "UPDATE unsettled_snapshots SET boot = 'an-earlier-boot'",
        [],
    )
    .unwrap();
    drop(db);
    for rel in ["data.txt", "bin/busybox"] {
        let file = snapshot_holding(&h, rel).join(rel);
        let len = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, vec![0u8; len]).unwrap();
    }
    let out = h.output(&["run", "--rm", "app", "cat", "/data.txt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // 125: hoist's own failure, as docker run's.
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("is not in the store"), "{err}");
    // The open that settled them says so, once.
    assert_eq!(
        err.matches("lost data in a power loss and was dropped")
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("WARNING: 1 layer(s) written just before the last reboot were unpacked again"),
        "{err}"
    );
    let again = h.output(&["images"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).is_empty(),
        "{again:?}"
    );
    // The base image works again: its layer came back from the blob.
    assert_eq!(h.ok(&["run", "--rm", "busybox", "echo", "ok"]), "ok\n");
    // The COPY's cache entry went with its layer: the rebuild copies again.
    let out = h.output(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "app",
        ctx.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("CACHED"), "{log}");
    assert_eq!(
        h.ok(&["run", "--rm", "app", "cat", "/data.txt"]),
        "the data\n"
    );
}
