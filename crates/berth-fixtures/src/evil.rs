//! Hostile image archives: each is an OCI layout whose first layer is the
//! busybox layer, so everything but the one planted defect is valid.

use anyhow::{bail, ensure, Result};
use tar::EntryType;

use crate::archive::{oci_archive, sha256_hex, LayerBlob};
use crate::layers::{busybox_layer, Layer};
use crate::{Compression, Evil, ImageSpec};

/// The file name every escape attempt tries to create outside the rootfs.
pub(crate) const ESCAPE_NAME: &str = "escaped-by-berth-test";

fn spec() -> ImageSpec {
    ImageSpec {
        name: "evil:latest".into(),
        ..ImageSpec::default()
    }
}

fn base(spec: &ImageSpec) -> Result<LayerBlob> {
    LayerBlob::new(
        busybox_layer()?,
        spec.compression,
        "berth-fixtures: busybox",
    )
}

/// The second, hostile layer for the path-escape kinds.
fn escape_layer(kind: Evil) -> Result<Vec<u8>> {
    let payload = b"written outside the rootfs by a berth test image\n";
    let inside = format!("evil/{ESCAPE_NAME}");
    let mut l = Layer::new();
    match kind {
        Evil::DotDot => {
            let name = format!("../{ESCAPE_NAME}");
            l.raw(EntryType::Regular, name.as_bytes(), b"", 0o644, payload)?;
        }
        Evil::AbsSymlinkWriteThrough => {
            l.symlink("evil", "/tmp")?;
            l.file(&inside, 0o644, payload)?;
        }
        Evil::RelSymlinkWriteThrough => {
            l.symlink("evil", "../../../../../../tmp")?;
            l.file(&inside, 0o644, payload)?;
        }
        Evil::HardlinkOutside => {
            l.raw(EntryType::Link, b"h", b"../../../../etc/passwd", 0o644, b"")?;
        }
        other => bail!("internal error: {other:?} is not a path-escape fixture"),
    }
    l.finish()
}

/// A small uncompressed layer holding one file, `payload`, with `content`.
fn payload_layer(content: &[u8]) -> Result<Vec<u8>> {
    let mut l = Layer::new();
    l.file("payload", 0o644, content)?;
    l.finish()
}

pub(crate) fn evil_bytes(kind: Evil) -> Result<Vec<u8>> {
    let spec = spec();
    let bytes = match kind {
        Evil::DotDot
        | Evil::AbsSymlinkWriteThrough
        | Evil::RelSymlinkWriteThrough
        | Evil::HardlinkOutside => {
            let bad = LayerBlob::new(escape_layer(kind)?, spec.compression, "evil layer")?;
            oci_archive(&spec, &[base(&spec)?, bad], None)?.bytes
        }
        Evil::BadLayerDigest => {
            // The manifest, config and file name describe the "good" layer;
            // the stored bytes are a same-sized "evil" layer.
            let mut layer =
                LayerBlob::new(payload_layer(b"good\n")?, Compression::None, "payload")?;
            let tampered = payload_layer(b"evil\n")?;
            ensure!(tampered.len() == layer.data.len());
            ensure!(sha256_hex(&tampered) != layer.digest);
            layer.data = tampered;
            oci_archive(&spec, &[base(&spec)?, layer], None)?.bytes
        }
        Evil::Truncated => {
            let layer = base(&spec)?;
            let half = layer.data.len() / 2;
            let archive = oci_archive(&spec, &[layer], None)?;
            let cut = archive.layer_offsets[0] + half;
            let mut bytes = archive.bytes;
            bytes.truncate(cut);
            bytes
        }
        Evil::NotJson => {
            let index = b"this is not JSON {\n";
            oci_archive(&spec, &[base(&spec)?], Some(index))?.bytes
        }
    };
    Ok(bytes)
}
