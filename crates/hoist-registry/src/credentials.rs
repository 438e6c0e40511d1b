//! docker's credentials, read and written as docker does so each tool reads the other's:
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`, mode 0600, every other key
//! kept), `auths` keyed by host (Docker Hub's key is `https://index.docker.io/v1/`), the
//! `credsStore` / `credHelpers` helpers (`docker-credential-<name> store|get|erase`), and
//! `DOCKER_AUTH_CONFIG`, an in-memory `{"auths":{…}}` consulted first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::Secret;
use crate::endpoint::{auth_key, normalize_host};
use crate::error::RegistryError;

/// What `docker-credential-*` helpers use as the user name of an identity token.
const TOKEN_USERNAME: &str = "<token>";

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal access token).
    Basic { username: String, password: Secret },
    /// An identity (OAuth2 refresh) token, exchanged for access tokens.
    IdentityToken { username: String, token: Secret },
}

impl Credentials {
    /// The user name (may be empty for an identity token).
    #[must_use]
    pub fn username(&self) -> &str {
        match self {
            Self::Basic { username, .. } | Self::IdentityToken { username, .. } => username,
        }
    }
}

/// Where a client finds its credentials.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    /// docker's configuration (see the module docs).
    #[default]
    DockerConfig,
    /// None: pull anonymously.
    Anonymous,
    /// These.
    Fixed(Credentials),
}

impl CredentialSource {
    /// The credentials for `host`.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>, RegistryError> {
        match self {
            Self::DockerConfig => DockerConfig::load()?.get(host),
            Self::Anonymous => Ok(None),
            Self::Fixed(c) => Ok(Some(c.clone())),
        }
    }
}

/// Where credentials were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    /// base64 in `config.json` (docker warns that this is unencrypted).
    File(PathBuf),
    /// A `docker-credential-<name>` helper.
    Helper(String),
}

/// docker's `config.json`, all of it: keys this module does not know are written back as read.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    #[must_use]
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("config.json");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".docker/config.json")
    }

    /// Reads the default file (a missing file is an empty configuration).
    pub fn load() -> Result<Self, RegistryError> {
        Self::load_from(&Self::default_path())
    }

    /// Reads `path` (a missing file is an empty configuration).
    pub fn load_from(path: &Path) -> Result<Self, RegistryError> {
        let doc = match std::fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::ConfigJson {
                    path: path.to_owned(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(RegistryError::Config {
                    context: "reading",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            doc,
        })
    }

    /// The file this configuration is read from and written to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper that holds `host`'s credentials: `credHelpers[host]`, else `credsStore`.
    #[must_use]
    pub fn helper_for(&self, host: &str) -> Option<String> {
        let key = auth_key(host);
        let host = normalize_host(host);
        if let Some(Value::Object(helpers)) = self.doc.get("credHelpers") {
            for (k, v) in helpers {
                if (k == &key || normalize_host(k) == host)
                    && let Some(name) = v.as_str().filter(|s| !s.is_empty())
                {
                    return Some(name.to_owned());
                }
            }
        }
        self.doc
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// The credentials for `host`: `DOCKER_AUTH_CONFIG`, then the helper, then `auths`.
    pub fn get(&self, host: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(env) = std::env::var_os("DOCKER_AUTH_CONFIG").filter(|v| !v.is_empty()) {
            let env = env.to_string_lossy();
            let doc: Map<String, Value> =
                serde_json::from_str(&env).map_err(|source| RegistryError::ConfigJson {
                    path: PathBuf::from("$DOCKER_AUTH_CONFIG"),
                    source,
                })?;
            if let Some(found) = find_entry(&doc, host).and_then(decode_entry) {
                return Ok(Some(found));
            }
        }
        if let Some(helper) = self.helper_for(host) {
            return helper_get(&helper, &auth_key(host));
        }
        Ok(find_entry(&self.doc, host).and_then(decode_entry))
    }

    /// Stores credentials for `host` in its helper or in the file, and saves the file.
    pub fn store(
        &mut self,
        host: &str,
        credentials: &Credentials,
    ) -> Result<StoredIn, RegistryError> {
        let key = auth_key(host);
        if let Some(helper) = self.helper_for(host) {
            let (username, secret) = match credentials {
                Credentials::Basic { username, password } => (username.as_str(), password),
                Credentials::IdentityToken { token, .. } => (TOKEN_USERNAME, token),
            };
            let input = serde_json::json!({
                "ServerURL": key,
                "Username": username,
                "Secret": secret.expose(),
            });
            run_helper(&helper, "store", input.to_string().as_bytes())?;
            // docker keeps an empty entry in the file so `logout` knows the host.
            let auths = self.auths_mut();
            auths.insert(key, Value::Object(Map::new()));
            self.save()?;
            return Ok(StoredIn::Helper(helper));
        }
        let entry = match credentials {
            Credentials::Basic { username, password } => serde_json::json!({
                "auth": encode_auth(username, password.expose()),
            }),
            Credentials::IdentityToken { username, token } => serde_json::json!({
                "auth": encode_auth(username, ""),
                "identitytoken": token.expose(),
            }),
        };
        self.auths_mut().insert(key, entry);
        self.save()?;
        Ok(StoredIn::File(self.path.clone()))
    }

    /// Removes `host`'s credentials from the file and its helper, as `docker logout` does.
    /// Returns false when the file had no entry for it (docker: "Not logged in to …").
    pub fn erase(&mut self, host: &str) -> Result<bool, RegistryError> {
        let key = auth_key(host);
        let hostname = normalize_host(host);
        let candidates = [
            key.clone(),
            hostname.clone(),
            format!("http://{hostname}"),
            format!("https://{hostname}"),
        ];
        let present: Vec<String> = match self.doc.get("auths") {
            Some(Value::Object(auths)) => candidates
                .iter()
                .filter(|c| auths.contains_key(c.as_str()))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if present.is_empty() {
            return Ok(false);
        }
        if let Some(helper) = self.helper_for(host) {
            for k in &present {
                match run_helper(&helper, "erase", k.as_bytes()) {
                    Ok(_) => {}
                    Err(RegistryError::Helper { message, .. }) if is_not_found(&message) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let auths = self.auths_mut();
        for k in &present {
            auths.remove(k);
        }
        self.save()?;
        Ok(true)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        auths_of(auths)
    }

    /// Writes the file atomically with mode 0600, tab-indented like docker's.
    pub fn save(&self) -> Result<(), RegistryError> {
        let target = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let dir = target
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let err = |context, source| RegistryError::Config {
            context,
            path: target.clone(),
            source,
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| err("creating the directory of", e))?;
        }
        let mut bytes = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        serde::Serialize::serialize(&self.doc, &mut ser)
            .map_err(|e| err("serialising", std::io::Error::other(e)))?;
        // tempfile creates the file with mode 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix("config.json")
            .tempfile_in(&dir)
            .map_err(|e| err("creating a temporary file beside", e))?;
        tmp.write_all(&bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| err("writing", e))?;
        tmp.persist(&target)
            .map_err(|e| err("replacing", e.error))?;
        Ok(())
    }
}

use std::os::unix::fs::DirBuilderExt as _;

fn auths_of(v: &mut Value) -> &mut Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            *other = Value::Object(Map::new());
            match other {
                Value::Object(m) => m,
                _ => unreachable!("just set to an object"),
            }
        }
    }
}

fn find_entry<'a>(doc: &'a Map<String, Value>, host: &str) -> Option<&'a Map<String, Value>> {
    let Some(Value::Object(auths)) = doc.get("auths") else {
        return None;
    };
    let key = auth_key(host);
    if let Some(Value::Object(e)) = auths.get(&key) {
        return Some(e);
    }
    let host = normalize_host(host);
    auths.iter().find_map(|(k, v)| match v {
        Value::Object(e) if normalize_host(k) == host => Some(e),
        _ => None,
    })
}

