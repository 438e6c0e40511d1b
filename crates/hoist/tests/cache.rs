//! The build cache through the binary: a rebuild hits step by step; each kind of change misses
//! exactly where it should and `--explain-cache` names it; stages run in parallel; the cache is
//! pruned and reported.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Hoist, file_in};
use hoist_test::Rng;

fn with_busybox() -> Hoist {
    let h = Hoist::new();
    let archive = hoist_test::fixed_archive(h.dir.path(), &["busybox:latest"]);
    h.ok(&["load", "-i", archive.to_str().unwrap()]);
    h
}

fn write(dir: &Path, path: &str, content: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// One build with plain progress: (which numbered steps were CACHED, the miss explanations,
/// the image id).
struct Outcome {
    cached: Vec<String>,
    ran: Vec<String>,
    misses: Vec<String>,
    id: String,
}

fn build(h: &Hoist, ctx: &Path, extra: &[&str]) -> Outcome {
    let iid = h.path("iid");
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--explain-cache",
        "--iidfile",
        iid.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = h.output(&args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let mut names = std::collections::BTreeMap::new();
    let mut o = Outcome {
        cached: Vec::new(),
        ran: Vec::new(),
        misses: Vec::new(),
        id: std::fs::read_to_string(&iid).unwrap(),
    };
    for line in err.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if text.starts_with('[') {
            names.insert(
                n.to_owned(),
                text.split_once("] ").map_or(text, |x| x.1).to_owned(),
            );
        } else if text == "CACHED" {
            o.cached.push(names[n].clone());
        } else if text.starts_with("DONE") && names.get(n).is_some_and(|s| !s.starts_with("FROM")) {
            o.ran.push(names[n].clone());
        } else if let Some(why) = text.strip_prefix("cache miss: ") {
            o.misses.push(format!("{}: {why}", names[n]));
        }
    }
    o
}

const DF: &str = "FROM busybox\nARG USED\nCOPY *.txt /txt/\nCOPY app /app\nRUN echo $USED > /used && ls -l /app > /listing\n";

fn project(h: &Hoist) -> PathBuf {
    let ctx = h.path("ctx");
    write(&ctx, "Dockerfile", DF);
    write(&ctx, "a.txt", "a");
    write(&ctx, "app/main.sh", "echo main");
    write(&ctx, "app/lib/util.sh", "echo util");
    write(&ctx, ".dockerignore", "app/secret\n");
    write(&ctx, "app/secret", "not sent");
    ctx
}

#[test]
fn rebuild_hits_every_step_and_keeps_the_image_id() {
    let h = with_busybox();
    let ctx = project(&h);
    let first = build(&h, &ctx, &[]);
    assert_eq!(first.cached, Vec::<String>::new());
    assert_eq!(first.ran.len(), 3);
    let second = build(&h, &ctx, &[]);
    assert_eq!(
        second.cached,
        [
            "COPY *.txt /txt/",
            "COPY app /app",
            "RUN echo $USED > /used && ls -l /app > /listing"
        ]
    );
    assert_eq!(second.ran, Vec::<String>::new());
    assert_eq!(
        second.id, first.id,
        "an unchanged rebuild is the same image"
    );
    // Touching a file (same content, new mtime) still hits: keys never include mtimes.
    let f = ctx.join("app/main.sh");
    std::fs::write(&f, "echo main").unwrap();
    let third = build(&h, &ctx, &[]);
    assert_eq!(third.ran, Vec::<String>::new());
    assert_eq!(third.id, first.id);
}

#[test]
fn each_kind_of_change_misses_where_it_should() {
    let h = with_busybox();
    let ctx = project(&h);
    build(&h, &ctx, &[]);
    let all_after_app = [
        "COPY app /app",
        "RUN echo $USED > /used && ls -l /app > /listing",
    ];

    // Content.
    write(&ctx, "app/lib/util.sh", "echo changed");
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached, ["COPY *.txt /txt/"]);
    assert_eq!(o.ran, all_after_app);
    assert_eq!(o.misses[0], "COPY app /app: file app/lib/util.sh changed");

    // Mode.
    std::fs::set_permissions(
        ctx.join("app/main.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran, all_after_app);
    assert_eq!(o.misses[0], "COPY app /app: file app/main.sh changed");

    // Rename (kaniko once ignored these).
    std::fs::rename(ctx.join("app/lib/util.sh"), ctx.join("app/lib/helpers.sh")).unwrap();
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran, all_after_app);
    assert_eq!(
        o.misses[0],
        "COPY app /app: file app/lib/helpers.sh added, file app/lib/util.sh removed"
    );

    // A new file matching the glob.
    write(&ctx, "b.txt", "b");
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran.len(), 3, "{:?}", o.ran);
    assert_eq!(o.misses[0], "COPY *.txt /txt/: file b.txt added");

    // A .dockerignore edit that lets a file in.
    write(&ctx, ".dockerignore", "");
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached, ["COPY *.txt /txt/"]);
    assert_eq!(o.misses[0], "COPY app /app: file app/secret added");

    // A declared build arg the RUN sees misses; one the Dockerfile never declares does not.
    let o = build(&h, &ctx, &["--build-arg", "UNDECLARED=1"]);
    assert_eq!(
        o.ran,
        Vec::<String>::new(),
        "an unused build arg changes nothing"
    );
    let o = build(&h, &ctx, &["--build-arg", "USED=1"]);
    assert_eq!(o.ran, ["RUN echo $USED > /used && ls -l /app > /listing"]);
    assert!(
        o.misses[0].contains("ENV USED added") || o.misses[0].contains("build arg USED"),
        "{:?}",
        o.misses
    );

    // Owners of context files do not matter: COPY sets its own.
    std::os::unix::fs::chown(ctx.join("a.txt"), Some(1234), Some(1234)).unwrap();
    let o = build(&h, &ctx, &["--build-arg", "USED=1"]);
    assert_eq!(o.ran, Vec::<String>::new());
}

/// With `--chmod`, a source's own permissions (a umask of 002 in CI, 022 at a desk) do not
/// miss unless they change what the copy makes; content still does.
#[test]
fn copy_with_chmod_misses_only_when_the_result_changes() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nCOPY --chmod=640 app /octal\nCOPY --chmod=u+x app /symbolic\n",
    );
    write(&ctx, "app/run.sh", "echo run");
    write(&ctx, "app/lib/util.sh", "echo util");
    let mode = |path: &str, mode: u32| {
        std::fs::set_permissions(ctx.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mode("app/run.sh", 0o644);
    let first = build(&h, &ctx, &[]);

    // 644 → 664: the octal --chmod sets 640 either way; u+x keeps the group's write bit.
    mode("app/run.sh", 0o664);
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached, ["COPY --chmod=640 app /octal"]);
    assert_eq!(o.ran, ["COPY --chmod=u+x app /symbolic"]);
    assert_eq!(
        o.misses,
        ["COPY --chmod=u+x app /symbolic: file app/run.sh changed"]
    );
    // 664 → 764: u+x sets the owner's x bit anyway, so nothing changes.
    mode("app/run.sh", 0o764);
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran, Vec::<String>::new());
    // A directory's permissions are set by the octal --chmod too.
    mode("app/lib", 0o700);
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached, ["COPY --chmod=640 app /octal"]);
    assert_eq!(o.ran, ["COPY --chmod=u+x app /symbolic"]);
    // The image holds the modes the copy made.
    let listing = h.ok(&[
        "run",
        "--rm",
        &o.id,
        "stat",
        "-c",
        "%a %n",
        "/octal/run.sh",
        "/octal/lib",
        "/symbolic/run.sh",
        "/symbolic/lib",
    ]);
    assert_eq!(
        listing,
        "640 /octal/run.sh\n640 /octal/lib\n764 /symbolic/run.sh\n700 /symbolic/lib\n"
    );
    // Content misses both.
    write(&ctx, "app/run.sh", "echo changed");
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran.len(), 2, "{:?}", o.ran);
    assert_eq!(
        o.misses[0],
        "COPY --chmod=640 app /octal: file app/run.sh changed"
    );
    assert_ne!(o.id, first.id);
}

