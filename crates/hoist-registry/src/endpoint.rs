//! Where a registry host is reached: docker.io's alias, http for loopback, https elsewhere,
//! and the user's insecure list (https without verification, falling back to http).
//!
//! A loopback registry that speaks only https: docker reaches loopback hosts https-first
//! (unverified) with an http fallback. hoist keeps plain http as the loopback default (no TLS
//! handshake thrown at every local registry) and takes a certs.d directory for the host
//! (`/etc/docker/certs.d/127.0.0.1:5000/`, see [`crate::tls`]) as the sign that it speaks
//! TLS: then it is https-first, *verified* against the directory's CAs, with the http fallback
//! kept. `--tls-verify=false` ([`Endpoint::without_tls_verify`]) makes any host https-first,
//! unverified, with the http fallback.

use std::net::IpAddr;

use hoist_oci::DEFAULT_DOMAIN;
use url::Url;

use crate::error::RegistryError;

/// The host Docker Hub's API lives on.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// The key Docker Hub's credentials are stored under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// How to reach one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as references name it (`docker.io`, `localhost:5000`).
    pub host: String,
    /// `https://registry-1.docker.io`, `http://127.0.0.1:5000`.
    pub base: Url,
    /// Plain http is tried when https fails.
    pub insecure: bool,
    /// Certificates are verified (not for the insecure list, nor for a loopback host unless it
    /// has a certs.d directory).
    pub verify_tls: bool,
    /// For a mirror, the registry it stands in for: sent as `?ns=<registry>` on every request,
    /// as containerd and BuildKit do (registries that serve one namespace ignore it).
    pub mirror_of: Option<String>,
}

impl Endpoint {
    /// The endpoint of `host`, given the hosts the user declared insecure.
    pub fn new(host: &str, insecure_hosts: &[String]) -> Result<Self, url::ParseError> {
        let host = normalize_host(host);
        let api_host = if host == DEFAULT_DOMAIN {
            DOCKER_HUB_ENDPOINT.to_owned()
        } else {
            host.clone()
        };
        let listed = insecure_hosts.iter().any(|h| {
            normalize_host(h) == host || hostname(h) == hostname(&host) && !h.contains(':')
        });
        let loopback = is_loopback(&api_host);
        let tls_dir = loopback && crate::tls::host_dir(&api_host).is_some();
        let scheme = if loopback && !tls_dir {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{api_host}"))?;
        Ok(Self {
            host,
            base,
            insecure: listed || loopback,
            verify_tls: !listed && (!loopback || tls_dir),
            mirror_of: None,
        })
    }

    /// The endpoint of a mirror of `registry`: `http://host[:port]` or `https://host[:port]`
    /// (a trailing `/` or `/v2/` allowed), or a bare `host[:port]` reached as any registry
    /// host is (http on loopback, https elsewhere). Plain http, loopback and the insecure list
    /// make it insecure.
    pub fn mirror(
        mirror: &str,
        registry: &str,
        insecure_hosts: &[String],
    ) -> Result<Self, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidMirror {
            registry: registry.to_owned(),
            mirror: mirror.to_owned(),
            reason: reason.to_owned(),
        };
        let registry = normalize_host(registry);
        if !mirror.contains("://") {
            if mirror.is_empty() || mirror.contains(['/', '?', '#', '@']) {
                return Err(invalid("expected host[:port] or http(s)://host[:port]"));
            }
            let mut endpoint =
                Self::new(mirror, insecure_hosts).map_err(|e| invalid(&e.to_string()))?;
            // A mirror is reached at its own address, never through docker.io's alias.
            if endpoint.host == DEFAULT_DOMAIN {
                return Err(invalid("docker.io cannot be a mirror"));
            }
            endpoint.mirror_of = Some(registry);
            return Ok(endpoint);
        }
        let url = Url::parse(mirror).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if !matches!(url.path(), "" | "/" | "/v2" | "/v2/") {
            return Err(invalid("a mirror is a host: a path is not supported"));
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(invalid(
                "a mirror is a host: credentials come from docker's config.json",
            ));
        }
        let Some(name) = url.host_str() else {
            return Err(invalid("no host"));
        };
        let host = match url.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.to_owned(),
        }
        .to_ascii_lowercase();
        let listed = insecure_hosts.iter().any(|h| {
            normalize_host(h) == host || hostname(h) == hostname(&host) && !h.contains(':')
        });
        let mut base = url.clone();
        base.set_path("/");
        let loopback = is_loopback(&host);
        Ok(Self {
            insecure: url.scheme() == "http" || listed || loopback,
            verify_tls: url.scheme() == "https"
                && !listed
                && (!loopback || crate::tls::host_dir(&host).is_some()),
            host,
            base,
            mirror_of: Some(registry),
        })
    }

    /// `--tls-verify=false`: https without verification first, then plain http.
    #[must_use]
    pub fn without_tls_verify(self) -> Self {
        let mut base = self.base.clone();
        // Only the scheme changes; https is always a valid scheme for an http(s) URL.
        let _ = base.set_scheme("https");
        Self {
            base,
            insecure: true,
            verify_tls: false,
            ..self
        }
    }

    /// `host[:port]` of the URL the endpoint is reached at: the certs.d directory's name.
    #[must_use]
    pub fn tls_host(&self) -> String {
        let name = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.to_owned(),
        }
    }

    /// The same endpoint over plain http (the insecure fallback).
    #[must_use]
    pub fn plain_http(&self) -> Self {
        let mut base = self.base.clone();
        // Only the scheme changes; http is always a valid scheme for an http(s) URL.
        let _ = base.set_scheme("http");
        Self {
            base,
            ..self.clone()
        }
    }

    /// `<base>/v2/<rest>`, with `ns=<registry>` for a mirror.
    pub fn url(&self, rest: &str) -> Result<Url, url::ParseError> {
        let mut url = self.base.join(&format!("/v2/{rest}"))?;
        if let Some(ns) = &self.mirror_of {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        Ok(url)
    }
}

