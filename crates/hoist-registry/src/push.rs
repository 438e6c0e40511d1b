//! Push: each layer as a compressed blob (made once, then remembered by the store), uploaded
//! unless the repository has it or can mount it from a sibling, then the config and a manifest
//! whose `Content-Type` is its media type; the pushed digest becomes a RepoDigest.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;

use hoist_oci::{Descriptor, Digest, ImageConfig, Manifest, Reference, media};
use hoist_store::Store;

use crate::RegistryOptions;
use crate::blobs::UploadMode;
use crate::client::Client;
use crate::error::RegistryError;
use crate::progress::{Event, Reporter, emit};

/// How layers are compressed for a push, and so which manifest format is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// gzip, in a Docker v2 schema 2 manifest (docker's default).
    #[default]
    Gzip,
    /// zstd, in an OCI manifest (zstd layers need OCI media types).
    Zstd,
}

/// How to push.
#[derive(Clone, Copy, Default)]
pub struct PushOptions<'a> {
    /// Endpoints and credentials.
    pub registry: Option<&'a RegistryOptions>,
    /// Layer compression.
    pub compression: Compression,
    /// Monolithic or chunked uploads.
    pub upload: UploadMode,
    /// Progress events.
    pub progress: Option<Reporter<'a>>,
    /// Layers uploaded at once (0: the default, 5, as docker).
    pub concurrency: usize,
}

/// What a push wrote.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The tag (or digest) the manifest was put under.
    pub tag: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// Pushes image `id` from the store as `target` (a tag defaults to `latest`).
pub fn push(
    store: &Store,
    id: &Digest,
    target: &Reference,
    options: PushOptions<'_>,
) -> Result<PushedImage, RegistryError> {
    let default_options = RegistryOptions::default();
    let client = Client::connect(
        target.domain(),
        options.registry.unwrap_or(&default_options),
    )?;
    push_with(&client, store, id, target, options)
}

/// Pushes through an existing client.
pub fn push_with(
    client: &Client,
    store: &Store,
    id: &Digest,
    target: &Reference,
    options: PushOptions<'_>,
) -> Result<PushedImage, RegistryError> {
    let target = target.clone().with_default_tag();
    let config_bytes = store.read_blob(id)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| RegistryError::InvalidJson {
            what: format!("image config {id}"),
            registry: "the local store".into(),
            source,
        })?;
    let (manifest_type, config_type) = match options.compression {
        Compression::Gzip => (media::DOCKER_MANIFEST, media::DOCKER_CONFIG),
        Compression::Zstd => (media::OCI_MANIFEST, media::OCI_CONFIG),
    };
    for diff_id in &config.rootfs.diff_ids {
        emit(
            options.progress,
            Event::Preparing {
                id: diff_id.hex()[..12].to_owned(),
            },
        );
    }
    let layers = push_layers(client, store, &target, &config.rootfs.diff_ids, options)?;
    let config_desc = Descriptor::new(config_type, id.clone(), config_bytes.len() as u64);
    push_blob(client, store, &target, &config_desc, options, None)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_owned()),
        config: config_desc,
        layers,
        annotations: None,
    };
    let bytes = manifest_bytes(&manifest);
    let tag = match (target.tag(), target.digest()) {
        (Some(t), _) => t.to_owned(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_owned(),
    };
    let digest = client.put_manifest(&target, &tag, manifest_type, &bytes)?;
    store.write_blob(&bytes)?;
    store.put_image(&config_bytes, Some(&digest))?;
    store.tag(&target.with_digest(digest.clone()), id)?;
    Ok(PushedImage {
        tag,
        digest,
        size: bytes.len() as u64,
    })
}