#[test]
fn a_retagged_base_image_misses_from_the_first_step() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(&ctx, "Dockerfile", "FROM busybox\nRUN echo hi > /hi\n");
    build(&h, &ctx, &[]);
    // busybox now names another image (kaniko once kept using the old cache).
    let tar = h.rootfs();
    h.ok(&[
        "import",
        "-c",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        "busybox:latest",
    ]);
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran, ["RUN echo hi > /hi"]);
    assert_eq!(
        o.misses,
        ["RUN echo hi > /hi: a previous step or the base image changed"]
    );
}

#[test]
fn no_cache_and_no_cache_filter() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox AS one\nRUN echo 1 > /1\nFROM busybox AS two\nCOPY --from=one /1 /1\nRUN echo 2 > /2\n",
    );
    build(&h, &ctx, &[]);
    let o = build(&h, &ctx, &["--no-cache"]);
    assert_eq!(o.cached, Vec::<String>::new());
    assert_eq!(o.ran.len(), 3);
    let o = build(&h, &ctx, &["--no-cache-filter", "two"]);
    assert_eq!(o.cached, ["RUN echo 1 > /1"]);
    assert_eq!(o.ran, ["COPY --from=one /1 /1", "RUN echo 2 > /2"]);
}

/// A `--no-cache` build hashes the context while it copies it (its key is only recorded); the
/// key it records must be the one a later build looks up.
#[test]
fn a_no_cache_build_records_the_keys_a_later_build_hits() {
    first_build_records_the_keys_a_later_build_hits(&["--no-cache"]);
}

/// So does the first build of a project with the cache on (without `--explain-cache`): no
/// entry holds its COPY's key before the files, so it cannot hit and copies while it hashes.
/// The same project in another directory is then a step with that partial key, and hits.
#[test]
fn a_first_build_records_the_keys_a_later_build_hits() {
    let h = first_build_records_the_keys_a_later_build_hits(&[]);
    let moved = h.path("moved");
    let out = std::process::Command::new("cp")
        .args([
            "-a",
            h.path("ctx").to_str().unwrap(),
            moved.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = h.output(&["build", "--progress", "plain", moved.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("CACHED").count(), 3, "{err}");
}

fn first_build_records_the_keys_a_later_build_hits(flags: &[&str]) -> Hoist {
    let h = with_busybox();
    let ctx = project(&h);
    let iid = h.path("first-iid");
    let mut args = vec!["build"];
    args.extend_from_slice(flags);
    args.extend(["--iidfile", iid.to_str().unwrap(), ctx.to_str().unwrap()]);
    let out = h.output(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = build(&h, &ctx, &[]);
    assert_eq!(second.ran, Vec::<String>::new());
    assert_eq!(second.cached.len(), 3);
    assert_eq!(second.id, std::fs::read_to_string(&iid).unwrap());
    assert_eq!(
        file_in(&h, second.id.trim(), "app/lib/util.sh").as_deref(),
        Some("echo util")
    );
    h
}

/// A first build copies while it hashes and records the COPY's inputs beside the next step:
/// the next build with a file changed names that file.
#[test]
fn a_first_builds_inputs_explain_the_next_miss() {
    let h = with_busybox();
    let ctx = project(&h);
    let out = h.output(&["build", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&ctx, "app/lib/util.sh", "echo changed");
    let next = build(&h, &ctx, &[]);
    assert_eq!(
        next.misses.first().map(String::as_str),
        Some("COPY app /app: file app/lib/util.sh changed"),
        "{:?}",
        next.misses
    );
}

/// A COPY's layer is committed after the RUN that follows it started on it (see the solver's
/// pending layers); when that RUN fails, the COPY is still recorded and a fixed rebuild hits it.
#[test]
fn a_copy_before_a_failing_run_is_cached() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nCOPY app /app\nRUN test -f /app/ok\n",
    );
    write(&ctx, "app/data.txt", "data");
    let out = h.output(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nCOPY app /app\nRUN test -f /app/data.txt\n",
    );
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached, ["COPY app /app"]);
    assert_eq!(o.ran, ["RUN test -f /app/data.txt"]);
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    // Each stage can only finish if the other runs at the same time: they meet over loopback.
    let port = 20000 + (std::process::id() % 20000);
    let df = format!(
        "FROM busybox AS listener\nRUN printf '#!/bin/sh\\ncat > /got\\n' > /recv && chmod +x /recv && busybox nc -l -p {port} -e /recv\n\
         FROM busybox AS talker\nRUN for i in $(busybox seq 1 300); do echo hello | busybox nc 127.0.0.1 {port} && break; busybox sleep 0.1; done; echo sent > /sent\n\
         FROM busybox\nCOPY --from=listener /got /got\nCOPY --from=talker /sent /sent\n"
    );
    write(&ctx, "Dockerfile", &df);
    let o = build(&h, &ctx, &["-t", "met"]);
    assert_eq!(o.ran.len(), 4, "{:?}", o.ran);
    let out = h.ok(&["save", "-o", h.path("met.tar").to_str().unwrap(), "met"]);
    assert_eq!(out, "");
    // The listener got the talker's message, so both RUN steps were running together.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && mkdir x && tar -xf met.tar -C x && for l in x/blobs/sha256/*; do tar -xOf $l got 2>/dev/null; done",
            h.dir.path().display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "hello\n");
}

#[test]
fn builder_prune_and_system_df() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN head -c 300000 /bin/busybox > /blob\n",
    );
    build(&h, &ctx, &["-t", "pruneme"]);
    let df = h.ok(&["system", "df"]);
    let lines: Vec<&str> = df.lines().collect();
    assert_eq!(
        lines[0],
        "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE"
    );
    assert!(
        lines[4].starts_with("Build Cache     1         0         0B"),
        "the image still uses it: {df}"
    );
    h.ok(&["rmi", "pruneme"]);
    let df = h.ok(&["system", "df"]);
    assert!(
        df.lines()
            .nth(4)
            .unwrap()
            .starts_with("Build Cache     1         0         300kB"),
        "{df}"
    );
    let o = build(&h, &ctx, &[]);
    assert_eq!(
        o.cached.len(),
        1,
        "rmi keeps the build cache, as docker does"
    );
    h.ok(&["rmi", &o.id]);
    let ids = cache_ids(&h);
    assert_eq!(ids.len(), 1);
    // docker's output: the ids removed, a blank line, the total.
    assert_eq!(
        h.ok(&["builder", "prune", "-f"]),
        format!(
            "Deleted build cache objects:\n{}\n\nTotal reclaimed space: 300kB\n",
            ids[0]
        )
    );
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached.len(), 0);
}

/// The full ids `system df -v` lists for the build cache, with their types.
fn cache_rows(h: &Hoist) -> Vec<serde_json::Value> {
    let du: serde_json::Value =
        serde_json::from_str(&h.ok(&["system", "df", "-v", "--format", "json"])).unwrap();
    du["BuildCache"].as_array().unwrap().clone()
}

