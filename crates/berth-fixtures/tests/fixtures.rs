//! Checks the archives the crate writes: determinism, digest consistency,
//! layer contents and the hostile variants.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use berth_fixtures::{
    busybox_image, cached, evil_image, layered_image, Compression, Evil, Format, ImageSpec,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const ALL_EVIL: [Evil; 7] = [
    Evil::DotDot,
    Evil::AbsSymlinkWriteThrough,
    Evil::RelSymlinkWriteThrough,
    Evil::HardlinkOutside,
    Evil::BadLayerDigest,
    Evil::Truncated,
    Evil::NotJson,
];

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn spec(format: Format, compression: Compression) -> ImageSpec {
    ImageSpec {
        format,
        compression,
        ..ImageSpec::default()
    }
}

/// Every regular file of a tar archive, by path.
fn files(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.insert(path, data);
        }
    }
    out
}

fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" => out.extend_from_slice(blob),
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            flate2::read::GzDecoder::new(blob)
                .read_to_end(&mut out)
                .unwrap();
        }
        "application/vnd.oci.image.layer.v1.tar+zstd" => out = zstd::decode_all(blob).unwrap(),
        other => panic!("unexpected media type {other}"),
    }
    out
}

/// Magic-byte sniffing, for docker archives (no media types there).
fn decompress_sniffed(blob: &[u8]) -> Vec<u8> {
    let mt = match blob {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    };
    decompress(mt, blob)
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    &files[&format!("blobs/sha256/{hex}")]
}

