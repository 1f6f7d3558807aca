//! Image import: OCI layouts, docker save, verification, atomicity.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_image::{
    read_xattr, ImageError, Store, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OPAQUE_XATTR,
};
use common::{compress, docker_archive, hex_of, listing, sha256, Comp, Image, Layer, Oci, Tar};
use serde_json::json;

fn base_layer(comp: Comp) -> Layer {
    let mut t = Tar::new();
    t.dir("bin/", 0o755)
        .file("bin/sh", 0o755, b"#!busybox")
        .hardlink("bin/ls", "bin/sh")
        .dir("etc/", 0o755)
        .file("etc/motd", 0o644, b"hello")
        .dir("var/cache/", 0o755)
        .file("var/cache/old", 0o644, b"old");
    Layer::new(t.finish(), comp)
}

fn top_layer(comp: Comp) -> Layer {
    let mut t = Tar::new();
    t.dir("etc/", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .file("etc/hostname", 0o644, b"berth")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"");
    Layer::new(t.finish(), comp)
}

fn image(comp: Comp) -> Image {
    Image::new(vec![base_layer(comp), top_layer(comp)], "sh")
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("image")).unwrap();
    (dir, store)
}

fn check_layers(store: &Store, img: &Image) {
    let base = store.layer_path(&img.layers[0].diff_id());
    let top = store.layer_path(&img.layers[1].diff_id());
    assert_eq!(fs::read(base.join("bin/sh")).unwrap(), b"#!busybox");
    assert_eq!(
        fs::metadata(base.join("bin/ls")).unwrap().ino(),
        fs::metadata(base.join("bin/sh")).unwrap().ino()
    );
    let wh = fs::symlink_metadata(top.join("etc/motd")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        read_xattr(&top.join("var/cache"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!top.join("etc/.wh.motd").exists());
}

#[test]
fn imports_an_oci_layout() {
    for (outer, inner) in [
        (Comp::None, Comp::Gzip),
        (Comp::Gzip, Comp::Zstd),
        (Comp::Zstd, Comp::None),
    ] {
        let (_dir, store) = store();
        let img = image(inner)
            .named(ANNOTATION_REF_NAME, "latest")
            .named(ANNOTATION_IMAGE_NAME, "docker.io/library/demo:latest");
        let other = Image::new(vec![base_layer(inner)], "other").named(ANNOTATION_REF_NAME, "v1");
        let oci = Oci::new(&[img, other]);
        let got = store.import(&oci.archive(outer)[..]).unwrap();
        let img = image(inner);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, img.id());
        assert_eq!(
            got[0].manifest_digest.as_deref(),
            Some(sha256(&img.manifest()).as_str())
        );
        assert_eq!(got[0].repo_tags, ["docker.io/library/demo:latest"]);
        assert_eq!(got[1].repo_tags, ["v1"]);
        assert_eq!(got[0].config_json, img.config);
        let diff_ids: Vec<_> = img.layers.iter().map(Layer::diff_id).collect();
        let digests: Vec<_> = img.layers.iter().map(Layer::digest).collect();
        assert_eq!(got[0].diff_ids, diff_ids);
        assert_eq!(got[0].layer_digests, digests);
        assert_eq!(got[0].size, (9 + 5 + 3) + 5);
        assert_eq!(got[1].size, 9 + 5 + 3);
        assert!(got[0].warnings.is_empty(), "{:?}", got[0].warnings);
        let cmd = got[0].config.config().as_ref().unwrap().cmd().clone();
        assert_eq!(cmd, Some(vec!["sh".to_string()]));
        check_layers(&store, &img);
        for d in oci.blobs.keys() {
            assert_eq!(&store.read_blob(d).unwrap(), &oci.blobs[d]);
        }
        assert_eq!(store.list_layers().unwrap().len(), 2);
        assert_eq!(store.layer_size(&diff_ids[1]), Some(5));
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }
}

#[test]
fn imports_a_docker_save_archive() {
    let (_dir, store) = store();
    let img = image(Comp::None);
    // A second image sharing the base layer: stored as a symlink.
    let other = Image::new(vec![base_layer(Comp::None)], "other");
    let archive = docker_archive(
        &[(&img, &["demo:1", "demo:latest"]), (&other, &[])],
        Comp::Gzip,
    );
    let got = store.import(&archive[..]).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, img.id());
    assert_eq!(got[0].manifest_digest, None);
    assert_eq!(got[0].repo_tags, ["demo:1", "demo:latest"]);
    assert!(got[1].repo_tags.is_empty());
    let diff_ids: Vec<_> = img.layers.iter().map(Layer::diff_id).collect();
    assert_eq!(got[0].diff_ids, diff_ids);
    assert_eq!(
        got[0].layer_digests, diff_ids,
        "uncompressed: blob digest is the diff id"
    );
    assert_eq!(got[1].diff_ids, diff_ids[..1]);
    check_layers(&store, &img);
    assert_eq!(store.read_blob(&img.id()).unwrap(), img.config);
    assert!(store.has_blob(&img.layers[0].digest()));
}

