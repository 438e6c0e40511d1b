//! Real registries for tests: Debian's `docker-registry` (distribution 2.8) on a free loopback
//! port — open, with htpasswd basic auth, or in `auth: token` mode against a token issuer run
//! in this process (JWTs signed RS256 with a key and self-signed certificate made by openssl,
//! sent in `x5c` so the registry's `rootcertbundle` validates them) — and a tiny HTTP server
//! for fault injection. Every handle stops its processes and threads on drop.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REGISTRY: &str = "/usr/bin/docker-registry";
/// The `service` the token-mode registry names.
pub const TOKEN_SERVICE: &str = "hoist-test-registry";
const TOKEN_ISSUER: &str = "hoist-test-issuer";

/// A free loopback port (bound and released; good enough for tests).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A running `docker-registry`.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// The token issuer, in token mode.
    pub tokens: Option<TokenServer>,
}

impl Registry {
    /// A registry without authentication.
    pub fn start_open() -> Self {
        Self::start("", None)
    }

    /// A registry with htpasswd basic auth for one user.
    pub fn start_basic(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd is missing: install Debian's apache2-utils");
        assert!(out.status.success(), "htpasswd failed");
        let file = dir.path().join("htpasswd");
        fs::write(&file, &out.stdout).expect("write htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n",
            file.display()
        );
        Self::start_in(dir, &auth, None)
    }