fn cache_ids(h: &Hoist) -> Vec<String> {
    cache_rows(h)
        .iter()
        .map(|r| r["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn system_df_formats_and_verbose_listing() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=cache,target=/c,id=dl head -c 5000 /bin/busybox > /c/x\n\
         RUN head -c 300000 /bin/busybox > /blob\n",
    );
    build(&h, &ctx, &["-t", "one"]);
    let two = h.path("two");
    write(&two, "Dockerfile", "FROM busybox\nRUN echo 2 > /two\n");
    build(&h, &two, &["-t", "two"]);

    // Three images; three steps cached and one cache mount.
    assert_eq!(
        h.ok(&["system", "df", "--format", "{{.Type}}={{.TotalCount}}"]),
        "Images=3\nContainers=0\nLocal Volumes=0\nBuild Cache=4\n"
    );
    let json = h.ok(&["system", "df", "--format", "json"]);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1]
            == r#"{"Active":"0","Reclaimable":"0B","Size":"0B","TotalCount":"0","Type":"Containers"}"#,
        "{json}"
    );
    // The cache mount is all the build cache keeps that no image holds.
    assert!(
        lines[3].ends_with(
            r#""Reclaimable":"5kB","Size":"5kB","TotalCount":"4","Type":"Build Cache"}"#
        ),
        "{json}"
    );
    let table = h.ok(&["system", "df", "--format", "table {{.Type}}\t{{.Size}}"]);
    assert_eq!(table.lines().next(), Some("TYPE            SIZE"));

    // Verbose: what each image shares with the others and holds alone.
    let du: serde_json::Value =
        serde_json::from_str(&h.ok(&["system", "df", "-v", "--format", "json"])).unwrap();
    let keys: Vec<&String> = du.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["Images", "Containers", "Volumes", "BuildCache"]);
    let image = |repo: &str| {
        du["Images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["Repository"] == repo)
            .unwrap()
            .clone()
    };
    let base = image("busybox");
    assert_eq!(base["UniqueSize"], "0B", "{base}");
    assert_eq!(base["Containers"], "0");
    let one = image("one");
    assert_eq!(one["SharedSize"], base["VirtualSize"], "{one}");
    assert_eq!(one["UniqueSize"], "300kB", "{one}");
    assert_eq!(image("two")["UniqueSize"], "2B");
    let created = one["CreatedAt"].as_str().unwrap();
    assert!(
        regex::Regex::new(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \S+$")
            .unwrap()
            .is_match(created),
        "whole seconds, as docker's API gives: {created}"
    );
    let rows = cache_rows(&h);
    assert_eq!(rows.len(), 4);
    let mount: Vec<_> = rows
        .iter()
        .filter(|r| r["CacheType"] == "exec.cachemount")
        .collect();
    assert_eq!(mount.len(), 1, "{rows:?}");
    assert_eq!(
        (
            &mount[0]["Size"],
            &mount[0]["UsageCount"],
            &mount[0]["Shared"]
        ),
        (&"5kB".into(), &"1".into(), &"false".into())
    );
    for r in rows.iter().filter(|r| r["CacheType"] == "regular") {
        assert_eq!(r["Shared"], "true", "an image holds every layer: {r}");
        assert_eq!(r["ID"].as_str().unwrap().len(), 64);
        assert!(r["LastUsedSince"].as_str().unwrap().ends_with(" ago"));
    }

    // A rebuild hits: its entries count another use.
    build(&h, &ctx, &["-t", "one"]);
    let rows = cache_rows(&h);
    assert!(
        rows.iter()
            .all(|r| r["UsageCount"] == "1" || r["UsageCount"] == "2"),
        "{rows:?}"
    );
    let used_twice = rows.iter().filter(|r| r["UsageCount"] == "2").count();
    // The two steps of `one`; the cache mount is not mounted by a step that hits.
    assert_eq!(used_twice, 2, "{rows:?}");

    // The sections of the table, with docker's headers.
    let v = h.ok(&["system", "df", "-v"]);
    for want in [
        "Images space usage:\n\nREPOSITORY   TAG       IMAGE ID       CREATED",
        "\n\nContainers space usage:\n\nCONTAINER ID   IMAGE     COMMAND   LOCAL VOLUMES   SIZE      CREATED   STATUS    NAMES\n",
        "\n\nLocal Volumes space usage:\n\nVOLUME NAME   LINKS     SIZE\n",
        "\n\nBuild cache usage: 5kB\n\nCACHE ID       CACHE TYPE        SIZE      CREATED",
    ] {
        assert!(v.contains(want), "{want:?} in:\n{v}");
    }
    assert!(
        v.contains("SHARED SIZE   UNIQUE SIZE   CONTAINERS\n"),
        "{v}"
    );
    // A template over the whole: run once, no newline after, as docker does.
    assert_eq!(
        h.ok(&[
            "system",
            "df",
            "-v",
            "--format",
            "{{len .Images}}/{{len .BuildCache}}"
        ]),
        "3/4"
    );
}

#[test]
fn builder_prune_filters() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=cache,target=/c head -c 7000 /bin/busybox > /c/x\n\
         RUN head -c 200000 /bin/busybox > /blob\n",
    );
    let o = build(&h, &ctx, &[]);
    h.ok(&["rmi", &o.id]);
    // Everything was used within the hour: `until=1h` leaves it all.
    for args in [
        &["--filter", "until=1h"][..],
        &["-a", "--filter", "unused-for=1h"],
    ] {
        let mut a = vec!["builder", "prune", "-f"];
        a.extend_from_slice(args);
        assert_eq!(h.ok(&a), "Total reclaimed space: 0B\n");
    }
    assert_eq!(cache_rows(&h).len(), 3);
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.cached.len(), 2);
    h.ok(&["rmi", &o.id]);
    for (filter, why) in [
        ("foo=bar", "Invalid filter 'foo'"),
        (
            "until=banana",
            r#""until" filter expects a duration (e.g., '24h'): time: invalid duration "banana""#,
        ),
        (
            "type=regular",
            "the build cache filter 'type' is not supported",
        ),
        ("until", "bad format of filter (expected name=value)"),
    ] {
        let err = h.fails(&["builder", "prune", "-f", "--filter", filter]);
        assert!(err.contains(why), "{filter}: {err}");
    }
    // An image holds the steps' layers again. A plain prune of what no build used in the
    // last second keeps their entries (removing them would free nothing and make the next
    // build miss) and takes the unused cache mount, as BuildKit's prune does.
    let kept = build(&h, &ctx, &["-t", "kept"]);
    assert_eq!(kept.cached.len(), 2);
    let second = std::time::Duration::from_millis(1100);
    std::thread::sleep(second);
    let rows = cache_rows(&h);
    let mount = rows
        .iter()
        .find(|r| r["CacheType"] == "exec.cachemount")
        .unwrap();
    assert_eq!(
        h.ok(&["builder", "prune", "-f", "--filter", "until=0s"]),
        format!(
            "Deleted build cache objects:\n{}\n\nTotal reclaimed space: 7kB\n",
            mount["ID"].as_str().unwrap()
        )
    );
    assert_eq!(
        build(&h, &ctx, &[]).cached.len(),
        2,
        "the image's steps still hit"
    );
    // `-a` takes the entries an image shares too: no space comes back, and the next build
    // runs every step.
    std::thread::sleep(second);
    let mut before = cache_ids(&h);
    before.sort_unstable();
    let out = h.ok(&["builder", "prune", "-f", "-a", "--filter", "until=0s"]);
    let (list, total) = out.split_once("\n\n").unwrap();
    let mut listed: Vec<&str> = list.lines().skip(1).collect();
    listed.sort_unstable();
    assert_eq!(listed, before, "{out}");
    assert_eq!(total, "Total reclaimed space: 0B\n", "{out}");
    assert!(cache_rows(&h).is_empty());
    assert_eq!(build(&h, &ctx, &[]).cached.len(), 0);
}

/// The entries of one layer of an image (path, type, mode, owner, link, content), via `save`.
fn layer_entries(h: &Hoist, image: &str, index: usize) -> Vec<String> {
    all_layer_entries(h, image).swap_remove(index)
}