#[test]
fn imports_docker_25_layout_with_repo_tags() {
    // index.json without names, manifest.json with RepoTags and blob paths.
    let (_dir, store) = store();
    let img = image(Comp::None);
    let oci = Oci::new(&[image(Comp::None)]);
    let mut t = Tar::new();
    let layers: Vec<String> = img
        .layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", hex_of(&l.digest())))
        .collect();
    let manifest = json!([{"Config": format!("blobs/sha256/{}", hex_of(&img.id())),
                           "RepoTags": ["demo:25"], "Layers": layers}]);
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    t.file("index.json", 0o644, &oci.index);
    for (d, data) in &oci.blobs {
        t.file(&format!("./blobs/sha256/{}", hex_of(d)), 0o644, data);
    }
    let got = store
        .import(&compress(&t.finish(), Comp::Zstd)[..])
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].repo_tags, ["demo:25"]);
    check_layers(&store, &img);
}

#[test]
fn nested_index_picks_the_host_platform() {
    let (_dir, store) = store();
    let img = image(Comp::Gzip);
    let foreign = Image::new(vec![base_layer(Comp::None)], "arm");
    let mut oci = Oci::new(&[image(Comp::Gzip), foreign]);
    let m = |i: &Image, arch: &str| {
        let b = i.manifest();
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&b),
               "size": b.len(), "platform": {"architecture": arch, "os": "linux"}})
    };
    let foreign = Image::new(vec![base_layer(Comp::None)], "arm");
    let nested = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        m(&foreign, "riscv-none"), m(&img, if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" })]}))
    .unwrap();
    oci.index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&nested),
        "size": nested.len(), "annotations": {ANNOTATION_REF_NAME: "multi"}}]}))
    .unwrap();
    oci.blobs.insert(sha256(&nested), nested.clone());
    let got = store.import(&oci.archive(Comp::None)[..]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, img.id());
    assert_eq!(got[0].repo_tags, ["multi"]);
    assert!(store.has_blob(&sha256(&nested)));
}

#[test]
fn second_import_is_idempotent_and_does_not_unpack_again() {
    let (dir, store) = store();
    let archive = Oci::new(&[image(Comp::Gzip)]).archive(Comp::None);
    let first = store.import(&archive[..]).unwrap();
    // A marker inside an unpacked layer survives iff it is not re-unpacked.
    let base = store.layer_path(&first[0].diff_ids[0]);
    let ino = fs::metadata(&base).unwrap().ino();
    fs::write(base.join("marker"), b"m").unwrap();
    let before = listing(dir.path());
    let second = store.import(&archive[..]).unwrap();
    assert_eq!(listing(dir.path()), before);
    assert_eq!(fs::metadata(&base).unwrap().ino(), ino);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].size, first[0].size);
    // The same layers in another compression: blobs added, layers kept.
    let zstd = Oci::new(&[image(Comp::Zstd)]).archive(Comp::None);
    store.import(&zstd[..]).unwrap();
    assert!(base.join("marker").exists());
    assert_eq!(store.list_layers().unwrap().len(), 2);
}

/// Imports `archive` into a store that already holds an image and checks
/// the import fails and leaves store and surroundings exactly as they were.
fn rejected(archive: &[u8]) -> ImageError {
    let (dir, store) = store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    store
        .import(&Oci::new(&[Image::new(vec![base_layer(Comp::Gzip)], "x")]).archive(Comp::None)[..])
        .unwrap();
    let before = listing(dir.path());
    let err = store.import(archive).unwrap_err();
    assert_eq!(
        listing(dir.path()),
        before,
        "store changed by failed import: {err}"
    );
    assert_eq!(err.to_string().lines().count(), 1);
    err
}

