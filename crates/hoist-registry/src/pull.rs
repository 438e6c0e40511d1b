//! Pull: resolve the reference (an index picks the platform), fetch the config, stream the
//! missing layers into the store (several at once, verified as they arrive), then record the
//! image with its tag and RepoDigest.

use std::collections::VecDeque;
use std::sync::Mutex;

use hoist_oci::{Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference, media};
use hoist_store::{LayerInfo, Store};

use crate::client::{Client, Progress};
use crate::endpoint::Endpoint;
use crate::error::{RegistryError, chain};
use crate::progress::{Event, Reporter, emit};
use crate::{FetchedManifest, RegistryOptions};

/// How to pull.
#[derive(Clone, Copy, Default)]
pub struct PullOptions<'a> {
    /// Endpoints and credentials.
    pub registry: Option<&'a RegistryOptions>,
    /// Progress events.
    pub progress: Option<Reporter<'a>>,
    /// Layers downloaded at once (0: the default, 3, as docker).
    pub concurrency: usize,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The image id (config digest).
    pub id: Digest,
    /// The digest of what the reference named (the index for a multi-platform image).
    pub digest: Digest,
    /// The reference pulled, with its default tag.
    pub reference: Reference,
    /// False when the tag already named this image ("Image is up to date").
    pub updated: bool,
}

/// Pulls `reference` for `platform` into the store and returns the image id. This is the seam
/// the build engine calls for a `FROM` image it does not have.
pub fn pull(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    options: PullOptions<'_>,
) -> Result<Digest, RegistryError> {
    pull_image(store, reference, platform, options).map(|p| p.id)
}

/// [`pull`], reporting more of what happened. The registry's mirrors are tried first, in
/// order: a mirror that cannot be reached, fails, or does not have the manifest (404) gives way
/// to the next, and the last to the registry itself, as containerd and BuildKit do. Layers come
/// from whichever answered for the manifest.
pub fn pull_image(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    options: PullOptions<'_>,
) -> Result<PulledImage, RegistryError> {
    let default_options = RegistryOptions::default();
    let registry = options.registry.unwrap_or(&default_options);
    let reference = reference.clone().with_default_tag();
    let tag_or_digest = tag_or_digest(&reference);
    emit(
        options.progress,
        Event::Pulling {
            tag_or_digest: tag_or_digest.clone(),
            repository: reference.path().to_owned(),
        },
    );
    let (client, top) = first_answer(&reference, registry, |c| {
        c.get_manifest(&reference, &tag_or_digest)
    })?;
    pull_resolved(&client, store, &reference, top, platform, options)
}

/// Pulls every tag of `reference`'s repository (`pull -a`), listed by the first of its mirrors
/// (then the registry) that answers.
pub fn pull_all_tags(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    options: PullOptions<'_>,
) -> Result<Vec<PulledImage>, RegistryError> {
    let default_options = RegistryOptions::default();
    let registry = options.registry.unwrap_or(&default_options);
    let (client, tags) = first_answer(reference, registry, |c| {
        let tags = c.tags(reference)?;
        if tags.is_empty() {
            return Err(RegistryError::NoTags {
                repository: reference.familiar_repository(),
            });
        }
        Ok(tags)
    })?;
    tags.iter()
        .map(|t| pull_with(&client, store, &reference.with_tag(t), platform, options))
        .collect()
}

/// `ask` of each mirror of `reference`'s registry in turn, then of the registry: the first
/// answer, with the client that gave it. Every failure of a mirror (unreachable, 5xx, 404,
/// refused) moves on to the next; only the local store's errors stop the search. When the
/// registry fails too, its error carries each mirror's.
fn first_answer<T>(
    reference: &Reference,
    registry: &RegistryOptions,
    ask: impl Fn(&Client) -> Result<T, RegistryError>,
) -> Result<(Client, T), RegistryError> {
    let origin = reference.domain();
    let mut tried = Vec::new();
    for mirror in registry.mirrors_of(origin) {
        let answer = Endpoint::mirror(mirror, origin, &registry.insecure_registries)
            .and_then(|e| Client::connect_mirror(e, registry))
            .and_then(|c| ask(&c).map(|t| (c, t)));
        match answer {
            Ok(found) => return Ok(found),
            Err(e @ (RegistryError::Store(_) | RegistryError::Layer { .. })) => return Err(e),
            Err(e) => tried.push(format!("{mirror}: {}", chain(&e))),
        }
    }
    Client::connect(origin, registry)
        .and_then(|c| ask(&c).map(|t| (c, t)))
        .map_err(|e| {
            if tried.is_empty() {
                e
            } else {
                RegistryError::Mirrors {
                    origin: Box::new(e),
                    tried: tried.join("; "),
                }
            }
        })
}