/// Every layer's entries, in order, from one `hoist save`: "path type mode uid:gid link time
/// content".
fn all_layer_entries(h: &Hoist, image: &str) -> Vec<Vec<String>> {
    use std::io::Read;
    let archive = h.path(&format!("{image}.tar"));
    h.ok(&["save", "-o", archive.to_str().unwrap(), image]);
    let mut blobs = std::collections::BTreeMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        blobs.insert(name, buf);
    }
    let m: serde_json::Value = serde_json::from_slice(&blobs["manifest.json"]).unwrap();
    let layers = m[0]["Layers"].as_array().unwrap();
    layers
        .iter()
        .map(|layer| entries_of(&blobs[layer.as_str().unwrap()]))
        .collect()
}

fn entries_of(layer: &[u8]) -> Vec<String> {
    use std::io::Read;
    let mut t = tar::Archive::new(layer);
    t.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut content = String::new();
            let _ = e.read_to_string(&mut content);
            // The tests date their sources in the past: a time after that was made by the
            // build (a directory the copy creates), and differs from build to build.
            let mtime = h.mtime().unwrap();
            let mtime = if mtime < 1_500_000_000 {
                mtime.to_string()
            } else {
                "now".to_owned()
            };
            format!(
                "{} {:?} {:o} {}:{} {:?} {mtime} {content:?}",
                e.path().unwrap().display(),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.link_name().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_copy_rebuilt_from_its_earlier_layer_equals_a_full_copy() {
    rebuilt_copy_equals_full_copy("COPY app /srv/app");
}

/// The context's root as the source: its files are named without a prefix (this once
/// reused every file, changed or not).
#[test]
fn a_copy_of_the_whole_context_rebuilt_equals_a_full_copy() {
    rebuilt_copy_equals_full_copy("COPY . /srv/");
}

/// More files than the per-file inputs keep in memory: both builds' inputs are set aside and
/// read back to compare.
#[test]
fn a_large_copy_rebuilt_from_its_earlier_layer_equals_a_full_copy() {
    rebuilt_copy_equals_full_copy_with("COPY app /srv/app", 9000);
}

fn rebuilt_copy_equals_full_copy(copy: &str) {
    rebuilt_copy_equals_full_copy_with(copy, 0);
}

/// Sets the time of `path` (a link itself) and, with `below`, of everything below it.
fn date(path: &Path, secs: u64, below: bool) {
    let out = std::process::Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}")])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    if below && path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            date(&e.unwrap().path(), secs, below);
        }
    }
}

/// Random changes to a context (content, modes, times, files and directories made, removed
/// and swapped, symlinks, hard links), each followed by an incremental rebuild and a full
/// one: the two layers must be the same, byte for byte. Fixed seeds, so a failure repeats.
#[test]
fn random_context_changes_rebuild_as_a_full_copy_would() {
    for seed in [7_u64, 1_000_003] {
        // --parents takes the planned write (the others the one that walks as it writes).
        for copy in [
            "COPY . /tmp/",
            "COPY --chmod=u+x --chown=1:2 . /tmp/",
            "COPY --parents . /tmp/",
            "COPY --exclude=**/c1* . /tmp/",
        ] {
            random_rebuilds(seed, copy, 8);
        }
    }
}

fn random_rebuilds(seed: u64, copy: &str, rounds: usize) {
    use std::os::unix::fs::symlink;
    let h = with_busybox();
    let ctx = h.path("ctx");
    // Into a directory of the base image, so that the full rebuild's parent is the same.
    write(&ctx, "Dockerfile", &format!("FROM busybox\n{copy}\n"));
    write(&ctx, ".dockerignore", "Dockerfile\n.dockerignore\n");
    let mut rng = Rng::new(seed);
    let times = [1_000_000_000_u64, 1_100_000_000, 1_200_000_000];
    let entries = |ctx: &Path| -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![ctx.to_owned()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap();
                if d == ctx && (name == "Dockerfile" || name == ".dockerignore") {
                    continue;
                }
                if p.is_dir() && !p.is_symlink() {
                    todo.push(p.clone());
                }
                out.push(p);
            }
        }
        out.sort();
        out
    };
    let change = |rng: &mut Rng| {
        let all = entries(&ctx);
        let files: Vec<&PathBuf> = all
            .iter()
            .filter(|p| p.is_file() && !p.is_symlink())
            .collect();
        let mut dirs: Vec<PathBuf> = all
            .iter()
            .filter(|p| p.is_dir() && !p.is_symlink())
            .cloned()
            .collect();
        dirs.push(ctx.clone());
        let name = format!(
            "{}{}",
            rng.pick(&["a", "b", "c", "d"]),
            rng.pick(&["", "1", ".txt"])
        );
        let fresh = rng.pick(&dirs).join(name);
        let free = !fresh.exists() && !fresh.is_symlink();
        // Errors (a name taken, nothing to pick) leave the context as it was.
        let _ = match rng.below(9) {
            0 | 1 if free => std::fs::write(&fresh, format!("{}", rng.below(1000))),
            2 if !files.is_empty() => {
                let f = rng.pick(&files);
                let old = std::fs::read(f).unwrap();
                std::fs::write(f, [&old[..], b"+"].concat())
            }
            3 if !files.is_empty() => std::fs::set_permissions(
                rng.pick(&files),
                std::fs::Permissions::from_mode(*rng.pick(&[0o644, 0o600, 0o755, 0o664])),
            ),
            4 if dirs.len() > 1 => std::fs::set_permissions(
                rng.pick(&dirs[..dirs.len() - 1]),
                std::fs::Permissions::from_mode(*rng.pick(&[0o755, 0o700, 0o775])),
            ),
            5 if !all.is_empty() => {
                let p = rng.pick(&all);
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                }
            }
            6 if free => std::fs::create_dir(&fresh),
            7 if free => symlink(rng.pick(&["a", "../b", "x/y"]), &fresh),
            8 if free && !files.is_empty() => std::fs::hard_link(rng.pick(&files), &fresh),
            _ if !all.is_empty() => {
                // A file becomes a directory, or a directory a file.
                let p = rng.pick(&all);
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(p).unwrap();
                    std::fs::write(p, "was a directory")
                } else {
                    std::fs::remove_file(p).unwrap();
                    std::fs::create_dir(p).unwrap();
                    std::fs::write(p.join("in"), "was a file")
                }
            }
            _ => Ok(()),
        };
    };
    let redate = |rng: &mut Rng| {
        let mut all = entries(&ctx);
        all.push(ctx.clone());
        for p in all {
            date(&p, *rng.pick(&times), false);
        }
    };
    for _ in 0..6 {
        change(&mut rng);
    }
    redate(&mut rng);
    build(&h, &ctx, &["-t", "incremental"]);
    // Rebuilds in a later second than the first build: a time taken from the clock instead of
    // the image or the sources would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut compared = 0;
    for round in 0..rounds {
        for _ in 0..=rng.below(3) {
            change(&mut rng);
        }
        redate(&mut rng);
        let o = build(&h, &ctx, &["-t", "incremental"]);
        if o.cached.iter().any(|c| c == copy) {
            // Only times changed, which keys leave out: the earlier layer, as designed.
            continue;
        }
        build(&h, &ctx, &["--no-cache", "-t", "full"]);
        let why = format!("seed {seed}, {copy}, round {round}");
        assert_eq!(
            layer_entries(&h, "incremental", 1),
            layer_entries(&h, "full", 1),
            "{why}"
        );
        let layers = |image: &str| h.ok(&["inspect", "-f", "{{json .RootFS.Layers}}", image]);
        assert_eq!(layers("incremental"), layers("full"), "{why}");
        compared += 1;
    }
    assert!(compared >= rounds / 2, "only {compared} rebuilds compared");
}