fn evil_image(build: impl FnOnce(&mut Tar)) -> Vec<u8> {
    let mut t = Tar::new();
    build(&mut t);
    let img = Image::new(
        vec![top_layer(Comp::None), Layer::new(t.finish(), Comp::Gzip)],
        "evil",
    );
    Oci::new(&[image(Comp::Gzip), img]).archive(Comp::None)
}

type Check = fn(&ImageError) -> bool;

#[test]
fn attacks_fail_and_leave_everything_as_it_was() {
    // The store sits at <tmp>/image; staging layers at
    // <tmp>/image/tmp/<import>/layers/<hex>, five levels below <tmp>.
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (
            evil_image(|t| {
                t.file("../../../../../outside/x", 0o644, b"x");
            }),
            |e| matches!(e, ImageError::EntryEscapes { .. }),
        ),
        (
            evil_image(|t| {
                t.symlink("evil", "../../../../../outside")
                    .file("evil/x", 0o644, b"x");
            }),
            |e| matches!(e, ImageError::EntryThroughSymlink { .. }),
        ),
        (
            evil_image(|t| {
                t.symlink("evil", "/tmp")
                    .file("evil/berth-test-escape", 0o644, b"x");
            }),
            |e| matches!(e, ImageError::EntryThroughSymlink { .. }),
        ),
        (
            evil_image(|t| {
                t.hardlink("h", "../../../../../outside");
            }),
            |e| matches!(e, ImageError::HardlinkEscapes { .. }),
        ),
        (
            evil_image(|t| {
                t.symlink("s", "/etc").hardlink("h", "s/passwd");
            }),
            |e| matches!(e, ImageError::HardlinkThroughSymlink { .. }),
        ),
    ];
    for (archive, check) in cases {
        let err = rejected(&archive);
        assert!(check(err.innermost()), "{err}");
        assert!(err.to_string().starts_with("layer sha256:"), "{err}");
    }
    assert!(!Path::new("/tmp/berth-test-escape").exists());
}

