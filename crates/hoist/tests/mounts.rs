//! RUN --mount: cache mounts persist and are shared per id without busting the step cache;
//! secrets reach the step but no layer, history line or log; tmpfs and writable binds leave
//! nothing behind; ssh forwards an agent socket.

mod common;

use std::collections::BTreeMap;

use common::Hoist;

fn with_busybox() -> Hoist {
    let h = Hoist::new();
    let archive = hoist_test::fixed_archive(h.dir.path(), &["busybox:latest"]);
    h.ok(&["load", "-i", archive.to_str().unwrap()]);
    h
}

/// Every file of every layer: the paths in order, path → content, and the raw saved archive.
fn layer_files(h: &Hoist, image: &str) -> (Vec<String>, BTreeMap<String, Vec<u8>>, Vec<u8>) {
    let (layers, raw) = common::saved_layers(h, image);
    let names = layers.iter().flatten().map(|e| e.path.clone()).collect();
    let files = layers
        .into_iter()
        .flatten()
        .map(|e| (e.path, e.content))
        .collect();
    (names, files, raw)
}

fn ctx(h: &Hoist, df: &str) -> std::path::PathBuf {
    let dir = h.path("ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), df).unwrap();
    std::fs::write(dir.join("ctxfile"), "from the context\n").unwrap();
    dir
}

fn run_build(h: &Hoist, args: &[&str]) -> String {
    let mut a = vec!["build", "--progress", "plain"];
    a.extend_from_slice(args);
    let out = h.output(&a);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

#[test]
fn cache_mounts_persist_are_shared_by_id_and_never_bust_the_cache() {
    let h = with_busybox();
    let df = "FROM busybox\nARG N\n\
              RUN --mount=type=cache,id=shared,target=/c echo $N >> /c/log && cat /c/log > /seen\n\
              RUN --mount=type=cache,id=shared,target=/other,uid=1000,gid=1000 cat /other/log > /seen-too\n\
              RUN --mount=type=cache,target=/private-cache ls -ln / > /listing\n";
    let dir = ctx(&h, df);
    run_build(
        &h,
        &["-t", "c1", "--build-arg", "N=1", dir.to_str().unwrap()],
    );
    run_build(
        &h,
        &["-t", "c2", "--build-arg", "N=2", dir.to_str().unwrap()],
    );
    let (_, files, _) = layer_files(&h, "c2");
    assert_eq!(
        files["seen"], b"1\n2\n",
        "the cache mount kept the first build's line"
    );
    assert_eq!(
        files["seen-too"], b"1\n2\n",
        "the same id is the same directory at another path"
    );
    // Mount points are not left in the image.
    let (names, _, _) = layer_files(&h, "c2");
    assert!(
        !names.iter().any(|n| n.starts_with("c/")
            || n.starts_with("other")
            || n.starts_with("private-cache")),
        "{names:?}"
    );
    // Changing the cache's contents does not bust the step: only the build arg does.
    let err = run_build(
        &h,
        &["-t", "c3", "--build-arg", "N=2", dir.to_str().unwrap()],
    );
    assert_eq!(err.matches("CACHED").count(), 3, "{err}");
}

#[test]
fn secrets_reach_the_step_but_nothing_else() {
    let h = with_busybox();
    let value = "hunter2-secret-value";
    let secret_file = h.path("token.txt");
    std::fs::write(&secret_file, value).unwrap();
    let df = "FROM busybox\n\
              RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /len && grep -q '^hunter2-' /run/secrets/token\n\
              RUN --mount=type=secret,id=fromenv,env=FROM_ENV test -n \"$FROM_ENV\" && echo ${#FROM_ENV} > /envlen && echo \"$FROM_ENV\"\n\
              RUN --mount=type=secret,id=absent true\n";
    let dir = ctx(&h, df);
    let out = h
        .cmd()
        .args(["build", "--progress", "plain", "--no-cache", "-t", "sec"])
        .arg("--secret")
        .arg(format!("id=token,src={}", secret_file.display()))
        .args(["--secret", "id=fromenv,env=MY_SECRET_VAR"])
        .arg(&dir)
        .env("MY_SECRET_VAR", "env-secret-value")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let (names, files, raw) = layer_files(&h, "sec");
    assert_eq!(files["len"], b"20\n");
    assert_eq!(files["envlen"], b"16\n");
    assert!(
        !names.iter().any(|n| n.starts_with("run/")),
        "no secret mount point is left: {names:?}"
    );
    let haystack = String::from_utf8_lossy(&raw);
    assert!(
        !haystack.contains(value) && !haystack.contains("env-secret-value"),
        "a secret value is in the saved image"
    );
    let history = h.ok(&["history", "--no-trunc", "sec"]);
    assert!(
        !history.contains(value) && !history.contains("env-secret-value"),
        "{history}"
    );
    // A required secret that was not given fails with a clear message.
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=missing,required=true true\n",
    )
    .unwrap();
    let out = h.output(&["build", "--progress", "plain", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secret missing not found"),
        "{out:?}"
    );
}

#[test]
fn tmpfs_and_bind_mounts_leave_nothing_behind() {
    let h = with_busybox();
    let df = "FROM busybox AS src\nRUN echo from a stage > /made\n\
              FROM busybox\n\
              RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/x && grep ' /scratch tmpfs ' /proc/mounts > /tmpfs-line\n\
              RUN --mount=type=tmpfs,target=/sized,size=1m grep ' /sized tmpfs ' /proc/mounts > /sized-line\n\
              RUN --mount=type=bind,source=ctxfile,target=/in/ctxfile cat /in/ctxfile > /from-context\n\
              RUN --mount=type=bind,from=src,source=/made,target=/in/made cat /in/made > /from-stage\n\
              RUN --mount=type=bind,target=/ctx,rw echo scribble > /ctx/ctxfile && cat /ctx/ctxfile > /rw-saw\n\
              RUN --mount=type=bind,target=/ro (echo no > /ro/x 2>/dev/null && echo writable || echo read-only) > /ro-was\n";
    let dir = ctx(&h, df);
    run_build(&h, &["-t", "mnt", dir.to_str().unwrap()]);
    let (names, files, _) = layer_files(&h, "mnt");
    assert!(String::from_utf8_lossy(&files["tmpfs-line"]).contains(" /scratch tmpfs "));
    let sized = String::from_utf8_lossy(&files["sized-line"]).into_owned();
    assert!(sized.contains("size=1024k"), "{sized}");
    assert_eq!(files["from-context"], b"from the context\n");
    assert_eq!(files["from-stage"], b"from a stage\n");
    assert_eq!(files["rw-saw"], b"scribble\n");
    assert_eq!(
        files["ro-was"], b"read-only\n",
        "binds are read-only by default"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ctxfile")).unwrap(),
        "from the context\n",
        "a rw bind never writes back"
    );
    for n in &names {
        assert!(
            !n.starts_with("scratch")
                && n.as_str() != "sized"
                && !n.starts_with("sized/")
                && n.as_str() != "in"
                && !n.starts_with("in/")
                && !n.starts_with("ctx")
                && !n.starts_with("ro/"),
            "{n} left behind"
        );
    }
    // A bind source is part of the key: changing the context file reruns the step.
    std::fs::write(dir.join("ctxfile"), "changed\n").unwrap();
    let err = run_build(
        &h,
        &["-t", "mnt2", "--explain-cache", dir.to_str().unwrap()],
    );
    assert!(
        err.contains("cache miss: mount 1 context changed") || err.contains("cache miss:"),
        "{err}"
    );
    let (_, files, _) = layer_files(&h, "mnt2");
    assert_eq!(files["from-context"], b"changed\n");
}

#[test]
fn ssh_forwards_an_agent_socket() {
    let h = with_busybox();
    let sock = h.path("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let df = "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo $SSH_AUTH_SOCK > /sock\n";
    let dir = ctx(&h, df);
    run_build(
        &h,
        &[
            "-t",
            "ssh",
            "--ssh",
            &format!("default={}", sock.display()),
            dir.to_str().unwrap(),
        ],
    );
    let (names, files, _) = layer_files(&h, "ssh");
    assert_eq!(files["sock"], b"/run/buildkit/ssh_agent.0\n");
    assert!(!names.iter().any(|n| n.starts_with("run/")), "{names:?}");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,id=deploy,required=true true\n",
    )
    .unwrap();
    let out = h.output(&["build", "--progress", "plain", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no SSH key \"deploy\" forwarded"),
        "{out:?}"
    );
}
