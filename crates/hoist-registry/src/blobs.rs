//! Blobs: a download reader that resumes a broken transfer with `Range` and refuses more bytes
//! than the descriptor allows, and uploads (HEAD first, cross-repo mount, monolithic PUT with
//! a chunked-PATCH fallback, whole-upload retries).

use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use hoist_oci::{Digest, Reference};

use crate::auth::repository_scope;
use crate::client::{Body, Client, Method, Request, describe_response, header};
use crate::error::{RegistryError, TransientMarker, is_transient_io};

/// How often a broken download is resumed before giving up.
const RESUMES: u32 = 5;
/// Whole-upload attempts.
const UPLOAD_ATTEMPTS: u32 = 3;

/// What pushing one blob did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPush {
    /// The repository already had it.
    Exists,
    /// Mounted from another repository of the same registry (`path`).
    Mounted { from: String },
    /// Uploaded.
    Uploaded,
}

/// How blobs are uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadMode {
    /// One PUT with the whole blob; chunked PATCH if the registry refuses it.
    #[default]
    Monolithic,
    /// PATCH chunks of this many bytes with `Content-Range`, then PUT.
    Chunked(u64),
}

impl Client {
    /// HEADs a blob: its size when the repository has it.
    pub fn blob_exists(
        &self,
        reference: &Reference,
        digest: &Digest,
        scopes: Vec<String>,
    ) -> Result<Option<u64>, RegistryError> {
        let path = format!("{}/blobs/{digest}", reference.path());
        let scopes_push = scopes
            .iter()
            .any(|s| s.ends_with(",push") || s.ends_with(":push"));
        let resp = self.send(&Request::new(Method::Head, self.url(&path)?, scopes))?;
        match resp.status().as_u16() {
            200..=299 => Ok(Some(
                header(&resp, "content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => {
                let action = if scopes_push { "push" } else { "pull" };
                Err(self.failure(resp, Method::Head, &path, action, reference))
            }
        }
    }

    /// GETs a small blob (a config) whole, verifying digest and size.
    pub fn get_blob_bytes(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut reader = self.blob_reader(reference, digest, size);
        let mut bytes = Vec::new();
        if let Err(e) = reader.read_to_end(&mut bytes) {
            return Err(reader.take_error().unwrap_or(RegistryError::Io {
                context: "downloading",
                path: digest.to_string().into(),
                source: e,
            }));
        }
        let actual = Digest::sha256_of(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob from {}", reference.familiar_repository()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// A reader over a blob's bytes that resumes broken transfers and stops at `size`.
    pub fn blob_reader<'c>(
        &'c self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> BlobReader<'c> {
        BlobReader {
            client: self,
            reference: reference.clone(),
            digest: digest.clone(),
            size,
            body: None,
            offset: 0,
            resumes: 0,
            error: None,
        }
    }

    /// Pushes the blob in file `path` (`digest`, `size` bytes) to `target`'s repository:
    /// HEAD, then a mount from `mount_from` (a path in the same registry) when given, else
    /// an upload. `progress` sees bytes sent.
    #[expect(
        clippy::too_many_arguments,
        reason = "one blob's descriptor, file and upload policy"
    )]
    pub fn push_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        size: u64,
        path: &Path,
        mount_from: Option<&str>,
        mode: UploadMode,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<BlobPush, RegistryError> {
        let push_scope = vec![repository_scope(target.path(), "pull,push")];
        if self
            .blob_exists(target, digest, push_scope.clone())?
            .is_some()
        {
            return Ok(BlobPush::Exists);
        }
        let mut attempt = 0;
        loop {
            let result = self.upload_once(target, digest, size, path, mount_from, mode, progress);
            match result {
                Err(e) if e.is_transient() && attempt + 1 < UPLOAD_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(500 << attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one blob's descriptor and its file"
    )]
    fn upload_once(
        &self,
        target: &Reference,
        digest: &Digest,
        size: u64,
        path: &Path,
        mount_from: Option<&str>,
        mode: UploadMode,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<BlobPush, RegistryError> {
        let repo = target.path();
        let push_scope = vec![repository_scope(repo, "pull,push")];
        let start = format!("{repo}/blobs/uploads/");
        let mut url = self.url(&start)?;
        let mut scopes = push_scope.clone();
        if let Some(from) = mount_from.filter(|f| *f != repo) {
            url.query_pairs_mut()
                .append_pair("mount", digest.as_str())
                .append_pair("from", from);
            // The token must also allow pulling from the source repository.
            scopes.push(repository_scope(from, "pull"));
        }
        let resp = self.send(&Request::new(Method::Post, url, scopes))?;
        let status = resp.status().as_u16();
        if let (201, Some(from)) = (status, mount_from) {
            return Ok(BlobPush::Mounted {
                from: from.to_owned(),
            });
        }
        if status != 202 {
            return Err(self.failure(resp, Method::Post, &start, "push", target));
        }
        let location = self.upload_location(&resp, &start)?;
        let result = match mode {
            UploadMode::Monolithic => {
                match self.put_whole(target, digest, size, path, location, progress) {
                    Err(RegistryError::Status {
                        status: 400 | 405 | 413 | 415 | 416 | 501,
                        ..
                    }) => {
                        // Some registries want the bytes PATCHed: start again, in one chunk.
                        let resp = self.send(&Request::new(
                            Method::Post,
                            self.url(&start)?,
                            push_scope.clone(),
                        ))?;
                        if resp.status().as_u16() != 202 {
                            return Err(self.failure(resp, Method::Post, &start, "push", target));
                        }
                        let location = self.upload_location(&resp, &start)?;
                        self.put_chunked(
                            target,
                            digest,
                            size,
                            path,
                            location,
                            size.max(1),
                            progress,
                        )
                    }
                    other => other,
                }
            }
            UploadMode::Chunked(chunk) => {
                self.put_chunked(target, digest, size, path, location, chunk.max(1), progress)
            }
        };
        result.map(|()| BlobPush::Uploaded)
    }

    fn upload_location(
        &self,
        resp: &ureq::http::Response<ureq::Body>,
        path: &str,
    ) -> Result<url::Url, RegistryError> {
        let location = header(resp, "location").ok_or_else(|| RegistryError::Protocol {
            registry: self.host().to_owned(),
            message: format!("POST {path} answered 202 without a Location"),
        })?;
        self.location(&location)
    }

    fn put_whole(
        &self,
        target: &Reference,
        digest: &Digest,
        size: u64,
        path: &Path,
        mut location: url::Url,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<(), RegistryError> {
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let request = Request::new(
            Method::Put,
            location.clone(),
            vec![repository_scope(target.path(), "pull,push")],
        )
        .header("Content-Type", "application/octet-stream")
        .body(Body::File {
            path,
            offset: 0,
            len: size,
            progress,
        });
        let resp = self.send(&request)?;
        if resp.status().as_u16() != 201 && !resp.status().is_success() {
            return Err(self.failure(resp, Method::Put, location.path(), "push", target));
        }
        Ok(())
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one blob's descriptor, file and session"
    )]
    fn put_chunked(
        &self,
        target: &Reference,
        digest: &Digest,
        size: u64,
        path: &Path,
        mut location: url::Url,
        chunk: u64,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<(), RegistryError> {
        let scopes = vec![repository_scope(target.path(), "pull,push")];
        let mut offset = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let shifted = progress.map(|p| move |n: u64| p(offset + n));
            let shifted_ref = shifted.as_ref().map(|f| f as &(dyn Fn(u64) + Sync));
            let request = Request::new(Method::Patch, location.clone(), scopes.clone())
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{}-{}", offset, offset + len - 1))
                .body(Body::File {
                    path,
                    offset,
                    len,
                    progress: shifted_ref,
                });
            let resp = self.send(&request)?;
            if resp.status().as_u16() != 202 {
                return Err(self.failure(resp, Method::Patch, location.path(), "push", target));
            }
            location = self.upload_location(&resp, location.path())?;
            offset += len;
        }
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let resp = self.send(&Request::new(Method::Put, location.clone(), scopes))?;
        if !resp.status().is_success() {
            return Err(self.failure(resp, Method::Put, location.path(), "push", target));
        }
        Ok(())
    }
}

/// A blob download. Broken connections are resumed from the last byte (`Range`), a server
/// that ignores `Range` is skipped forward, and more bytes than the descriptor's size are an
/// error. The registry error behind a failed read is kept for [`BlobReader::take_error`].
pub struct BlobReader<'c> {
    client: &'c Client,
    reference: Reference,
    digest: Digest,
    size: u64,
    body: Option<ureq::BodyReader<'static>>,
    offset: u64,
    resumes: u32,
    error: Option<RegistryError>,
}

impl BlobReader<'_> {
    /// The registry error that made a read fail, if it was one.
    pub fn take_error(&mut self) -> Option<RegistryError> {
        self.error.take()
    }

    fn open(&mut self) -> Result<ureq::BodyReader<'static>, RegistryError> {
        let path = format!("{}/blobs/{}", self.reference.path(), self.digest);
        let mut request = Request::new(
            Method::Get,
            self.client.url(&path)?,
            vec![repository_scope(self.reference.path(), "pull")],
        );
        if self.offset > 0 {
            request = request.header("Range", format!("bytes={}-", self.offset));
        }
        let resp = self.client.send(&request)?;
        let status = resp.status().as_u16();
        match status {
            200 | 206 => {}
            404 => {
                return Err(RegistryError::BlobNotFound {
                    repository: self.reference.familiar_repository(),
                    digest: self.digest.clone(),
                    detail: describe_response(resp),
                });
            }
            _ => {
                return Err(self
                    .client
                    .failure(resp, Method::Get, &path, "pull", &self.reference));
            }
        }
        let mut body = resp.into_body().into_reader();
        if status == 200 && self.offset > 0 {
            // The server ignored Range: read past what we already have.
            io::copy(&mut (&mut body).take(self.offset), &mut io::sink()).map_err(|e| {
                RegistryError::Io {
                    context: "downloading",
                    path: self.digest.to_string().into(),
                    source: e,
                }
            })?;
        }
        Ok(body)
    }

    fn fail(&mut self, error: RegistryError) -> io::Error {
        let message = error.to_string();
        let transient = error.is_transient();
        self.error = Some(error);
        if transient {
            io::Error::other(TransientMarker(message))
        } else {
            io::Error::other(message)
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.body.is_none() {
                match self.open() {
                    Ok(body) => self.body = Some(body),
                    Err(e) => return Err(self.fail(e)),
                }
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let want = buf
                .len()
                .min(usize::try_from(self.size - self.offset + 1).unwrap_or(usize::MAX));
            let outcome = body.read(&mut buf[..want.max(1)]);
            match outcome {
                Ok(0) if self.offset == self.size => return Ok(0),
                Ok(n) if n > 0 && self.offset + n as u64 <= self.size => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Ok(0) => {
                    // The body ended early: resume below.
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "blob ended early");
                    if !self.retry(&e) {
                        let actual = self.offset;
                        return Err(self.fail(RegistryError::SizeMismatch {
                            digest: self.digest.clone(),
                            expected: self.size,
                            actual,
                        }));
                    }
                }
                Ok(n) => {
                    let actual = self.offset + n as u64;
                    return Err(self.fail(RegistryError::SizeMismatch {
                        digest: self.digest.clone(),
                        expected: self.size,
                        actual,
                    }));
                }
                Err(e) => {
                    if !self.retry(&e) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl BlobReader<'_> {
    /// Drops the broken body so the next read resumes; false when out of resumes.
    fn retry(&mut self, e: &io::Error) -> bool {
        let transient = is_transient_io(e)
            || e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>())
            || e.kind() == io::ErrorKind::Other;
        if !transient || self.resumes >= RESUMES {
            return false;
        }
        self.body = None;
        std::thread::sleep(Duration::from_millis(200 << self.resumes));
        self.resumes += 1;
        true
    }
}
