//! Docker-style image references: `app` means `docker.io/library/app:latest` and is shown as
//! `app`; `localhost:5000/x/y:tag`; `name@sha256:…`. Validation and messages follow docker's
//! `distribution/reference` so users see the errors they already know.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The registry a name without a domain belongs to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const NAME_TOTAL_MAX: usize = 255;

/// A fully normalised reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a reference; the texts are docker's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    Format,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("repository name must not be more than {NAME_TOTAL_MAX} characters")]
    NameTooLong,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("invalid reference format: {0}")]
    Digest(#[from] crate::DigestError),
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `alpha-numeric [separator alpha-numeric]*` with separator `[_.]|__|[-]+`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6]:port
        let Some(end) = rest.find(']') else {
            return false;
        };
        let (v6, after) = (&rest[..end], &rest[end + 1..]);
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => return !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
            None => return after.is_empty(),
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    host.split('.').all(valid_domain_component)
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parses like docker's `ParseNormalizedNamed`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ReferenceError::HexName(s.to_owned()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let name_part = remainder.split(['@']).next().unwrap_or_default();
        let name_only = match name_part.rfind(':') {
            Some(i) if !name_part[i..].contains('/') => &name_part[..i],
            _ => name_part,
        };
        if name_only.to_ascii_lowercase() != name_only {
            return Err(ReferenceError::Uppercase(name_only.to_owned()));
        }
        Self::parse_canonical_parts(&domain, &remainder)
    }

    fn parse_canonical_parts(domain: &str, remainder: &str) -> Result<Self, ReferenceError> {
        let (rest, digest) = match remainder.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| ReferenceError::Format)?),
            ),
            None => (remainder, None),
        };
        let (path, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::Format);
        }
        if path.is_empty() {
            return Err(ReferenceError::NameEmpty);
        }
        if !valid_domain(domain) || !path.split('/').all(valid_path_component) {
            return Err(ReferenceError::Format);
        }
        if domain.len() + 1 + path.len() > NAME_TOTAL_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        Ok(Self {
            domain: domain.to_owned(),
            path: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry host, e.g. `docker.io` or `localhost:5000`.
    #[must_use]
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if one was given.
    #[must_use]
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if one was given.
    #[must_use]
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Adds `latest` when neither tag nor digest was given (docker's `TagNameOnly`).
    #[must_use]
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }

    /// This repository with another tag and no digest.
    #[must_use]
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.into()),
            digest: None,
        }
    }

    /// This repository with a digest and no tag.
    #[must_use]
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// `docker.io/library/busybox`.
    #[must_use]
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as docker shows it: `busybox`, `user/app`, `localhost:5000/x`.
    #[must_use]
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.repository()
        }
    }

    /// The whole reference as docker shows it: `busybox:latest`.
    #[must_use]
    pub fn familiar(&self) -> String {
        self.render(&self.familiar_repository())
    }

    fn render(&self, repo: &str) -> String {
        let mut s = repo.to_owned();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

/// docker's `splitDockerDomain`: the first component is a domain only if it has `.` or `:`, is
/// `localhost`, or has upper-case letters.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i)
            if name[..i].contains(['.', ':'])
                || &name[..i] == "localhost"
                || name[..i].to_ascii_lowercase() != name[..i] =>
        {
            (name[..i].to_owned(), name[i + 1..].to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_PREFIX}{remainder}");
    }
    (domain, remainder)
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Reference {
    /// The canonical form, `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&self.repository()))
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("app", "docker.io/library/app", "app"),
            ("app:1.0", "docker.io/library/app:1.0", "app:1.0"),
            ("user/app", "docker.io/user/app", "user/app"),
            (
                "docker.io/library/app:x",
                "docker.io/library/app:x",
                "app:x",
            ),
            ("index.docker.io/app", "docker.io/library/app", "app"),
            ("localhost/app", "localhost/app", "localhost/app"),
            (
                "localhost:5000/x/y:tag",
                "localhost:5000/x/y:tag",
                "localhost:5000/x/y:tag",
            ),
            (
                "127.0.0.1:5000/a_b/c-d__e.f",
                "127.0.0.1:5000/a_b/c-d__e.f",
                "127.0.0.1:5000/a_b/c-d__e.f",
            ),
            ("[::1]:5000/x", "[::1]:5000/x", "[::1]:5000/x"),
        ];
        for (input, canonical, familiar) in cases {
            let r = p(input).unwrap();
            assert_eq!(r.to_string(), canonical, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
        }
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.digest().unwrap().as_str(), d);
        assert_eq!(r.tag(), None);
        assert_eq!(
            p("busybox").unwrap().with_default_tag().familiar(),
            "busybox:latest"
        );
    }

    #[test]
    fn rejects_like_docker() {
        assert_eq!(
            p("Foo").unwrap_err().to_string(),
            "invalid reference format: repository name (library/Foo) must be lowercase"
        );
        for bad in [
            "",
            ":tag",
            "a:",
            "a::b",
            "-a",
            "a-",
            "a/",
            "a//b",
            "a@sha256:xyz",
            "a:b:c",
            "a..b",
            "a:-x",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(
            p(&"a".repeat(300)),
            Err(ReferenceError::NameTooLong)
        ));
        assert!(matches!(
            p("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            Err(ReferenceError::HexName(_))
        ));
        assert!(p(&format!("a:{}", "t".repeat(128))).is_ok());
        assert!(p(&format!("a:{}", "t".repeat(129))).is_err());
    }
}
