//! `images`, `history`, `tag`, `rmi`, `inspect`, `import`, `prune` through the binary, with
//! their exact output (ids, digests and ages filtered).

mod common;

use common::Hoist;
use hoist_test::stable;

/// Tables are compared byte for byte: the fixture's ids are fixed and its age is a two-digit
/// number of years, so only that number is masked.
fn years(s: &str) -> String {
    regex::Regex::new(r"\d\d years ago")
        .unwrap()
        .replace_all(s, "NN years ago")
        .into_owned()
}

#[test]
fn images_table_is_dockers() {
    let h = Hoist::new();
    let archive = hoist_test::fixed_archive(h.dir.path(), &["busybox:latest"]);
    h.ok(&["load", "-i", archive.to_str().unwrap()]);
    h.ok(&["tag", "busybox", "localhost:5000/team/app:v1"]);
    insta::assert_snapshot!("images_default", years(&h.ok(&["images"])));
    insta::assert_snapshot!("images_digests", years(&h.ok(&["images", "--digests"])));
    insta::assert_snapshot!("images_no_trunc", years(&h.ok(&["images", "--no-trunc"])));
    insta::assert_snapshot!(
        "images_custom_table",
        h.ok(&[
            "images",
            "--format",
            "table {{.Repository}}\t{{.Size}}\t{{.CreatedAt}}"
        ])
    );
    insta::assert_snapshot!("history_default", years(&h.ok(&["history", "busybox"])));
    insta::assert_snapshot!(
        "history_raw_sizes",
        h.ok(&["history", "--no-trunc", "-H=false", "busybox"])
    );
    insta::assert_snapshot!(
        "images_json",
        years(&h.ok(&["images", "--format", "json", "busybox"]))
    );
}

#[test]
fn import_prints_the_id_and_lists() {
    let h = Hoist::new();
    let id = h.import_busybox("busybox");
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import prints the id: {id}"
    );
    h.ok(&["tag", "busybox", "localhost:5000/team/app:v1"]);
    let quiet = h.ok(&["images", "-q"]);
    assert_eq!(quiet, format!("{}\n{}\n", &id[7..19], &id[7..19]));
    let full = h.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert_eq!(
        full,
        format!("{id} busybox:latest\n{id} localhost:5000/team/app:v1\n")
    );
    let json = h.ok(&["images", "--format", "json", "busybox"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object per line");
    assert_eq!(v["Repository"], "busybox");
    assert_eq!(v["Tag"], "latest");
    assert_eq!(v["Digest"], "<none>");
    assert_eq!(v["Size"], "1.98MB");
    assert!(
        regex::Regex::new(r"^(Less than a second|\d+ seconds?) ago$")
            .unwrap()
            .is_match(v["CreatedSince"].as_str().unwrap()),
        "{v}"
    );
}

#[test]
fn images_filters() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    h.import_busybox("team/tool:1.0");
    let tar = h.rootfs();
    // The same content again but untagged: a dangling image (a new id: the created time differs).
    let dangling = h
        .ok(&["import", "-m", "other", tar.to_str().unwrap()])
        .trim()
        .to_owned();
    let names = |args: &[&str]| {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        h.ok(&a)
    };
    assert_eq!(names(&["-f", "dangling=true"]), "<none>:<none>\n");
    assert_eq!(
        names(&["-f", "dangling=false"]),
        "team/tool:1.0\nbusybox:latest\n"
    );
    assert_eq!(names(&["-f", "reference=busy*"]), "busybox:latest\n");
    assert_eq!(names(&["-f", "reference=*/tool:1.*"]), "team/tool:1.0\n");
    assert_eq!(names(&["team/tool"]), "team/tool:1.0\n");
    assert_eq!(names(&["-f", "reference=nothing"]), "");
    assert_eq!(names(&["-f", "before=team/tool:1.0"]), "busybox:latest\n");
    assert_eq!(
        names(&["-f", "since=busybox"]),
        format!("<none>:<none>\nteam/tool:1.0\n")
    );
    let err = h.fails(&["images", "-f", "colour=blue"]);
    assert_eq!(err, "Error: invalid filter 'colour'\n");
    let err = h.fails(&["images", "-f", "dangling"]);
    assert_eq!(err, "Error: bad format of filter (expected name=value)\n");
    assert!(
        h.ok(&["images", "-q", "-f", "dangling=true"])
            .starts_with(&dangling[7..19])
    );
}