fn tag_or_digest(reference: &Reference) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => "latest".to_owned(),
    }
}

/// Pulls through an existing client (no mirrors).
pub fn pull_with(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    options: PullOptions<'_>,
) -> Result<PulledImage, RegistryError> {
    let reference = reference.clone().with_default_tag();
    let tag_or_digest = tag_or_digest(&reference);
    emit(
        options.progress,
        Event::Pulling {
            tag_or_digest: tag_or_digest.clone(),
            repository: reference.path().to_owned(),
        },
    );
    let top = client.get_manifest(&reference, &tag_or_digest)?;
    pull_resolved(client, store, &reference, top, platform, options)
}

/// The rest of a pull once `top`, what the reference names, has been fetched from `client`.
fn pull_resolved(
    client: &Client,
    store: &Store,
    reference: &Reference,
    top: FetchedManifest,
    platform: &Platform,
    options: PullOptions<'_>,
) -> Result<PulledImage, RegistryError> {
    let reference = reference.clone();
    let manifest = if media::is_index(&top.media_type) {
        let index: Index = parse(&top.bytes, "image index", client)?;
        let chosen = choose_platform(&index, platform)?;
        let m = client.get_manifest(&reference, chosen.digest.as_str())?;
        if !media::is_manifest(&m.media_type) {
            return Err(RegistryError::UnsupportedMediaType(m.media_type));
        }
        m
    } else if media::is_manifest(&top.media_type) {
        top.clone()
    } else {
        return Err(RegistryError::UnsupportedMediaType(top.media_type));
    };
    let FetchedManifest {
        bytes: manifest_bytes,
        digest: manifest_digest,
        ..
    } = manifest;
    let parsed: Manifest = parse(&manifest_bytes, "image manifest", client)?;
    let config_desc = &parsed.config;
    let config_bytes = if store.has_blob(&config_desc.digest) {
        store.read_blob(&config_desc.digest)?
    } else {
        client.get_blob_bytes(&reference, &config_desc.digest, config_desc.size)?
    };
    let config: ImageConfig = parse(&config_bytes, "image config", client)?;
    if config.rootfs.diff_ids.len() != parsed.layers.len() {
        return Err(RegistryError::Protocol {
            registry: client.host().to_owned(),
            message: format!(
                "manifest {manifest_digest} lists {} layers, its config {}",
                parsed.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let source = format!("{}/{}", client.host(), reference.path());
    let mut missing = Vec::new();
    for (desc, diff_id) in parsed.layers.iter().zip(&config.rootfs.diff_ids) {
        let id = desc.digest.hex()[..12].to_owned();
        if store.layer(diff_id)?.is_some() {
            emit(options.progress, Event::LayerExists { id });
        } else {
            emit(options.progress, Event::LayerQueued { id });
            missing.push((desc, diff_id));
        }
    }
    fetch_layers(client, store, &reference, &missing, options)?;
    for desc in parsed.layers.iter().chain([config_desc]) {
        store.record_blob_source(&desc.digest, &source)?;
    }
    let tagged = reference.tag().map(|_| reference.clone());
    let before = tagged
        .as_ref()
        .and_then(|t| store.resolve(&t.to_string()).ok());
    store.write_blob(&manifest_bytes)?;
    if top.digest != manifest_digest {
        store.write_blob(&top.bytes)?;
    }
    let id = store.put_image(&config_bytes, Some(&manifest_digest))?;
    if let Some(t) = &tagged {
        store.tag(t, &id)?;
    }
    store.tag(&reference.with_digest(top.digest.clone()), &id)?;
    Ok(PulledImage {
        updated: before.as_ref() != Some(&id),
        id,
        digest: top.digest,
        reference,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    client: &Client,
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::InvalidJson {
        what: what.to_owned(),
        registry: client.host().to_owned(),
        source,
    })
}

/// The index entry for `want`: an exact match (after containerd's normalisation) first, then
/// an older variant the platform runs (amd64 v3 runs v2 and v1; arm64 runs arm/v8…v5 is not
/// tried: docker does not either without a variant list).
pub(crate) fn choose_platform<'i>(
    index: &'i Index,
    want: &Platform,
) -> Result<&'i Descriptor, RegistryError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type))
        .collect();
    if let Some(d) = candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want)))
    {
        return Ok(d);
    }
    let want = want.normalized();
    if want.architecture == "amd64" {
        let level = want
            .variant
            .as_deref()
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1);
        for v in (1..level).rev() {
            let older = Platform {
                variant: (v > 1).then(|| format!("v{v}")),
                ..want.clone()
            };
            if let Some(d) = candidates
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(&older)))
            {
                return Ok(d);
            }
        }
    }
    Err(RegistryError::NoMatchingPlatform {
        platform: want.to_string(),
    })
}

