//! Pushing an image: every blob the registry lacks is mounted from another
//! repository of the same registry when one is known to hold it, else
//! uploaded (one `PUT` up to the chunk size, `PATCH` chunks above it),
//! several at a time; then the manifest is put under the tag.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::client::{backoff, check, header, Body, Client};
use crate::progress::{BlobState, Progress};
use crate::{workers, RegistryError};

/// A blob to push, from a local file.
#[derive(Clone, Debug)]
pub struct PushBlob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// An image to push: its manifest (sent byte for byte, so the digest in
/// the registry is the digest here) and the blobs it refers to.
#[derive(Clone, Debug)]
pub struct PushImage {
    pub manifest: Vec<u8>,
    pub media_type: String,
    /// Config first, then layers.
    pub blobs: Vec<PushBlob>,
}

/// Where to push.
pub struct PushRequest<'a> {
    /// Repository path, e.g. `team/app`.
    pub repo: &'a str,
    /// The tag (or digest) to put the manifest under.
    pub reference: &'a str,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Blobs larger than this are uploaded in chunks of this size.
    pub chunk_size: u64,
    /// Other repositories of this registry known to hold a blob.
    pub mount_sources: &'a (dyn Fn(&str) -> Vec<String> + Sync),
}

/// The result of a push.
#[derive(Debug)]
pub struct Pushed {
    /// The manifest's digest, as the registry confirmed it.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// Per blob (in [`PushImage::blobs`] order): what happened to it.
    pub blobs: Vec<(String, BlobState)>,
}

/// Pushes `image` to `req.repo` on `client`'s registry.
pub fn push(
    client: &Client,
    image: &PushImage,
    req: &PushRequest<'_>,
    progress: &dyn Progress,
) -> Result<Pushed, RegistryError> {
    client.add_scope(&format!("repository:{}:pull,push", req.repo));
    let mut sources: Vec<Vec<String>> = Vec::new();
    for b in &image.blobs {
        let from: Vec<String> = (req.mount_sources)(&b.digest)
            .into_iter()
            .filter(|r| r != req.repo)
            .collect();
        for r in &from {
            client.add_scope(&format!("repository:{r}:pull"));
        }
        sources.push(from);
    }
    let items: Vec<(usize, &PushBlob)> = image.blobs.iter().enumerate().collect();
    let states = std::sync::Mutex::new(vec![BlobState::Waiting; image.blobs.len()]);
    for b in &image.blobs {
        progress.blob(&b.digest, b.size, BlobState::Waiting);
    }
    workers::for_each(&items, req.jobs, |(i, blob), _| {
        let state = upload_with_retries(client, req, blob, &sources[*i], progress);
        match state {
            Ok(s) => {
                progress.blob(&blob.digest, blob.size, s.clone());
                states.lock().unwrap_or_else(|e| e.into_inner())[*i] = s;
                Ok(())
            }
            Err(e) => {
                progress.blob(&blob.digest, blob.size, BlobState::Failed);
                Err(e)
            }
        }
    })?;
    let digest = put_manifest(client, req.repo, req.reference, image)?;
    let states = states.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Pushed {
        digest,
        size: image.manifest.len() as u64,
        blobs: image
            .blobs
            .iter()
            .map(|b| b.digest.clone())
            .zip(states)
            .collect(),
    })
}

/// `PUT /v2/<repo>/manifests/<reference>`; returns the manifest digest.
pub fn put_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    image: &PushImage,
) -> Result<String, RegistryError> {
    let digest = berth_image::sha256_digest(&image.manifest);
    let what = format!("manifest for {}/{repo}:{reference}", client.registry());
    let url = format!("{}/v2/{repo}/manifests/{reference}", client.base_url());
    let headers = [("Content-Type", image.media_type.as_str())];
    let resp = client.request("PUT", &url, &headers, Body::Bytes(&image.manifest), &what)?;
    let resp = check(resp, &what)?;
    if let Some(said) = header(&resp, "docker-content-digest") {
        if said != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest,
                actual: said.to_owned(),
            });
        }
    }
    Ok(digest)
}

