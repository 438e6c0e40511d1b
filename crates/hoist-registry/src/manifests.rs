//! Manifests and indexes by tag or digest, and tag lists.

use hoist_oci::{Digest, Reference, media};

use crate::auth::repository_scope;
use crate::client::{Body, Client, Method, Request, describe_response, header};
use crate::error::RegistryError;

/// Manifests larger than this are refused (the spec asks registries to take 4 MB).
const MANIFEST_LIMIT: u64 = 8 << 20;

/// Every manifest type a pull understands, for `Accept`.
const ACCEPT: &str = concat!(
    "application/vnd.docker.distribution.manifest.v2+json, ",
    "application/vnd.docker.distribution.manifest.list.v2+json, ",
    "application/vnd.oci.image.manifest.v1+json, ",
    "application/vnd.oci.image.index.v1+json"
);

/// A manifest as served: its exact bytes, type and verified digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes, never re-serialised (the digest is over them).
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

impl Client {
    /// Maps a failed response to the error users should see.
    pub(crate) fn failure(
        &self,
        resp: ureq::http::Response<ureq::Body>,
        method: Method,
        path: &str,
        action: &'static str,
        reference: &Reference,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = describe_response(resp);
        match status {
            401 | 403 => RegistryError::AccessDenied {
                action,
                repository: reference.familiar_repository(),
                detail,
            },
            _ => RegistryError::Status {
                registry: self.host().to_owned(),
                method: method.as_str(),
                path: path.to_owned(),
                status,
                detail,
            },
        }
    }

    /// GETs a manifest by tag or digest, verifying its digest.
    pub fn get_manifest(
        &self,
        reference: &Reference,
        tag_or_digest: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let path = format!("{}/manifests/{tag_or_digest}", reference.path());
        let request = Request::new(
            Method::Get,
            self.url(&path)?,
            vec![repository_scope(reference.path(), "pull")],
        )
        .header("Accept", ACCEPT);
        let mut resp = self.send(&request)?;
        let status = resp.status().as_u16();
        if status == 404 {
            let shown = match tag_or_digest.parse::<Digest>() {
                Ok(d) => reference.with_digest(d).familiar(),
                Err(_) => reference.with_tag(tag_or_digest).familiar(),
            };
            return Err(RegistryError::ManifestNotFound {
                reference: shown,
                detail: describe_response(resp),
            });
        }
        if !resp.status().is_success() {
            return Err(self.failure(resp, Method::Get, &path, "pull", reference));
        }
        let content_type = header(&resp, "content-type");
        let served_digest = header(&resp, "docker-content-digest");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(|source| RegistryError::Transport {
                method: "GET",
                url: path.clone(),
                source: Box::new(source),
            })?;
        let digest = Digest::sha256_of(&bytes);
        let expected = match tag_or_digest.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => served_digest
                .and_then(|d| d.parse::<Digest>().ok())
                .filter(|d| d.algorithm() == "sha256"),
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {}", reference.with_tag(tag_or_digest).familiar()),
                expected,
                actual: digest,
            });
        }
        let media_type = media_type_of(content_type.as_deref(), &bytes);
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// PUTs a manifest under a tag or digest with `Content-Type` = its media type.
    pub fn put_manifest(
        &self,
        reference: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let path = format!("{}/manifests/{tag_or_digest}", reference.path());
        let request = Request::new(
            Method::Put,
            self.url(&path)?,
            vec![repository_scope(reference.path(), "pull,push")],
        )
        .header("Content-Type", media_type)
        .body(Body::Bytes(bytes))
        .retry(true);
        let resp = self.send(&request)?;
        if !resp.status().is_success() {
            return Err(self.failure(resp, Method::Put, &path, "push", reference));
        }
        let digest = Digest::sha256_of(bytes);
        if let Some(served) = header(&resp, "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
            .filter(|d| d.algorithm() == "sha256")
            && served != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("pushed manifest {}", reference.familiar()),
                expected: digest,
                actual: served,
            });
        }
        Ok(digest)
    }

    /// Every tag of a repository, following `Link` pagination.
    pub fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(&format!("{}/tags/list", reference.path()))?;
        let mut out = Vec::new();
        for _page in 0..1000 {
            let request = Request::new(
                Method::Get,
                url.clone(),
                vec![repository_scope(reference.path(), "pull")],
            );
            let mut resp = self.send(&request)?;
            if !resp.status().is_success() {
                return Err(self.failure(resp, Method::Get, url.path(), "pull", reference));
            }
            let next = header(&resp, "link").and_then(|l| {
                let start = l.find('<')? + 1;
                let end = l[start..].find('>')? + start;
                l.contains("rel=\"next\"").then(|| l[start..end].to_owned())
            });
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(MANIFEST_LIMIT)
                .read_to_vec()
                .map_err(|source| RegistryError::Transport {
                    method: "GET",
                    url: url.path().to_owned(),
                    source: Box::new(source),
                })?;
            let list: TagList =
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::InvalidJson {
                    what: "tag list".into(),
                    registry: self.host().to_owned(),
                    source,
                })?;
            out.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => url = self.location(&n)?,
                None => break,
            }
        }
        Ok(out)
    }
}

/// The media type of a manifest: the `Content-Type` when it names a manifest type, else the
/// document's own `mediaType`, else judged from its shape (OCI allows omitting both).
fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> String {
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
        .filter(|c| media::is_manifest(c) || media::is_index(c));
    if let Some(ct) = ct {
        return ct;
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Shape {
            manifests: Some(_), ..
        }) => media::OCI_INDEX.to_owned(),
        _ => media::OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            media_type_of(Some("application/vnd.oci.image.index.v1+json"), b"{}"),
            media::OCI_INDEX
        );
        assert_eq!(
            media_type_of(Some("application/json"), br#"{"manifests":[]}"#),
            media::OCI_INDEX
        );
        assert_eq!(
            media_type_of(
                None,
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            ),
            media::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(None, br#"{"config":{}}"#),
            media::OCI_MANIFEST
        );
    }
}
