//! Platforms (`os/arch[/variant]`) with containerd's normalisation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform as it appears in an index descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in GOARCH spelling, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (Windows).
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
}

/// A platform string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformError(String);

impl Platform {
    /// The platform this process runs on.
    #[must_use]
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let variant = (arch == "arm").then(|| "v7".to_owned());
        Self {
            os: "linux".into(),
            architecture: arch.into(),
            variant,
            os_version: None,
            os_features: None,
        }
    }

    /// containerd's normalisation: `x86_64`→`amd64`, `aarch64`→`arm64` (v8 dropped),
    /// `armhf`→`arm/v7`, `armel`→`arm/v6`, bare `arm`→`arm/v7`, `i386`→`386`.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let os = self.os.to_ascii_lowercase();
        let mut variant = self.variant.clone().filter(|v| !v.is_empty());
        let arch = match self.architecture.to_ascii_lowercase().as_str() {
            "i386" => "386".to_owned(),
            "x86_64" | "x86-64" | "amd64" => {
                if variant.as_deref() == Some("v1") {
                    variant = None;
                }
                "amd64".to_owned()
            }
            "aarch64" | "arm64" => {
                if matches!(variant.as_deref(), Some("8" | "v8")) {
                    variant = None;
                }
                "arm64".to_owned()
            }
            "armhf" => {
                variant = Some("v7".into());
                "arm".to_owned()
            }
            "armel" => {
                variant = Some("v6".into());
                "arm".to_owned()
            }
            "arm" => {
                variant = Some(match variant.as_deref() {
                    None | Some("7" | "v7") => "v7".to_owned(),
                    Some("5" | "6" | "8") => format!("v{}", variant.unwrap_or_default()),
                    Some(v) => v.to_owned(),
                });
                "arm".to_owned()
            }
            other => other.to_owned(),
        };
        Self {
            os,
            architecture: arch,
            variant,
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }

    /// Whether an image for `self` fits a request for `want` (both normalised first).
    #[must_use]
    pub fn matches(&self, want: &Platform) -> bool {
        let (a, b) = (self.normalized(), want.normalized());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || PlatformError(s.to_owned());
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some((*variant).to_owned())),
            [arch] if !arch.is_empty() && *arch != "linux" => ("linux", *arch, None),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() || variant.as_deref() == Some("") {
            return Err(bad());
        }
        Ok(Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant,
            os_version: None,
            os_features: None,
        }
        .normalized())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        let p: Platform = "linux/aarch64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        let p: Platform = "linux/arm".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        let p: Platform = "linux/armhf".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux/".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }
}