fn upload_with_retries(
    client: &Client,
    req: &PushRequest<'_>,
    blob: &PushBlob,
    sources: &[String],
    progress: &dyn Progress,
) -> Result<BlobState, RegistryError> {
    let mut attempt = 0;
    loop {
        match upload(client, req, blob, sources, progress) {
            Err(e) if e.is_transient() && attempt < client.retries() => {
                attempt += 1;
                progress.blob(
                    &blob.digest,
                    blob.size,
                    BlobState::Retrying {
                        attempt,
                        error: e.to_string(),
                    },
                );
                std::thread::sleep(backoff(attempt));
            }
            other => return other,
        }
    }
}

/// Resolves a `Location` header against the registry's base URL.
fn location(
    client: &Client,
    resp: &ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<String, RegistryError> {
    let loc = header(resp, "location").ok_or_else(|| RegistryError::Protocol {
        what: what.to_owned(),
        detail: "the registry's answer has no Location header".into(),
    })?;
    Ok(
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_owned()
        } else {
            format!("{}{loc}", client.base_url())
        },
    )
}

fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Counts bytes read, reporting progress.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    blob: &'a PushBlob,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 512 * 1024 || (n > 0 && self.done == self.blob.size) {
            self.reported = self.done;
            let state = BlobState::Transferring { done: self.done };
            self.progress.blob(&self.blob.digest, self.blob.size, state);
        }
        Ok(n)
    }
}

fn upload(
    client: &Client,
    req: &PushRequest<'_>,
    blob: &PushBlob,
    sources: &[String],
    progress: &dyn Progress,
) -> Result<BlobState, RegistryError> {
    let repo = req.repo;
    let what = format!("blob {} to {}/{repo}", blob.digest, client.registry());
    let base = format!("{}/v2/{repo}/blobs", client.base_url());
    match client.get("HEAD", &format!("{base}/{}", blob.digest), &[], &what) {
        Ok(_) => return Ok(BlobState::Exists),
        Err(RegistryError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let mut upload_url = None;
    if let Some(from) = sources.first() {
        let url = format!("{base}/uploads/?mount={}&from={from}", blob.digest);
        let resp = check(
            client.request("POST", &url, &[], Body::Empty, &what)?,
            &what,
        )?;
        if resp.status().as_u16() == 201 {
            return Ok(BlobState::Mounted { from: from.clone() });
        }
        // 202: the registry could not mount and opened an upload instead.
        upload_url = Some(location(client, &resp, &what)?);
    }
    let mut url = match upload_url {
        Some(u) => u,
        None => {
            let resp =
                client.request("POST", &format!("{base}/uploads/"), &[], Body::Empty, &what)?;
            location(client, &check(resp, &what)?, &what)?
        }
    };
    let open = |op| {
        move |error| RegistryError::Io {
            op,
            path: blob.path.clone(),
            error,
        }
    };
    let mut file = File::open(&blob.path).map_err(open("open"))?;
    let octet = ("Content-Type", "application/octet-stream");
    let digest_query = format!("digest={}", blob.digest);
    let mut reader = Counting {
        inner: &mut file,
        done: 0,
        reported: 0,
        blob,
        progress,
    };
    if blob.size <= req.chunk_size {
        let mut body = (&mut reader).take(blob.size);
        let resp = client.request(
            "PUT",
            &with_query(&url, &digest_query),
            &[octet],
            Body::Reader(&mut body, blob.size),
            &what,
        )?;
        check(resp, &what)?;
        return Ok(BlobState::Pushed);
    }
    let mut start = 0;
    while start < blob.size {
        let len = req.chunk_size.min(blob.size - start);
        reader
            .inner
            .seek(SeekFrom::Start(start))
            .map_err(open("read"))?;
        reader.done = start;
        let range = format!("{}-{}", start, start + len - 1);
        let mut body = (&mut reader).take(len);
        let resp = client.request(
            "PATCH",
            &url,
            &[octet, ("Content-Range", range.as_str())],
            Body::Reader(&mut body, len),
            &what,
        )?;
        let resp = check(resp, &what)?;
        url = location(client, &resp, &what)?;
        start += len;
    }
    let resp = client.request(
        "PUT",
        &with_query(&url, &digest_query),
        &[],
        Body::Empty,
        &what,
    )?;
    check(resp, &what)?;
    Ok(BlobState::Pushed)
}
