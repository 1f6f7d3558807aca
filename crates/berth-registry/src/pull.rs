//! Pulling an image into the content store: resolve the reference to a
//! manifest (through an index, for the requested platform), fetch and
//! check the config, then download the missing layers in parallel, each
//! verified and unpacked as it arrives, and commit all at once.

use std::io::Read;

use berth_image::{ImportedImage, IngestImage, LayerOutcome, Store};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::blob::BlobReader;
use crate::client::{header, Client};
use crate::manifest::{self, Manifest, Platform, MAX_MANIFEST_SIZE};
use crate::progress::{BlobState, Progress};
use crate::{workers, RegistryError};

/// What to pull.
#[derive(Clone, Debug)]
pub struct PullRequest<'a> {
    /// Repository path, e.g. `library/busybox`.
    pub repo: &'a str,
    /// A tag or a digest.
    pub reference: &'a str,
    /// The platform to pick from an index. `None`: this host's, and a
    /// single-platform image is taken whatever its platform.
    pub platform: Option<Platform>,
    /// Layers downloaded at once.
    pub jobs: usize,
}

/// A pulled image.
#[derive(Debug)]
pub struct Pulled {
    /// The image as committed to the store.
    pub image: ImportedImage,
    /// Digest of what the reference names (an index or a manifest).
    pub digest: String,
    /// The platform of the image's config, e.g. `linux/amd64`.
    pub platform: String,
    /// Layers fetched from the registry (the others were in the store).
    pub downloaded: usize,
}

/// A manifest as fetched: bytes, `Content-Type`, digest.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: String,
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

/// `GET /v2/<repo>/manifests/<reference>`, size-limited and checked
/// against the digest asked for (or the one the registry announces).
pub fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
) -> Result<Fetched, RegistryError> {
    let sep = if is_digest(reference) { '@' } else { ':' };
    let what = format!("manifest for {}/{repo}{sep}{reference}", client.registry());
    let url = format!("{}/v2/{repo}/manifests/{reference}", client.base_url());
    let mut resp = client.get("GET", &url, &[("Accept", manifest::ACCEPT)], &what)?;
    let too_large = |size| RegistryError::TooLarge {
        what: what.clone(),
        size,
        limit: MAX_MANIFEST_SIZE,
    };
    if let Some(len) = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        if len > MAX_MANIFEST_SIZE {
            return Err(too_large(len));
        }
    }
    let content_type = header(&resp, "content-type").map(str::to_owned);
    let announced = header(&resp, "docker-content-digest").map(str::to_owned);
    let bytes = match resp
        .body_mut()
        .with_config()
        .limit(MAX_MANIFEST_SIZE)
        .read_to_vec()
    {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(n)) => {
            return Err(too_large(n.max(MAX_MANIFEST_SIZE + 1)))
        }
        Err(e) => {
            return Err(RegistryError::Transport {
                what,
                detail: e.to_string(),
            })
        }
    };
    let digest = berth_image::sha256_digest(&bytes);
    let expected = if is_digest(reference) {
        Some(reference.to_owned())
    } else {
        announced.filter(|d| d.starts_with("sha256:"))
    };
    if let Some(expected) = expected {
        if expected != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected,
                actual: digest,
            });
        }
    }
    Ok(Fetched {
        bytes,
        content_type,
        digest,
    })
}

/// Resolves `req` to an image manifest: `(manifest, its bytes, its digest,
/// the digest the reference names)`.
fn resolve(
    client: &Client,
    req: &PullRequest<'_>,
) -> Result<(ImageManifest, Vec<u8>, String, String), RegistryError> {
    let sep = if is_digest(req.reference) { '@' } else { ':' };
    let name = format!("{}/{}{sep}{}", client.registry(), req.repo, req.reference);
    let top = fetch_manifest(client, req.repo, req.reference)?;
    let what = format!("manifest for {name}");
    match manifest::parse(&what, &top.bytes, top.content_type.as_deref())? {
        Manifest::Image(m, _) => Ok((*m, top.bytes, top.digest.clone(), top.digest)),
        Manifest::Index(index, _) => {
            let platform = req.platform.clone().unwrap_or_else(Platform::host);
            let desc = manifest::select(&format!("image index {name}"), &index, &platform)?;
            let digest = desc.digest().to_string();
            let inner = fetch_manifest(client, req.repo, &digest)?;
            let what = format!("manifest {digest} of {name}");
            match manifest::parse(&what, &inner.bytes, inner.content_type.as_deref())? {
                Manifest::Image(m, _) => Ok((*m, inner.bytes, inner.digest, top.digest)),
                Manifest::Index(_, mt) => Err(RegistryError::UnsupportedMediaType {
                    what: format!("{what} (an index inside an index)"),
                    media_type: mt,
                }),
            }
        }
    }
}

