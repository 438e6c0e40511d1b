//! The distribution token protocol: `WWW-Authenticate` challenges, token requests (OAuth2
//! POST with a GET fallback, refresh/identity tokens) and the per-scope-set token cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use crate::error::RegistryError;
use crate::{Credentials, Secret};

/// The client id sent with OAuth2 token requests.
const CLIENT_ID: &str = "hoist";

/// What a registry asks for in a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=…`: send the credentials with every request.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: get a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        /// Scopes the registry says the request needs.
        scopes: Vec<String>,
    },
}

/// Parses a `WWW-Authenticate` value; a Bearer challenge wins over Basic when both are offered.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    let mut basic = false;
    for c in &challenges {
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            let realm = param("realm")?;
            let scopes = param("scope")
                .map(|s| {
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            return Some(Challenge::Bearer {
                realm,
                service: param("service"),
                scopes,
            });
        }
        basic |= c.scheme.eq_ignore_ascii_case("basic");
    }
    basic.then_some(Challenge::Basic)
}

/// `repository:<path>:<actions>`.
#[must_use]
pub(crate) fn repository_scope(path: &str, actions: &str) -> String {
    format!("repository:{path}:{actions}")
}

/// Scopes merged: the same resource's actions are united (`pull` + `push` → `pull,push`).
pub(crate) fn merge_scopes(scopes: &[String], more: &[String]) -> Vec<String> {
    let mut by_resource: Vec<(String, Vec<String>)> = Vec::new();
    for s in scopes.iter().chain(more) {
        let (resource, actions) = s.rsplit_once(':').unwrap_or((s.as_str(), ""));
        let entry = match by_resource.iter_mut().find(|(r, _)| r == resource) {
            Some(e) => e,
            None => {
                by_resource.push((resource.to_owned(), Vec::new()));
                by_resource.last_mut().expect("just pushed")
            }
        };
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            if !entry.1.iter().any(|x| x == a) {
                entry.1.push(a.to_owned());
            }
        }
    }
    let mut out: Vec<String> = by_resource
        .into_iter()
        .map(|(r, mut a)| {
            a.sort();
            format!("{r}:{}", a.join(","))
        })
        .collect();
    out.sort();
    out
}

/// Tokens by the scope set they were issued for.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<String, (Secret, Instant)>,
}

impl TokenCache {
    fn key(scopes: &[String]) -> String {
        let mut s = scopes.to_vec();
        s.sort();
        s.join(" ")
    }

    pub(crate) fn get(&self, scopes: &[String]) -> Option<Secret> {
        let (token, expires) = self.tokens.get(&Self::key(scopes))?;
        (Instant::now() < *expires).then(|| token.clone())
    }

    pub(crate) fn put(&mut self, scopes: &[String], token: Secret, lifetime: Duration) {
        // Renew a little early so a token does not expire in flight.
        let margin = Duration::from_secs(10).min(lifetime / 4);
        self.tokens.insert(
            Self::key(scopes),
            (token, Instant::now() + lifetime - margin),
        );
    }