/// Checks an OCI archive end to end; returns (index, config, layer tars).
fn check_oci(archive: &[u8]) -> (Value, Value, Vec<Vec<u8>>) {
    let files = files(archive);
    let layout: Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    for (name, data) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha(data), hex, "blob {name} is stored under its digest");
        }
    }
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let desc = &index["manifests"][0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest_bytes = blob(&files, desc["digest"].as_str().unwrap());
    assert_eq!(desc["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
    let cdesc = &manifest["config"];
    assert_eq!(
        cdesc["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config_bytes = blob(&files, cdesc["digest"].as_str().unwrap());
    assert_eq!(cdesc["size"], config_bytes.len());
    let config: Value = serde_json::from_slice(config_bytes).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    assert_eq!(config["history"].as_array().unwrap().len(), layers.len());
    let mut tars = Vec::new();
    for (l, diff_id) in layers.iter().zip(diff_ids) {
        let data = blob(&files, l["digest"].as_str().unwrap());
        assert_eq!(l["size"], data.len());
        let tar = decompress(l["mediaType"].as_str().unwrap(), data);
        assert_eq!(format!("sha256:{}", sha(&tar)), diff_id.as_str().unwrap());
        tars.push(tar);
    }
    (index, config, tars)
}

fn build(f: impl FnOnce(&Path) -> anyhow::Result<()>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image.tar");
    f(&out).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary files are left behind");
    std::fs::read(out).unwrap()
}

#[test]
fn images_are_deterministic() {
    for (format, compression) in [
        (Format::Oci, Compression::Gzip),
        (Format::Oci, Compression::Zstd),
        (Format::DockerSave, Compression::None),
    ] {
        let s = spec(format, compression);
        let a = build(|p| busybox_image(&s, p));
        assert_eq!(a, build(|p| busybox_image(&s, p)), "{s:?}");
        let a = build(|p| layered_image(&s, p));
        assert_eq!(a, build(|p| layered_image(&s, p)), "{s:?}");
    }
}

#[test]
fn evil_images_are_deterministic() {
    for kind in ALL_EVIL {
        let a = build(|p| evil_image(kind, p));
        assert_eq!(a, build(|p| evil_image(kind, p)), "{kind:?}");
    }
}

#[test]
fn oci_digests_are_self_consistent() {
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let s = spec(Format::Oci, compression);
        let (index, config, tars) = check_oci(&build(|p| layered_image(&s, p)));
        assert_eq!(tars.len(), 3);
        let ann = &index["manifests"][0]["annotations"];
        assert_eq!(ann["io.containerd.image.name"], "busybox:latest");
        assert_eq!(ann["org.opencontainers.image.ref.name"], "latest");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
        let (_, _, tars) = check_oci(&build(|p| busybox_image(&s, p)));
        assert_eq!(tars.len(), 1);
    }
}

#[test]
fn config_reflects_spec() {
    let s = ImageSpec {
        name: "registry.local:5000/team/app:v2".into(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: vec!["A=1".into(), "B=two words".into()],
        workdir: Some("/home/app".into()),
        user: Some("1000:1000".into()),
        exposed_ports: vec!["80".into(), "53/udp".into()],
        stop_signal: Some("SIGINT".into()),
        labels: BTreeMap::from([("k".into(), "v".into())]),
        arch: "arm64".into(),
        ..ImageSpec::default()
    };
    let (index, config, _) = check_oci(&build(|p| busybox_image(&s, p)));
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["io.containerd.image.name"], s.name.as_str());
    assert_eq!(ann["org.opencontainers.image.ref.name"], "v2");
    assert_eq!(config["architecture"], "arm64");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(c["Env"], serde_json::json!(["A=1", "B=two words"]));
    assert_eq!(c["WorkingDir"], "/home/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"80/tcp": {}, "53/udp": {}})
    );
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Labels"], serde_json::json!({"k": "v"}));
}

#[test]
fn docker_manifest_points_at_existing_files() {
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let s = spec(Format::DockerSave, compression);
        let files = files(&build(|p| layered_image(&s, p)));
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let m = &manifest[0];
        assert_eq!(m["RepoTags"], serde_json::json!(["busybox:latest"]));
        let config_name = m["Config"].as_str().unwrap();
        let config_bytes = &files[config_name];
        assert_eq!(format!("{}.json", sha(config_bytes)), config_name);
        let config: Value = serde_json::from_slice(config_bytes).unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let layers = m["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        assert_eq!(layers.len(), diff_ids.len());
        for (l, diff_id) in layers.iter().zip(diff_ids) {
            let data = &files[l.as_str().unwrap()];
            let tar = decompress_sniffed(data);
            assert_eq!(format!("sha256:{}", sha(&tar)), diff_id.as_str().unwrap());
        }
        let repos: Value = serde_json::from_slice(&files["repositories"]).unwrap();
        let top = repos["busybox"]["latest"].as_str().unwrap();
        assert_eq!(
            format!("{top}/layer.tar"),
            layers[2].as_str().unwrap(),
            "repositories names the top layer"
        );
    }
}

#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Entries of a layer tar, in order, keyed by raw path.
fn entries(tar: &[u8]) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(tar);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let h = e.header();
        let path = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.to_vec()).unwrap());
        let (kind, mode, uid, gid) = (
            h.entry_type(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
        );
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((
            path,
            Entry {
                kind,
                mode,
                uid,
                gid,
                link,
                data,
                xattrs,
            },
        ));
    }
    out
}

fn layered_tars() -> Vec<Vec<u8>> {
    let s = spec(Format::Oci, Compression::Zstd);
    check_oci(&build(|p| layered_image(&s, p))).2
}

