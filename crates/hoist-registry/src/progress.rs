//! What pulls and pushes report while they run. The library never prints: the binary renders
//! these as docker's lines (or bars), the build engine as its own progress.

use crate::BlobPush;

/// One step of a pull or push. `id` is the short id docker shows for a layer: the blob digest
/// when pulling, the diff id when pushing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `latest: Pulling from library/busybox`.
    Pulling {
        tag_or_digest: String,
        repository: String,
    },
    /// The store already holds this layer.
    LayerExists { id: String },
    /// The layer's download is queued.
    LayerQueued { id: String },
    /// Bytes of a layer received so far.
    Downloading {
        id: String,
        current: u64,
        total: u64,
    },
    /// The layer arrived and its digest checked out.
    Downloaded { id: String },
    /// The layer is unpacked in the store.
    Extracted { id: String },
    /// `The push refers to repository [localhost:5000/x]`.
    PushingTo { repository: String },
    /// A layer is being prepared (compressed if needed).
    Preparing { id: String },
    /// Bytes of a layer sent so far.
    Uploading {
        id: String,
        current: u64,
        total: u64,
    },
    /// A layer is in the registry.
    Pushed { id: String, outcome: BlobPush },
}

/// Where events go.
pub type Reporter<'a> = &'a (dyn Fn(&Event) + Sync);

pub(crate) fn emit(reporter: Option<Reporter<'_>>, event: Event) {
    if let Some(r) = reporter {
        r(&event);
    }
}