/// Fetches a small blob (a config) whole, verified.
fn fetch_small_blob(
    client: &Client,
    repo: &str,
    what: &str,
    digest: &str,
    size: u64,
    progress: &dyn Progress,
) -> Result<Vec<u8>, RegistryError> {
    if size > MAX_MANIFEST_SIZE {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            size,
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    BlobReader::new(client, repo, digest, size, progress)
        .take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::Transport {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    let actual = berth_image::sha256_digest(&bytes);
    if actual != digest || bytes.len() as u64 != size {
        return Err(RegistryError::DigestMismatch {
            what: what.to_owned(),
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(bytes)
}

/// One layer to fetch.
struct Job {
    digest: String,
    size: u64,
    diff_id: String,
}

/// Pulls `req` from `client`'s registry into `store`.
pub fn pull(
    client: &Client,
    store: &Store,
    req: &PullRequest<'_>,
    progress: &dyn Progress,
) -> Result<Pulled, RegistryError> {
    client.add_scope(&format!("repository:{}:pull", req.repo));
    let (manifest, manifest_bytes, manifest_digest, digest) = resolve(client, req)?;
    let name = format!("{}/{}", client.registry(), req.repo);
    let what = format!("manifest {manifest_digest} of {name}");
    manifest::check_image(&what, &manifest)?;

    let cdesc = manifest.config();
    let config_digest = cdesc.digest().to_string();
    berth_image::sha256_hex(&config_digest)?;
    let cwhat = format!("config {config_digest} of {name}");
    let config_bytes = fetch_small_blob(
        client,
        req.repo,
        &cwhat,
        &config_digest,
        cdesc.size(),
        &crate::NoProgress,
    )?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|error| RegistryError::InvalidJson {
            what: cwhat.clone(),
            error,
        })?;
    let platform = Platform {
        os: config.os().to_string(),
        arch: config.architecture().to_string(),
        variant: config.variant().clone(),
    };
    if let Some(want) = &req.platform {
        if digest == manifest_digest
            && !want.accepts_config(&platform.os, &platform.arch, platform.variant.as_deref())
        {
            return Err(RegistryError::PlatformMismatch {
                what: format!("{name}@{digest}"),
                platform: want.to_string(),
                actual: platform.to_string(),
            });
        }
    }
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(RegistryError::Protocol {
            what,
            detail: format!(
                "{} layers but its config lists {} diff ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let layers: Vec<(String, u64)> = manifest
        .layers()
        .iter()
        .map(|l| (l.digest().to_string(), l.size()))
        .collect();

    let ingest = store.begin_ingest()?;
    ingest.add_blob(&what, &manifest_bytes, &manifest_digest)?;
    ingest.add_blob(&cwhat, &config_bytes, &config_digest)?;
    let mut jobs: Vec<Job> = Vec::new();
    for ((digest, size), diff_id) in layers.iter().zip(&diff_ids) {
        berth_image::sha256_hex(digest)?;
        berth_image::sha256_hex(diff_id)?;
        if jobs.iter().any(|j| &j.digest == digest) {
            continue;
        }
        if store.has_layer_blob(digest, diff_id) {
            progress.blob(digest, *size, BlobState::Exists);
            continue;
        }
        progress.blob(digest, *size, BlobState::Waiting);
        jobs.push(Job {
            digest: digest.clone(),
            size: *size,
            diff_id: diff_id.clone(),
        });
    }
    workers::for_each(&jobs, req.jobs, |job, cancel| {
        let result = fetch_layer(client, &ingest, req.repo, job, cancel, progress).map(|_| ());
        progress.blob(
            &job.digest,
            job.size,
            if result.is_ok() {
                BlobState::Pulled
            } else {
                BlobState::Failed
            },
        );
        result
    })?;
    let image = ingest.commit(IngestImage {
        manifest_digest,
        config_digest,
        config_json: config_bytes,
        layers,
        diff_ids,
    })?;
    Ok(Pulled {
        image,
        digest,
        platform: platform.to_string(),
        downloaded: jobs.len(),
    })
}

fn fetch_layer(
    client: &Client,
    ingest: &berth_image::Ingest<'_>,
    repo: &str,
    job: &Job,
    cancel: &std::sync::atomic::AtomicBool,
    progress: &dyn Progress,
) -> Result<LayerOutcome, RegistryError> {
    // A blob the store has (its layer missing or not known to match) is
    // read from disk rather than fetched again.
    if let Some(file) = ingest
        .store()
        .blob_path(&job.digest)
        .ok()
        .filter(|p| p.is_file())
        .and_then(|p| std::fs::File::open(p).ok())
    {
        return Ok(ingest.add_layer(file, &job.digest, job.size, &job.diff_id)?);
    }
    let reader = BlobReader::new(client, repo, &job.digest, job.size, progress).cancel_on(cancel);
    Ok(ingest.add_layer(reader, &job.digest, job.size, &job.diff_id)?)
}
