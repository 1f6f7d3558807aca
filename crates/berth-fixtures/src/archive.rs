//! Image archives (OCI image layout and `docker save`) around layer tarballs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::layers::{CREATED, MTIME};
use crate::{Compression, Format, ImageSpec};

pub(crate) const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// One layer as stored in an archive.
pub(crate) struct LayerBlob {
    pub(crate) media_type: &'static str,
    /// The bytes stored in the archive.
    pub(crate) data: Vec<u8>,
    /// Hex sha256 claimed for `data` (in the manifest and as the file name).
    pub(crate) digest: String,
    /// Hex sha256 of the uncompressed tar, as listed in the config.
    pub(crate) diff_id: String,
    pub(crate) created_by: String,
}

impl LayerBlob {
    pub(crate) fn new(tar: Vec<u8>, compression: Compression, created_by: &str) -> Result<Self> {
        let diff_id = sha256_hex(&tar);
        let (media_type, data) = match compression {
            Compression::None => (MT_LAYER_TAR, tar),
            Compression::Gzip => {
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::default());
                enc.write_all(&tar).context("gzip layer")?;
                (MT_LAYER_GZIP, enc.finish().context("gzip layer")?)
            }
            Compression::Zstd => (
                MT_LAYER_ZSTD,
                zstd::bulk::compress(&tar, 3).context("zstd layer")?,
            ),
        };
        Ok(Self {
            media_type,
            digest: sha256_hex(&data),
            data,
            diff_id,
            created_by: created_by.to_string(),
        })
    }
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<String, Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'static str,
    created_by: &'a str,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'static str,
    architecture: &'a str,
    os: &'static str,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
struct Platform<'a> {
    architecture: &'a str,
    os: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform<'a>>,
}

impl<'a> Descriptor<'a> {
    fn new(media_type: &'a str, hex: &str, size: usize) -> Self {
        Self {
            media_type,
            digest: format!("sha256:{hex}"),
            size: size as u64,
            annotations: None,
            platform: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Splits `repo[:tag]` (the tag is after the last `:` that follows the last
/// `/`, so `host:5000/x` has no tag); the default tag is `latest`.
pub(crate) fn split_name(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "latest"),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).context("serializing JSON")
}

/// The image config JSON (shared by both archive formats).
pub(crate) fn config_json(spec: &ImageSpec, layers: &[LayerBlob]) -> Result<Vec<u8>> {
    let exposed_ports = spec
        .exposed_ports
        .iter()
        .map(|p| {
            let p = if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            };
            (p, Empty {})
        })
        .collect();
    let config = ImageConfig {
        created: CREATED,
        architecture: &spec.arch,
        os: "linux",
        config: RunConfig {
            user: spec.user.as_deref(),
            exposed_ports,
            env: (!spec.env.is_empty()).then_some(spec.env.as_slice()),
            entrypoint: spec.entrypoint.as_deref(),
            cmd: spec.cmd.as_deref(),
            working_dir: spec.workdir.as_deref(),
            labels: (!spec.labels.is_empty()).then_some(&spec.labels),
            stop_signal: spec.stop_signal.as_deref(),
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers
                .iter()
                .map(|l| format!("sha256:{}", l.diff_id))
                .collect(),
        },
        history: layers
            .iter()
            .map(|l| History {
                created: CREATED,
                created_by: &l.created_by,
            })
            .collect(),
    };
    to_json(&config)
}

/// The outer archive, with deterministic metadata on every entry.
pub(crate) struct Outer {
    builder: tar::Builder<Vec<u8>>,
    written: BTreeSet<String>,
}

impl Outer {
    pub(crate) fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
            written: BTreeSet::new(),
        }
    }

    fn entry(&mut self, kind: EntryType, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .with_context(|| format!("writing {path} into the image archive"))
    }

    pub(crate) fn dir(&mut self, path: &str) -> Result<()> {
        self.entry(EntryType::Directory, path, 0o755, b"")
    }

    /// Writes a file and returns the offset of its data in the archive.
    pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> Result<usize> {
        let header_at = self.builder.get_ref().len();
        self.entry(EntryType::Regular, path, 0o644, data)?;
        // Names here are short, so there is exactly one 512-byte header.
        Ok(header_at + 512)
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        self.builder.into_inner().context("finishing image archive")
    }
}

/// An OCI archive and where each layer blob's bytes start in it.
pub(crate) struct OciArchive {
    pub(crate) bytes: Vec<u8>,
    pub(crate) layer_offsets: Vec<usize>,
}

