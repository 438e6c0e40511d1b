//! hoist against Debian's docker-registry speaking only https on loopback, with a CA and
//! certificates made by openssl for the test: certs.d's CAs (`*.crt`) and client certificates
//! (`*.cert` + `*.key`), and `--tls-verify=false`. `HOIST_CERTS_D` stands in for
//! `/etc/docker/certs.d`. Missing prerequisites fail the tests with the reason.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Hoist;
use hoist_test::registry::Registry;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is missing");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=hoist-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            d,
        );
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            ),
            (
                "client",
                "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
        ] {
            fs::write(d.join(format!("{name}.ext")), ext).expect("write ext");
            openssl(
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN=hoist-test-{name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
                d,
            );
            openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.crt"),
                ],
                d,
            );
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn certs_d_cas_and_tls_verify_false() {
    let pki = Pki::new();
    let registry = Registry::start_tls(&pki.path("server.crt"), &pki.path("server.key"), None);
    let host = registry.host();
    let image = format!("{host}/library/busybox:1");
    let hoist = Hoist::new();
    hoist.load_busybox(&image);

    // No certs.d directory: a loopback registry is reached over plain http, which an
    // https-only registry refuses.
    let err = hoist.fails(&["push", &image]);
    assert!(err.contains("HTTP request to an HTTPS server"), "{err}");

    // A certs.d directory says the registry speaks TLS; without the CA the certificate is
    // refused, and the error says so.
    let dir = hoist.certs_dir(&host);
    for args in [&["push", &image][..], &["pull", &image][..]] {
        let err = hoist.fails(args);
        assert!(
            err.contains("certificate") && err.contains("UnknownIssuer"),
            "{args:?}: {err}"
        );
    }

    // The CA in certs.d: push and pull verify and succeed.
    fs::copy(pki.path("ca.crt"), dir.join("ca.crt")).expect("copy ca");
    let pushed = hoist.ok(&["push", &image]);
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    hoist.ok(&["rmi", &image]);
    let pulled = hoist.ok(&["pull", &image]);
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");

    // A CA file that is not a certificate is an error naming the file.
    fs::write(dir.join("bad.crt"), "garbage").expect("write");
    let err = hoist.fails(&["pull", &image]);
    assert!(err.contains("bad.crt"), "{err}");
    fs::remove_dir_all(&dir).expect("rm certs.d/<host>");

    // --tls-verify=false: https without verification (and no certs.d directory at all).
    let other = format!("{host}/tls/busybox:2");
    hoist.ok(&["tag", &image, &other]);
    hoist.ok(&["push", "--tls-verify=false", &other]);
    hoist.ok(&["rmi", &other]);
    hoist.ok(&["pull", "--tls-verify=false", &other]);
    let err = hoist.fails(&["pull", "--tls-verify", &other]);
    assert!(err.contains("HTTPS server"), "{err}");

    // login verifies against the registry, as push and pull do.
    let login = ["login", &host, "-u", "u", "-p", "p"];
    hoist.fails(&login);
    let out = hoist.ok(&[&login[..], &["--tls-verify=false"]].concat());
    assert!(out.contains("Login Succeeded"), "{out}");

    // build's FROM pulls with --tls-verify=false.
    hoist.ok(&["rmi", &other]);
    let ctx = hoist.dir.path().join("ctx");
    fs::create_dir(&ctx).expect("ctx");
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {other}\nLABEL tls=off\n"),
    )
    .expect("Dockerfile");
    let ctx = ctx.to_str().expect("utf-8 path");
    hoist.fails(&["build", "-q", "-t", "built", ctx]);
    hoist.ok(&["build", "-q", "--tls-verify=false", "-t", "built", ctx]);
}

#[test]
fn certs_d_client_certificates() {
    let pki = Pki::new();
    let registry = Registry::start_tls(
        &pki.path("server.crt"),
        &pki.path("server.key"),
        Some(&pki.path("ca.crt")),
    );
    let host = registry.host();
    let image = format!("{host}/library/busybox:1");
    let hoist = Hoist::new();
    hoist.load_busybox(&image);
    let dir = hoist.certs_dir(&host);
    fs::copy(pki.path("ca.crt"), dir.join("ca.crt")).expect("copy ca");

    // The registry requires a client certificate.
    let err = hoist.fails(&["push", &image]);
    assert!(err.contains("BadCertificate"), "{err}");

    // A .cert without its .key is refused before connecting.
    fs::copy(pki.path("client.crt"), dir.join("client.cert")).expect("copy cert");
    let err = hoist.fails(&["push", &image]);
    assert!(err.contains("missing key"), "{err}");

    // A key that is not the certificate's is refused too.
    fs::copy(pki.path("server.key"), dir.join("client.key")).expect("copy key");
    let err = hoist.fails(&["push", &image]);
    assert!(err.contains("do not match"), "{err}");

    // The pair: mutual TLS.
    fs::copy(pki.path("client.key"), dir.join("client.key")).expect("copy key");
    let pushed = hoist.ok(&["push", &image]);
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    hoist.ok(&["rmi", &image]);
    hoist.ok(&["pull", &image]);
}
