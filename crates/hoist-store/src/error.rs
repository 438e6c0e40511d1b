use std::path::PathBuf;

use hoist_oci::Digest;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("layer {0} is not in the store")]
    MissingLayer(Digest),
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Layer(#[from] hoist_layer::LayerError),
    #[error("{0}")]
    Archive(String),
    #[error("store at {path} has format {found}, this hoist understands {expected}")]
    Version {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
}

pub(crate) trait IoContext<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            context,
            path: path.into(),
            source,
        })
    }
}