#[test]
fn digest_mismatches_are_refused() {
    // A layer blob whose content does not match its name.
    let mut oci = Oci::new(&[image(Comp::Gzip)]);
    let digest = image(Comp::Gzip).layers[1].digest();
    oci.blobs.get_mut(&digest).unwrap()[20] ^= 0xff;
    let err = rejected(&oci.archive(Comp::None));
    match &err {
        ImageError::DigestMismatch { what, expected, .. } => {
            assert_eq!(what, &format!("layer {digest}"));
            assert_eq!(expected, &digest);
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().starts_with(&format!(
        "layer {digest} digest mismatch: archive says {digest}, content is sha256:"
    )));

    // A consistent blob whose uncompressed content is not the diff id.
    let mut img = image(Comp::None);
    img.config = common::config_json(&[base_layer(Comp::None), base_layer(Comp::None)], "sh");
    let err = rejected(&Oci::new(&[img]).archive(Comp::None));
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");

    // The same in a docker save archive.
    let mut img = image(Comp::None);
    img.config = common::config_json(&[top_layer(Comp::None), top_layer(Comp::None)], "sh");
    let err = rejected(&docker_archive(&[(&img, &["x:y"])], Comp::None));
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn truncated_and_malformed_archives_are_refused() {
    let archive = Oci::new(&[image(Comp::Gzip)]).archive(Comp::None);
    // Cut inside the first blob's data.
    let err = rejected(&archive[..2048]);
    assert!(matches!(err, ImageError::Corrupt(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("archive is truncated or corrupt: "),
        "{err}"
    );
    let gz = compress(&archive, Comp::Gzip);
    assert!(matches!(
        rejected(&gz[..gz.len() - 100]),
        ImageError::Corrupt(_)
    ));
    let zs = compress(&archive, Comp::Zstd);
    assert!(matches!(
        rejected(&zs[..zs.len() / 2]),
        ImageError::Corrupt(_)
    ));

    let mut t = Tar::new();
    t.file("hello", 0o644, b"x");
    let err = rejected(&t.finish());
    assert!(matches!(err, ImageError::UnknownFormat));
    assert_eq!(
        err.to_string(),
        "archive has neither index.json nor manifest.json"
    );

    let mut oci = Oci::new(&[image(Comp::Gzip)]);
    let digest = image(Comp::Gzip).layers[0].digest();
    oci.blobs.remove(&digest);
    assert!(matches!(
        rejected(&oci.archive(Comp::None)),
        ImageError::MissingBlob { .. }
    ));

    let mut oci = Oci::new(&[image(Comp::Gzip)]);
    oci.index = vec![b' '; 5 << 20];
    assert!(matches!(
        rejected(&oci.archive(Comp::None)),
        ImageError::TooLarge { .. }
    ));

    let mut oci = Oci::new(&[image(Comp::Gzip)]);
    oci.index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/x-nope","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}"#.to_vec();
    assert!(matches!(
        rejected(&oci.archive(Comp::None)),
        ImageError::UnsupportedMediaType { .. }
    ));

    let mut oci = Oci::new(&[image(Comp::Gzip)]);
    oci.index = b"{not json".to_vec();
    assert!(matches!(
        rejected(&oci.archive(Comp::None)),
        ImageError::InvalidJson { .. }
    ));
}

#[test]
fn store_blob_and_layer_operations() {
    let (_dir, store) = store();
    let d = store.write_blob(b"hello").unwrap();
    assert_eq!(d, sha256(b"hello"));
    assert_eq!(store.read_blob(&d).unwrap(), b"hello");
    assert_eq!(store.list_blobs().unwrap(), std::slice::from_ref(&d));
    store.remove_blob(&d).unwrap();
    assert!(!store.has_blob(&d));
    store.remove_blob(&d).unwrap();
    assert!(matches!(
        store.read_blob("sha256:../../etc/passwd"),
        Err(ImageError::InvalidDigest(_))
    ));
    assert!(matches!(store.read_blob(&d), Err(ImageError::Io { .. })));
    assert!(!store.has_layer("sha256:nope"));
    assert!(store
        .layer_path("../../x")
        .starts_with(store.root().join("layers")));
}

#[test]
fn clean_tmp_removes_only_leftovers_of_dead_processes() {
    let (_dir, store) = store();
    let tmp = store.root().join("tmp");
    let dead = tmp.join("import-999999999-0-0");
    let live = tmp.join(format!("import-{}-0-0", std::process::id()));
    fs::create_dir_all(dead.join("layers/x")).unwrap();
    fs::create_dir_all(&live).unwrap();
    store
        .clean_tmp(std::time::Duration::from_secs(3600))
        .unwrap();
    assert!(dead.exists(), "too young");
    store.clean_tmp(std::time::Duration::ZERO).unwrap();
    assert!(!dead.exists());
    assert!(live.exists());
}

#[test]
fn a_known_blob_claimed_for_another_layer_is_checked() {
    let (_dir, store) = store();
    let a = Image::new(vec![base_layer(Comp::Gzip)], "a");
    let b = Image::new(vec![top_layer(Comp::Gzip)], "b");
    store
        .import(&Oci::new(&[a, b]).archive(Comp::None)[..])
        .unwrap();
    // Both layers and blobs are in the store; now an image pairs the base
    // blob with the top layer's diff id.
    let mut liar = Image::new(vec![base_layer(Comp::Gzip)], "liar");
    liar.config = common::config_json(&[top_layer(Comp::Gzip)], "liar");
    let err = store
        .import(&Oci::new(&[liar]).archive(Comp::None)[..])
        .unwrap_err();
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn overlayfs_sees_whiteouts_and_opaque_dirs() {
    use nix::mount::{mount, umount, MsFlags};
    let (dir, store) = store();
    let img = image(Comp::Gzip);
    store
        .import(&Oci::new(&[image(Comp::Gzip)]).archive(Comp::None)[..])
        .unwrap();
    let lower = format!(
        "lowerdir={}:{}",
        store.layer_path(&img.layers[1].diff_id()).display(),
        store.layer_path(&img.layers[0].diff_id()).display()
    );
    let target = dir.path().join("mnt");
    fs::create_dir(&target).unwrap();
    if let Err(e) = mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(lower.as_str()),
    ) {
        eprintln!("skipping: cannot mount overlayfs here: {e}");
        return;
    }
    let seen = (
        target.join("bin/sh").exists(),
        target.join("etc/motd").exists(),
        target.join("etc/hostname").exists(),
        target.join("var/cache").is_dir(),
        target.join("var/cache/old").exists(),
    );
    umount(&target).unwrap();
    assert_eq!(seen, (true, false, true, true, false));
}
