//! `docker save` / `docker load` archives: we write Engine ≥25's dual form (an OCI layout plus
//! `manifest.json` and `repositories`, uncompressed layers named by diff id) and read that, the
//! legacy form (`<id>/layer.tar`) and plain OCI layouts, compressed or not. Layers stream from the
//! archive straight into the store; only JSON documents are held in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

use hoist_oci::{Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference, media};
use serde::{Deserialize, Serialize};

use crate::{LayerInfo, Store, StoreError};

/// JSON documents larger than this are not metadata; refuse rather than buffer them.
const MAX_JSON: u64 = 64 << 20;

/// An image that `load` added.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// Its id.
    pub id: Digest,
    /// Names it was tagged with.
    pub tags: Vec<Reference>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

enum Entry {
    Json(Vec<u8>),
    Layer(LayerInfo),
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Archive(msg.into())
}

fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn blob_name(name: &str) -> Option<Digest> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    format!("sha256:{hex}").parse().ok()
}

impl Store {
    /// Reads a docker or OCI archive (optionally compressed) and records its images.
    pub fn load_archive(&self, input: impl Read) -> Result<Vec<LoadedImage>, StoreError> {
        let decoded = hoist_layer::decompress(io::BufReader::with_capacity(256 * 1024, input))
            .map_err(|e| bad(format!("reading the archive: {e}")))?;
        let mut archive = tar::Archive::new(decoded);
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        let read_err = |e: io::Error| bad(format!("reading the archive: {e}"));
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let path = entry
                .path()
                .map_err(read_err)?
                .to_string_lossy()
                .into_owned();
            let name = clean(&path);
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry.link_name().map_err(read_err)?.unwrap_or_default();
                let target = target.to_string_lossy();
                let resolved = if kind.is_symlink() && !target.starts_with('/') {
                    let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
                    clean(&format!("{parent}/{target}"))
                } else {
                    clean(&target)
                };
                links.insert(name, resolved);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.header().size().map_err(read_err)?;
            let mut head = Vec::with_capacity(512);
            (&mut entry)
                .take(512)
                .read_to_end(&mut head)
                .map_err(read_err)?;
            let looks_json = head
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[');
            let known = name == "oci-layout" || name == "repositories" || name.ends_with("VERSION");
            if looks_json || known || size == 0 {
                if size > MAX_JSON {
                    return Err(bad(format!(
                        "{name}: a {size}-byte JSON document is too large"
                    )));
                }
                let mut buf = head;
                entry.read_to_end(&mut buf).map_err(read_err)?;
                entries.insert(name, Entry::Json(buf));
                continue;
            }
            let expected = blob_name(&name);
            if let Some(d) = &expected
                && let Some(layer) = self.layer_by_blob(d)?
            {
                entries.insert(name, Entry::Layer(layer));
                continue;
            }
            let mut stream = io::Cursor::new(head).chain(&mut entry);
            let layer = self.import_layer(&mut stream, expected.as_ref())?;
            entries.insert(name, Entry::Layer(layer));
        }
        let resolve = |name: &str| -> Option<&Entry> {
            let mut n = clean(name);
            for _ in 0..16 {
                if let Some(e) = entries.get(&n) {
                    return Some(e);
                }
                n = links.get(&n)?.clone();
            }
            None
        };
        let json = |name: &str| -> Result<&[u8], StoreError> {
            match resolve(name) {
                Some(Entry::Json(b)) => Ok(b),
                _ => Err(bad(format!("archive has no JSON document {name}"))),
            }
        };
        let mut loaded = Vec::new();
        if let Ok(m) = json("manifest.json") {
            let manifests: Vec<ArchiveManifest> =
                serde_json::from_slice(m).map_err(|source| StoreError::Json {
                    what: "manifest.json".into(),
                    source,
                })?;
            for am in manifests {
                let config = json(&am.config)?;
                let layers = am
                    .layers
                    .iter()
                    .map(|l| match resolve(l) {
                        Some(Entry::Layer(info)) => Ok(info.diff_id.clone()),
                        _ => Err(bad(format!("archive has no layer {l}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let tags = am.repo_tags.unwrap_or_default();
                loaded.push(self.record_loaded(config, &layers, None, &tags)?);
            }
        } else if let Ok(ix) = json("index.json") {
            let index: Index = serde_json::from_slice(ix).map_err(|source| StoreError::Json {
                what: "index.json".into(),
                source,
            })?;
            for desc in &index.manifests {
                let manifest_desc = self.pick_manifest(desc, &json)?;
                let bytes = json(&format!("blobs/sha256/{}", manifest_desc.digest.hex()))?;
                let manifest: Manifest =
                    serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
                        what: format!("manifest {}", manifest_desc.digest),
                        source,
                    })?;
                let config = json(&format!("blobs/sha256/{}", manifest.config.digest.hex()))?;
                let layers = manifest
                    .layers
                    .iter()
                    .map(
                        |l| match resolve(&format!("blobs/sha256/{}", l.digest.hex())) {
                            Some(Entry::Layer(info)) => Ok(info.diff_id.clone()),
                            _ => Err(bad(format!("archive has no layer {}", l.digest))),
                        },
                    )
                    .collect::<Result<Vec<_>, _>>()?;
                let manifest_digest = self.write_blob(bytes)?;
                let ann = desc.annotations.clone().unwrap_or_default();
                let tags: Vec<String> = ann
                    .get("io.containerd.image.name")
                    .or_else(|| {
                        ann.get("org.opencontainers.image.ref.name")
                            .filter(|n| Reference::parse(n).is_ok() && n.contains(':'))
                    })
                    .cloned()
                    .into_iter()
                    .collect();
                loaded.push(self.record_loaded(config, &layers, Some(&manifest_digest), &tags)?);
            }
        } else {
            return Err(bad(
                "not a docker or OCI image archive: no manifest.json or index.json",
            ));
        }
        Ok(loaded)
    }

    /// In an OCI layout, an index entry may point at a nested index: take the host's platform.
    fn pick_manifest<'a>(
        &self,
        desc: &'a Descriptor,
        json: &dyn Fn(&str) -> Result<&'a [u8], StoreError>,
    ) -> Result<Descriptor, StoreError> {
        if !media::is_index(&desc.media_type) {
            return Ok(desc.clone());
        }
        let bytes = json(&format!("blobs/sha256/{}", desc.digest.hex()))?;
        let index: Index = serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
            what: format!("index {}", desc.digest),
            source,
        })?;
        let host = Platform::host();
        index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.matches(&host)))
            .cloned()
            .ok_or_else(|| bad(format!("index {} has no manifest for {host}", desc.digest)))
    }

    fn record_loaded(
        &self,
        config: &[u8],
        layers: &[Digest],
        manifest: Option<&Digest>,
        tags: &[String],
    ) -> Result<LoadedImage, StoreError> {
        let parsed: ImageConfig =
            serde_json::from_slice(config).map_err(|source| StoreError::Json {
                what: "image config".into(),
                source,
            })?;
        if parsed.rootfs.diff_ids != layers {
            return Err(bad(format!(
                "the layers of the archive ({}) do not match the config's diff ids ({})",
                layers.len(),
                parsed.rootfs.diff_ids.len()
            )));
        }
        let id = self.put_image(config, manifest)?;
        let mut names = Vec::new();
        for t in tags {
            let r = Reference::parse(t)
                .map_err(|e| bad(format!("invalid tag {t:?} in the archive: {e}")))?;
            let r = r.with_default_tag();
            self.tag(&r, &id)?;
            names.push(r);
        }
        Ok(LoadedImage { id, tags: names })
    }

    /// The layer a blob holds, if that blob is known.
    pub fn layer_by_blob(&self, blob: &Digest) -> Result<Option<LayerInfo>, StoreError> {
        let diff: Option<String> = {
            use rusqlite::OptionalExtension;
            self.db()
                .query_row(
                    "SELECT diff_id FROM layer_blobs WHERE digest = ?1",
                    [blob.as_str()],
                    |r| r.get(0),
                )
                .optional()?
        };
        match diff.and_then(|d| d.parse::<Digest>().ok()) {
            Some(d) if self.has_blob(blob) => self.layer(&d),
            _ => Ok(None),
        }
    }
}

fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Writes images as a docker archive (Engine ≥25 dual form) that `docker load` accepts.
/// `images` pairs each image id with the names to record for it.
pub fn save_archive(
    store: &Store,
    images: &[(Digest, Vec<Reference>)],
    out: impl Write,
) -> Result<(), StoreError> {
    let mut tar = tar::Builder::new(out);
    let werr = |e: io::Error| bad(format!("writing the archive: {e}"));
    let mut written: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    let mut index = Vec::new();
    let mut manifest_json = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut latest_mtime = 0u64;
    let dir = |tar: &mut tar::Builder<_>, name: &str, mtime: u64| -> Result<(), StoreError> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(mtime);
        tar.append_data(&mut h, name, io::empty()).map_err(werr)
    };
    let file =
        |tar: &mut tar::Builder<_>, name: &str, size: u64, mtime: u64, data: &mut dyn Read| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(size);
            h.set_mtime(mtime);
            tar.append_data(&mut h, name, data).map_err(werr)
        };
    dir(&mut tar, "blobs/", 0)?;
    dir(&mut tar, "blobs/sha256/", 0)?;
    for (id, tags) in images {
        let config_bytes = store.read_blob(id)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
                what: format!("image config {id}"),
                source,
            })?;
        let mtime = config
            .created_at()
            .map_or(0, |t| u64::try_from(t.as_second()).unwrap_or(0));
        latest_mtime = latest_mtime.max(mtime);
        let mut layers = Vec::new();
        for diff_id in &config.rootfs.diff_ids {
            let info = store
                .layer(diff_id)?
                .ok_or_else(|| StoreError::MissingLayer(diff_id.clone()))?;
            if written.insert(diff_id.clone()) {
                let mut stream = store.layer_tar(diff_id)?;
                file(
                    &mut tar,
                    &format!("blobs/sha256/{}", diff_id.hex()),
                    info.tar_size,
                    mtime,
                    &mut stream,
                )?;
            }
            layers.push(Descriptor::new(
                media::OCI_LAYER_TAR,
                diff_id.clone(),
                info.tar_size,
            ));
        }
        if written.insert(id.clone()) {
            file(
                &mut tar,
                &format!("blobs/sha256/{}", id.hex()),
                config_bytes.len() as u64,
                mtime,
                &mut &config_bytes[..],
            )?;
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, id.clone(), config_bytes.len() as u64),
            layers,
            annotations: None,
        };
        let mbytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let mdigest = Digest::sha256_of(&mbytes);
        if written.insert(mdigest.clone()) {
            file(
                &mut tar,
                &format!("blobs/sha256/{}", mdigest.hex()),
                mbytes.len() as u64,
                mtime,
                &mut &mbytes[..],
            )?;
        }
        let top = chain_ids(&config.rootfs.diff_ids).pop();
        let mut repo_tags = Vec::new();
        for t in tags {
            let t = t.clone().with_default_tag();
            let mut d = Descriptor::new(media::OCI_MANIFEST, mdigest.clone(), mbytes.len() as u64);
            let tag = t.tag().unwrap_or("latest").to_owned();
            d.annotations = Some(BTreeMap::from([
                ("io.containerd.image.name".to_owned(), t.to_string()),
                ("org.opencontainers.image.ref.name".to_owned(), tag.clone()),
            ]));
            index.push(d);
            repo_tags.push(t.familiar());
            if let Some(top) = &top {
                repositories
                    .entry(t.familiar_repository())
                    .or_default()
                    .insert(tag, top.hex().to_owned());
            }
        }
        if tags.is_empty() {
            index.push(Descriptor::new(
                media::OCI_MANIFEST,
                mdigest.clone(),
                mbytes.len() as u64,
            ));
        }
        manifest_json.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", id.hex()),
            "RepoTags": if repo_tags.is_empty() { serde_json::Value::Null } else { serde_json::json!(repo_tags) },
            "Layers": config.rootfs.diff_ids.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
        }));
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: index,
        annotations: None,
    };
    let docs: Vec<(&str, Vec<u8>)> = vec![
        ("index.json", serde_json::to_vec(&index).unwrap_or_default()),
        (
            "manifest.json",
            serde_json::to_vec(&manifest_json).unwrap_or_default(),
        ),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ];
    for (name, bytes) in docs {
        file(
            &mut tar,
            name,
            bytes.len() as u64,
            latest_mtime,
            &mut &bytes[..],
        )?;
    }
    if !repositories.is_empty() {
        let bytes = serde_json::to_vec(&repositories).unwrap_or_default();
        file(
            &mut tar,
            "repositories",
            bytes.len() as u64,
            latest_mtime,
            &mut &bytes[..],
        )?;
    }
    tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}
