//! hoist against real registries (Debian's docker-registry: open, htpasswd, token mode with an
//! in-process issuer), a fault-injecting fake registry, and a real Docker engine. Missing
//! prerequisites fail the tests with the reason; nothing is skipped.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Hoist;
use hoist_test::registry::{HttpResponse, HttpServer, Registry};
use hoist_test::{Docker, success};

fn digest_of(push_output: &str) -> String {
    push_output
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("a digest line")
        .to_owned()
}

#[test]
fn push_pull_mount_and_repush_against_an_open_registry() {
    let registry = Registry::start_open();
    let host = registry.host();
    let a = Hoist::new();
    let id = a.load_busybox(&format!("{host}/library/busybox:1"));

    let pushed = a.ok(&["push", &format!("{host}/library/busybox:1")]);
    let lines: Vec<&str> = pushed.lines().collect();
    assert_eq!(
        lines[0],
        format!("The push refers to repository [{host}/library/busybox]")
    );
    assert!(lines[1].ends_with(": Preparing"), "{pushed}");
    assert!(lines[2].ends_with(": Pushed"), "{pushed}");
    assert!(
        lines[3].starts_with("1: digest: sha256:") && lines[3].contains(" size: "),
        "{pushed}"
    );
    let digest = digest_of(&pushed);
    let uploads = registry.blob_uploads();
    assert_eq!(uploads, 2, "layer and config: {}", registry.log());

    // The push recorded the RepoDigest.
    let digests = a.ok(&["images", "--digests", "--format", "{{.Digest}}"]);
    assert!(digests.contains(&digest), "{digests}");

    // Re-push: nothing uploaded.
    let again = a.ok(&["push", &format!("{host}/library/busybox:1")]);
    assert!(again.contains(": Layer already exists"), "{again}");
    assert_eq!(digest_of(&again), digest);
    assert_eq!(registry.blob_uploads(), uploads);

    // Another repository of the same registry: mounted, not uploaded.
    a.ok(&[
        "tag",
        &format!("{host}/library/busybox:1"),
        &format!("{host}/other/copy:2"),
    ]);
    let mounted = a.ok(&["push", &format!("{host}/other/copy:2")]);
    assert!(
        mounted.contains(": Mounted from library/busybox"),
        "{mounted}"
    );
    assert_eq!(registry.blob_uploads(), uploads);

    // Pull into a fresh store: the same image, docker's output.
    let b = Hoist::new();
    let out = b.ok(&["pull", &format!("{host}/library/busybox:1")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1: Pulling from library/busybox");
    assert!(lines[1].ends_with(": Pulling fs layer"), "{out}");
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains(&format!(
        "Status: Downloaded newer image for {host}/library/busybox:1"
    )));
    assert_eq!(
        *lines.last().expect("lines"),
        format!("{host}/library/busybox:1")
    );
    assert_eq!(b.id(&format!("{host}/library/busybox:1")), id);
    let out = b.ok(&["pull", &format!("{host}/library/busybox:1")]);
    assert!(out.contains(": Already exists"), "{out}");
    assert!(out.contains("Status: Image is up to date for"), "{out}");
    // By digest, and quietly.
    let by_digest = format!("{host}/library/busybox@{digest}");
    assert_eq!(b.ok(&["pull", "-q", &by_digest]).trim(), by_digest);
}

#[test]
fn zstd_and_chunked_pushes_round_trip() {
    let registry = Registry::start_open();
    let host = registry.host();
    let a = Hoist::new();
    let id = a.load_busybox(&format!("{host}/z:1"));
    let out = a.ok(&["push", "--compression", "zstd", &format!("{host}/z:1")]);
    let digest = digest_of(&out);
    let client = hoist_registry::Client::connect(&host, &Default::default()).expect("client");
    let reference = hoist_oci::Reference::parse(&format!("{host}/z:1")).expect("ref");
    let manifest = client.get_manifest(&reference, "1").expect("manifest");
    assert_eq!(manifest.media_type, hoist_oci::media::OCI_MANIFEST);
    assert_eq!(manifest.digest.to_string(), digest);
    let text = String::from_utf8(manifest.bytes).expect("utf-8");
    assert!(text.contains(hoist_oci::media::OCI_LAYER_ZSTD), "{text}");

    // Chunked upload (PATCH with Content-Range) to a repository the blob is not known in.
    let fresh = Registry::start_open();
    let c = Hoist::new();
    c.load_busybox(&format!("{}/chunked:1", fresh.host()));
    let out = c
        .cmd()
        .env("HOIST_PUSH_CHUNK_SIZE", "65536")
        .args(["push", &format!("{}/chunked:1", fresh.host())])
        .output()
        .expect("hoist");
    let out = success(&out);
    assert!(out.contains(": Pushed"), "{out}");
    assert!(
        fresh
            .log()
            .matches("\"PATCH /v2/chunked/blobs/uploads/")
            .count()
            > 2,
        "{}",
        fresh.log()
    );

    let b = Hoist::new();
    b.ok(&["pull", &format!("{host}/z:1")]);
    assert_eq!(b.id(&format!("{host}/z:1")), id);
    let d = Hoist::new();
    d.ok(&["pull", &format!("{}/chunked:1", fresh.host())]);
    assert_eq!(d.id(&format!("{}/chunked:1", fresh.host())), id);
}

#[test]
fn multi_arch_index_pull_picks_the_platform() {
    let registry = Registry::start_open();
    let host = registry.host();
    let a = Hoist::new();
    let rootfs = hoist_test::busybox_rootfs_tar(a.dir.path());
    let rootfs = rootfs.to_str().expect("utf-8");
    let amd = a.ok(&[
        "import",
        "--platform",
        "linux/amd64",
        "-m",
        "amd",
        rootfs,
        &format!("{host}/multi:amd64"),
    ]);
    let arm = a.ok(&[
        "import",
        "--platform",
        "linux/arm64",
        "-m",
        "arm",
        rootfs,
        &format!("{host}/multi:arm64"),
    ]);
    let mut entries = Vec::new();
    for (tag, platform) in [
        ("amd64", ("linux", "amd64", None)),
        ("arm64", ("linux", "arm64", Some("v8"))),
    ] {
        let out = a.ok(&["push", &format!("{host}/multi:{tag}")]);
        let size: u64 = out
            .lines()
            .find_map(|l| l.split(" size: ").nth(1))
            .and_then(|s| s.trim().parse().ok())
            .expect("size");
        let mut p = serde_json::json!({"os": platform.0, "architecture": platform.1});
        if let Some(v) = platform.2 {
            p["variant"] = v.into();
        }
        entries.push(serde_json::json!({
            "mediaType": hoist_oci::media::DOCKER_MANIFEST,
            "digest": digest_of(&out), "size": size, "platform": p,
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": hoist_oci::media::OCI_INDEX, "manifests": entries,
    });
    let bytes = serde_json::to_vec(&index).expect("json");
    let client = hoist_registry::Client::connect(&host, &Default::default()).expect("client");
    let reference = hoist_oci::Reference::parse(&format!("{host}/multi")).expect("ref");
    let index_digest = client
        .put_manifest(&reference, "both", hoist_oci::media::OCI_INDEX, &bytes)
        .expect("put index");

    let b = Hoist::new();
    let out = b.ok(&[
        "pull",
        "--platform",
        "linux/aarch64",
        &format!("{host}/multi:both"),
    ]);
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    assert_eq!(b.id(&format!("{host}/multi:both")), arm.trim());
    let out = b.ok(&[
        "pull",
        "--platform",
        "linux/amd64",
        &format!("{host}/multi:both"),
    ]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_eq!(b.id(&format!("{host}/multi:both")), amd.trim());
    let err = b.fails(&[
        "pull",
        "--platform",
        "linux/s390x",
        &format!("{host}/multi:both"),
    ]);
    assert!(
        err.contains("no matching manifest for linux/s390x in the manifest list entries"),
        "{err}"
    );
    // pull -a: every tag.
    let c = Hoist::new();
    let out = c.ok(&[
        "pull",
        "-a",
        "--platform",
        "linux/arm64",
        &format!("{host}/multi"),
    ]);
    assert_eq!(
        out.lines().last(),
        Some(format!("{host}/multi").as_str()),
        "{out}"
    );
    assert_eq!(c.id(&format!("{host}/multi:arm64")), arm.trim());
}

#[test]
fn basic_auth_login_push_pull_logout() {
    let registry = Registry::start_basic("user", "s3cret-pass");
    let host = registry.host();
    let a = Hoist::new();
    a.load_busybox(&format!("{host}/private/app:1"));
    let err = a.fails(&["push", &format!("{host}/private/app:1")]);
    assert!(
        err.contains(&format!("push access denied for {host}/private/app")),
        "{err}"
    );

    let bad = a.login(&host, "user", "wrong-pass-xyz");
    assert!(!bad.status.success());
    let bad_err = String::from_utf8_lossy(&bad.stderr);
    assert!(bad_err.contains(&host), "{bad_err}");
    assert!(
        !bad_err.contains("wrong-pass-xyz"),
        "a secret in an error: {bad_err}"
    );

    fs::create_dir_all(a.docker_config_dir()).expect("mkdir");
    fs::write(
        a.docker_config_dir().join("config.json"),
        r#"{"psFormat": "table {{.ID}}"}"#,
    )
    .expect("write");
    let ok = a.login(&host, "user", "s3cret-pass\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "Login Succeeded\n");
    assert!(!String::from_utf8_lossy(&ok.stderr).contains("s3cret"));
    let config = a.docker_config();
    assert_eq!(config["psFormat"], "table {{.ID}}");
    assert_eq!(config["auths"][&host]["auth"], "dXNlcjpzM2NyZXQtcGFzcw==");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(a.docker_config_dir().join("config.json"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    a.ok(&["push", &format!("{host}/private/app:1")]);
    // A second store sharing the credentials pulls.
    let b = Hoist::new();
    fs::create_dir_all(b.docker_config_dir()).expect("mkdir");
    fs::copy(
        a.docker_config_dir().join("config.json"),
        b.docker_config_dir().join("config.json"),
    )
    .expect("copy");
    b.ok(&["pull", &format!("{host}/private/app:1")]);
    // Without credentials: refused, naming the repository.
    let c = Hoist::new();
    let err = c.fails(&["pull", &format!("{host}/private/app:1")]);
    assert!(
        err.contains(&format!("pull access denied for {host}/private/app")),
        "{err}"
    );
    // DOCKER_AUTH_CONFIG works without a file.
    let env = serde_json::json!({"auths": {&host: {"auth": "dXNlcjpzM2NyZXQtcGFzcw=="}}});
    let out = c
        .cmd()
        .env("DOCKER_AUTH_CONFIG", env.to_string())
        .args(["pull", "-q", &format!("{host}/private/app:1")])
        .output()
        .expect("hoist");
    success(&out);

    assert_eq!(
        a.ok(&["logout", &host]),
        format!("Removing login credentials for {host}\n")
    );
    assert!(a.docker_config()["auths"].get(&host).is_none());
    assert_eq!(a.docker_config()["psFormat"], "table {{.ID}}");
    assert_eq!(
        a.ok(&["logout", &host]),
        format!("Not logged in to {host}\n")
    );
}

/// A `docker-credential-test` helper keeping credentials in files under `dir`, logging actions.
fn credential_helper(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let script = format!(
        r#"#!/bin/sh
store="{store}"
mkdir -p "$store"
echo "$1" >> "$store/actions"
case "$1" in
store) input=$(cat); server=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/' | tr '/:' '__')
       printf '%s' "$input" > "$store/$server" ;;
get) server=$(cat | tr '/:' '__')
     if [ -f "$store/$server" ]; then cat "$store/$server"; else echo "credentials not found in native keychain"; exit 1; fi ;;
erase) server=$(cat | tr '/:' '__'); rm -f "$store/$server" ;;
*) exit 1 ;;
esac
"#,
        store = dir.join("helper-store").display()
    );
    let path = bin.join("docker-credential-test");
    fs::write(&path, script).expect("write helper");
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

#[test]
fn credential_helpers_store_get_erase() {
    let registry = Registry::start_basic("helper-user", "helper-pass");
    let host = registry.host();
    for config in [
        serde_json::json!({"credsStore": "test"}),
        serde_json::json!({"credHelpers": {&host: "test"}}),
    ] {
        let a = Hoist::new();
        let bin = credential_helper(a.dir.path());
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        fs::create_dir_all(a.docker_config_dir()).expect("mkdir");
        fs::write(
            a.docker_config_dir().join("config.json"),
            config.to_string(),
        )
        .expect("write");
        a.load_busybox(&format!("{host}/helped:1"));
        let run = |args: &[&str], input: &str| {
            let mut child = a
                .cmd()
                .env("PATH", &path)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("stdin");
            success(&child.wait_with_output().expect("hoist"))
        };
        let out = run(
            &["login", &host, "-u", "helper-user", "--password-stdin"],
            "helper-pass",
        );
        assert_eq!(out, "Login Succeeded\n");
        let stored = fs::read_to_string(
            a.dir
                .path()
                .join("helper-store")
                .join(host.replace(':', "_")),
        )
        .expect("the helper stored the credentials");
        assert!(stored.contains("\"Secret\":\"helper-pass\""), "{stored}");
        // docker keeps an empty entry in the file, and no secret.
        assert_eq!(a.docker_config()["auths"][&host], serde_json::json!({}));
        run(&["push", &format!("{host}/helped:1")], "");
        let actions = fs::read_to_string(a.dir.path().join("helper-store/actions")).expect("log");
        assert!(actions.contains("get"), "{actions}");
        assert_eq!(
            run(&["logout", &host], ""),
            format!("Removing login credentials for {host}\n")
        );
        assert!(
            !a.dir
                .path()
                .join("helper-store")
                .join(host.replace(':', "_"))
                .exists()
        );
    }
}

#[test]
fn token_auth_identity_tokens_and_mount_rechallenge() {
    let registry = Registry::start_token(&[("alice", "wonderland")]);
    let host = registry.host();
    let tokens = registry.tokens.as_ref().expect("token server");
    let a = Hoist::new();
    a.load_busybox(&format!("{host}/team/base:1"));
    let err = a.fails(&["push", &format!("{host}/team/base:1")]);
    assert!(
        err.contains(&format!("push access denied for {host}/team/base")),
        "{err}"
    );

    let out = a.login(&host, "alice", "wonderland");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // OAuth2 password grant with offline access: docker stores the refresh token.
    assert_eq!(
        a.docker_config()["auths"][&host]["identitytoken"],
        "refresh-alice"
    );
    assert_eq!(a.docker_config()["auths"][&host]["auth"], "YWxpY2U6"); // "alice:"

    a.ok(&["push", &format!("{host}/team/base:1")]);
    let seen = tokens.requests();
    assert!(
        seen.iter().any(|r| r.method == "POST"
            && r.grant == "refresh_token"
            && r.scopes == ["repository:team/base:pull,push"]),
        "{seen:?}"
    );
    // A mount needs pull on the source too: a token for both scopes.
    a.ok(&[
        "tag",
        &format!("{host}/team/base:1"),
        &format!("{host}/team/app:1"),
    ]);
    let out = a.ok(&["push", &format!("{host}/team/app:1")]);
    assert!(out.contains(": Mounted from team/base"), "{out}");
    let seen = tokens.requests();
    assert!(
        seen.iter().any(|r| r
            .scopes
            .contains(&"repository:team/app:pull,push".to_owned())
            && r.scopes.contains(&"repository:team/base:pull".to_owned())),
        "{seen:?}"
    );

    // A token service without OAuth2: the GET fallback with Basic credentials.
    tokens.refuse_post.store(true, Ordering::SeqCst);
    let b = Hoist::new();
    let out = b.login(&host, "alice", "wonderland");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.grant == "basic")
    );
    let wrong = b.login(&host, "alice", "nope");
    assert!(!wrong.status.success());
    tokens.refuse_post.store(false, Ordering::SeqCst);
    b.ok(&["pull", &format!("{host}/team/app:1")]);
    assert_eq!(
        b.id(&format!("{host}/team/app:1")),
        a.id(&format!("{host}/team/app:1"))
    );
    // Anonymous pulls get no access.
    let c = Hoist::new();
    let err = c.fails(&["pull", &format!("{host}/team/app:1")]);
    assert!(
        err.contains(&format!("pull access denied for {host}/team/app")),
        "{err}"
    );
}

/// An image made by hand: (layer blob gzip, config bytes, manifest bytes).
fn handmade_image(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use sha2::Digest as _;
    let tar = fs::read(hoist_test::busybox_rootfs_tar(dir)).expect("rootfs");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": hoist_oci::media::DOCKER_MANIFEST,
        "config": {"mediaType": hoist_oci::media::DOCKER_CONFIG, "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": hoist_oci::media::DOCKER_LAYER_GZIP, "digest": sha(&layer), "size": layer.len()}],
    }))
    .expect("json");
    (layer, config, manifest)
}

