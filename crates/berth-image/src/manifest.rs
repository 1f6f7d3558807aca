//! Reading the image list of a staged archive: an OCI image layout
//! (`index.json`, possibly with nested indexes) or a `docker save`
//! `manifest.json`. The result is one [`Plan`] per image, every blob it
//! names already checked against its digest.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::digest::sha256_hex;
use crate::staging::{Staged, Staging};
use crate::ImageError;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYERS: &[&str] = &[
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
/// Index annotation with the full image name (containerd, docker 25+).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Index annotation with the reference (often only a tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A blob to keep in the store.
#[derive(Clone, Debug)]
pub(crate) struct BlobRef {
    pub digest: String,
    pub path: PathBuf,
    pub in_store: bool,
    pub size: u64,
}

impl BlobRef {
    fn new(digest: &str, s: &Staged) -> Self {
        BlobRef {
            digest: digest.to_owned(),
            path: s.path.clone(),
            in_store: s.in_store,
            size: s.size,
        }
    }
}

/// One image to import.
pub(crate) struct Plan {
    pub manifest_digest: Option<String>,
    pub names: Vec<String>,
    pub config_digest: String,
    pub config: ImageConfiguration,
    pub config_json: Vec<u8>,
    pub diff_ids: Vec<String>,
    /// Layer blobs, in manifest order (parallel to `diff_ids`).
    pub layers: Vec<BlobRef>,
    /// Index, manifest and config blobs to keep.
    pub meta_blobs: Vec<BlobRef>,
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn is_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest) || mt.as_ref() == DOCKER_MANIFEST
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.as_ref() == DOCKER_MANIFEST_LIST
}

fn is_layer(mt: &MediaType) -> bool {
    matches!(
        mt,
        MediaType::ImageLayer
            | MediaType::ImageLayerGzip
            | MediaType::ImageLayerZstd
            | MediaType::ImageLayerNonDistributable
            | MediaType::ImageLayerNonDistributableGzip
            | MediaType::ImageLayerNonDistributableZstd
    ) || DOCKER_LAYERS.contains(&mt.as_ref())
}

fn unsupported(what: &str, mt: &MediaType) -> ImageError {
    ImageError::UnsupportedMediaType {
        what: what.to_owned(),
        media_type: mt.to_string(),
    }
}

/// Whether a manifest of a nested index suits this host.
fn suits_host(d: &Descriptor) -> bool {
    let attestation = d
        .annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest");
    let platform_ok = d.platform().as_ref().is_none_or(|p| {
        p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
    });
    !attestation && platform_ok && (is_manifest(d.media_type()) || is_index(d.media_type()))
}

/// Follows nested indexes to the manifest for this host.
fn resolve(
    st: &Staging,
    desc: &Descriptor,
    blobs: &mut Vec<BlobRef>,
    depth: u32,
) -> Result<Descriptor, ImageError> {
    let mt = desc.media_type();
    if is_manifest(mt) {
        return Ok(desc.clone());
    }
    let what = format!("index {}", desc.digest());
    if !is_index(mt) {
        return Err(unsupported(&format!("descriptor {}", desc.digest()), mt));
    }
    if depth >= 4 {
        return Err(ImageError::Corrupt(format!(
            "{what} nests indexes too deeply"
        )));
    }
    let digest = desc.digest().to_string();
    let staged = st.blob(&what, &digest, Some(desc.size()))?;
    let (index, _): (ImageIndex, _) = st.json(&what, staged)?;
    blobs.push(BlobRef::new(&digest, staged));
    let present = |d: &&Descriptor| {
        sha256_hex(d.digest().as_ref())
            .is_ok_and(|hex| st.find(&format!("blobs/sha256/{hex}")).is_some())
    };
    let chosen = index
        .manifests()
        .iter()
        .filter(|d| suits_host(d))
        .find(present);
    match chosen {
        Some(d) => resolve(st, d, blobs, depth + 1),
        None => Err(ImageError::NoMatchingPlatform {
            what,
            platform: format!("linux/{}", host_arch()),
        }),
    }
}

/// Config blob: parsed, with its diff ids checked.
fn read_config(
    st: &Staging,
    what: &str,
    staged: &Staged,
) -> Result<(ImageConfiguration, Vec<u8>, Vec<String>), ImageError> {
    let (config, raw): (ImageConfiguration, _) = st.json(what, staged)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    for d in &diff_ids {
        sha256_hex(d)?;
    }
    Ok((config, raw, diff_ids))
}

