//! hoist's configuration file: registry mirrors and insecure registries, in JSON with the keys
//! of docker's `daemon.json`.
//!
//! # Where it is read from
//!
//! The first of:
//! 1. `$HOIST_CONFIG`, when set and not empty (the file must then exist);
//! 2. `$XDG_CONFIG_HOME/hoist/config.json` (default `~/.config/hoist/config.json`), when it
//!    exists;
//! 3. `/etc/hoist/config.json`, when it exists (the system-wide file: what root uses unless
//!    root has a file of its own).
//!
//! No file is the empty configuration.
//!
//! # Format
//!
//! ```json
//! {
//!   "registry-mirrors": {
//!     "docker.io": ["http://127.0.0.1:5000", "https://mirror.example"],
//!     "quay.io": ["quay-mirror.example:5000"]
//!   },
//!   "insecure-registries": ["registry.internal:5000"]
//! }
//! ```
//!
//! `registry-mirrors` maps a registry (as references name it; `index.docker.io` and friends
//! mean `docker.io`) to mirrors tried in order before it, as containers' `registries.conf` and
//! BuildKit's `buildkitd.toml` allow. docker's own form, a list, is accepted too and means
//! mirrors of `docker.io`. A mirror is `http://host[:port]`, `https://host[:port]` or a bare
//! `host[:port]` (http on loopback, https elsewhere); its credentials are docker's
//! `config.json` entry for its host. `insecure-registries` adds to `HOIST_INSECURE_REGISTRIES`.
//! Other keys are ignored, so a `daemon.json` can be shared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::endpoint::{Endpoint, normalize_host};
use crate::error::RegistryError;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "HOIST_CONFIG";
/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/hoist/config.json";

/// hoist's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoistConfig {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// Registry host (normalised) → its mirrors, in order.
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// Hosts reached without TLS verification (see [`crate::RegistryOptions`]).
    pub insecure_registries: Vec<String>,
}

/// The user's configuration file: `$XDG_CONFIG_HOME/hoist/config.json`, else
/// `~/.config/hoist/config.json`.
#[must_use]
pub fn user_config_path() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("hoist").join("config.json"))
}

impl HoistConfig {
    /// The file hoist reads (see the module docs), and whether it must exist.
    #[must_use]
    pub fn locate() -> Option<(PathBuf, bool)> {
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            return Some((PathBuf::from(p), true));
        }
        user_config_path()
            .filter(|p| p.exists())
            .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()))
            .map(|p| (p, false))
    }

    /// Reads the configuration from where [`HoistConfig::locate`] says.
    pub fn load() -> Result<Self, RegistryError> {
        match Self::locate() {
            Some((path, _)) => Self::load_from(&path),
            None => Ok(Self::default()),
        }
    }

    /// Reads the configuration in `path`.
    pub fn load_from(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Config {
            context: "reading hoist's configuration",
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| RegistryError::HoistConfig {
            path: path.to_owned(),
            message,
        })?;
        config.path = Some(path.to_owned());
        Ok(config)
    }

    /// Parses the configuration text (empty text is the empty configuration), checking every
    /// mirror address.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(doc) = doc else {
            return Err("expected a JSON object".into());
        };
        let strings = |v: &Value, key: &str| -> Result<Vec<String>, String> {
            let list = v
                .as_array()
                .ok_or_else(|| format!("{key} must be a list of strings"))?;
            list.iter()
                .map(|s| {
                    s.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| format!("{key} must be a list of strings"))
                })
                .collect()
        };
        let mut config = Self::default();
        if let Some(v) = doc.get("insecure-registries") {
            config.insecure_registries = strings(v, "\"insecure-registries\"")?;
        }
        match doc.get("registry-mirrors") {
            None | Some(Value::Null) => {}
            // docker's daemon.json: mirrors of Docker Hub.
            Some(v @ Value::Array(_)) => {
                let list = strings(v, "\"registry-mirrors\"")?;
                config
                    .registry_mirrors
                    .insert(hoist_oci::DEFAULT_DOMAIN.to_owned(), list);
            }
            Some(Value::Object(map)) => {
                for (registry, v) in map {
                    let key = format!("\"registry-mirrors\".{registry:?}");
                    let list = strings(v, &key)?;
                    config
                        .registry_mirrors
                        .entry(normalize_host(registry))
                        .or_default()
                        .extend(list);
                }
            }
            Some(_) => {
                return Err("\"registry-mirrors\" must map a registry to a list of mirrors".into());
            }
        }
        for (registry, mirrors) in &config.registry_mirrors {
            for m in mirrors {
                Endpoint::mirror(m, registry, &config.insecure_registries)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_mirror_forms() {
        let c = HoistConfig::parse(
            r#"{"registry-mirrors": {"index.docker.io": ["http://127.0.0.1:5000"],
                "quay.io": ["q.example:5000"]},
                "insecure-registries": ["q.example:5000"], "debug": true}"#,
        )
        .unwrap();
        assert_eq!(
            c.registry_mirrors["docker.io"],
            vec!["http://127.0.0.1:5000".to_owned()]
        );
        assert_eq!(
            c.registry_mirrors["quay.io"],
            vec!["q.example:5000".to_owned()]
        );
        assert_eq!(c.insecure_registries, vec!["q.example:5000".to_owned()]);
        let docker = HoistConfig::parse(r#"{"registry-mirrors": ["https://m.example"]}"#).unwrap();
        assert_eq!(
            docker.registry_mirrors["docker.io"],
            vec!["https://m.example".to_owned()]
        );
        assert_eq!(HoistConfig::parse(" \n").unwrap(), HoistConfig::default());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for (text, wanted) in [
            ("[1]", "expected a JSON object"),
            ("{", "invalid JSON"),
            (
                r#"{"registry-mirrors": "x"}"#,
                "must map a registry to a list",
            ),
            (
                r#"{"registry-mirrors": {"docker.io": [1]}}"#,
                "list of strings",
            ),
            (r#"{"insecure-registries": "x"}"#, "list of strings"),
            (
                r#"{"registry-mirrors": {"docker.io": ["https://m.example/path"]}}"#,
                "invalid mirror \"https://m.example/path\" for docker.io",
            ),
        ] {
            let e = HoistConfig::parse(text).unwrap_err();
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, r#"{"registry-mirrors": {"docker.io": "x"}}"#).unwrap();
        let e = HoistConfig::load_from(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        std::fs::write(&p, r#"{"registry-mirrors": {"docker.io": ["m.example"]}}"#).unwrap();
        assert_eq!(HoistConfig::load_from(&p).unwrap().path, Some(p.clone()));
        let missing = HoistConfig::load_from(&dir.path().join("nope.json")).unwrap_err();
        assert!(matches!(missing, RegistryError::Config { .. }));
    }
}
