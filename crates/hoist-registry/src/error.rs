//! What can go wrong talking to a registry. Messages name the registry and repository; they
//! never contain a credential (those are [`crate::Secret`]s, which print as `<redacted>`).

use std::path::PathBuf;

use hoist_oci::Digest;
use hoist_store::StoreError;

/// A registry operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The connection failed or broke (retried before it is returned).
    #[error("{method} {url} failed")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// A status the protocol step does not expect.
    #[error("{registry} answered {status} to {method} {path}: {detail}")]
    Status {
        registry: String,
        method: &'static str,
        path: String,
        status: u16,
        detail: String,
    },
    /// 401 or 403 after authenticating, or for an anonymous client.
    #[error(
        "{action} access denied for {repository}, repository does not exist or may require 'hoist login': {detail}"
    )]
    AccessDenied {
        action: &'static str,
        repository: String,
        detail: String,
    },
    /// The token service or the registry refused the credentials.
    #[error("login to {registry} failed: {detail}")]
    Unauthorized { registry: String, detail: String },
    /// No manifest under that tag or digest.
    #[error("manifest for {reference} not found: {detail}")]
    ManifestNotFound { reference: String, detail: String },
    /// A blob the manifest names is missing from the repository.
    #[error("blob {digest} not found in {repository}: {detail}")]
    BlobNotFound {
        repository: String,
        digest: Digest,
        detail: String,
    },
    /// The repository has no tags to pull with `-a`.
    #[error("no tags found in {repository}")]
    NoTags { repository: String },
    /// An index without an entry for the wanted platform.
    #[error("no matching manifest for {platform} in the manifest list entries")]
    NoMatchingPlatform { platform: String },
    /// Content whose digest is not the one asked for.
    #[error("{what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// A blob longer or shorter than its descriptor says.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A layer whose content is not the one the config lists.
    #[error("layer {blob} unpacks to {actual}, the image config expects {expected}")]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    /// A manifest or config that does not parse.
    #[error("invalid {what} from {registry}")]
    InvalidJson {
        what: String,
        registry: String,
        #[source]
        source: serde_json::Error,
    },
    /// A manifest type we cannot handle.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// The registry broke the protocol (e.g. no `Location` after starting an upload).
    #[error("{registry}: {message}")]
    Protocol { registry: String, message: String },
    /// A URL that does not parse (a bad host, or a `Location` or realm from the registry).
    #[error("invalid URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// Pulling a layer into the store failed (its digest is named; the cause follows).
    #[error("failed to store layer {digest}")]
    Layer {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    /// A mirror address in hoist's configuration that cannot be used.
    #[error("invalid mirror {mirror:?} for {registry}: {reason}")]
    InvalidMirror {
        registry: String,
        mirror: String,
        reason: String,
    },
    /// Every mirror failed, and then the registry itself: its error (causes included), with
    /// each mirror's.
    #[error("{} (mirrors tried first: {tried})", chain(.origin))]
    Mirrors {
        origin: Box<RegistryError>,
        tried: String,
    },
    /// A host's certs.d directory (CAs, client certificate) that cannot be used.
    #[error("TLS configuration for {host} in {path}: {message}")]
    Tls {
        host: String,
        path: PathBuf,
        message: String,
    },
    /// hoist's configuration file is not what it should be.
    #[error("{path}: {message}")]
    HoistConfig { path: PathBuf, message: String },
    /// The local store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing docker's `config.json`.
    #[error("{context} {path}")]
    Config {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `config.json` that does not parse.
    #[error("invalid JSON in {path}")]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A `docker-credential-*` helper failed.
    #[error("credential helper docker-credential-{helper} {action} failed: {message}")]
    Helper {
        helper: String,
        action: &'static str,
        message: String,
    },
    /// A local file (a blob being uploaded) could not be read.
    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Whether trying again may succeed: a broken connection, a timeout, a 5xx or 429.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { source, .. } => !matches!(
                **source,
                ureq::Error::BadUri(_)
                    | ureq::Error::InvalidProxyUrl
                    | ureq::Error::TooManyRedirects
                    | ureq::Error::RedirectFailed
                    | ureq::Error::BodyExceedsLimit(_)
            ),
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Layer { source, .. } => {
                matches!(source, StoreError::Io { .. })
                    && std::error::Error::source(source)
                        .and_then(|e| e.downcast_ref::<std::io::Error>())
                        .is_some_and(is_transient_io)
            }
            _ => false,
        }
    }
}

/// An error and its causes, `: `-separated (a cause already in the text is not repeated).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// io errors that a broken download shows up as.
pub(crate) fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset
            | ConnectionAborted
            | BrokenPipe
            | UnexpectedEof
            | TimedOut
            | Interrupted
            | ConnectionRefused
            | NotConnected
    ) || e
        .get_ref()
        .is_some_and(|inner| inner.is::<TransientMarker>())
}

/// Marks an io error raised by our own blob reader when a download broke for good.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TransientMarker(pub(crate) String);
