//! Content digests (`sha256:<hex>`), the identity of everything in a store or registry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated `algorithm:encoded` digest. Only `sha256` goes into images and registries (and
/// `blake3`, into the build cache's own records); other algorithms are carried through when they
/// fit the OCI grammar so foreign manifests still round-trip.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    repr: String,
    colon: usize,
}

/// The 32-byte hashes a [`Digest`] is made from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// What images and registries are addressed by.
    Sha256,
    /// What the build cache keys files' contents by: about three times sha256's speed here.
    Blake3,
}

impl Algorithm {
    /// The name before the colon.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected algorithm:hex")]
    Format(String),
    #[error("invalid checksum digest length in {0:?}")]
    Length(String),
    #[error("invalid checksum digest format in {0:?}")]
    Hex(String),
}

impl Digest {
    /// The sha256 digest of `bytes`.
    #[must_use]
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// Wraps a raw sha256 hash.
    #[must_use]
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self::from_raw(Algorithm::Sha256, hash)
    }

    /// Wraps a raw 32-byte hash made by `algorithm`.
    #[must_use]
    pub fn from_raw(algorithm: Algorithm, hash: [u8; 32]) -> Self {
        // A table, not `hex::encode`: that one's character iterator showed in profiles of
        // builds that hash tens of thousands of files.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let name = algorithm.name();
        let mut repr = String::with_capacity(name.len() + 65);
        repr.push_str(name);
        repr.push(':');
        for b in hash {
            repr.push(char::from(HEX[usize::from(b >> 4)]));
            repr.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Self {
            repr,
            colon: name.len(),
        }
    }

    /// The algorithm part, e.g. `sha256`.
    #[must_use]
    pub fn algorithm(&self) -> &str {
        &self.repr[..self.colon]
    }

    /// The encoded part (lower-case hex for sha256).
    #[must_use]
    pub fn hex(&self) -> &str {
        &self.repr[self.colon + 1..]
    }

    /// The raw hash of a sha256 digest (`None` for another algorithm).
    #[must_use]
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        self.raw(Algorithm::Sha256)
    }

    /// The raw hash, if this digest was made by `algorithm`.
    #[must_use]
    pub fn raw(&self, algorithm: Algorithm) -> Option<[u8; 32]> {
        if self.algorithm() != algorithm.name() {
            return None;
        }
        // By hand, not `hex::decode_to_slice`: a rebuild decodes one per context file.
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let hex: &[u8; 64] = self.hex().as_bytes().try_into().ok()?;
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(out)
    }

    /// The whole `algorithm:encoded` string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.repr
    }

    /// The first 12 hex characters, as docker shows image ids.
    #[must_use]
    pub fn short(&self) -> &str {
        let hex = self.hex();
        &hex[..hex.len().min(12)]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(colon) = s.find(':') else {
            return Err(DigestError::Format(s.to_owned()));
        };
        let (alg, enc) = (&s[..colon], &s[colon + 1..]);
        // OCI grammar: algorithm-component ([a-z0-9]+) joined by [+._-]; encoded [a-zA-Z0-9=_-]+.
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !alg_ok || !enc_ok {
            return Err(DigestError::Format(s.to_owned()));
        }
        let want = match alg {
            "sha256" | "blake3" => Some(64),
            "sha384" => Some(96),
            "sha512" => Some(128),
            _ => None,
        };
        if let Some(want) = want {
            if enc.len() != want {
                return Err(DigestError::Length(s.to_owned()));
            }
            if !enc
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(DigestError::Hex(s.to_owned()));
            }
        }
        Ok(Self {
            repr: s.to_owned(),
            colon,
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.repr)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.repr)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A sha256 hasher that yields a [`Digest`]; used wherever bytes stream past.
#[derive(Default, Clone)]
pub struct Sha256Hasher {
    inner: Sha256,
    len: u64,
}

impl Sha256Hasher {
    /// A fresh hasher.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes fed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    #[must_use]
    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.inner.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_sha256_round_trips() {
        let d = Digest::sha256_of(b"hoist");
        assert_eq!(d.sha256_bytes().map(Digest::from_sha256), Some(d));
    }

    #[test]
    fn raw_hashes_keep_their_algorithm() {
        let d = Digest::from_raw(Algorithm::Blake3, [0xab; 32]);
        assert_eq!(d.algorithm(), "blake3");
        assert_eq!(d.hex(), "ab".repeat(32));
        assert_eq!(d.raw(Algorithm::Blake3), Some([0xab; 32]));
        assert_eq!(d.sha256_bytes(), None);
        assert_eq!(d.as_str().parse::<Digest>(), Ok(d.clone()));
        assert!("blake3:abcd".parse::<Digest>().is_err());
    }

    #[test]
    fn empty_sha256() {
        assert_eq!(
            Digest::sha256_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rules() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564"
                .parse::<Digest>()
                .is_ok()
        );
        assert!("nocolon".parse::<Digest>().is_err());
        assert!(":abc".parse::<Digest>().is_err());
    }
}