fn oci_plan(st: &Staging, desc: &Descriptor, names: Vec<String>) -> Result<Plan, ImageError> {
    let mut meta_blobs = Vec::new();
    let desc = resolve(st, desc, &mut meta_blobs, 0)?;
    let manifest_digest = desc.digest().to_string();
    let what = format!("manifest {manifest_digest}");
    let staged = st.blob(&what, &manifest_digest, Some(desc.size()))?;
    let (manifest, _): (ImageManifest, _) = st.json(&what, staged)?;
    meta_blobs.push(BlobRef::new(&manifest_digest, staged));

    let cdesc = manifest.config();
    let config_digest = cdesc.digest().to_string();
    let cwhat = format!("config {config_digest}");
    let cmt = cdesc.media_type();
    if !matches!(cmt, MediaType::ImageConfig) && cmt.as_ref() != DOCKER_CONFIG {
        return Err(unsupported(&cwhat, cmt));
    }
    let cstaged = st.blob(&cwhat, &config_digest, Some(cdesc.size()))?;
    let (config, config_json, diff_ids) = read_config(st, &cwhat, cstaged)?;
    meta_blobs.push(BlobRef::new(&config_digest, cstaged));

    if manifest.layers().len() != diff_ids.len() {
        return Err(ImageError::LayerCountMismatch {
            what,
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for l in manifest.layers() {
        let digest = l.digest().to_string();
        let lwhat = format!("layer {digest}");
        if !is_layer(l.media_type()) {
            return Err(unsupported(&lwhat, l.media_type()));
        }
        let staged = st.blob(&lwhat, &digest, Some(l.size()))?;
        layers.push(BlobRef::new(&digest, staged));
    }
    Ok(Plan {
        manifest_digest: Some(manifest_digest),
        names,
        config_digest,
        config,
        config_json,
        diff_ids,
        layers,
        meta_blobs,
    })
}

/// One entry of docker save's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn docker_manifest(st: &Staging) -> Result<Option<Vec<DockerEntry>>, ImageError> {
    match st.find("manifest.json") {
        Some(s) => Ok(Some(st.json("manifest.json", s)?.0)),
        None => Ok(None),
    }
}

fn docker_plan(st: &Staging, entry: &DockerEntry) -> Result<Plan, ImageError> {
    let cstaged = st.file("config", &entry.config)?;
    let config_digest = cstaged.digest.clone();
    let cwhat = format!("config {config_digest}");
    let (config, config_json, diff_ids) = read_config(st, &cwhat, cstaged)?;
    if entry.layers.len() != diff_ids.len() {
        return Err(ImageError::LayerCountMismatch {
            what: format!("image {config_digest}"),
            layers: entry.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let staged = st.file(&format!("layer {diff_id}"), path)?;
        layers.push(BlobRef::new(&staged.digest.clone(), staged));
    }
    Ok(Plan {
        manifest_digest: None,
        names: entry.repo_tags.clone().unwrap_or_default(),
        config_digest: config_digest.clone(),
        config,
        config_json,
        diff_ids,
        layers,
        meta_blobs: vec![BlobRef::new(&config_digest, cstaged)],
    })
}

fn add_plan(plans: &mut Vec<Plan>, plan: Plan) {
    let key = |p: &Plan| {
        p.manifest_digest
            .clone()
            .unwrap_or_else(|| p.config_digest.clone())
    };
    let k = key(&plan);
    match plans.iter_mut().find(|p| key(p) == k) {
        Some(p) => {
            for n in plan.names {
                if !p.names.contains(&n) {
                    p.names.push(n);
                }
            }
        }
        None => plans.push(plan),
    }
}

/// Reads the images of a staged archive.
pub(crate) fn plans(st: &Staging) -> Result<Vec<Plan>, ImageError> {
    let mut plans = Vec::new();
    if let Some(staged) = st.find("index.json") {
        let (index, _): (ImageIndex, _) = st.json("index.json", staged)?;
        for desc in index.manifests() {
            let ann = desc.annotations().as_ref();
            let name = ann
                .and_then(|a| a.get(ANNOTATION_IMAGE_NAME))
                .or_else(|| ann.and_then(|a| a.get(ANNOTATION_REF_NAME)));
            let names = name.into_iter().cloned().collect();
            add_plan(&mut plans, oci_plan(st, desc, names)?);
        }
        // docker 25+ writes both; its manifest.json has the RepoTags.
        let tags: HashMap<String, Vec<String>> = match docker_manifest(st) {
            Ok(Some(entries)) => entries
                .into_iter()
                .filter_map(|e| Some((st.find(&e.config)?.digest.clone(), e.repo_tags?)))
                .collect(),
            _ => HashMap::new(),
        };
        for p in plans.iter_mut().filter(|p| p.names.is_empty()) {
            if let Some(t) = tags.get(&p.config_digest) {
                p.names = t.clone();
            }
        }
    } else if let Some(entries) = docker_manifest(st)? {
        for entry in &entries {
            add_plan(&mut plans, docker_plan(st, entry)?);
        }
    } else {
        return Err(ImageError::UnknownFormat);
    }
    if plans.is_empty() {
        return Err(ImageError::NoImages);
    }
    Ok(plans)
}