#[test]
fn busybox_layer_contents() {
    let tars = layered_tars();
    let list = entries(&tars[0]);
    let pos = |p: &str| list.iter().position(|(n, _)| n == p);
    let map: BTreeMap<_, _> = list.iter().map(|(n, e)| (n.as_str(), e)).collect();
    let busybox = map["bin/busybox"];
    assert!(busybox.kind.is_file());
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(busybox.data, std::fs::read("/bin/busybox").unwrap());
    for applet in ["bin/sh", "usr/bin/env", "bin/ls", "usr/bin/id"] {
        let e = map[applet];
        assert!(e.kind.is_hard_link(), "{applet}");
        assert_eq!(e.link.as_deref(), Some("bin/busybox"));
        assert!(pos(applet) > pos("bin/busybox"), "link after its target");
    }
    for (name, e) in &list {
        if e.kind.is_hard_link() {
            assert_eq!(e.link.as_deref(), Some("bin/busybox"), "{name}");
        }
        if name != "home/app" {
            assert_eq!((e.uid, e.gid), (0, 0), "{name}");
        }
    }
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "home", "var", "proc", "sys", "dev",
    ] {
        assert!(map[d].kind.is_dir(), "{d}");
        assert_eq!(map[d].mode, 0o755, "{d}");
    }
    assert_eq!(map["tmp"].mode, 0o1777);
    assert_eq!(map["root"].mode, 0o700);
    assert_eq!((map["home/app"].uid, map["home/app"].gid), (1000, 1000));
    let passwd = String::from_utf8(map["etc/passwd"].data.clone()).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    assert!(passwd.contains("\ndaemon:x:1:1:"));
    assert!(passwd.contains("\nnobody:x:65534:65534:"));
    assert!(passwd.contains("\napp:x:1000:1000::/home/app:/bin/sh\n"));
    let group = String::from_utf8(map["etc/group"].data.clone()).unwrap();
    for g in [
        "root:x:0:",
        "nogroup:x:65534:",
        "app:x:1000:",
        "extra:x:2000:app",
    ] {
        assert!(group.lines().any(|l| l == g), "{g} in {group}");
    }
    assert!(!map.contains_key("etc/hostname"));
    // Parents come before children.
    for (i, (name, _)) in list.iter().enumerate() {
        if let Some((parent, _)) = name.rsplit_once('/') {
            let p = pos(parent).unwrap_or_else(|| panic!("parent of {name}"));
            assert!(p < i, "{parent} before {name}");
        }
    }
}

#[test]
fn layered_upper_layers() {
    let tars = layered_tars();
    let l1: BTreeMap<_, _> = entries(&tars[1]).into_iter().collect();
    assert_eq!(l1["data/a"].data, b"a\n");
    assert_eq!(l1["data/b"].data, b"b v1\n");
    assert_eq!(l1["data/b"].xattrs["user.berth"], b"yes");
    assert!(l1["data/link"].kind.is_symlink());
    assert_eq!(l1["data/link"].link.as_deref(), Some("/data/b"));
    assert!(l1["data/fifo"].kind.is_fifo());
    assert_eq!(l1["data/sub/x"].data, b"x\n");
    assert_eq!(l1["data/sub/keep"].data, b"keep\n");
    assert_eq!(l1["etc/removed.conf"].data, b"removed\n");
    assert_eq!(l1["usr/local/bin/suid"].mode, 0o4755);

    let l2 = entries(&tars[2]);
    let names: Vec<_> = l2.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "data",
            "data/.wh.a",
            "data/b",
            "data/sub",
            "data/sub/.wh..wh..opq",
            "data/sub/y",
            "etc",
            "etc/.wh.removed.conf",
        ]
    );
    let l2: BTreeMap<_, _> = l2.into_iter().collect();
    assert_eq!(l2["data/b"].data, b"b v2\n");
    assert_eq!(l2["data/b"].xattrs["user.berth"], b"yes");
    assert_eq!(l2["data/sub/y"].data, b"y\n");
}

fn evil_bytes(kind: Evil) -> Vec<u8> {
    build(|p| evil_image(kind, p))
}

/// The last layer's raw entries of an evil image (path, link name).
fn evil_layer(kind: Evil) -> Vec<(String, Option<String>)> {
    let (_, _, tars) = check_oci(&evil_bytes(kind));
    assert_eq!(tars.len(), 2, "busybox layer, then the bad layer");
    entries(&tars[1])
        .into_iter()
        .map(|(n, e)| (n, e.link))
        .collect()
}