/// A fake registry serving one image; `layer` decides each layer GET (by call number).
fn fake_registry(
    image: (Vec<u8>, Vec<u8>, Vec<u8>),
    layer: impl Fn(usize, &[u8], Option<u64>) -> HttpResponse + Send + Sync + 'static,
) -> (HttpServer, Arc<AtomicUsize>) {
    use sha2::Digest as _;
    let (blob, config, manifest) = image;
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    let (blob_digest, config_digest) = (sha(&blob), sha(&config));
    let manifest_calls = Arc::new(AtomicUsize::new(0));
    let layer_calls = Arc::new(AtomicUsize::new(0));
    let seen = layer_calls.clone();
    let server = HttpServer::start(move |req| {
        let path = req.path.split('?').next().unwrap_or("");
        if path == "/v2/" {
            return HttpResponse::status(200);
        }
        if path.ends_with("/manifests/1") {
            // The first manifest GET fails with a 500: it is retried.
            if manifest_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return HttpResponse::status(500);
            }
            let mut r = HttpResponse::json(200, "");
            r.headers = vec![(
                "Content-Type".into(),
                hoist_oci::media::DOCKER_MANIFEST.into(),
            )];
            r.body = manifest.clone();
            return r;
        }
        if path.ends_with(&config_digest) {
            let mut r = HttpResponse::status(200);
            r.body = config.clone();
            return r;
        }
        if path.ends_with(&blob_digest) {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let range = req
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse::<u64>().ok());
            return layer(n, &blob, range);
        }
        HttpResponse::status(404)
    });
    (server, layer_calls)
}

