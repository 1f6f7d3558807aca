//! Images for registry tests and benchmarks: a multi-platform image (an
//! OCI image index with one manifest per architecture) and a large
//! multi-layer image.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Value};

use crate::archive::{
    config_json, image_bytes, sha256_hex, split_name, LayerBlob, Outer, MT_INDEX, MT_MANIFEST,
};
use crate::layers::{busybox_layer, Layer};
use crate::ImageSpec;

/// The file each platform's image of [`multiarch_bytes`] carries.
pub(crate) const ARCH_FILE: &str = "etc/berth-arch";

/// The OCI variant an architecture's descriptor names.
fn variant(arch: &str) -> Option<&'static str> {
    match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(data)),
        "size": data.len(),
    })
}

/// See [`crate::multiarch_image`].
pub(crate) fn multiarch_bytes(spec: &ImageSpec, archs: &[&str]) -> Result<Vec<u8>> {
    let base = LayerBlob::new(
        busybox_layer()?,
        spec.compression,
        "berth-fixtures: busybox",
    )?;
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut manifests = Vec::new();
    for arch in archs {
        let mut l = Layer::new();
        l.dir("etc/", 0o755, 0, 0)?;
        l.file(ARCH_FILE, 0o644, format!("{arch}\n").as_bytes())?;
        let marker = LayerBlob::new(l.finish()?, spec.compression, "berth-fixtures: arch marker")?;
        let layers = vec![
            LayerBlob {
                media_type: base.media_type,
                data: base.data.clone(),
                digest: base.digest.clone(),
                diff_id: base.diff_id.clone(),
                created_by: base.created_by.clone(),
            },
            marker,
        ];
        let arch_spec = ImageSpec {
            arch: (*arch).to_owned(),
            ..spec.clone()
        };
        let config = config_json(&arch_spec, &layers)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": descriptor(crate::archive::MT_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(l.media_type, &l.data)).collect::<Vec<_>>(),
        }))?;
        let mut desc = descriptor(MT_MANIFEST, &manifest);
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant(arch) {
            platform["variant"] = json!(v);
        }
        desc["platform"] = platform;
        manifests.push(desc);
        for l in layers {
            blobs.insert(l.digest.clone(), l.data);
        }
        blobs.insert(sha256_hex(&config), config);
        blobs.insert(sha256_hex(&manifest), manifest);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": manifests,
    }))?;
    let (_, tag) = split_name(&spec.name);
    let mut top = descriptor(MT_INDEX, &index);
    top["annotations"] = json!({
        "io.containerd.image.name": spec.name,
        "org.opencontainers.image.ref.name": tag,
    });
    blobs.insert(sha256_hex(&index), index);
    let layout = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [top],
    }))?;
    let mut out = Outer::new();
    out.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    out.file("index.json", &layout)?;
    out.dir("blobs")?;
    out.dir("blobs/sha256")?;
    for (hex, data) in &blobs {
        out.file(&format!("blobs/sha256/{hex}"), data)?;
    }
    out.finish()
}

/// A deterministic pseudo-random stream (xorshift64*).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// See [`crate::big_image`].
pub(crate) fn big_bytes(spec: &ImageSpec, layers: usize, layer_mib: usize) -> Result<Vec<u8>> {
    const FILE: usize = 4 << 20;
    let by = format!("berth-fixtures: {layer_mib} MiB of data");
    let mut tars = vec![(busybox_layer()?, "berth-fixtures: busybox")];
    for n in 0..layers {
        let mut l = Layer::new();
        let dir = format!("data/layer{n}");
        l.dir("data/", 0o755, 0, 0)?;
        l.dir(&format!("{dir}/"), 0o755, 0, 0)?;
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
        let files = (layer_mib << 20).div_ceil(FILE);
        for f in 0..files {
            let mut data = vec![0u8; FILE];
            if f % 2 == 0 {
                noise.fill(&mut data);
            } else {
                let mut text = Vec::with_capacity(FILE + 100);
                let mut i = 0;
                while text.len() < FILE {
                    text.extend_from_slice(
                        format!("layer {n} file {f} line {i}: the quick brown fox jumps over the lazy dog\n")
                            .as_bytes(),
                    );
                    i += 1;
                }
                text.truncate(FILE);
                data = text;
            }
            l.file(&format!("{dir}/file{f:03}"), 0o644, &data)?;
        }
        tars.push((l.finish()?, by.as_str()));
    }
    image_bytes(spec, tars)
}
