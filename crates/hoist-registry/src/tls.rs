//! Per-registry TLS material, read as dockerd reads it: `/etc/docker/certs.d/<host[:port]>/`
//! (`HOIST_CERTS_D` replaces the `/etc/docker/certs.d` part, for tests and rootless setups).
//!
//! In a host's directory, as in docker's `ReadCertsDirectory`:
//! - every `*.crt` is an extra trusted CA, added to the platform's roots;
//! - a `*.cert` with the `*.key` of the same name is a client certificate (mutual TLS); a
//!   `.cert` without its `.key`, or the reverse, is an error. The first pair by name is used.
//!
//! Docker's CLI never reads `~/.docker/certs.d` for registries (the daemon does the pulls), so
//! neither does hoist. The directory existing at all also tells hoist that a loopback registry
//! speaks TLS (see [`crate::Endpoint::new`]).

use std::fs;
use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::error::RegistryError;

/// dockerd's directory of per-registry certificates.
pub const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d";

/// The certs.d root: `HOIST_CERTS_D`, else `/etc/docker/certs.d`.
#[must_use]
pub fn certs_d() -> PathBuf {
    std::env::var_os("HOIST_CERTS_D")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CERTS_D), PathBuf::from)
}

/// The directory for `host[:port]`, if there is one.
#[must_use]
pub fn host_dir(host: &str) -> Option<PathBuf> {
    if host.is_empty() || host.contains(['/', '\\']) || host.starts_with('.') {
        return None;
    }
    let dir = certs_d().join(host);
    dir.is_dir().then_some(dir)
}

/// What a host's certs.d directory holds.
#[derive(Default)]
pub(crate) struct HostTls {
    pub(crate) cas: Vec<Certificate<'static>>,
    pub(crate) client: Option<ClientCert>,
}

impl HostTls {
    /// Reads `dir` (a host's certs.d directory).
    pub(crate) fn read(host: &str, dir: &Path) -> Result<Self, RegistryError> {
        let bad = |path: &Path, message: String| RegistryError::Tls {
            host: host.to_owned(),
            path: path.to_path_buf(),
            message,
        };
        let io = |path: &Path, e: std::io::Error| bad(path, e.to_string());
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| io(dir, e))?;
        names.sort();
        let mut tls = Self::default();
        for path in &names {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => {
                    let pem = fs::read(path).map_err(|e| io(path, e))?;
                    let certs = certificates(&pem).map_err(|m| bad(path, m))?;
                    if certs.is_empty() {
                        return Err(bad(path, "no PEM certificate in the file".into()));
                    }
                    tls.cas.extend(certs);
                }
                Some("cert") => {
                    let key = path.with_extension("key");
                    if !key.is_file() {
                        return Err(bad(
                            path,
                            format!(
                                "missing key {} for client certificate (CA certificates must use the extension .crt)",
                                key.display()
                            ),
                        ));
                    }
                    if tls.client.is_none() {
                        let pem = fs::read(path).map_err(|e| io(path, e))?;
                        let chain = certificates(&pem).map_err(|m| bad(path, m))?;
                        if chain.is_empty() {
                            return Err(bad(path, "no PEM certificate in the file".into()));
                        }
                        let key_pem = fs::read(&key).map_err(|e| io(&key, e))?;
                        let private = private_key(&key_pem).map_err(|m| bad(&key, m))?;
                        check_pair(&chain, &key_pem).map_err(|m| bad(path, m))?;
                        tls.client = Some(ClientCert::new_with_certs(&chain, private));
                    }
                }
                Some("key") => {
                    let cert = path.with_extension("cert");
                    if !cert.is_file() {
                        return Err(bad(
                            path,
                            format!("missing client certificate {} for key", cert.display()),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(tls)
    }

    /// The TLS configuration: the platform's verifier, or its roots plus these CAs; the client
    /// certificate; no verification at all when `verify` is false (the client certificate is
    /// still presented).
    pub(crate) fn config(&self, verify: bool) -> TlsConfig {
        let roots = if self.cas.is_empty() {
            RootCerts::PlatformVerifier
        } else {
            // ureq cannot add roots to the platform verifier: the platform's roots (what it
            // uses on Linux) are loaded here and the extra CAs added, as Go's SystemCertPool
            // plus AppendCertsFromPEM does for docker.
            let native = rustls_native_certs::load_native_certs();
            let mut all: Vec<Certificate<'static>> = native
                .certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            all.extend(self.cas.iter().cloned());
            RootCerts::new_with_certs(&all)
        };
        TlsConfig::builder()
            .root_certs(roots)
            .client_cert(self.client.clone())
            .disable_verification(!verify)
            .build()
    }
}

fn certificates(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| e.to_string())? {
            out.push(c);
        }
    }
    Ok(out)
}

fn private_key(pem: &[u8]) -> Result<PrivateKey<'static>, String> {
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::PrivateKey(k) = item.map_err(|e| e.to_string())? {
            return Ok(k);
        }
    }
    Err("no PEM private key in the file".into())
}

/// The key must be one rustls can sign with and match the certificate: ureq would panic on
/// the first connection otherwise.
fn check_pair(chain: &[Certificate<'static>], key_pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let certs = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key_der, &provider)
        .map(|_| ())
        .map_err(|e| format!("the client certificate and its key do not match: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_cert_or_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("client.cert"), "").unwrap();
        let e = HostTls::read("h", dir.path()).err().unwrap().to_string();
        assert!(e.contains("missing key"), "{e}");
        fs::remove_file(dir.path().join("client.cert")).unwrap();
        fs::write(dir.path().join("client.key"), "").unwrap();
        let e = HostTls::read("h", dir.path()).err().unwrap().to_string();
        assert!(e.contains("missing client certificate"), "{e}");
        fs::remove_file(dir.path().join("client.key")).unwrap();
        fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let e = HostTls::read("h", dir.path()).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        fs::remove_file(dir.path().join("ca.crt")).unwrap();
        fs::write(dir.path().join("README"), "ignored").unwrap();
        let tls = HostTls::read("h", dir.path()).unwrap();
        assert!(tls.cas.is_empty() && tls.client.is_none());
    }
}