fn serve_range(blob: &[u8], range: Option<u64>) -> HttpResponse {
    let start = usize::try_from(range.unwrap_or(0)).expect("offset");
    let mut r = HttpResponse::status(if start > 0 { 206 } else { 200 });
    r.body = blob[start..].to_vec();
    r
}

#[test]
fn faults_are_retried_or_refused() {
    let work = Hoist::new();
    let image = handmade_image(work.dir.path());
    let config_id = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&image.1)))
    };

    // A 500, then a connection dropped halfway, then the rest by Range: pulled.
    let (server, calls) = fake_registry(image.clone(), |n, blob, range| match n {
        0 => HttpResponse::status(500),
        1 => {
            let mut r = serve_range(blob, range);
            r.cut_after = Some(blob.len() / 2);
            r
        }
        _ => serve_range(blob, range),
    });
    let a = Hoist::new();
    let out = a.ok(&["pull", &format!("{}/flaky:1", server.addr())]);
    assert!(out.contains(": Pull complete"), "{out}");
    assert_eq!(a.id(&format!("{}/flaky:1", server.addr())), config_id);
    assert!(calls.load(Ordering::SeqCst) >= 3);

    // Wrong bytes: refused, and nothing is left in the store.
    let (bad, _) = fake_registry(image.clone(), |_, blob, range| {
        let mut r = serve_range(blob, range);
        let last = r.body.len() - 20;
        r.body[last] ^= 0xff;
        r
    });
    let b = Hoist::new();
    let err = b.fails(&["pull", &format!("{}/corrupt:1", bad.addr())]);
    assert!(
        err.contains("digest") || err.contains("gzip") || err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(b.ok(&["images", "-q"]), "");
    let blobs = fs::read_dir(b.dir.path().join("store/v1/blobs/sha256"))
        .expect("blobs")
        .count();
    assert!(
        blobs <= 1,
        "only the config may be stored, found {blobs} blobs"
    );

    // More bytes than the descriptor says: refused.
    let (long, _) = fake_registry(image.clone(), |_, blob, _| {
        let mut r = HttpResponse::status(200);
        r.body = [blob, b"trailing garbage".as_slice()].concat();
        r
    });
    let c = Hoist::new();
    let err = c.fails(&["pull", &format!("{}/long:1", long.addr())]);
    assert!(err.contains("bytes") || err.contains("digest"), "{err}");
    assert_eq!(c.ok(&["images", "-q"]), "");

    // Always failing: a clear error after the retries.
    let (down, calls) = fake_registry(image, |_, _, _| HttpResponse::status(503));
    let d = Hoist::new();
    let err = d.fails(&["pull", &format!("{}/down:1", down.addr())]);
    assert!(err.contains("503"), "{err}");
    assert!(calls.load(Ordering::SeqCst) >= 3, "retried");
}

