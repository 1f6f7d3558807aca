//! Registries: pull, push, login against Debian's `docker-registry` on
//! 127.0.0.1, loaded by berth itself and by `skopeo copy`, with a
//! fault-injecting proxy for what a real registry does not do on demand.

mod auth;
mod faults;
mod harness;
mod proxy;
mod pull;
mod push;

use std::path::PathBuf;

use berth_fixtures::{cached, multiarch_image, ImageSpec};

use crate::common::fixture_dir;

/// An OCI archive with an index of `linux/amd64` and `linux/arm64`.
pub fn multiarch_tar() -> PathBuf {
    let spec = ImageSpec {
        name: "multi:latest".into(),
        ..ImageSpec::default()
    };
    cached(&fixture_dir(), "multiarch-oci-gzip.tar", |p| {
        multiarch_image(&spec, &["amd64", "arm64"], p)
    })
    .unwrap()
}

/// The layer digests of a manifest served by the registry.
pub fn layer_digests(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}
