//! hoist-oci: the vocabulary every other crate speaks — digests, descriptors, media types,
//! docker-style references, platforms, image configs, manifests and indexes. No I/O.

mod digest;

pub use digest::{Digest, DigestError, Sha256Hasher};