/// `filler` more files that stay as they are, under `app/many/`.
fn rebuilt_copy_equals_full_copy_with(copy: &str, filler: usize) {
    let h = with_busybox();
    let ctx = h.path("ctx");
    for i in 0..filler {
        write(&ctx, &format!("app/many/d{}/f{i}", i % 10), &i.to_string());
    }
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM busybox\nWORKDIR /srv\n{copy}\n"),
    );
    write(&ctx, ".dockerignore", "Dockerfile\n.dockerignore\n");
    write(&ctx, "app/a.txt", "a");
    write(&ctx, "app/sub/b.txt", "b");
    write(&ctx, "app/gone/g.txt", "g");
    write(&ctx, "app/sub/keep.txt", "unchanged");
    write(&ctx, "app/sub/touched.txt", "same");
    write(&ctx, "app/dir/d.txt", "d");
    std::os::unix::fs::symlink("a.txt", ctx.join("app/link")).unwrap();
    std::fs::hard_link(ctx.join("app/a.txt"), ctx.join("app/hard")).unwrap();
    date(&ctx, 1_000_000_000, true);
    build(&h, &ctx, &[]);
    // Some files change, one directory goes, one file arrives; the rest is reused.
    write(&ctx, "app/sub/b.txt", "b changed");
    std::fs::remove_dir_all(ctx.join("app/gone")).unwrap();
    write(&ctx, "app/new.txt", "new");
    std::fs::set_permissions(
        ctx.join("app/a.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // Changes that leave a file's inputs alike: a directory's mode and times, a file's time.
    std::fs::set_permissions(ctx.join("app/dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for changed in [
        "app",
        "app/sub",
        "app/sub/b.txt",
        "app/new.txt",
        "app/dir",
        "app/sub/touched.txt",
    ] {
        date(&ctx.join(changed), 1_100_000_000, false);
    }
    let incremental = build(&h, &ctx, &["-t", "incremental"]);
    assert_eq!(incremental.ran, [copy]);
    // The unchanged file was linked from the earlier layer, not copied: both snapshots hold
    // one inode.
    // So was a filler file from the first inputs set aside.
    let kept: &[&str] = if filler > 0 {
        &["srv/app/sub/keep.txt", "srv/app/many/d0/f0"]
    } else {
        &["srv/app/sub/keep.txt"]
    };
    for keep in kept {
        let mut linked = 0;
        for snap in std::fs::read_dir(h.root().join("v1/snapshots")).unwrap() {
            let keep = snap.unwrap().path().join(keep);
            if let Ok(m) = std::fs::metadata(&keep) {
                use std::os::unix::fs::MetadataExt;
                assert_eq!(m.nlink(), 2, "{}", keep.display());
                linked += 1;
            }
        }
        assert_eq!(linked, 2, "{keep}");
    }
    build(&h, &ctx, &["--no-cache", "-t", "full"]);
    let entries = layer_entries(&h, "incremental", 2);
    assert!(
        entries
            .iter()
            .any(|e| e.starts_with("srv/app/sub/b.txt ") && e.ends_with("\"b changed\"")),
        "{entries:#?}"
    );
    assert_eq!(entries, layer_entries(&h, "full", 2));
}

/// Random Dockerfiles (ARG, ENV, WORKDIR, USER, LABEL, CMD, RUN, COPY, stages and COPY
/// --from) and random edits between builds (files changed, added and re-moded, build args set
/// and dropped, .dockerignore and Dockerfile edits): after each edit, the build that may use the
/// cache must give what a --no-cache build gives — the same config, history and files of every
/// layer (times aside: a hit keeps the time its layer was made). Fixed seeds.
#[test]
fn random_edits_never_give_a_wrong_cache_hit() {
    let h = with_busybox();
    let mut compared = 0;
    for seed in [3_u64, 11, 29, 101, 4_242] {
        compared += random_cache_rounds(&h, seed, 6);
    }
    assert!(compared >= 20, "only {compared} rebuilds compared");
}

/// What a RUN shows of the copied files. Not their link counts: a rebuilt COPY hard-links the
/// files it keeps to its earlier layer's, which a RUN sees as links (a --no-cache build does
/// not).
const STAT_C: &str = "stat -c '%a %u:%g %s %n' /c/f1 /c/d/f2 /c/a.txt /c/b.txt /c/g /c/d/new";

fn random_dockerfile(rng: &mut Rng) -> String {
    let mut df = String::from("FROM busybox AS s0\n");
    let mut stages = vec!["s0".to_owned()];
    for i in 0..3 + rng.below(7) {
        let line = match rng.below(11) {
            0 => rng.pick(&["ARG A", "ARG B=bdef", "ARG A=adef"]).to_string(),
            1 => rng
                .pick(&["ENV X=$A", "ENV Y=lit", "ENV Z=${B:-zz}"])
                .to_string(),
            2 | 3 => match rng.below(4) {
                0 => format!("RUN echo $A $B $X > /tmp/o{i}"),
                1 => format!("RUN cat /c/f1 > /tmp/o{i} 2>&1; echo $Y >> /tmp/o{i}"),
                2 => format!("RUN {STAT_C} > /tmp/o{i} 2>&1; id -u >> /tmp/o{i}"),
                _ => format!("RUN pwd > /tmp/o{i}; echo $Z >> /tmp/o{i}"),
            },
            4 => rng
                .pick(&[
                    "COPY f1 /c/",
                    "COPY . /c/",
                    "COPY d /c/d",
                    "COPY *.txt /c/",
                    "COPY --exclude=*.txt . /c/",
                    "COPY --chmod=600 f1 /c/",
                    "COPY --chmod=u+x f1 /c/",
                    "COPY --chown=1:1 d /c/d",
                    "COPY --link . /c/",
                    "COPY --parents d/f2 /c/",
                ])
                .to_string(),
            5 => rng.pick(&["WORKDIR /w", "WORKDIR /w/$A"]).to_string(),
            6 => rng.pick(&["USER 1:1", "USER root"]).to_string(),
            7 => rng.pick(&["LABEL l=$A", "LABEL m=const"]).to_string(),
            8 => rng.pick(&["CMD [\"sh\"]", "CMD echo $X"]).to_string(),
            9 => {
                let from = stages[rng.below(stages.len())].clone();
                stages.push(format!("s{}", stages.len()));
                format!("FROM {from} AS {}", stages.last().unwrap())
            }
            // From an earlier stage: a stage cannot copy from itself.
            _ if stages.len() > 1 => {
                let from = &stages[rng.below(stages.len() - 1)];
                format!("COPY --from={from} /tmp /from{i}")
            }
            _ => "COPY --from=busybox /bin/busybox /from-image".to_owned(),
        };
        df.push_str(&line);
        df.push('\n');
    }
    let from = stages[rng.below(stages.len())].clone();
    // The last stage always copies the context, so that every edit shows somewhere.
    df.push_str(&format!(
        "FROM {from}\nCOPY . /all/\nRUN ls -R /c /tmp > /tmp/final 2>&1; {STAT_C} >> /tmp/final 2>&1 || true\n"
    ));
    df
}

/// One random Dockerfile through `rounds` edits; returns how many rebuilds were compared.
fn random_cache_rounds(h: &Hoist, seed: u64, rounds: usize) -> usize {
    let mut rng = Rng::new(seed);
    let ctx = h.path(&format!("cache-ctx-{seed}"));
    write(&ctx, "f1", "f1");
    write(&ctx, "d/f2", "f2");
    write(&ctx, "a.txt", "a");
    write(&ctx, ".dockerignore", "Dockerfile\n.dockerignore\n");
    write(&ctx, "Dockerfile", &random_dockerfile(&mut rng));
    let mut args: BTreeMap<&str, &str> = BTreeMap::new();
    let try_build = |args: &BTreeMap<&str, &str>, extra: &[&str]| {
        let mut a = vec!["build", "-q"];
        let pairs: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for p in &pairs {
            a.extend(["--build-arg", p.as_str()]);
        }
        a.extend_from_slice(extra);
        a.push(ctx.to_str().unwrap());
        h.output(&a).status.success()
    };
    let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    assert!(try_build(&args, &["-t", "cached"]), "{df}");
    let mut compared = 0;
    for round in 0..rounds {
        let edit = match rng.below(8) {
            0 | 1 => {
                let f = *rng.pick(&["f1", "d/f2", "a.txt"]);
                let old = std::fs::read_to_string(ctx.join(f)).unwrap();
                write(&ctx, f, &format!("{old}+"));
                format!("appended to {f}")
            }
            2 => {
                let f = *rng.pick(&["b.txt", "d/new", "g"]);
                write(&ctx, f, &rng.below(1000).to_string());
                format!("wrote {f}")
            }
            3 => {
                let f = *rng.pick(&["f1", "d/f2", "a.txt"]);
                let now = std::fs::metadata(ctx.join(f)).unwrap().permissions().mode() & 0o777;
                let mode = if now == 0o644 {
                    *rng.pick(&[0o755, 0o600])
                } else {
                    0o644
                };
                std::fs::set_permissions(ctx.join(f), std::fs::Permissions::from_mode(mode))
                    .unwrap();
                format!("chmod {mode:o} {f}")
            }
            4 | 5 => {
                let name = *rng.pick(&["A", "B", "X"]);
                if rng.below(3) == 0 {
                    args.remove(name);
                } else {
                    args.insert(name, *rng.pick(&["1", "2", "three"]));
                }
                format!("build args {args:?}")
            }
            6 => {
                let ignored = *rng.pick(&[
                    "",
                    "a.txt\n",
                    "d\n",
                    "*.txt\n",
                    "d\n!d/f2\n",
                    "*.txt\n!a.txt\n",
                ]);
                write(
                    &ctx,
                    ".dockerignore",
                    &format!("{ignored}Dockerfile\n.dockerignore\n"),
                );
                format!(".dockerignore {ignored:?}")
            }
            _ => {
                let text = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                let i = 1 + rng.below(lines.len() - 1);
                if lines[i].starts_with("RUN") {
                    lines[i].push_str(" # edited");
                } else if lines[i].starts_with("ENV") || lines[i].starts_with("LABEL") {
                    lines[i].push('q');
                }
                write(&ctx, "Dockerfile", &(lines.join("\n") + "\n"));
                format!("edited line {}", i + 1)
            }
        };
        let cached = try_build(&args, &["-t", "cached"]);
        let full = try_build(&args, &["--no-cache", "-t", "full"]);
        let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
        let why = format!("seed {seed}, round {round}, after {edit}:\n{df}");
        assert_eq!(cached, full, "{why}");
        if !cached {
            continue;
        }
        for what in ["{{json .Config}}", "{{len .RootFS.Layers}}"] {
            let of = |image: &str| h.ok(&["inspect", "-f", what, image]);
            assert_eq!(of("cached"), of("full"), "{what}, {why}");
        }
        let history =
            |image: &str| h.ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", image]);
        assert_eq!(history("cached"), history("full"), "{why}");
        let timeless = |image: &str| -> Vec<Vec<String>> {
            all_layer_entries(h, image)
                .into_iter()
                .map(|layer| {
                    layer
                        .into_iter()
                        .map(|e| {
                            // Drop the time, the sixth field.
                            let mut f: Vec<&str> = e.splitn(7, ' ').collect();
                            f.remove(5);
                            f.join(" ")
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(timeless("cached"), timeless("full"), "{why}");
        compared += 1;
    }
    compared
}

/// The text of `path` in `image`, through `hoist run`.
fn cat(h: &Hoist, image: &str, path: &str) -> String {
    h.ok(&["run", "--rm", image, "cat", path])
}

#[test]
fn a_stage_rebuilt_with_no_cache_filter_reaches_the_stages_that_use_it() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox AS a\n\
         RUN cat /proc/sys/kernel/random/uuid > /a\n\
         FROM a AS child\n\
         RUN cat /a > /child\n\
         FROM busybox\n\
         COPY --from=a /a /a\n\
         COPY --from=child /child /child\n",
    );
    let first = build(&h, &ctx, &[]);
    let old = cat(&h, &first.id, "/a");
    // Stage a runs again and gives a new /a: the stage built on it and the final stage's
    // copies must take the new one, not their cached layers of the old one.
    let second = build(&h, &ctx, &["--no-cache-filter", "a"]);
    assert_eq!(second.cached, Vec::<String>::new(), "{:?}", second.ran);
    let new = cat(&h, &second.id, "/a");
    assert_ne!(new, old);
    assert_eq!(cat(&h, &second.id, "/child"), new);
    // A plain rebuild then hits every step, with the layers of the rebuild.
    let third = build(&h, &ctx, &[]);
    assert_eq!(third.ran, Vec::<String>::new(), "{:?}", third.ran);
    assert_eq!(third.id, second.id);
}

/// A COPY from a stage is cached by what it copies, never by the files' times (as BuildKit):
/// a stage rebuilt to the same files leaves that COPY and every step after it cached, and the
/// image as it was. A file of the stage whose content, mode or owner changed misses there,
/// named; an owner that `--chown` replaces does not count.
#[test]
fn a_copy_from_a_stage_rebuilt_to_the_same_files_hits() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox AS a\n\
         ARG MODE=644 OWNER=5:6\n\
         COPY in.txt /in.txt\n\
         RUN wc -c < /in.txt > /out && mkdir -p /d/e && echo x > /d/e/f && ln -s f /d/e/l \
             && chmod $MODE /d/e/f && chown $OWNER /d/e/f\n\
         FROM busybox\n\
         COPY --from=a /out /out\n\
         COPY --chown=1:1 --from=a /d /owned\n\
         COPY --from=a /d /d\n\
         RUN cat /out /d/e/f > /both\n",
    );
    let run_a = "RUN wc -c < /in.txt > /out && mkdir -p /d/e && echo x > /d/e/f && ln -s f /d/e/l \
                 && chmod $MODE /d/e/f && chown $OWNER /d/e/f";
    let copies = [
        "COPY --from=a /out /out",
        "COPY --chown=1:1 --from=a /d /owned",
        "COPY --from=a /d /d",
        "RUN cat /out /d/e/f > /both",
    ];
    write(&ctx, "in.txt", "hello");
    let first = build(&h, &ctx, &[]);
    assert_eq!(first.cached, Vec::<String>::new());

    // Same length, so the same /out; the stage's RUN writes every file again, a second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&ctx, "in.txt", "jello");
    let second = build(&h, &ctx, &[]);
    assert_eq!(second.ran, ["COPY in.txt /in.txt", run_a]);
    assert_eq!(second.cached, copies, "{:?}", second.misses);
    assert_eq!(second.id, first.id, "the same files make the same image");
    // Nothing changed: every step hits.
    let third = build(&h, &ctx, &[]);
    assert_eq!(third.ran, Vec::<String>::new());
    assert_eq!(third.id, first.id);

    // Content.
    write(&ctx, "in.txt", "hello world");
    let o = build(&h, &ctx, &[]);
    assert_eq!(o.ran[2..], copies);
    assert_eq!(o.misses[2], "COPY --from=a /out /out: file out changed");
    assert_eq!(cat(&h, &o.id, "/out").trim(), "11");

    // Mode: only the copies of /d miss, and the image has the new mode.
    let o = build(&h, &ctx, &["--build-arg", "MODE=600"]);
    assert_eq!(o.ran, [run_a, copies[1], copies[2], copies[3]]);
    assert_eq!(o.cached, ["COPY in.txt /in.txt", copies[0]]);
    assert!(
        o.misses
            .contains(&"COPY --chown=1:1 --from=a /d /owned: file d/e/f changed".to_owned()),
        "{:?}",
        o.misses
    );
    let stat = |id: &str, path: &str| h.ok(&["run", "--rm", id, "stat", "-c", "%a %u:%g", path]);
    assert_eq!(stat(&o.id, "/d/e/f").trim(), "600 5:6");

    // Owner: the copy that keeps it misses; the one that sets its own hits.
    let o = build(
        &h,
        &ctx,
        &["--build-arg", "MODE=600", "--build-arg", "OWNER=7:8"],
    );
    assert_eq!(o.cached, ["COPY in.txt /in.txt", copies[0], copies[1]]);
    assert_eq!(o.ran, [run_a, copies[2], copies[3]]);
    assert!(
        o.misses.contains(
            &"COPY --from=a /d /d: the owner or device number of a copied file changed".to_owned()
        ),
        "{:?}",
        o.misses
    );
    assert_eq!(stat(&o.id, "/d/e/f").trim(), "600 7:8");
    assert_eq!(stat(&o.id, "/owned/e/f").trim(), "600 1:1");
}

/// A COPY from a stage that cannot hit (a first build, or `--no-cache`) hashes what it copies
/// as it copies it; the key it records must be the one a later build makes by hashing (the
/// stage run again, so not found by the stage's key).
#[test]
fn a_copy_from_a_stage_hashed_as_it_copies_records_the_key_a_later_build_makes() {
    for flags in [&[][..], &["--no-cache"][..]] {
        let h = with_busybox();
        let ctx = h.path("ctx");
        write(
            &ctx,
            "Dockerfile",
            "FROM busybox AS a\n\
             RUN mkdir -p /o/d/e && echo 1 > /o/f && head -c 300000 /bin/busybox > /o/d/big \
                 && ln -s f /o/l && ln /o/f /o/d/e/hard && chown 3:4 /o/d/big\n\
             FROM busybox\n\
             COPY --from=a /o /o\n\
             RUN ls -lnR /o > /listing\n",
        );
        // Without --explain-cache, which compares inputs first and so hashes first.
        let iid = h.path("first-iid");
        let mut args = vec!["build", "--iidfile", iid.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push(ctx.to_str().unwrap());
        let out = h.output(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Run a second later, the stage's files get other times: another layer, another
        // stage key, so the COPY's key is made again by hashing.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second = build(&h, &ctx, &["--no-cache-filter", "a"]);
        assert_eq!(
            second.cached,
            ["COPY --from=a /o /o", "RUN ls -lnR /o > /listing"],
            "{flags:?}: {:?}",
            second.misses
        );
        assert_eq!(
            second.id,
            std::fs::read_to_string(&iid).unwrap(),
            "{flags:?}"
        );
    }
}

/// A RUN's bind mount of a stage counts by what it shows, as a COPY from there: the stage
/// rebuilt to the same files leaves the RUN cached; other files there miss.
#[test]
fn a_bind_mount_of_a_stage_rebuilt_to_the_same_files_hits() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox AS a\n\
         COPY in.txt /in.txt\n\
         RUN wc -c < /in.txt > /out\n\
         FROM busybox\n\
         RUN --mount=type=bind,from=a,source=/out,target=/m cat /m > /got\n",
    );
    let mounted = "RUN --mount=type=bind,from=a,source=/out,target=/m cat /m > /got";
    write(&ctx, "in.txt", "hello");
    let first = build(&h, &ctx, &[]);
    write(&ctx, "in.txt", "jello");
    let second = build(&h, &ctx, &[]);
    assert_eq!(second.cached, [mounted], "{:?}", second.misses);
    assert_eq!(second.id, first.id);
    write(&ctx, "in.txt", "hello world");
    let third = build(&h, &ctx, &[]);
    assert_eq!(third.cached, Vec::<String>::new());
    assert!(
        third
            .misses
            .contains(&format!("{mounted}: mount 0 stage changed")),
        "{:?}",
        third.misses
    );
    assert_eq!(cat(&h, &third.id, "/got").trim(), "11");
}

#[test]
fn a_run_replaced_by_a_build_that_failed_later_is_not_built_on_with_old_layers() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         RUN cat /proc/sys/kernel/random/uuid > /a\n\
         ARG FAIL\n\
         RUN cp /a /b && test -z \"$FAIL\"\n",
    );
    let first = build(&h, &ctx, &[]);
    assert_eq!(cat(&h, &first.id, "/a"), cat(&h, &first.id, "/b"));
    // With the cache off, the first RUN runs again (its entry now holds a new /a) and the
    // build fails at the second.
    let out = h.output(&[
        "build",
        "--no-cache",
        "--build-arg",
        "FAIL=1",
        ctx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    // The first RUN hits its new layer; the second, whose cached layer copied the old /a, must
    // run again rather than be stacked on it.
    let third = build(&h, &ctx, &[]);
    assert_eq!(third.cached, ["RUN cat /proc/sys/kernel/random/uuid > /a"]);
    let a = cat(&h, &third.id, "/a");
    assert_ne!(a, cat(&h, &first.id, "/a"));
    assert_eq!(cat(&h, &third.id, "/b"), a);
}

#[test]
fn the_build_network_and_added_hosts_reach_the_run_key() {
    let h = with_busybox();
    let ctx = h.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\nRUN cat /etc/hosts > /hosts; cat /proc/net/dev > /net\n",
    );
    let run = "RUN cat /etc/hosts > /hosts; cat /proc/net/dev > /net";
    let first = build(&h, &ctx, &["--add-host", "db:10.1.2.3"]);
    assert!(cat(&h, &first.id, "/hosts").contains("10.1.2.3\tdb"));
    let again = build(&h, &ctx, &["--add-host", "db:10.1.2.3"]);
    assert_eq!(
        (again.cached.as_slice(), &again.id),
        (&[run.to_owned()][..], &first.id)
    );
    // Another address for the host: the RUN sees another /etc/hosts, so it runs again.
    let moved = build(&h, &ctx, &["--add-host", "db:10.1.2.4"]);
    assert_eq!(moved.ran, [run]);
    assert_eq!(moved.misses, [format!("{run}: --add-host changed")]);
    assert!(cat(&h, &moved.id, "/hosts").contains("10.1.2.4\tdb"));
    // Without a network the RUN sees only the loopback device: another result, another key.
    let plain = build(&h, &ctx, &[]);
    assert_eq!(plain.ran, [run]);
    let offline = build(&h, &ctx, &["--network", "none"]);
    assert_eq!(offline.ran, [run], "{:?}", offline.misses);
    let net = cat(&h, &offline.id, "/net");
    assert_eq!(net.lines().filter(|l| l.contains(':')).count(), 1, "{net}");
    assert!(net.contains("lo:"), "{net}");
    // Each is cached under its own key.
    assert_eq!(build(&h, &ctx, &["--network", "none"]).cached, [run]);
    assert_eq!(build(&h, &ctx, &[]).id, plain.id);
}

/// Builds `dockerfile` in a context of its own; returns the build and the cache entries it
/// added.
fn build_new(h: &Hoist, name: &str, dockerfile: &str, extra: &[&str]) -> (Outcome, Vec<String>) {
    let before = cache_ids(h);
    let ctx = h.path(name);
    write(&ctx, "Dockerfile", dockerfile);
    let o = build(h, &ctx, extra);
    let added = cache_ids(h)
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    (o, added)
}

/// `system prune`: docker's prompt (answering no removes nothing), then the dangling images
/// and the build cache no image holds any more, in docker's two sections and one total;
/// with `-a` every image and all build cache.
#[test]
fn system_prune_images_then_build_cache() {
    let h = with_busybox();
    let (dangling, dangling_cache) = build_new(
        &h,
        "dangling",
        "FROM busybox\nRUN head -c 300000 /bin/busybox > /a\n",
        &[],
    );
    let (kept, kept_cache) = build_new(
        &h,
        "kept",
        "FROM busybox\nRUN head -c 200000 /bin/busybox > /b\n",
        &["-t", "kept"],
    );
    assert_eq!((dangling_cache.len(), kept_cache.len()), (1, 1));
    let busybox = h.id("busybox");
    let mut images = vec![busybox.clone(), dangling.id.clone(), kept.id.clone()];
    images.sort_unstable();
    assert_eq!(h.image_ids(), images);
    let mut cache = cache_ids(&h);
    cache.sort_unstable();

    // Anything but y or yes: nothing goes, and stdout stays empty.
    for answer in ["n\n", "", "nope\n"] {
        let out = h.with_stdin(&["system", "prune"], answer);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "WARNING! This will remove:\n  - all dangling images\n  - all dangling build cache\n\
             \nAre you sure you want to continue? [y/N] "
        );
    }
    let out = h.with_stdin(
        &[
            "system",
            "prune",
            "-a",
            "--filter",
            "until=24h",
            "--filter",
            "label=x",
        ],
        "no\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "WARNING! This will remove:\n\
         \x20 - all images without at least one container associated to them\n\
         \x20 - all build cache\n\
         \n\
         \x20 Items to be pruned will be filtered with:\n\
         \x20 - label=x\n\
         \x20 - until=24h\n\
         \n\
         Are you sure you want to continue? [y/N] "
    );
    assert_eq!(h.image_ids(), images);
    let mut after = cache_ids(&h);
    after.sort_unstable();
    assert_eq!(after, cache);

    // yes: the dangling image (its config: its layers are busybox's and the cache's), then
    // its step's cache entry, now held by no image, with the layer's 300kB.
    let out = h.with_stdin(&["system", "prune"], "yes\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = regex::Regex::new(&format!(
        "^Deleted Images:\ndeleted: {}\n\nDeleted build cache objects:\n{}\n\n\
         Total reclaimed space: 30[0-9](\\.[0-9]+)?kB\n$",
        dangling.id, dangling_cache[0]
    ))
    .unwrap();
    assert!(expected.is_match(&stdout), "{stdout}");
    images.retain(|id| *id != dangling.id);
    assert_eq!(h.image_ids(), images);
    assert_eq!(cache_ids(&h), kept_cache, "the tagged image's entry stays");
    // Nothing left to take.
    assert_eq!(
        h.ok(&["system", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    let df = h.ok(&["system", "df"]);
    assert!(
        df.lines().nth(4).unwrap().starts_with("Build Cache     1 "),
        "{df}"
    );

    // -a: every image, by name, and all build cache.
    let out = h.ok(&["system", "prune", "-a", "-f"]);
    let (images_part, rest) = out.split_once("\n\n").unwrap();
    let mut listed: Vec<&str> = images_part.lines().collect();
    assert_eq!(listed.remove(0), "Deleted Images:");
    for line in [
        "untagged: busybox:latest".to_owned(),
        "untagged: kept:latest".to_owned(),
        format!("deleted: {busybox}"),
        format!("deleted: {}", kept.id),
    ] {
        assert!(listed.contains(&line.as_str()), "{line}: {out}");
    }
    let (cache_part, total) = rest.split_once("\n\n").unwrap();
    assert_eq!(
        cache_part,
        format!("Deleted build cache objects:\n{}", kept_cache[0])
    );
    let mb = regex::Regex::new(r"^Total reclaimed space: \d+(\.\d+)?MB\n$").unwrap();
    assert!(mb.is_match(total), "{out}");
    assert_eq!(h.ok(&["images", "-q"]), "");
    assert!(cache_rows(&h).is_empty());
}

/// `system prune --filter`: `label` and `label!` pick the images (docker applies neither to
/// the build cache), `until` both; other names, bad values and `--volumes` are errors that
/// remove nothing.
#[test]
fn system_prune_filters_and_errors() {
    let h = with_busybox();
    let (labelled, labelled_cache) = build_new(
        &h,
        "labelled",
        "FROM busybox\nLABEL tmp=1\nRUN head -c 100000 /bin/busybox > /l\n",
        &[],
    );
    let (plain, plain_cache) = build_new(
        &h,
        "plain",
        "FROM busybox\nRUN head -c 150000 /bin/busybox > /p\n",
        &[],
    );
    let busybox = h.id("busybox");
    let mut images = vec![busybox.clone(), labelled.id.clone(), plain.id.clone()];
    images.sort_unstable();
    let mut cache = cache_ids(&h);
    cache.sort_unstable();

    for (args, why) in [
        (
            &["--volumes"][..],
            "Error: hoist has no volumes to prune: it keeps none",
        ),
        (
            &["--filter", "dangling=true"],
            "Error: Invalid filter 'dangling'\n",
        ),
        (&["--filter", "foo=bar"], "Error: Invalid filter 'foo'\n"),
        (
            &["--filter", "label"],
            "Error: bad format of filter (expected name=value)\n",
        ),
        // The build cache reads `until` as a duration only, as docker's does.
        (
            &["--filter", "until=2020-01-01"],
            "Error: \"until\" filter expects a duration (e.g., '24h'): time: unknown unit \"-\" in duration \"2020-01-01\"\n",
        ),
        (
            &["--filter", "until=banana"],
            "Error: failed to parse value as time or duration: \"banana\"\n",
        ),
    ] {
        let mut a = vec!["system", "prune", "-f"];
        a.extend_from_slice(args);
        let err = h.fails(&a);
        assert!(err.starts_with(why), "{args:?}: {err}");
    }
    assert_eq!(h.image_ids(), images);

    // `until=24h` with `-a`: of the images only busybox, made long ago, goes (its layer is
    // the built images' too); the build cache, all used just now, stays.
    let out = h.ok(&["system", "prune", "-f", "-a", "--filter", "until=24h"]);
    let expected = regex::Regex::new(&format!(
        "^Deleted Images:\nuntagged: busybox:latest\ndeleted: {busybox}\n\n\
         Total reclaimed space: \\d+B\n$"
    ))
    .unwrap();
    assert!(expected.is_match(&out), "{out}");
    images.retain(|id| *id != busybox);
    assert_eq!(h.image_ids(), images);
    let mut after = cache_ids(&h);
    after.sort_unstable();
    assert_eq!(after, cache);

    // `label=tmp`: only the labelled dangling image; then the build cache no image holds,
    // which is that image's.
    let out = h.ok(&["system", "prune", "-f", "--filter", "label=tmp"]);
    let expected = regex::Regex::new(&format!(
        "^Deleted Images:\ndeleted: {}\n\nDeleted build cache objects:\n{}\n\n\
         Total reclaimed space: 10[0-9](\\.[0-9]+)?kB\n$",
        labelled.id,
        labelled_cache.join("\n")
    ))
    .unwrap();
    assert!(expected.is_match(&out), "{out}");
    images.retain(|id| *id != labelled.id);
    assert_eq!(h.image_ids(), images);
    assert_eq!(cache_ids(&h), plain_cache);

    // `label!=tmp` takes the unlabelled one, and with it busybox's layer, which no image
    // holds any more.
    let out = h.ok(&["system", "prune", "-f", "--filter", "label!=tmp"]);
    let expected = regex::Regex::new(&format!(
        "^Deleted Images:\ndeleted: {}\ndeleted: sha256:[0-9a-f]{{64}}\n\n\
         Deleted build cache objects:\n{}\n\nTotal reclaimed space: \\d+(\\.\\d+)?MB\n$",
        plain.id, plain_cache[0]
    ))
    .unwrap();
    assert!(expected.is_match(&out), "{out}");
    assert_eq!(h.ok(&["images", "-q"]), "");
    assert!(cache_rows(&h).is_empty());
}