#[test]
fn evil_escape_layers() {
    let target = format!("evil/{}", berth_fixtures::ESCAPE_FILE_NAME);
    assert_eq!(
        evil_layer(Evil::DotDot),
        [("../escaped-by-berth-test".to_string(), None)]
    );
    assert_eq!(
        evil_layer(Evil::AbsSymlinkWriteThrough),
        [
            ("evil".to_string(), Some("/tmp".to_string())),
            (target.clone(), None)
        ]
    );
    assert_eq!(
        evil_layer(Evil::RelSymlinkWriteThrough),
        [
            (
                "evil".to_string(),
                Some("../../../../../../tmp".to_string())
            ),
            (target, None)
        ]
    );
    assert_eq!(
        evil_layer(Evil::HardlinkOutside),
        [("h".to_string(), Some("../../../../etc/passwd".to_string()))]
    );
}

#[test]
fn evil_bad_digest_is_found_only_by_hashing() {
    let files = files(&evil_bytes(Evil::BadLayerDigest));
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest: Value = serde_json::from_slice(blob(
        &files,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let claimed = layers[1]["digest"].as_str().unwrap();
    let data = blob(&files, claimed);
    assert_eq!(layers[1]["size"], data.len(), "size matches");
    assert_ne!(format!("sha256:{}", sha(data)), claimed, "hash does not");
    assert_eq!(
        format!(
            "sha256:{}",
            sha(blob(&files, layers[0]["digest"].as_str().unwrap()))
        ),
        layers[0]["digest"].as_str().unwrap(),
        "the busybox layer is fine"
    );
}

#[test]
fn evil_truncated_and_not_json() {
    let bytes = evil_bytes(Evil::Truncated);
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut failed = false;
    for e in ar.entries().unwrap() {
        match e {
            Ok(mut e) => failed |= std::io::copy(&mut e, &mut std::io::sink()).is_err(),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "reading a truncated archive fails");

    let files = files(&evil_bytes(Evil::NotJson));
    assert!(serde_json::from_slice::<Value>(&files["index.json"]).is_err());
    assert!(files.keys().any(|k| k.starts_with("blobs/sha256/")));
}

#[test]
fn cached_builds_once() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cache");
    let mut calls = 0;
    let s = ImageSpec::default();
    let a = cached(&sub, "bb.tar", |p| {
        calls += 1;
        busybox_image(&s, p)
    })
    .unwrap();
    let b = cached(&sub, "bb.tar", |_| panic!("must not rebuild")).unwrap();
    assert_eq!(calls, 1);
    assert_eq!(a, b);
    assert_eq!(a, sub.join("bb.tar"));
    check_oci(&std::fs::read(&a).unwrap());
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 1);

    let err = cached(&sub, "broken.tar", |_| anyhow::bail!("boom")).unwrap_err();
    assert!(format!("{err:#}").contains("boom"));
    assert!(!sub.join("broken.tar").exists());
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 1);
}

#[test]
fn cli_builds_and_rejects_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_berth-fixture");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img.tar");
    let status = std::process::Command::new(bin)
        .args(["busybox", "--out"])
        .arg(&out)
        .args(["--format", "oci", "--compression", "none", "--name", "x:1"])
        .args([
            "--cmd", "echo", "--cmd", "hi", "--env", "A=1", "--expose", "8080",
        ])
        .args([
            "--workdir",
            "/tmp",
            "--user",
            "app",
            "--entrypoint",
            "/bin/sh",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (index, config, _) = check_oci(&std::fs::read(&out).unwrap());
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "x:1"
    );
    let c = &config["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(c["Env"].as_array().unwrap().len(), 2);
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(
        (c["WorkingDir"].as_str(), c["User"].as_str()),
        (Some("/tmp"), Some("app"))
    );

    let evil = dir.path().join("evil.tar");
    let status = std::process::Command::new(bin)
        .args(["evil", "--kind", "not-json", "--out"])
        .arg(&evil)
        .status()
        .unwrap();
    assert!(status.success());

    for args in [
        &["busybox"][..],
        &["busybox", "--out"],
        &["busybox", "--out", "x", "--format", "tarball"],
        &["evil", "--out", "x"],
        &["evil", "--kind", "nope", "--out", "x"],
        &["layered", "--out", "x", "--kind", "dotdot"],
        &["frobnicate"],
    ] {
        let o = std::process::Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("berth-fixture: "), "{err}");
    }
    assert!(!dir.path().join("x").exists());
}
