//! Manifests as registries serve them: OCI image manifests and indexes,
//! Docker schema 2 manifests and manifest lists; platform selection.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header of manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest or config berth accepts.
pub const MAX_MANIFEST_SIZE: u64 = berth_image::MAX_JSON_SIZE;

/// Layer media types berth can unpack.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// A parsed manifest and the media type it was served as.
#[derive(Debug)]
pub enum Manifest {
    Image(Box<ImageManifest>, String),
    Index(Box<ImageIndex>, String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
    #[serde(default)]
    schema_version: Option<u32>,
}

/// Parses a manifest body. The media type is the document's own
/// `mediaType`, else the `Content-Type` the registry sent, else what the
/// document's shape says.
pub fn parse(
    what: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Manifest, RegistryError> {
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let invalid = |error| RegistryError::InvalidJson {
        what: what.to_owned(),
        error,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(invalid)?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let media_type = match (probe.media_type, header) {
        (Some(m), _) => m,
        (None, Some(h)) => h,
        (None, None) if probe.schema_version == Some(1) => {
            "application/vnd.docker.distribution.manifest.v1+json".to_owned()
        }
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) if probe.layers.is_some() => OCI_MANIFEST.to_owned(),
        (None, None) => String::new(),
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Manifest::Image(
            Box::new(serde_json::from_slice(bytes).map_err(invalid)?),
            media_type,
        )),
        OCI_INDEX | DOCKER_LIST => Ok(Manifest::Index(
            Box::new(serde_json::from_slice(bytes).map_err(invalid)?),
            media_type,
        )),
        _ => Err(RegistryError::UnsupportedMediaType {
            what: what.to_owned(),
            media_type,
        }),
    }
}

/// Checks that an image manifest describes a container image berth can
/// unpack: a known config type and layer types.
pub fn check_image(what: &str, m: &ImageManifest) -> Result<(), RegistryError> {
    let config = m.config().media_type().to_string();
    if config != OCI_CONFIG && config != DOCKER_CONFIG {
        return Err(RegistryError::UnsupportedMediaType {
            what: format!("config of {what}"),
            media_type: config,
        });
    }
    for l in m.layers() {
        let mt = l.media_type().to_string();
        if !LAYER_TYPES.contains(&mt.as_str()) {
            return Err(RegistryError::UnsupportedMediaType {
                what: format!("layer {} of {what}", l.digest()),
                media_type: mt,
            });
        }
    }
    Ok(())
}

/// A platform: `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

fn norm_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armel" => "arm",
        "i386" | "i686" | "x86" => "386",
        "powerpc64le" | "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `arm64` has variant `v8` when none is named; others have none.
fn norm_variant(arch: &str, v: Option<&str>) -> Option<String> {
    match (arch, v) {
        ("arm64", None | Some("v8") | Some("")) => None,
        (_, Some("")) | (_, None) => None,
        (_, Some(v)) => Some(v.to_owned()),
    }
}

impl Platform {
    /// The platform of this host (`linux/amd64` on x86-64).
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            arch: norm_arch(std::env::consts::ARCH).to_owned(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, RegistryError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(RegistryError::InvalidPlatform(s.to_owned()));
        }
        let arch = norm_arch(&parts[1].to_lowercase()).to_owned();
        Ok(Platform {
            os: parts[0].to_lowercase(),
            variant: norm_variant(&arch, parts.get(2).copied()),
            arch,
        })
    }

    fn of(p: &oci_spec::image::Platform) -> Platform {
        let arch = norm_arch(&p.architecture().to_string()).to_owned();
        Platform {
            os: p.os().to_string(),
            variant: norm_variant(&arch, p.variant().as_deref()),
            arch,
        }
    }

    /// Whether an image for `other` runs here when `self` is asked for. A
    /// request without a variant takes any variant.
    fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.arch == other.arch
            && (self.variant.is_none() || self.variant == other.variant)
    }

    /// Whether an image config's `os`/`architecture`/`variant` fits.
    pub fn accepts_config(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let arch = norm_arch(arch);
        self.accepts(&Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
            variant: norm_variant(arch, variant),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The manifest of an index for `platform`: an exact variant match first,
/// then any variant (when none was asked for).
pub fn select<'i>(
    what: &str,
    index: &'i ImageIndex,
    platform: &Platform,
) -> Result<&'i Descriptor, RegistryError> {
    let candidates: Vec<(&Descriptor, Platform)> = index
        .manifests()
        .iter()
        .filter(|d| {
            let mt = d.media_type().to_string();
            mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
        })
        .filter_map(|d| d.platform().as_ref().map(|p| (d, Platform::of(p))))
        .collect();
    let exact = candidates
        .iter()
        .find(|(_, p)| p == platform)
        .or_else(|| candidates.iter().find(|(_, p)| platform.accepts(p)));
    match exact {
        Some((d, _)) => Ok(d),
        None => {
            let mut available: Vec<String> = candidates
                .iter()
                .filter(|(_, p)| p.os != "unknown")
                .map(|(_, p)| p.to_string())
                .collect();
            available.dedup();
            Err(RegistryError::NoMatchingPlatform {
                what: what.to_owned(),
                platform: platform.to_string(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"architecture":"amd64","os":"linux"}},
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},
      {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","size":1,"platform":{"architecture":"unknown","os":"unknown"}}]}"#;

    fn pick(p: &str) -> Result<String, RegistryError> {
        let Manifest::Index(idx, mt) = parse("x", INDEX.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(mt, DOCKER_LIST);
        select("x", &idx, &Platform::parse(p)?).map(|d| d.digest().to_string()[7..8].to_owned())
    }

    #[test]
    fn selects_platforms() {
        assert_eq!(pick("linux/amd64").unwrap(), "1");
        assert_eq!(pick("linux/x86_64").unwrap(), "1");
        assert_eq!(pick("linux/arm64").unwrap(), "3");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "3");
        assert_eq!(pick("linux/arm").unwrap(), "2");
        assert_eq!(pick("linux/arm/v7").unwrap(), "2");
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert_eq!(err, "x has no image for platform linux/s390x (it has: linux/amd64, linux/arm/v7, linux/arm64)");
        assert!(pick("linux").is_err());
        assert!(pick("linux/arm/v7/x").is_err());
    }

    #[test]
    fn rejects_bad_manifests() {
        let e = parse("m", b"<html>", Some("text/html")).unwrap_err();
        assert!(e.to_string().starts_with("m is not valid JSON"), "{e}");
        let e = parse("m", br#"{"schemaVersion":1,"name":"x"}"#, None).unwrap_err();
        assert!(e.to_string().contains("manifest.v1+json"), "{e}");
        let e = parse("m", br#"{"mediaType":"application/x-foo"}"#, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"m has unsupported media type "application/x-foo""#
        );
        let big = vec![b' '; MAX_MANIFEST_SIZE as usize + 1];
        assert!(matches!(
            parse("m", &big, None),
            Err(RegistryError::TooLarge { .. })
        ));
    }
}