type Job<'m> = (&'m Descriptor, &'m Digest);

fn fetch_layers(
    client: &Client,
    store: &Store,
    reference: &Reference,
    jobs: &[Job<'_>],
    options: PullOptions<'_>,
) -> Result<(), RegistryError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let workers = match options.concurrency {
        0 => 3,
        n => n,
    }
    .min(jobs.len());
    let queue = Mutex::new(jobs.iter().collect::<VecDeque<_>>());
    let failure: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if lock(&failure).is_some() {
                        return;
                    }
                    let Some((desc, diff_id)) = lock(&queue).pop_front() else {
                        return;
                    };
                    if let Err(e) = fetch_layer(client, store, reference, desc, diff_id, options) {
                        lock(&failure).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fetch_layer(
    client: &Client,
    store: &Store,
    reference: &Reference,
    desc: &Descriptor,
    diff_id: &Digest,
    options: PullOptions<'_>,
) -> Result<LayerInfo, RegistryError> {
    let id = desc.digest.hex()[..12].to_owned();
    let report = |current: u64| {
        emit(
            options.progress,
            Event::Downloading {
                id: id.clone(),
                current,
                total: desc.size,
            },
        );
    };
    let mut reader = Progress {
        inner: client.blob_reader(reference, &desc.digest, desc.size),
        done: 0,
        report: Some(&report),
    };
    let info = match store.import_layer(&mut reader, Some(&desc.digest)) {
        Ok(info) => info,
        Err(source) => {
            // A registry failure behind the read is the better explanation.
            return Err(reader.inner.take_error().unwrap_or(RegistryError::Layer {
                digest: desc.digest.clone(),
                source,
            }));
        }
    };
    emit(options.progress, Event::Downloaded { id: id.clone() });
    if &info.diff_id != diff_id {
        return Err(RegistryError::DiffIdMismatch {
            blob: desc.digest.clone(),
            expected: diff_id.clone(),
            actual: info.diff_id,
        });
    }
    emit(options.progress, Event::Extracted { id });
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, n: u8) -> Descriptor {
        let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::sha256_of(&[n]), 1);
        d.platform = Some(platform.parse().unwrap());
        d
    }

    #[test]
    fn platform_choice() {
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: vec![
                entry("linux/amd64", 1),
                entry("linux/arm64/v8", 2),
                entry("linux/arm/v6", 3),
            ],
            annotations: None,
        };
        let pick = |p: &str| choose_platform(&index, &p.parse().unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/aarch64").unwrap(), Digest::sha256_of(&[2]));
        assert_eq!(pick("linux/x86_64").unwrap(), Digest::sha256_of(&[1]));
        assert_eq!(pick("linux/amd64/v3").unwrap(), Digest::sha256_of(&[1]));
        assert_eq!(pick("linux/armel").unwrap(), Digest::sha256_of(&[3]));
        assert_eq!(
            pick("linux/s390x").unwrap_err().to_string(),
            "no matching manifest for linux/s390x in the manifest list entries"
        );
    }
}