fn docker_config_dir(docker: &Docker) -> PathBuf {
    let cmd = docker.cmd();
    cmd.get_envs()
        .find(|(k, _)| *k == "DOCKER_CONFIG")
        .and_then(|(_, v)| v.map(PathBuf::from))
        .expect("DOCKER_CONFIG")
}

#[test]
fn docker_interop_through_registries() {
    let docker = Docker::start();
    let registry = Registry::start_open();
    let host = registry.host();

    // docker pulls and runs what hoist pushed.
    let a = Hoist::new();
    let id = a.load_busybox(&format!("{host}/from-hoist:1"));
    let hoist_digest = digest_of(&a.ok(&["push", &format!("{host}/from-hoist:1")]));
    let pulled = docker.run(&["pull", &format!("{host}/from-hoist:1")]);
    assert!(
        pulled.contains(&format!("Digest: {hoist_digest}")),
        "{pulled}"
    );
    let docker_id = docker.run(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{host}/from-hoist:1"),
    ]);
    assert_eq!(docker_id.trim(), id);
    let ran = docker.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{host}/from-hoist:1"),
        "echo",
        "hi from hoist",
    ]);
    assert_eq!(ran.trim(), "hi from hoist");

    // hoist pulls what docker pushed, with docker's image id.
    docker.run(&[
        "tag",
        &format!("{host}/from-hoist:1"),
        &format!("{host}/from-docker:2"),
    ]);
    let docker_push = docker.run(&["push", &format!("{host}/from-docker:2")]);
    // The same blobs give the same manifest: hoist writes manifests as docker does.
    assert_eq!(digest_of(&docker_push), hoist_digest, "{docker_push}");
    let b = Hoist::new();
    b.ok(&["pull", &format!("{host}/from-docker:2")]);
    assert_eq!(b.id(&format!("{host}/from-docker:2")), id);

    // docker login, then hoist pushes with docker's credentials; and the reverse.
    let private = Registry::start_basic("dock", "dock-pass");
    let phost = private.host();
    let mut login = docker
        .cmd()
        .args(["login", &phost, "-u", "dock", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker login");
    login
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"dock-pass")
        .expect("stdin");
    success(&login.wait_with_output().expect("docker login"));
    let config = docker_config_dir(&docker);
    let out = a
        .cmd()
        .env("DOCKER_CONFIG", &config)
        .args([
            "tag",
            &format!("{host}/from-hoist:1"),
            &format!("{phost}/shared:1"),
        ])
        .output()
        .expect("hoist");
    success(&out);
    let out = a
        .cmd()
        .env("DOCKER_CONFIG", &config)
        .args(["push", &format!("{phost}/shared:1")])
        .output()
        .expect("hoist");
    success(&out);
    docker.run(&["logout", &phost]);

    let c = Hoist::new();
    let out = c.login(&phost, "dock", "dock-pass");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker.run(&[
        "tag",
        &format!("{host}/from-hoist:1"),
        &format!("{phost}/by-docker:1"),
    ]);
    let pushed = docker
        .cmd()
        .env("DOCKER_CONFIG", c.docker_config_dir())
        .args(["push", &format!("{phost}/by-docker:1")])
        .output()
        .expect("docker push");
    success(&pushed);
}