fn push_layers(
    client: &Client,
    store: &Store,
    target: &Reference,
    diff_ids: &[Digest],
    options: PushOptions<'_>,
) -> Result<Vec<Descriptor>, RegistryError> {
    let workers = match options.concurrency {
        0 => 5,
        n => n,
    }
    .min(diff_ids.len())
    .max(1);
    let queue = Mutex::new(diff_ids.iter().enumerate().collect::<VecDeque<_>>());
    let done: Mutex<Vec<Option<Descriptor>>> = Mutex::new(vec![None; diff_ids.len()]);
    let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if lock(&failure).is_some() {
                        return;
                    }
                    let Some((i, diff_id)) = lock(&queue).pop_front() else {
                        return;
                    };
                    let result = layer_blob(store, diff_id, options.compression).and_then(|desc| {
                        push_blob(client, store, target, &desc, options, Some(diff_id))?;
                        Ok(desc)
                    });
                    match result {
                        Ok(desc) => lock(&done)[i] = Some(desc),
                        Err(e) => {
                            lock(&failure).get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(e);
    }
    Ok(done
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The layer as a blob in the wanted compression: one the store has, or made now and
/// recorded so the next push reuses it.
fn layer_blob(
    store: &Store,
    diff_id: &Digest,
    compression: Compression,
) -> Result<Descriptor, RegistryError> {
    let (wanted, manifest_type) = match compression {
        Compression::Gzip => (media::LayerEncoding::Gzip, media::DOCKER_LAYER_GZIP),
        Compression::Zstd => (media::LayerEncoding::Zstd, media::OCI_LAYER_ZSTD),
    };
    let known = store.layer_blobs(diff_id)?;
    if let Some((digest, _, size)) = known
        .iter()
        .find(|(_, m, _)| media::layer_encoding(m) == Some(wanted))
    {
        return Ok(Descriptor::new(manifest_type, digest.clone(), *size));
    }
    let stored = |source| RegistryError::Layer {
        digest: diff_id.clone(),
        source,
    };
    let io_err = |source: io::Error| RegistryError::Io {
        context: "compressing layer",
        path: diff_id.to_string().into(),
        source,
    };
    let mut tar = store.layer_tar(diff_id).map_err(stored)?;
    let writer = store.blob_writer().map_err(stored)?;
    let writer = match compression {
        Compression::Gzip => {
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            crate::pargzip::compress(&mut tar, writer, gzip_level(), threads).map_err(io_err)?
        }
        Compression::Zstd => {
            let mut enc = hoist_layer::compress_zstd(writer, 3, 2).map_err(io_err)?;
            io::copy(&mut tar, &mut enc).map_err(io_err)?;
            enc.finish().map_err(io_err)?
        }
    };
    let (digest, size) = writer.commit(None).map_err(stored)?;
    let stored_type = match compression {
        Compression::Gzip => media::DOCKER_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    };
    store
        .record_layer_blob(diff_id, &digest, stored_type, size)
        .map_err(stored)?;
    Ok(Descriptor::new(manifest_type, digest, size))
}

/// The gzip level for pushed layers: `HOIST_GZIP_LEVEL` (0–9), by default 1 — pushing is
/// usually bound by compression, and level 1 on every core costs a few percent of size.
fn gzip_level() -> u32 {
    std::env::var("HOIST_GZIP_LEVEL")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(1, |l| l.min(9))
}

/// One blob: HEAD, mount from a sibling repository the store knows holds it, or upload.
fn push_blob(
    client: &Client,
    store: &Store,
    target: &Reference,
    desc: &Descriptor,
    options: PushOptions<'_>,
    layer: Option<&Digest>,
) -> Result<(), RegistryError> {
    let prefix = format!("{}/", client.host());
    let here = format!("{prefix}{}", target.path());
    let mount_from = store
        .blob_sources(&desc.digest)?
        .into_iter()
        .find(|r| r.starts_with(&prefix) && *r != here)
        .map(|r| r[prefix.len()..].to_owned());
    let id = layer.map(|d| d.hex()[..12].to_owned());
    let report = |current: u64| {
        if let Some(id) = &id {
            emit(
                options.progress,
                Event::Uploading {
                    id: id.clone(),
                    current,
                    total: desc.size,
                },
            );
        }
    };
    let outcome = client.push_blob(
        target,
        &desc.digest,
        desc.size,
        &store.blob_path(&desc.digest),
        mount_from.as_deref(),
        options.upload,
        Some(&report),
    )?;
    store.record_blob_source(&desc.digest, &here)?;
    if let Some(id) = id {
        emit(options.progress, Event::Pushed { id, outcome });
    }
    Ok(())
}

/// The manifest as docker's push writes it (Go's `MarshalIndent` with three spaces, descriptor
/// fields in distribution's order), so pushing the same image gives docker's digest.
fn manifest_bytes(manifest: &Manifest) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Desc<'a> {
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        size: u64,
        digest: &'a Digest,
    }
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        config: Desc<'a>,
        layers: Vec<Desc<'a>>,
    }
    fn desc(d: &Descriptor) -> Desc<'_> {
        Desc {
            media_type: &d.media_type,
            size: d.size,
            digest: &d.digest,
        }
    }
    let doc = Doc {
        schema_version: manifest.schema_version,
        media_type: manifest
            .media_type
            .as_deref()
            .unwrap_or(media::DOCKER_MANIFEST),
        config: desc(&manifest.config),
        layers: manifest.layers.iter().map(desc).collect(),
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Strings and numbers always serialise.
    let _ = serde::Serialize::serialize(&doc, &mut ser);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_written_like_docker() {
        let config = Descriptor::new(media::DOCKER_CONFIG, Digest::sha256_of(b"c"), 317);
        let layer = Descriptor::new(media::DOCKER_LAYER_GZIP, Digest::sha256_of(b"l"), 8200);
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media::DOCKER_MANIFEST.into()),
            config,
            layers: vec![layer],
            annotations: None,
        };
        let text = String::from_utf8(manifest_bytes(&m)).unwrap();
        let expected = format!(
            "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{}\",\n   \"config\": {{\n      \"mediaType\": \"{}\",\n      \"size\": 317,\n      \"digest\": \"{}\"\n   }},\n   \"layers\": [\n      {{\n         \"mediaType\": \"{}\",\n         \"size\": 8200,\n         \"digest\": \"{}\"\n      }}\n   ]\n}}",
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            Digest::sha256_of(b"c"),
            media::DOCKER_LAYER_GZIP,
            Digest::sha256_of(b"l"),
        );
        assert_eq!(text, expected);
    }
}