#[test]
fn history_rows() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let raw = h.ok(&[
        "history",
        "-H=false",
        "--format",
        "{{.CreatedAt}}|{{.Size}}|{{.Comment}}",
        "busybox",
    ]);
    let re = regex::Regex::new(&format!(
        r"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\|{}\|Imported from -\n$",
        hoist_test::busybox_rootfs_bytes()
    ))
    .unwrap();
    assert!(re.is_match(&raw), "{raw:?}");
    let q = h.ok(&["history", "-q", "--no-trunc", "busybox"]);
    assert!(q.starts_with("sha256:") && q.len() == 72, "{q:?}");
    assert_eq!(
        h.fails(&["history", "nope"]),
        "Error: No such image: nope:latest\n"
    );
}

#[test]
fn tag_errors_and_lookup() {
    let h = Hoist::new();
    let id = h.import_busybox("busybox");
    assert_eq!(
        h.fails(&["tag", "missing", "x"]),
        "Error: No such image: missing:latest\n"
    );
    assert_eq!(
        h.fails(&["tag", "busybox", "Bad/Name"]),
        "Error: Error parsing reference: \"Bad/Name\" is not a valid repository/tag: invalid reference format: repository name (Name) must be lowercase\n"
    );
    assert_eq!(
        h.fails(&["tag", "busybox", "a:b:c"]),
        "Error: Error parsing reference: \"a:b:c\" is not a valid repository/tag: invalid reference format\n"
    );
    // Short ids, full ids and the bare hex all find the image.
    for name in [&id[7..13], &id[7..], id.as_str()] {
        h.ok(&["tag", name, "found:it"]);
    }
    assert_eq!(
        h.ok(&["images", "-q", "found"]),
        format!("{}\n", &id[7..19])
    );
}

