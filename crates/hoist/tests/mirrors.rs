//! Registry mirrors from hoist's configuration file: pulls and `FROM` try the mirrors in order,
//! falling back on a refused connection, a 5xx, a 404 or a refusal, then the registry itself;
//! pushes never go to a mirror. Real registries (Debian's docker-registry) on loopback; a
//! mirror address nothing listens on; docker.io is never reached (the images exist on the
//! mirrors only, so a pull that succeeds came from a mirror).

mod common;

use std::fs;

use common::Hoist;
use hoist_test::registry::{HttpResponse, HttpServer, Registry, free_port};

/// Pushes the fixed busybox image to `registry` as `repository:tag`; returns its id.
fn seed(registry: &str, repository_tag: &str, login: Option<(&str, &str)>) -> String {
    let seeder = Hoist::new();
    let name = format!("{registry}/{repository_tag}");
    let archive = hoist_test::fixed_archive(seeder.dir.path(), &[&name]);
    seeder.ok(&["load", "-q", "-i", archive.to_str().expect("utf-8 path")]);
    if let Some((user, password)) = login {
        hoist_test::success(&seeder.login(registry, user, password));
    }
    seeder.ok(&["push", &name]);
    seeder.id(&name)
}

/// A loopback address nothing listens on: connections are refused.
fn dead_address() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// The requests in a registry's access log for `path_part`, as `METHOD path status` lines.
fn requests(log: &str, path_part: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let start = l.find('"')?;
            let rest = &l[start + 1..];
            let end = rest.find('"')?;
            let request = &rest[..end];
            let status = rest[end + 1..].split_whitespace().next().unwrap_or("");
            request
                .contains(path_part)
                .then(|| format!("{request} {status}"))
        })
        .collect()
}

#[test]
fn pull_of_docker_hub_goes_to_the_mirror_after_a_dead_one() {
    let mirror = Registry::start_open();
    let id = seed(&mirror.host(), "library/hoist-mirror-test:1", None);

    let hoist = Hoist::new();
    hoist.configure(&serde_json::json!({
        "registry-mirrors": {
            "docker.io": [dead_address(), format!("http://{}", mirror.host())]
        }
    }));
    let out = hoist.ok(&["pull", "docker.io/library/hoist-mirror-test:1"]);
    assert!(
        out.starts_with("1: Pulling from library/hoist-mirror-test\n"),
        "{out}"
    );
    assert!(
        out.contains("Status: Downloaded newer image for hoist-mirror-test:1\n"),
        "{out}"
    );
    assert!(
        out.ends_with("docker.io/library/hoist-mirror-test:1\n"),
        "{out}"
    );
    assert_eq!(hoist.id("hoist-mirror-test:1"), id);
    let images = hoist.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images, "hoist-mirror-test:1\n");
    // The mirror was asked for Docker Hub's library/ path, with BuildKit's ns= parameter.
    let asked = requests(&mirror.log(), "/v2/library/hoist-mirror-test/manifests/1");
    assert!(
        asked.iter().any(|r| r
            .starts_with("GET /v2/library/hoist-mirror-test/manifests/1?ns=docker.io ")
            && r.ends_with(" 200")),
        "{asked:?}\n{}",
        mirror.log()
    );
    // The short name means the same registry, so the same mirrors; up to date the second time.
    let again = hoist.ok(&["pull", "hoist-mirror-test:1"]);
    assert!(
        again.contains("Status: Image is up to date for hoist-mirror-test:1"),
        "{again}"
    );
}

#[test]
fn a_mirror_without_the_image_gives_way_to_the_next() {
    let empty = Registry::start_open();
    let mirror = Registry::start_open();
    let id = seed(&mirror.host(), "library/hoist-mirror-test:2", None);
    // A mirror answering 503 to everything.
    let broken = HttpServer::start(|_| HttpResponse::status(503));

    let hoist = Hoist::new();
    // docker's daemon.json form (a list: mirrors of Docker Hub), bare host:port addresses.
    hoist.configure(&serde_json::json!({
        "registry-mirrors": [broken.addr(), empty.host(), mirror.host()],
        "debug": true
    }));
    hoist.ok(&["pull", "-q", "hoist-mirror-test:2"]);
    assert_eq!(hoist.id("hoist-mirror-test:2"), id);
    let missing = requests(&empty.log(), "/v2/library/hoist-mirror-test/manifests/2");
    assert!(
        missing.iter().any(|r| r.ends_with(" 404")),
        "the empty mirror was asked first: {missing:?}"
    );
}