/// `index.docker.io`, `registry-1.docker.io` and docker's v1 URL all mean `docker.io`; a
/// scheme and path are dropped (docker's `ConvertToHostname`).
#[must_use]
pub fn normalize_host(server: &str) -> String {
    let s = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let s = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match s.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_DOMAIN.to_owned()
        }
        _ => s,
    }
}

/// The key credentials for `host` are stored under in `config.json`.
#[must_use]
pub fn auth_key(host: &str) -> String {
    let host = normalize_host(host);
    if host == DEFAULT_DOMAIN {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        host
    }
}

fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// localhost and 127.0.0.0/8 (and ::1) are insecure by default, as for dockerd.
fn is_loopback(host: &str) -> bool {
    let name = hostname(host);
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_and_loopback() {
        let hub = Endpoint::new("docker.io", &[]).unwrap();
        assert_eq!(hub.base.as_str(), "https://registry-1.docker.io/");
        assert!(!hub.insecure);
        let local = Endpoint::new("localhost:5000", &[]).unwrap();
        assert_eq!(
            local.url("x/manifests/latest").unwrap().as_str(),
            "http://localhost:5000/v2/x/manifests/latest"
        );
        assert!(Endpoint::new("127.0.0.5:80", &[]).unwrap().insecure);
        assert!(
            Endpoint::new("[::1]:5000", &[])
                .unwrap()
                .base
                .as_str()
                .starts_with("http://")
        );
        let other = Endpoint::new("reg.example:5000", &["reg.example:5000".into()]).unwrap();
        assert!(other.insecure);
        assert_eq!(other.base.scheme(), "https");
        assert_eq!(other.plain_http().base.as_str(), "http://reg.example:5000/");
        assert!(
            Endpoint::new("reg.example:443", &["reg.example".into()])
                .unwrap()
                .insecure
        );
        assert!(
            !Endpoint::new("other.example", &["reg.example".into()])
                .unwrap()
                .insecure
        );
    }

    #[test]
    fn mirrors() {
        let m = Endpoint::mirror("http://127.0.0.1:5000", "docker.io", &[]).unwrap();
        assert_eq!(m.host, "127.0.0.1:5000");
        assert!(m.insecure);
        assert_eq!(
            m.url("library/python/manifests/3.7-slim").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/library/python/manifests/3.7-slim?ns=docker.io"
        );
        let m = Endpoint::mirror("https://Mirror.Example/", "index.docker.io", &[]).unwrap();
        assert_eq!(m.host, "mirror.example");
        assert_eq!(m.base.as_str(), "https://mirror.example/");
        assert!(!m.insecure);
        assert_eq!(m.mirror_of.as_deref(), Some("docker.io"));
        let m = Endpoint::mirror("http://mirror.example:8080/v2/", "quay.io", &[]).unwrap();
        assert_eq!(m.host, "mirror.example:8080");
        assert!(m.insecure);
        assert_eq!(
            m.url("").unwrap().as_str(),
            "http://mirror.example:8080/v2/?ns=quay.io"
        );
        let m = Endpoint::mirror(
            "mirror.example:5000",
            "docker.io",
            &["mirror.example".into()],
        )
        .unwrap();
        assert_eq!(m.base.as_str(), "https://mirror.example:5000/");
        assert!(m.insecure);
        assert_eq!(
            Endpoint::mirror("localhost:5000", "docker.io", &[])
                .unwrap()
                .base
                .as_str(),
            "http://localhost:5000/"
        );
        for bad in [
            "ftp://m.example",
            "https://m.example/prefix",
            "https://u:p@m.example",
            "m.example/x",
            "",
            "docker.io",
        ] {
            assert!(
                matches!(
                    Endpoint::mirror(bad, "docker.io", &[]),
                    Err(RegistryError::InvalidMirror { .. })
                ),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn tls_verification() {
        assert!(Endpoint::new("reg.example", &[]).unwrap().verify_tls);
        assert!(
            !Endpoint::new("reg.example", &["reg.example".into()])
                .unwrap()
                .verify_tls
        );
        let off = Endpoint::new("localhost:5000", &[])
            .unwrap()
            .without_tls_verify();
        assert_eq!(off.base.as_str(), "https://localhost:5000/");
        assert!(off.insecure && !off.verify_tls);
        assert_eq!(off.tls_host(), "localhost:5000");
        assert_eq!(
            Endpoint::new("docker.io", &[]).unwrap().tls_host(),
            DOCKER_HUB_ENDPOINT
        );
    }

    #[test]
    fn auth_keys() {
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("https://index.docker.io/v1/"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(normalize_host("Registry.Example"), "registry.example");
    }
}
