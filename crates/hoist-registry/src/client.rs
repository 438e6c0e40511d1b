//! One registry host: its endpoint, an HTTP agent, the credentials, and the auth state. Every
//! request goes through [`Client::send`], which authenticates (Basic, or a Bearer token for
//! the request's scope set), answers a 401 by re-challenging once with the scopes the
//! registry names, and retries broken connections, 5xx and 429 with backoff.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::config::RedirectAuthHeaders;
use ureq::http::Response;
use ureq::{Agent, SendBody};
use url::Url;

use crate::auth::{self, Challenge, TokenCache};
use crate::endpoint::Endpoint;
use crate::error::RegistryError;
use crate::tls::HostTls;
use crate::{CredentialSource, Credentials, RegistryOptions};

/// Attempts for a retryable request (the first one included).
const ATTEMPTS: u32 = 4;

/// HTTP methods the protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
        }
    }

    fn has_body(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch)
    }
}

/// A request body that can be sent again (after a 401 or a broken connection).
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`; `progress` sees the bytes as they are sent.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        progress: Option<&'a (dyn Fn(u64) + Sync)>,
    },
}

/// One request.
pub(crate) struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Body<'a>,
    /// Token scopes the request needs.
    pub(crate) scopes: Vec<String>,
    /// Whether a broken connection or a 5xx may be retried by sending it again.
    pub(crate) retry: bool,
}

impl<'a> Request<'a> {
    pub(crate) fn new(method: Method, url: Url, scopes: Vec<String>) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            body: Body::Empty,
            scopes,
            retry: matches!(method, Method::Get | Method::Head),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Body<'a>) -> Self {
        self.body = body;
        self
    }

    pub(crate) fn retry(mut self, retry: bool) -> Self {
        self.retry = retry;
        self
    }
}

struct AuthState {
    challenge: Option<Challenge>,
    tokens: TokenCache,
}

/// A connection to one registry host.
pub struct Client {
    endpoint: Endpoint,
    agent: Agent,
    credentials: Option<Credentials>,
    state: Mutex<AuthState>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The agent for `endpoint`: its host's certs.d directory (extra CAs, a client certificate)
/// and whether certificates are verified.
fn agent(endpoint: &Endpoint) -> Result<Agent, RegistryError> {
    let host = endpoint.tls_host();
    let files = match crate::tls::host_dir(&host) {
        Some(dir) => HostTls::read(&host, &dir)?,
        None => HostTls::default(),
    };
    let tls = files.config(endpoint.verify_tls);
    Ok(Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        // Blob GETs redirect to storage on other hosts: the credentials stay behind.
        .redirect_auth_headers(RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(300)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .max_idle_connections_per_host(8)
        .build()
        .new_agent())
}

impl Client {
    /// Connects to `host` (as references name it, e.g. `docker.io`, `localhost:5000`), pings
    /// `/v2/` to learn how it authenticates, and looks up credentials as `options` say.
    pub fn connect(host: &str, options: &RegistryOptions) -> Result<Self, RegistryError> {
        let endpoint = Endpoint::new(host, &options.insecure_registries).map_err(|source| {
            RegistryError::Url {
                url: host.to_owned(),
                source,
            }
        })?;
        let endpoint = if options.skip_tls_verify {
            endpoint.without_tls_verify()
        } else {
            endpoint
        };
        let credentials = options.credentials.lookup(&endpoint.host)?;
        Self::with_credentials(endpoint, credentials)
    }

    /// Connects to a mirror (see [`Endpoint::mirror`]), with docker's credentials for the
    /// mirror's host. A mirror that does not answer is not retried: the next one is tried.
    pub fn connect_mirror(
        endpoint: Endpoint,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let credentials = match &options.credentials {
            CredentialSource::Anonymous => None,
            CredentialSource::DockerConfig | CredentialSource::Fixed(_) => {
                CredentialSource::DockerConfig.lookup(&endpoint.host)?
            }
        };
        let endpoint = if options.skip_tls_verify {
            endpoint.without_tls_verify()
        } else {
            endpoint
        };
        Self::open(endpoint, credentials, false)
    }

    /// Connects with the given credentials (login verifies them this way before storing).
    pub fn with_credentials(
        endpoint: Endpoint,
        credentials: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        Self::open(endpoint, credentials, true)
    }

    fn open(
        endpoint: Endpoint,
        credentials: Option<Credentials>,
        retry_ping: bool,
    ) -> Result<Self, RegistryError> {
        let mut client = Self {
            agent: agent(&endpoint)?,
            endpoint,
            credentials,
            state: Mutex::new(AuthState {
                challenge: None,
                tokens: TokenCache::default(),
            }),
        };
        match client.ping(retry_ping) {
            Err(e) if client.endpoint.insecure && client.endpoint.base.scheme() == "https" => {
                // An insecure registry may speak plain http only (docker's fallback).
                client.endpoint = client.endpoint.plain_http();
                client.ping(retry_ping).map_err(|_| e)?;
            }
            other => other?,
        }
        Ok(client)
    }

    /// The registry host as references name it.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    pub(crate) fn url(&self, rest: &str) -> Result<Url, RegistryError> {
        self.endpoint
            .url(rest)
            .map_err(|source| RegistryError::Url {
                url: rest.to_owned(),
                source,
            })
    }

    /// Resolves a `Location` header against the endpoint.
    pub(crate) fn location(&self, location: &str) -> Result<Url, RegistryError> {
        self.endpoint
            .base
            .join(location)
            .map_err(|source| RegistryError::Url {
                url: location.to_owned(),
                source,
            })
    }

    fn ping(&self, retry: bool) -> Result<(), RegistryError> {
        let url = self.url("")?;
        let resp = self.send_once(&Request::new(Method::Get, url, Vec::new()), None, retry)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            401 => {
                let challenge = challenge_of(&resp).unwrap_or(Challenge::Basic);
                self.lock().challenge = Some(challenge);
                Ok(())
            }
            status => Err(RegistryError::Status {
                registry: self.endpoint.host.clone(),
                method: "GET",
                path: "/v2/".into(),
                status,
                detail: describe_response(resp),
            }),
        }
    }

    /// Checks the credentials: a token without scope from the token service (asking for a
    /// refresh token, which is returned), or `/v2/` with Basic credentials.
    pub fn verify_login(&self) -> Result<Option<crate::Secret>, RegistryError> {
        let challenge = self.lock().challenge.clone();
        match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = auth::fetch_token(
                    &self.agent,
                    &self.endpoint.host,
                    &realm,
                    service.as_deref(),
                    &[],
                    self.credentials.as_ref(),
                    true,
                )?;
                Ok(token.refresh)
            }
            Some(Challenge::Basic) => {
                let url = self.url("")?;
                let resp = self.send(&Request::new(Method::Get, url, Vec::new()))?;
                if resp.status().is_success() {
                    Ok(None)
                } else {
                    Err(RegistryError::Unauthorized {
                        registry: self.endpoint.host.clone(),
                        detail: describe_response(resp),
                    })
                }
            }
            None => Ok(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `Authorization` value for a request needing `scopes`, fetching a token if needed.
    fn authorization(&self, scopes: &[String]) -> Result<Option<String>, RegistryError> {
        let mut state = self.lock();
        match state.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match &self.credentials {
                Some(Credentials::Basic { username, password }) => {
                    Some(auth::basic_header(username, password.expose()))
                }
                _ => None,
            }),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(token) = state.tokens.get(scopes) {
                    return Ok(Some(format!("Bearer {}", token.expose())));
                }
                // Held across the fetch so concurrent requests share one token.
                let token = auth::fetch_token(
                    &self.agent,
                    &self.endpoint.host,
                    &realm,
                    service.as_deref(),
                    scopes,
                    self.credentials.as_ref(),
                    false,
                )?;
                let value = format!("Bearer {}", token.token.expose());
                state.tokens.put(scopes, token.token, token.lifetime);
                Ok(Some(value))
            }
        }
    }

    /// Sends a request: authenticated, re-challenged once on 401, retried when transient.
    pub(crate) fn send(&self, req: &Request<'_>) -> Result<Response<ureq::Body>, RegistryError> {
        let mut scopes = req.scopes.clone();
        let mut attempt = 0;
        let mut rechallenged = false;
        loop {
            let authorization = self.authorization(&scopes)?;
            let result = self.send_once(req, authorization.as_deref(), false);
            let transient = match &result {
                Err(e) => e.is_transient(),
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    s >= 500 || s == 429
                }
            };
            if req.retry && transient && attempt + 1 < ATTEMPTS {
                std::thread::sleep(backoff(attempt));
                attempt += 1;
                continue;
            }
            let resp = result?;
            if resp.status().as_u16() == 401 && !rechallenged {
                rechallenged = true;
                let challenge = challenge_of(&resp).unwrap_or(Challenge::Basic);
                let mut state = self.lock();
                state.tokens.forget(&scopes);
                if let Challenge::Bearer { scopes: wanted, .. } = &challenge {
                    // The registry names the scope it wants (e.g. pull on a mount's source).
                    scopes = auth::merge_scopes(&scopes, wanted);
                }
                state.challenge = Some(challenge);
                continue;
            }
            return Ok(resp);
        }
    }

    fn send_once(
        &self,
        req: &Request<'_>,
        authorization: Option<&str>,
        retry_transport: bool,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.send_raw(req, authorization) {
                Err(e) if retry_transport && e.is_transient() && attempt + 1 < ATTEMPTS => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn send_raw(
        &self,
        req: &Request<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let transport = |source| RegistryError::Transport {
            method: req.method.as_str(),
            url: redact_url(&req.url),
            source: Box::new(source),
        };
        let mut builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(a) = authorization {
            builder = builder.header("Authorization", a);
        }
        let result = match &req.body {
            Body::Empty => {
                if req.method.has_body() {
                    builder = builder.header("Content-Length", "0");
                }
                let request = builder
                    .body(())
                    .map_err(|e| transport(ureq::Error::Http(e)))?;
                self.agent.run(request)
            }
            Body::Bytes(b) => {
                let request = builder
                    .body(*b)
                    .map_err(|e| transport(ureq::Error::Http(e)))?;
                self.agent.run(request)
            }
            Body::File {
                path,
                offset,
                len,
                progress,
            } => {
                let io_err = |source| RegistryError::Io {
                    context: "reading",
                    path: path.to_path_buf(),
                    source,
                };
                let mut file = File::open(path).map_err(io_err)?;
                file.seek(SeekFrom::Start(*offset)).map_err(io_err)?;
                builder = builder.header("Content-Length", len.to_string());
                let mut reader = Progress {
                    inner: io::BufReader::with_capacity(256 * 1024, file).take(*len),
                    done: 0,
                    report: *progress,
                };
                let request = builder
                    .body(SendBody::from_reader(&mut reader))
                    .map_err(|e| transport(ureq::Error::Http(e)))?;
                self.agent.run(request)
            }
        };
        result.map_err(transport)
    }
}

/// A reader that reports the running total of bytes read.
pub(crate) struct Progress<'a, R> {
    pub(crate) inner: R,
    pub(crate) done: u64,
    pub(crate) report: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(report) = self.report {
            report(self.done);
        }
        Ok(n)
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(6))
}

fn challenge_of(resp: &Response<ureq::Body>) -> Option<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(auth::parse_challenge)
}

/// A URL as shown in errors: without user info, and without query values (upload session
/// state and signed storage URLs carry secrets there).
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// A response header as text.
pub(crate) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The registry's explanation of a failed response: `code: message` for each error in the
/// distribution error body (as docker renders them), else the status line.
pub(crate) fn describe_response(mut resp: Response<ureq::Body>) -> String {
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    describe_body(status.as_u16(), status.canonical_reason(), &body)
}

fn describe_body(status: u16, reason: Option<&str>, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| {
                let code = e.code.to_ascii_lowercase().replace('_', " ");
                match (code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{code}: {}", e.message),
                    (false, true) => code,
                    _ => e.message.clone(),
                }
            })
            .collect();
        if !parts.is_empty() {
            return parts.join(", ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let first: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    match (reason, first.is_empty()) {
        (Some(r), true) => format!("{status} {r}"),
        (Some(r), false) => format!("{status} {r}: {first}"),
        (None, true) => status.to_string(),
        (None, false) => format!("{status}: {first}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_like_docker() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            describe_body(404, Some("Not Found"), body),
            "manifest unknown: manifest unknown"
        );
        assert_eq!(
            describe_body(500, Some("Internal Server Error"), b""),
            "500 Internal Server Error"
        );
        assert_eq!(describe_body(502, None, b"bad\ngateway"), "502: bad");
    }

    #[test]
    fn urls_lose_secrets() {
        let u =
            Url::parse("http://u:p@h:5000/v2/x/blobs/uploads/abc?_state=secret&digest=sha256:1")
                .unwrap();
        assert_eq!(redact_url(&u), "http://h:5000/v2/x/blobs/uploads/abc");
    }
}