#[test]
fn rmi_untags_then_deletes() {
    let h = Hoist::new();
    let id = h.import_busybox("busybox");
    h.ok(&["tag", "busybox", "busybox:two"]);
    h.ok(&["tag", "busybox", "other/name"]);
    let err = h.fails(&["rmi", &id[7..19]]);
    assert_eq!(
        err,
        format!(
            "Error: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories\n",
            &id[7..19]
        )
    );
    assert_eq!(h.ok(&["rmi", "busybox:two"]), "Untagged: busybox:two\n");
    assert_eq!(
        h.ok(&["rmi", "other/name"]),
        "Untagged: other/name:latest\n"
    );
    let out = h.ok(&["rmi", "busybox"]);
    insta::assert_snapshot!(stable(&out), @r"
    Untagged: busybox:latest
    Deleted: sha256:[DIGEST]
    Deleted: sha256:[DIGEST]
    ");
    assert_eq!(h.ok(&["images", "-q"]), "");
    // Content went with the image: nothing is left in the blob and snapshot directories.
    assert_eq!(
        common::files_in(&h.root().join("v1/blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(
        common::files_in(&h.root().join("v1/snapshots")),
        Vec::<String>::new()
    );
    let out = h.output(&["rmi", "busybox", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: No such image: busybox:latest\nError: No such image: gone:latest\n"
    );
}

#[test]
fn rmi_force_removes_every_name() {
    let h = Hoist::new();
    let id = h.import_busybox("a");
    h.ok(&["tag", "a", "b:1"]);
    let out = h.ok(&["rmi", "-f", &id[7..19]]);
    assert!(
        out.contains("Untagged: a:latest\n") && out.contains("Untagged: b:1\n"),
        "{out}"
    );
    assert!(out.contains(&format!("Deleted: {id}\n")), "{out}");
}

#[test]
fn inspect_shape_and_format() {
    let h = Hoist::new();
    let id = h.import_busybox("busybox");
    let out = h.ok(&["inspect", "busybox"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let obj = &v[0];
    let keys: Vec<&str> = obj
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "Id",
            "RepoTags",
            "RepoDigests",
            "Comment",
            "Created",
            "Author",
            "Config",
            "Architecture",
            "Os",
            "Size",
            "RootFS",
            "Metadata"
        ]
    );
    assert_eq!(obj["Id"], id.as_str());
    assert_eq!(obj["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(obj["Comment"], "Imported from -");
    assert_eq!(obj["Size"], hoist_test::busybox_rootfs_bytes());
    assert_eq!(obj["RootFS"]["Type"], "layers");
    assert!(
        out.starts_with("[\n    {\n        \"Id\": "),
        "4-space indent like docker: {out}"
    );
    assert_eq!(
        h.ok(&["image", "inspect", "-f", "{{.Id}} {{.Os}}", "busybox"]),
        format!("{id} linux\n")
    );
    let out = h.output(&["inspect", "busybox", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: No such image: nope:latest\n"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn import_from_stdin_with_message_and_platform() {
    let h = Hoist::new();
    let tar = std::fs::File::open(h.rootfs()).unwrap();
    let out = h
        .cmd()
        .args([
            "import",
            "-m",
            "my message",
            "--platform",
            "linux/arm64",
            "-",
            "piped:1",
        ])
        .stdin(tar)
        .output()
        .unwrap();
    hoist_test::success(&out);
    assert_eq!(
        h.ok(&["inspect", "-f", "{{.Architecture}} {{.Comment}}", "piped:1"]),
        "arm64 my message\n"
    );
    assert_eq!(
        h.ok(&["history", "--format", "{{.Comment}}", "piped:1"]),
        "my message\n"
    );
}

#[test]
fn import_refuses_a_missing_file_and_garbage() {
    let h = Hoist::new();
    let err = h.fails(&["import", "/nonexistent.tar"]);
    assert!(
        err.starts_with("Error: open /nonexistent.tar: No such file"),
        "{err}"
    );
    std::fs::write(
        h.path("junk.tar"),
        b"this is not a tar archive at all, not even close......",
    )
    .unwrap();
    let err = h.fails(&["import", h.path("junk.tar").to_str().unwrap()]);
    assert!(err.starts_with("Error: "), "{err}");
    assert_eq!(h.ok(&["images", "-q"]), "");
}

#[test]
fn prune_dangling_and_all() {
    let h = Hoist::new();
    h.import_busybox("keep");
    let tar = h.rootfs();
    let dangling = h
        .ok(&["import", "-m", "x", tar.to_str().unwrap()])
        .trim()
        .to_owned();
    let out = h.ok(&["image", "prune", "-f"]);
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {dangling}\n")),
        "{out}"
    );
    // Only the dangling image's config goes: its layer is shared with `keep`.
    let small = regex::Regex::new(r"\n\nTotal reclaimed space: \d{1,3}B\n$").unwrap();
    assert!(small.is_match(&out), "{out}");
    assert_eq!(h.ok(&["images", "--format", "{{.Repository}}"]), "keep\n");
    let out = h.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: keep:latest\n"), "{out}");
    let reclaimed = regex::Regex::new(r"\nTotal reclaimed space: \d+(\.\d+)?MB\n$").unwrap();
    assert!(
        reclaimed.is_match(&out),
        "the layer's bytes are reclaimed: {out}"
    );
    assert_eq!(h.ok(&["images", "-q"]), "");
    assert_eq!(
        h.ok(&["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
}

#[test]
fn save_and_load_round_trip() {
    let h = Hoist::new();
    let id = h.import_busybox("busybox");
    h.ok(&["tag", "busybox", "second:tag"]);
    let archive = h.path("out.tar");
    h.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "busybox",
        "second:tag",
    ]);
    let h2 = Hoist::new();
    let out = h2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        out,
        "Loaded image: busybox:latest\nLoaded image: second:tag\n"
    );
    assert_eq!(
        h2.ok(&["inspect", "-f", "{{.Id}}", "second:tag"]),
        format!("{id}\n")
    );
    // Loading again reuses the stored layer and changes nothing.
    h2.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    assert_eq!(common::files_in(&h2.root().join("v1/snapshots")).len(), 1);
    // gzip-compressed archives load too, from stdin.
    let gz = h.path("out.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", archive.display(), gz.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let h3 = Hoist::new();
    let out = h3
        .cmd()
        .args(["load"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        hoist_test::success(&out),
        "Loaded image: busybox:latest\nLoaded image: second:tag\n"
    );
    // An untagged image saved by id loads as an id.
    let h4 = Hoist::new();
    let by_id = h.path("by-id.tar");
    h.ok(&["rmi", "second:tag"]);
    h.ok(&["rmi", "busybox"]);
    h4.ok(&["load", "-i", archive.to_str().unwrap()]);
    h4.ok(&["rmi", "second:tag"]);
    h4.ok(&["tag", "busybox", "x"]);
    h4.ok(&["rmi", "busybox", "x"]);
    assert_eq!(h4.ok(&["images", "-q"]), "");
    h4.ok(&["load", "-i", archive.to_str().unwrap()]);
    h4.ok(&["save", "-o", by_id.to_str().unwrap(), &id[7..19]]);
    let h5 = Hoist::new();
    assert_eq!(
        h5.ok(&["load", "-i", by_id.to_str().unwrap()]),
        "Loaded image: busybox:latest\nLoaded image: second:tag\n"
    );
}

#[test]
fn load_refuses_garbage() {
    let h = Hoist::new();
    std::fs::write(h.path("bad.tar"), b"not an archive").unwrap();
    let err = h.fails(&["load", "-i", h.path("bad.tar").to_str().unwrap()]);
    assert!(err.starts_with("Error: "), "{err}");
    let err = h.fails(&["load", "-i", h.path("missing.tar").to_str().unwrap()]);
    assert!(err.contains("missing.tar"), "{err}");
}

#[test]
fn import_applies_changes_like_docker() {
    let h = Hoist::new();
    let tar = h.rootfs();
    let tar = tar.to_str().unwrap();
    h.ok(&[
        "import",
        "-c",
        "ENV A=1 B=\"two words\"",
        "-c",
        "ENV C=${A}x",
        "-c",
        "EXPOSE 80 53/udp",
        "-c",
        "LABEL k=v",
        "-c",
        "WORKDIR /app",
        "-c",
        "WORKDIR sub",
        "-c",
        "USER nobody",
        "-c",
        "CMD [\"sh\"]",
        "-c",
        "STOPSIGNAL SIGINT",
        "-c",
        "VOLUME /data",
        tar,
        "changed",
    ]);
    let config: serde_json::Value =
        serde_json::from_str(&h.ok(&["inspect", "-f", "{{json .Config}}", "changed"])).unwrap();
    assert_eq!(
        config,
        serde_json::json!({
            "Env": ["A=1", "B=two words", "C=1x"], "ExposedPorts": {"53/udp": {}, "80/tcp": {}},
            "Labels": {"k": "v"}, "WorkingDir": "/app/sub", "User": "nobody", "Cmd": ["sh"],
            "StopSignal": "SIGINT", "Volumes": {"/data": {}},
        })
    );
    h.ok(&[
        "import",
        "-c",
        "CMD [\"x\"]",
        "-c",
        "ENTRYPOINT top -b",
        tar,
        "ep",
    ]);
    // Known difference: docker's typed config prints an absent Cmd as `[]`; ours is JSON-shaped.
    assert_eq!(
        h.ok(&[
            "inspect",
            "-f",
            "{{.Config.Entrypoint}} {{.Config.Cmd}}",
            "ep"
        ]),
        "[/bin/sh -c top -b] <no value>\n"
    );
    assert_eq!(
        h.fails(&["import", "-c", "RUN echo", tar, "bad"]),
        "Error: RUN is not a valid change command\n"
    );
    assert_eq!(
        h.fails(&["import", "-c", "FROM x", tar, "bad"]),
        "Error: FROM is not a valid change command\n"
    );
    assert_eq!(
        h.ok(&["images", "-q", "bad"]),
        "",
        "nothing is imported when a change is refused"
    );
}

/// `image prune --filter`: `label`, `label!` and `until` (a duration or a time) pick what
/// goes, as docker's daemon does; only dangling images without `-a`.
#[test]
fn prune_filters_by_label_and_until() {
    let h = Hoist::new();
    // The fixture (created long ago, labelled org.example.fixture=yes), under a name.
    let old = h.load_busybox("old:1");
    let fresh = h.import_busybox("fresh");
    let tar = h.rootfs();
    let import = |changes: &[&str], message: &str| {
        let mut args = vec!["import", "-m", message];
        for c in changes {
            args.extend(["--change", c]);
        }
        args.push(tar.to_str().unwrap());
        h.ok(&args).trim().to_owned()
    };
    let tmp = import(&["LABEL tmp=1 team=a"], "tmp");
    let keep = import(&["LABEL keep=yes"], "keep");
    let plain = import(&[], "plain");
    let mut everything = vec![
        old.clone(),
        fresh.clone(),
        tmp.clone(),
        keep.clone(),
        plain.clone(),
    ];
    everything.sort_unstable();
    assert_eq!(h.image_ids(), everything);

    // Names that docker's image prune does not know, bad values: an error, nothing removed.
    for (filter, why) in [
        ("foo=bar", "Error: Invalid filter 'foo'\n"),
        ("reference=fresh", "Error: Invalid filter 'reference'\n"),
        (
            "until",
            "Error: bad format of filter (expected name=value)\n",
        ),
        (
            "until=banana",
            "Error: failed to parse value as time or duration: \"banana\"\n",
        ),
    ] {
        assert_eq!(
            h.fails(&["image", "prune", "-f", "--filter", filter]),
            why,
            "{filter}"
        );
    }
    assert_eq!(
        h.fails(&[
            "image", "prune", "-f", "--filter", "until=1h", "--filter", "until=2h"
        ]),
        "Error: more than one until filter specified\n"
    );
    assert_eq!(h.image_ids(), everything);

    // `label=key=value`: only the dangling image carrying it (its config is all that goes:
    // its layer is `fresh`'s too).
    let only = |id: &str| {
        regex::Regex::new(&format!(
            r"^Deleted Images:\ndeleted: {id}\n\nTotal reclaimed space: \d+B\n$"
        ))
        .unwrap()
    };
    let out = h.ok(&["image", "prune", "-f", "--filter", "label=team=a"]);
    assert!(only(&tmp).is_match(&out), "{out}");
    everything.retain(|id| *id != tmp);
    assert_eq!(h.image_ids(), everything);
    // A value that differs matches nothing.
    assert_eq!(
        h.ok(&["image", "prune", "-f", "--filter", "label=keep=no"]),
        "Total reclaimed space: 0B\n"
    );
    // `label!=key`: the dangling images without it; `keep` stays.
    let out = h.ok(&["image", "prune", "-f", "--filter", "label!=keep"]);
    assert!(only(&plain).is_match(&out), "{out}");
    everything.retain(|id| *id != plain);
    assert_eq!(h.image_ids(), everything);

    // `until=24h` with `-a`: the image created long ago goes, with its name; the ones created
    // just now stay.
    let out = h.ok(&["image", "prune", "-a", "-f", "--filter", "until=24h"]);
    assert!(
        out.starts_with(&format!(
            "Deleted Images:\nuntagged: old:1\ndeleted: {old}\n"
        )),
        "{out}"
    );
    everything.retain(|id| *id != old);
    assert_eq!(h.image_ids(), everything);
    // A time in RFC 3339 before they were made, then unix seconds after: `keep` (dangling)
    // goes only with the second; `fresh` has a name.
    assert_eq!(
        h.ok(&[
            "image",
            "prune",
            "-f",
            "--filter",
            "until=2020-01-01T00:00:00Z"
        ]),
        "Total reclaimed space: 0B\n"
    );
    let later = (jiff::Timestamp::now().as_second() + 3600).to_string();
    let out = h.ok(&[
        "image",
        "prune",
        "-f",
        "--filter",
        &format!("until={later}"),
        "--filter",
        "label=keep",
    ]);
    assert!(only(&keep).is_match(&out), "{out}");
    assert_eq!(h.image_ids(), [fresh]);
}
