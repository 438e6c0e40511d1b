//! Where a registry host is reached: docker.io's alias, http for loopback, https elsewhere,
//! and the user's insecure list (https without verification, falling back to http).

use std::net::IpAddr;

use hoist_oci::DEFAULT_DOMAIN;
use url::Url;

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
    /// Certificates are not verified, and plain http is tried when https fails.
    pub insecure: bool,
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
        let scheme = if is_loopback(&host) { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{api_host}"))?;
        Ok(Self {
            host,
            base,
            insecure: listed || is_loopback(&api_host),
        })
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

    /// `<base>/v2/<rest>`.
    pub fn url(&self, rest: &str) -> Result<Url, url::ParseError> {
        self.base.join(&format!("/v2/{rest}"))
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
    fn auth_keys() {
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("https://index.docker.io/v1/"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("http://localhost:5000/v2/"), "localhost:5000");
        assert_eq!(normalize_host("Registry.Example"), "registry.example");
    }
}