    pub(crate) fn forget(&mut self, scopes: &[String]) {
        self.tokens.remove(&Self::key(scopes));
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// A token from the token service.
pub(crate) struct Token {
    pub(crate) token: Secret,
    pub(crate) lifetime: Duration,
    /// A refresh token (docker stores it as the `identitytoken`).
    pub(crate) refresh: Option<Secret>,
}

/// `Authorization: Basic …` for a user and password.
pub(crate) fn basic_header(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Asks the token service for a token covering `scopes`, as containerd does: with credentials,
/// an OAuth2 POST (`password` or `refresh_token` grant); when that endpoint is missing (404,
/// 405, 400, 401 from registries without OAuth2), a GET with Basic credentials; anonymous
/// clients GET without credentials. `offline` asks for a refresh token (login).
pub(crate) fn fetch_token(
    agent: &ureq::Agent,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    credentials: Option<&Credentials>,
    offline: bool,
) -> Result<Token, RegistryError> {
    let realm_url = Url::parse(realm).map_err(|source| RegistryError::Url {
        url: realm.to_owned(),
        source,
    })?;
    if let Some(credentials) = credentials {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        match credentials {
            Credentials::Basic { username, password } => {
                form.append_pair("grant_type", "password")
                    .append_pair("username", username)
                    .append_pair("password", password.expose());
            }
            Credentials::IdentityToken { token, .. } => {
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token.expose());
            }
        }
        if let Some(s) = service {
            form.append_pair("service", s);
        }
        form.append_pair("client_id", CLIENT_ID);
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
        if offline {
            form.append_pair("access_type", "offline");
        }
        let body = form.finish();
        let response = agent
            .post(realm_url.as_str())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body.as_bytes());
        match response {
            Ok(resp) if resp.status().is_success() => return parse_token(resp, registry, realm),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let fallback = matches!(status, 400 | 401 | 404 | 405)
                    && matches!(credentials, Credentials::Basic { .. });
                if !fallback {
                    return Err(RegistryError::Unauthorized {
                        registry: registry.to_owned(),
                        detail: crate::client::describe_response(resp),
                    });
                }
            }
            Err(source) => {
                return Err(RegistryError::Transport {
                    method: "POST",
                    url: realm.to_owned(),
                    source: Box::new(source),
                });
            }
        }
    }
    let mut url = realm_url;
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        for s in scopes {
            q.append_pair("scope", s);
        }
        if offline {
            q.append_pair("offline_token", "true");
            q.append_pair("client_id", CLIENT_ID);
        }
    }
    let mut request = agent.get(url.as_str());
    if let Some(Credentials::Basic { username, password }) = credentials {
        request = request.header("Authorization", basic_header(username, password.expose()));
    }
    let resp = request.call().map_err(|source| RegistryError::Transport {
        method: "GET",
        url: realm.to_owned(),
        source: Box::new(source),
    })?;
    if !resp.status().is_success() {
        return Err(RegistryError::Unauthorized {
            registry: registry.to_owned(),
            detail: crate::client::describe_response(resp),
        });
    }
    parse_token(resp, registry, realm)
}

fn parse_token(
    mut resp: ureq::http::Response<ureq::Body>,
    registry: &str,
    realm: &str,
) -> Result<Token, RegistryError> {
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(|source| RegistryError::Transport {
            method: "GET",
            url: realm.to_owned(),
            source: Box::new(source),
        })?;
    let parsed: TokenResponse =
        serde_json::from_slice(&bytes).map_err(|source| RegistryError::InvalidJson {
            what: "token response".into(),
            registry: registry.to_owned(),
            source,
        })?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::Protocol {
            registry: registry.to_owned(),
            message: "the token service answered without a token".into(),
        })?;
    // The spec's default is 60 s, and shorter lifetimes are raised to it.
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).max(60));
    Ok(Token {
        token: Secret::new(token),
        lifetime,
        refresh: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scopes: vec!["repository:samalba/my-app:pull,push".into()],
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x", Bearer realm="http://t/token""#),
            Some(Challenge::Bearer {
                realm: "http://t/token".into(),
                service: None,
                scopes: vec![]
            })
        );
        assert_eq!(parse_challenge("garbage ,,, ="), None);
    }

    #[test]
    fn scopes_merge() {
        let a = vec![repository_scope("a/b", "pull")];
        let b = vec![
            repository_scope("a/b", "push"),
            repository_scope("c", "pull"),
        ];
        assert_eq!(
            merge_scopes(&a, &b),
            vec![
                "repository:a/b:pull,push".to_owned(),
                "repository:c:pull".to_owned()
            ]
        );
    }

    #[test]
    fn cache_is_per_scope_set() {
        let mut cache = TokenCache::default();
        let s1 = vec!["repository:a:pull".to_owned()];
        let s2 = vec![
            "repository:a:pull".to_owned(),
            "repository:b:pull".to_owned(),
        ];
        cache.put(&s1, Secret::new("t1"), Duration::from_secs(60));
        assert_eq!(cache.get(&s1).unwrap().expose(), "t1");
        assert!(cache.get(&s2).is_none());
        cache.forget(&s1);
        assert!(cache.get(&s1).is_none());
    }
}