#[test]
fn from_in_a_build_uses_the_mirror() {
    let mirror = Registry::start_open();
    let id = seed(&mirror.host(), "library/hoist-mirror-base:1", None);

    let hoist = Hoist::new();
    // The user's configuration file, found through XDG_CONFIG_HOME.
    let user_config = hoist.dir.path().join("xdg/hoist/config.json");
    fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    fs::write(
        &user_config,
        serde_json::json!({
            "registry-mirrors": {"docker.io": [dead_address(), format!("http://{}", mirror.host())]}
        })
        .to_string(),
    )
    .unwrap();
    let context = hoist.dir.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM hoist-mirror-base:1\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n",
    )
    .unwrap();
    let out = hoist
        .cmd()
        .env_remove("HOIST_CONFIG")
        .args(["build", "-q", "-t", "from-mirror"])
        .arg(&context)
        .output()
        .expect("hoist build");
    hoist_test::success(&out);
    assert_eq!(hoist.id("hoist-mirror-base:1"), id);
    let history = hoist.ok(&["history", "-q", "from-mirror"]);
    assert!(history.lines().count() >= 3, "{history}");
}

#[test]
fn any_registry_can_have_mirrors_and_pushes_skip_them() {
    let origin = Registry::start_open();
    let mirror = Registry::start_open();
    let id = seed(&mirror.host(), "team/app:1", None);

    let hoist = Hoist::new();
    hoist.configure(&serde_json::json!({
        "registry-mirrors": {origin.host(): [format!("http://{}", mirror.host())]}
    }));
    let name = format!("{}/team/app:1", origin.host());
    hoist.ok(&["pull", "-q", &name]);
    assert_eq!(hoist.id(&name), id);
    let asked = requests(&mirror.log(), "/v2/team/app/manifests/1");
    // Encoded as containerd's url.Values does.
    let ns = format!("?ns={}", origin.host().replace(':', "%3A"));
    assert!(asked.iter().any(|r| r.contains(&ns)), "{asked:?}");
    assert!(
        requests(&origin.log(), "/manifests/").is_empty(),
        "the origin was not asked: {}",
        origin.log()
    );

    // A push goes to the registry named, never to its mirror.
    let uploads_before = mirror.blob_uploads();
    let pushed = format!("{}/team/pushed:1", origin.host());
    hoist.ok(&["tag", &name, &pushed]);
    hoist.ok(&["push", &pushed]);
    assert_eq!(mirror.blob_uploads(), uploads_before, "{}", mirror.log());
    assert!(
        requests(&origin.log(), "/v2/team/pushed/manifests/1")
            .iter()
            .any(|r| r.starts_with("PUT ")),
        "{}",
        origin.log()
    );
}

#[test]
fn a_mirror_uses_its_own_credentials_and_failures_name_every_mirror() {
    let mirror = Registry::start_basic("mirror-user", "mirror-pass");
    seed(
        &mirror.host(),
        "library/hoist-mirror-auth:1",
        Some(("mirror-user", "mirror-pass")),
    );
    // The registry named is loopback and dead, so the pull can only come from the mirror.
    let origin = format!("127.0.0.1:{}", free_port());
    let dead = dead_address();
    let hoist = Hoist::new();
    hoist.configure(&serde_json::json!({
        "registry-mirrors": {origin.clone(): [dead.clone(), format!("http://{}", mirror.host())]}
    }));
    let name = format!("{origin}/library/hoist-mirror-auth:1");
    // Without credentials the mirror refuses, and the error names each mirror's failure.
    let err = hoist.fails(&["pull", &name]);
    assert!(
        err.contains(&format!("mirrors tried first: {dead}: ")),
        "{err}"
    );
    assert!(
        err.contains(&format!("http://{}: ", mirror.host())),
        "{err}"
    );
    // Credentials stored under the mirror's host are the mirror's.
    hoist_test::success(&hoist.login(&mirror.host(), "mirror-user", "mirror-pass"));
    hoist.ok(&["pull", "-q", &name]);

    // A configuration that cannot be used stops the command and names the file.
    hoist.configure(&serde_json::json!({
        "registry-mirrors": {"docker.io": ["https://mirror.example/some/path"]}
    }));
    let err = hoist.fails(&["pull", "hoist-mirror-auth:1"]);
    let path = hoist.hoist_config_path().display().to_string();
    assert!(
        err.contains(&path) && err.contains("a path is not supported"),
        "{err}"
    );
}
