//! hoist-oci: the vocabulary every other crate speaks — digests, descriptors, media types,
//! docker-style references, platforms, image configs, manifests and indexes. No I/O.

mod digest;
mod image;
pub mod media;
mod platform;
mod reference;

pub use digest::{Algorithm, Digest, DigestError, Sha256Hasher};
pub use image::{
    ContainerConfig, Descriptor, EmptyObject, HealthConfig, History, ImageConfig, Index, Manifest,
    RootFs,
};
pub use platform::{Platform, PlatformError};
pub use reference::{DEFAULT_DOMAIN, Reference, ReferenceError};
