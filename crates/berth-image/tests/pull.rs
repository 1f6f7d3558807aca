//! The store side of a pull ([`berth_image::Ingest`]): streams verified
//! and unpacked as they arrive, from several threads, committed all at
//! once or not at all.

mod common;

use std::io::{self, Read};

use berth_image::{ImageError, IngestImage, LayerOutcome, Store};
use common::*;

fn layers() -> Vec<Layer> {
    let mut a = Tar::new();
    a.dir("etc", 0o755).file("etc/a", 0o644, b"a\n");
    let mut b = Tar::new();
    b.dir("data", 0o755)
        .file("data/big", 0o600, &vec![7u8; 300_000])
        .symlink("data/link", "big");
    vec![
        Layer::new(a.finish(), Comp::Gzip),
        Layer::new(b.finish(), Comp::Zstd),
    ]
}

fn image_of(img: &Image) -> IngestImage {
    IngestImage {
        manifest_digest: sha256(&img.manifest()),
        config_digest: img.id(),
        config_json: img.config.clone(),
        layers: img
            .layers
            .iter()
            .map(|l| (l.digest(), l.blob.len() as u64))
            .collect(),
        diff_ids: img.layers.iter().map(|l| l.diff_id()).collect(),
    }
}

fn add_meta(ingest: &berth_image::Ingest<'_>, img: &Image) {
    ingest
        .add_blob("manifest", &img.manifest(), &sha256(&img.manifest()))
        .unwrap();
    ingest.add_blob("config", &img.config, &img.id()).unwrap();
}

/// Yields `data`, then fails (a connection that dropped).
struct Failing<'a>(&'a [u8]);

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("the connection failed after 100 bytes"));
        }
        let n = self.0.read(buf)?;
        Ok(n)
    }
}

/// A reader that must never be read.
struct Untouchable;

impl Read for Untouchable {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        panic!("a present layer was read")
    }
}

#[test]
fn layers_from_several_threads_are_committed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = Image::new(layers(), "sh");
    let ingest = store.begin_ingest().unwrap();
    add_meta(&ingest, &img);
    std::thread::scope(|s| {
        for l in &img.layers {
            let ingest = &ingest;
            s.spawn(move || {
                let out = ingest
                    .add_layer(&l.blob[..], &l.digest(), l.blob.len() as u64, &l.diff_id())
                    .unwrap();
                assert!(matches!(out, LayerOutcome::Unpacked { .. }), "{out:?}");
            });
        }
    });
    // Nothing is visible before the commit.
    assert!(store.list_blobs().unwrap().is_empty());
    assert!(store.list_layers().unwrap().is_empty());
    let pulled = ingest.commit(image_of(&img)).unwrap();
    assert_eq!(pulled.id, img.id());
    assert_eq!(pulled.size, 2 + 300_000);
    assert_eq!(store.list_blobs().unwrap().len(), 4);
    for l in &img.layers {
        assert!(store.has_layer_blob(&l.digest(), &l.diff_id()));
        assert_eq!(store.read_blob(&l.digest()).unwrap(), l.blob);
    }
    let big = store.layer_path(&img.layers[1].diff_id()).join("data/big");
    assert_eq!(std::fs::read(big).unwrap().len(), 300_000);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );

    // Again: present layers are not read at all.
    let ingest = store.begin_ingest().unwrap();
    let l = &img.layers[0];
    let out = ingest
        .add_layer(Untouchable, &l.digest(), l.blob.len() as u64, &l.diff_id())
        .unwrap();
    assert_eq!(out, LayerOutcome::Present);
}

#[test]
fn the_same_layer_compressed_otherwise_is_only_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let gz = Image::new(layers(), "sh");
    let ingest = store.begin_ingest().unwrap();
    add_meta(&ingest, &gz);
    for l in &gz.layers {
        ingest
            .add_layer(&l.blob[..], &l.digest(), l.blob.len() as u64, &l.diff_id())
            .unwrap();
    }
    ingest.commit(image_of(&gz)).unwrap();
    let before = listing(&dir.path().join("layers"));

    let plain: Vec<Layer> = gz
        .layers
        .iter()
        .map(|l| Layer::new(l.tar.clone(), Comp::None))
        .collect();
    let img = Image::new(plain, "sh");
    let ingest = store.begin_ingest().unwrap();
    add_meta(&ingest, &img);
    for l in &img.layers {
        let out = ingest
            .add_layer(&l.blob[..], &l.digest(), l.blob.len() as u64, &l.diff_id())
            .unwrap();
        assert_eq!(out, LayerOutcome::Verified);
    }
    ingest.commit(image_of(&img)).unwrap();
    assert_eq!(listing(&dir.path().join("layers")), before);
    for l in gz.layers.iter().chain(&img.layers) {
        assert!(store.has_layer_blob(&l.digest(), &l.diff_id()));
    }
}

#[test]
fn wrong_content_a_failed_source_or_a_missing_layer_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = Image::new(layers(), "sh");
    let l = &img.layers[1];
    let (digest, size) = (l.digest(), l.blob.len() as u64);

    let ingest = store.begin_ingest().unwrap();
    add_meta(&ingest, &img);
    let mut bad = l.blob.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let err = ingest
        .add_layer(&bad[..], &digest, size, &l.diff_id())
        .unwrap_err();
    assert!(
        matches!(err.innermost(), ImageError::ContentMismatch { .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("layer {digest}: blob does not match")));

    let err = ingest
        .add_layer(Failing(&l.blob[..100]), &digest, size, &l.diff_id())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("layer {digest}: cannot read blob: the connection failed after 100 bytes")
    );
    let err = ingest
        .add_layer(&l.blob[..], &digest, size - 1, &l.diff_id())
        .unwrap_err();
    assert!(err.to_string().contains("more than the"), "{err}");

    let err = ingest.commit(image_of(&img)).unwrap_err();
    assert!(err.to_string().contains("was never added"), "{err}");
    assert!(store.list_blobs().unwrap().is_empty());
    assert!(store.list_layers().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