    /// A registry in token mode with an in-process issuer knowing `users`.
    pub fn start_token(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=hoist-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is missing");
        assert!(status.success(), "openssl req failed");
        let tokens = TokenServer::start(&key, &cert, users);
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm(),
            cert.display()
        );
        Self::start_in(dir, &auth, Some(tokens))
    }

    fn start(auth: &str, tokens: Option<TokenServer>) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), auth, tokens)
    }

    fn start_in(dir: tempfile::TempDir, auth: &str, tokens: Option<TokenServer>) -> Self {
        assert!(
            Path::new(REGISTRY).exists(),
            "docker-registry is missing: install Debian's docker-registry"
        );
        let port = free_port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let registry = Self {
            child,
            dir,
            port,
            tokens,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:<port>`.
    #[must_use]
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Blob uploads completed so far (PUTs that closed an upload session, from the access log).
    #[must_use]
    pub fn blob_uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }

    /// Where the registry keeps its data.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request the token issuer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// `password`, `refresh_token`, `basic` (GET with credentials) or `anonymous`.
    pub grant: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
}

/// The in-process token issuer of a token-mode registry.
pub struct TokenServer {
    server: HttpServer,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    /// When set, OAuth2 POSTs answer 404 (clients must fall back to GET).
    pub refuse_post: Arc<AtomicBool>,
}

impl TokenServer {
    fn start(key: &Path, cert: &Path, users: &[(&str, &str)]) -> Self {
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(cert)
            .output()
            .expect("openssl x509");
        assert!(der.status.success());
        let x5c = base64(&der.stdout, STANDARD);
        let users: HashMap<String, String> = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let refuse_post = Arc::new(AtomicBool::new(false));
        let key = key.to_owned();
        let (seen, refuse) = (requests.clone(), refuse_post.clone());
        let server = HttpServer::start(move |req: &HttpRequest| {
            let query = parse_form(req.path.split_once('?').map_or("", |(_, q)| q));
            let form = parse_form(&String::from_utf8_lossy(&req.body));
            let param = |k: &str| {
                form.iter()
                    .chain(&query)
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            };
            let mut scopes: Vec<String> = query
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .collect();
            if req.method == "POST" {
                if refuse.load(Ordering::SeqCst) {
                    return HttpResponse::status(404);
                }
                scopes = param("scope")
                    .map(|s| s.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default();
            }
            // Who is asking.
            let (grant, user) = if req.method == "POST" {
                match param("grant_type").as_deref() {
                    Some("password") => {
                        let u = param("username").unwrap_or_default();
                        let ok = users.get(&u) == param("password").as_ref();
                        ("password", ok.then_some(u))
                    }
                    Some("refresh_token") => {
                        let t = param("refresh_token").unwrap_or_default();
                        let u = t.strip_prefix("refresh-").map(str::to_owned);
                        ("refresh_token", u.filter(|u| users.contains_key(u)))
                    }
                    _ => ("unknown", None),
                }
            } else if let Some(basic) = req.header("authorization") {
                let decoded = basic
                    .strip_prefix("Basic ")
                    .and_then(|b| unbase64(b.trim()))
                    .unwrap_or_default();
                let (u, p) = decoded.split_once(':').unwrap_or(("", ""));
                let ok = users.get(u).is_some_and(|x| x == p);
                ("basic", ok.then(|| u.to_owned()))
            } else {
                ("anonymous", None)
            };
            seen.lock().expect("lock").push(TokenRequest {
                method: req.method.clone(),
                grant: grant.to_owned(),
                scopes: scopes.clone(),
            });
            if grant != "anonymous" && user.is_none() {
                return HttpResponse::json(
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#,
                );
            }
            // Authenticated users get what they ask for; anonymous clients get nothing.
            let access: Vec<serde_json::Value> = scopes
                .iter()
                .filter(|_| user.is_some())
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({
                        "type": kind, "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect();
            let token = sign_jwt(&key, &x5c, user.as_deref().unwrap_or(""), &access);
            let mut body = serde_json::json!({
                "token": token, "access_token": token, "expires_in": 300,
            });
            let offline = param("offline_token").as_deref() == Some("true")
                || param("access_type").as_deref() == Some("offline");
            if let (true, Some(u)) = (offline, &user) {
                body["refresh_token"] = format!("refresh-{u}").into();
            }
            HttpResponse::json(200, &body.to_string())
        });
        Self {
            server,
            requests,
            refuse_post,
        }
    }

    /// The realm URL.
    #[must_use]
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// Requests seen so far.
    #[must_use]
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

fn sign_jwt(key: &Path, x5c: &str, subject: &str, access: &[serde_json::Value]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), URL),
        base64(claims.to_string().as_bytes(), URL)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst failed");
    format!("{input}.{}", base64(&out.stdout, URL))
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64 with `alphabet`; the URL alphabet is unpadded (JWT), the standard one padded.
fn base64(data: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if alphabet == STANDARD {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = STANDARD.iter().position(|x| *x == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.1 request as the test server read it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Lower-cased header names.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the test server answers.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Close the connection after this many body bytes (the full length is still announced).
    pub cut_after: Option<usize>,
}

impl HttpResponse {
    /// A bodiless response.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
        }
    }

    /// A JSON response.
    #[must_use]
    pub fn json(status: u16, body: &str) -> Self {
        Self {
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            ..Self::status(status)
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A tiny threaded HTTP/1.1 server (one request per connection) for token issuers and faults.
pub struct HttpServer {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl HttpServer {
    /// Serves `handler` on a free loopback port until dropped.
    pub fn start(handler: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        std::thread::spawn(move || {
                            let _ = serve_one(stream, &*handler);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, stop }
    }

    /// `127.0.0.1:<port>`.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_one(
    stream: TcpStream,
    handler: &(dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync),
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let req = HttpRequest {
        method,
        path,
        headers,
        body,
    };
    let resp = handler(&req);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        let n = resp
            .cut_after
            .unwrap_or(resp.body.len())
            .min(resp.body.len());
        out.write_all(&resp.body[..n])?;
    }
    out.flush()?;
    if resp.cut_after.is_some() {
        // A reset, not a clean close: what a broken connection looks like.
        let _ = out.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}

impl Registry {
    /// An open registry speaking only https with `cert` and `key` (PEM files; they must stay
    /// where they are while it runs), requiring a client certificate signed by `client_ca`
    /// when one is given.
    pub fn start_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Self {
        // Continues the `http:` mapping that `start_in` writes last.
        let mut tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        if let Some(ca) = client_ca {
            tls.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
        }
        Self::start(&tls, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_both_ways() {
        assert_eq!(base64(b"user:pass", STANDARD), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab", STANDARD), "YWI=");
        assert_eq!(base64(b"ab", URL), "YWI");
        assert_eq!(unbase64("dXNlcjpwYXNz").as_deref(), Some("user:pass"));
        assert_eq!(percent_decode("a%3Ab+c"), "a:b c");
    }
}
