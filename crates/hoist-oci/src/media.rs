//! Media types of the Docker v2 schema 2 and OCI formats.

/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign gzip layer.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker's uncompressed layer type (rare, but `docker save` manifests use it).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a layer blob is compressed, judged by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerEncoding {
    /// A plain tar.
    Tar,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The encoding a layer media type announces, or `None` if it is not a layer type we know.
#[must_use]
pub fn layer_encoding(media_type: &str) -> Option<LayerEncoding> {
    match media_type {
        DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP | OCI_LAYER_GZIP => Some(LayerEncoding::Gzip),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Some(LayerEncoding::Gzip),
        OCI_LAYER_ZSTD => Some(LayerEncoding::Zstd),
        DOCKER_LAYER_TAR | OCI_LAYER_TAR => Some(LayerEncoding::Tar),
        "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(LayerEncoding::Tar),
        _ => None,
    }
}

/// Whether the media type names a single-image manifest (either format).
#[must_use]
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, DOCKER_MANIFEST | OCI_MANIFEST)
}

/// Whether the media type names an index / manifest list (either format).
#[must_use]
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, DOCKER_MANIFEST_LIST | OCI_INDEX)
}
