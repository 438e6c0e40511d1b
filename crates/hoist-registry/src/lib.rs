//! hoist-registry: talks to OCI / Docker registries — pulls images into the store, pushes them
//! from it, and keeps docker's credentials.
//!
//! # Why our own client
//!
//! The Rust registry clients available (oci-client being the most complete) lack what docker
//! users rely on: identity/refresh tokens, tokens covering several repositories (a cross-repo
//! mount needs `pull` on the source), re-challenging a 401 for a different scope, docker's
//! `config.json` and credential helpers, the docker.io alias and the insecure-registry rules,
//! and streaming from on-disk blobs with retries. This crate is a thin layer over an HTTP
//! client that does exactly that protocol and no more.
//!
//! # Why synchronous
//!
//! The store's API is synchronous (SQLite, files, `Read`/`Write` streams), and so are the
//! binary and the build engine. `ureq` gives blocking HTTP/1.1 on rustls with no async runtime
//! to start, bridge to or compile; concurrency (several layers at once) is a few scoped
//! threads, each streaming one blob straight between the socket and the store.
//!
//! # Layout
//!
//! - [`endpoint`]: host → base URL (docker.io alias, http for loopback, insecure list, mirrors).
//! - [`config`]: hoist's configuration file (registry mirrors, insecure registries).
//! - [`tls`]: docker's `/etc/docker/certs.d/<host>/` (extra CAs, client certificates).
//! - `auth`: challenges, token requests, the per-scope-set token cache.
//! - [`Client`]: one registry; every request is authenticated, re-challenged and retried there.
//! - `manifests`, `blobs`: the distribution API calls.
//! - [`pull()`], [`push()`]: whole images between the store and a registry; a pull tries the
//!   registry's mirrors first, a push never does.
//! - [`credentials`]: docker's `config.json`, credential helpers, `DOCKER_AUTH_CONFIG`.
//! - [`Event`]: progress; this crate never prints.

mod auth;
mod blobs;
mod client;
pub mod config;
pub mod credentials;
pub mod endpoint;
mod error;
mod manifests;
mod pargzip;
mod progress;
mod pull;
mod push;
mod secret;
pub mod tls;

pub use blobs::{BlobPush, BlobReader, UploadMode};
pub use client::Client;
pub use config::HoistConfig;
pub use credentials::{CredentialSource, Credentials, DockerConfig, StoredIn};
pub use endpoint::Endpoint;
pub use error::RegistryError;
pub use manifests::FetchedManifest;
pub use progress::{Event, Reporter};
pub use pull::{PullOptions, PulledImage, pull, pull_all_tags, pull_image, pull_with};
pub use push::{Compression, PushOptions, PushedImage, push, push_with};
pub use secret::Secret;

/// Settings shared by every registry operation.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`, or a host name for every port) to reach without TLS verification,
    /// falling back to plain http; loopback hosts are always insecure.
    pub insecure_registries: Vec<String>,
    /// Where credentials come from (for the registry named; a mirror's come from docker's
    /// configuration under the mirror's host, unless pulls are anonymous).
    pub credentials: CredentialSource,
    /// Registry host (as [`endpoint::normalize_host`] gives it) → mirrors a pull tries first,
    /// in order (see [`config`] for the forms a mirror takes).
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    /// `--tls-verify=false`: every registry (and mirror) of the operation is reached
    /// https-first without verifying certificates, falling back to plain http.
    pub skip_tls_verify: bool,
}

impl RegistryOptions {
    /// The mirrors of `host`, in order.
    #[must_use]
    pub fn mirrors_of(&self, host: &str) -> &[String] {
        self.mirrors
            .get(&endpoint::normalize_host(host))
            .map_or(&[], Vec::as_slice)
    }
}