fn decode_entry(entry: &Map<String, Value>) -> Option<Credentials> {
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
    let (mut username, mut password) = (text("username").to_owned(), text("password").to_owned());
    if !text("auth").is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text("auth").trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (u, p) = raw.split_once(':')?;
        username = u.to_owned();
        password = p.to_owned();
    }
    let identity = text("identitytoken");
    if !identity.is_empty() {
        return Some(Credentials::IdentityToken {
            username,
            token: Secret::new(identity),
        });
    }
    if username.is_empty() && password.is_empty() {
        return None;
    }
    Some(Credentials::Basic {
        username,
        password: Secret::new(password),
    })
}

fn encode_auth(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

fn is_not_found(message: &str) -> bool {
    message.contains("credentials not found")
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, RegistryError> {
    let out = match run_helper(helper, "get", server.as_bytes()) {
        Ok(out) => out,
        Err(RegistryError::Helper { message, .. }) if is_not_found(&message) => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let reply: Reply = serde_json::from_slice(&out).map_err(|e| RegistryError::Helper {
        helper: helper.to_owned(),
        action: "get",
        message: format!("invalid reply: {e}"),
    })?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if reply.username == TOKEN_USERNAME {
        Credentials::IdentityToken {
            username: String::new(),
            token: Secret::new(reply.secret),
        }
    } else {
        Credentials::Basic {
            username: reply.username,
            password: Secret::new(reply.secret),
        }
    }))
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin; returns stdout. The
/// helper's own output is its message on failure (helpers print errors on stdout).
fn run_helper(helper: &str, action: &'static str, input: &[u8]) -> Result<Vec<u8>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let fail = |message: String| RegistryError::Helper {
        helper: helper.to_owned(),
        action,
        message,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    if !out.status.success() {
        let mut message = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if message.is_empty() {
            message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        }
        if message.is_empty() {
            message = out.status.to_string();
        }
        return Err(fail(message));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_roundtrip_keeps_other_keys_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"psFormat":"table {{.ID}}","auths":{"other:1":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        let mut cfg = DockerConfig::load_from(&path).unwrap();
        let creds = Credentials::Basic {
            username: "user".into(),
            password: Secret::new("pa:ss"),
        };
        assert_eq!(
            cfg.store("docker.io", &creds).unwrap(),
            StoredIn::File(path.clone())
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["psFormat"], "table {{.ID}}");
        assert_eq!(
            v["auths"]["https://index.docker.io/v1/"]["auth"],
            "dXNlcjpwYTpzcw=="
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = DockerConfig::load_from(&path).unwrap();
        assert_eq!(again.get("index.docker.io").unwrap(), Some(creds));
        assert_eq!(
            again.get("other:1").unwrap(),
            Some(Credentials::Basic {
                username: "x".into(),
                password: Secret::new("y")
            })
        );
        let mut again = again;
        assert!(again.erase("docker.io").unwrap());
        assert!(!again.erase("docker.io").unwrap());
        assert_eq!(
            DockerConfig::load_from(&path)
                .unwrap()
                .get("docker.io")
                .unwrap(),
            None
        );
    }

    #[test]
    fn identity_tokens() {
        let mut doc = Map::new();
        doc.insert(
            "auths".into(),
            serde_json::json!({"r.example": {"auth": "dXNlcjo=", "identitytoken": "tok"}}),
        );
        let e = find_entry(&doc, "r.example").unwrap();
        assert_eq!(
            decode_entry(e),
            Some(Credentials::IdentityToken {
                username: "user".into(),
                token: Secret::new("tok")
            })
        );
    }
}