/// An OCI image layout as a tar: `oci-layout`, `index.json`, then
/// `blobs/sha256/` with the manifest, the config and the layers (in that
/// order). `index_override` replaces the `index.json` bytes.
pub(crate) fn oci_archive(
    spec: &ImageSpec,
    layers: &[LayerBlob],
    index_override: Option<&[u8]>,
) -> Result<OciArchive> {
    let config = config_json(spec, layers)?;
    let config_hex = sha256_hex(&config);
    let manifest = to_json(&Manifest {
        schema_version: 2,
        media_type: MT_MANIFEST,
        config: Descriptor::new(MT_CONFIG, &config_hex, config.len()),
        layers: layers
            .iter()
            .map(|l| Descriptor::new(l.media_type, &l.digest, l.data.len()))
            .collect(),
    })?;
    let manifest_hex = sha256_hex(&manifest);
    let (_, tag) = split_name(&spec.name);
    let mut desc = Descriptor::new(MT_MANIFEST, &manifest_hex, manifest.len());
    desc.annotations = Some(BTreeMap::from([
        ("io.containerd.image.name", spec.name.clone()),
        ("org.opencontainers.image.ref.name", tag.to_string()),
    ]));
    desc.platform = Some(Platform {
        architecture: &spec.arch,
        os: "linux",
    });
    let index = to_json(&Index {
        schema_version: 2,
        media_type: MT_INDEX,
        manifests: vec![desc],
    })?;

    let mut out = Outer::new();
    out.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    out.file("index.json", index_override.unwrap_or(&index))?;
    out.dir("blobs")?;
    out.dir("blobs/sha256")?;
    out.file(&format!("blobs/sha256/{manifest_hex}"), &manifest)?;
    out.file(&format!("blobs/sha256/{config_hex}"), &config)?;
    let mut layer_offsets = Vec::new();
    for l in layers {
        layer_offsets.push(out.file(&format!("blobs/sha256/{}", l.digest), &l.data)?);
    }
    Ok(OciArchive {
        bytes: out.finish()?,
        layer_offsets,
    })
}

/// A `docker save` archive: one directory per layer (named by the sha256 of
/// the stored `layer.tar`, with `VERSION` and `json`), `<config hex>.json`,
/// `manifest.json` and `repositories`.
pub(crate) fn docker_archive(spec: &ImageSpec, layers: &[LayerBlob]) -> Result<Vec<u8>> {
    let config = config_json(spec, layers)?;
    let config_name = format!("{}.json", sha256_hex(&config));
    let (repo, tag) = split_name(&spec.name);
    let mut out = Outer::new();
    let mut parent: Option<&str> = None;
    for l in layers {
        let id = l.digest.as_str();
        out.dir(id)?;
        out.file(&format!("{id}/VERSION"), b"1.0")?;
        let mut v1 = serde_json::Map::new();
        v1.insert("id".into(), id.into());
        if let Some(p) = parent {
            v1.insert("parent".into(), p.into());
        }
        out.file(&format!("{id}/json"), &to_json(&v1)?)?;
        out.file(&format!("{id}/layer.tar"), &l.data)?;
        parent = Some(id);
    }
    out.file(&config_name, &config)?;
    let manifest = vec![DockerManifest {
        config: config_name.clone(),
        repo_tags: vec![format!("{repo}:{tag}")],
        layers: layers
            .iter()
            .map(|l| format!("{}/layer.tar", l.digest))
            .collect(),
    }];
    out.file("manifest.json", &to_json(&manifest)?)?;
    if let Some(top) = parent {
        let repos = BTreeMap::from([(repo, BTreeMap::from([(tag, top)]))]);
        out.file("repositories", &to_json(&repos)?)?;
    }
    out.finish()
}

/// Compresses the layer tars per `spec` and wraps them in `spec.format`.
pub(crate) fn image_bytes(spec: &ImageSpec, tars: Vec<(Vec<u8>, &str)>) -> Result<Vec<u8>> {
    let layers = tars
        .into_iter()
        .map(|(tar, by)| LayerBlob::new(tar, spec.compression, by))
        .collect::<Result<Vec<_>>>()?;
    match spec.format {
        Format::Oci => Ok(oci_archive(spec, &layers, None)?.bytes),
        Format::DockerSave => docker_archive(spec, &layers),
    }
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn names() {
        assert_eq!(split_name("busybox:latest"), ("busybox", "latest"));
        assert_eq!(split_name("busybox"), ("busybox", "latest"));
        assert_eq!(split_name("host:5000/a/b"), ("host:5000/a/b", "latest"));
        assert_eq!(split_name("host:5000/a/b:v1"), ("host:5000/a/b", "v1"));
    }
}
