//! Builders for layer tars and image archives, in memory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data).as_slice()))
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

/// A tar built entry by entry with raw (unchecked) names.
pub struct Tar {
    b: tar::Builder<Vec<u8>>,
    pub mtime: u64,
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    pub fn new() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
        }
    }

    /// Appends an entry; `name` and `link` go into the header verbatim.
    #[allow(clippy::too_many_arguments)]
    pub fn entry_full(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        {
            let old = h.as_old_mut();
            assert!(name.len() < 100 && link.len() < 100);
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn entry(
        &mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        let t = self.mtime;
        self.entry_full(kind, name.as_bytes(), link.as_bytes(), mode, 0, 0, t, data)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(EntryType::Directory, name, "", mode, b"")
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(EntryType::Regular, name, "", mode, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(EntryType::Symlink, name, target, 0o777, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(EntryType::Link, name, target, 0o644, b"")
    }

    pub fn device(&mut self, kind: EntryType, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_mode(0o666);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let t = self.mtime;
        self.entry_full(EntryType::XHeader, b"pax", b"", 0o644, 0, 0, t, &data)
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A layer as it will sit in an archive.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub comp: Comp,
}

impl Layer {
    pub fn new(tar: Vec<u8>, comp: Comp) -> Self {
        let blob = compress(&tar, comp);
        Layer { tar, blob, comp }
    }
    pub fn diff_id(&self) -> String {
        sha256(&self.tar)
    }
    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }
    pub fn media_type(&self) -> &'static str {
        match self.comp {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

pub fn config_json(layers: &[Layer], cmd: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id()).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": [cmd], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl Image {
    pub fn new(layers: Vec<Layer>, cmd: &str) -> Self {
        let config = config_json(&layers, cmd);
        Image {
            layers,
            config,
            annotations: BTreeMap::new(),
        }
    }
    pub fn named(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
    pub fn id(&self) -> String {
        sha256(&self.config)
    }
    pub fn manifest(&self) -> Vec<u8> {
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type(), "digest": l.digest(), "size": l.blob.len()}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.id(), "size": self.config.len()},
            "layers": layers,
        }))
        .unwrap()
    }
}

/// Blobs of an OCI layout, by digest, plus index.json.
pub struct Oci {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub index: Vec<u8>,
}

impl Oci {
    pub fn new(images: &[Image]) -> Self {
        let mut blobs = BTreeMap::new();
        let mut manifests = Vec::new();
        for img in images {
            let m = img.manifest();
            manifests.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(&m), "size": m.len(),
                "annotations": img.annotations,
            }));
            blobs.insert(sha256(&m), m);
            blobs.insert(img.id(), img.config.clone());
            for l in &img.layers {
                blobs.insert(l.digest(), l.blob.clone());
            }
        }
        let index =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        Oci { blobs, index }
    }

    /// The archive, blobs first (so index.json comes last), compressed.
    pub fn archive(&self, comp: Comp) -> Vec<u8> {
        let mut t = Tar::new();
        t.dir("blobs/", 0o755).dir("blobs/sha256/", 0o755);
        for (d, data) in &self.blobs {
            t.file(&format!("blobs/sha256/{}", hex_of(d)), 0o644, data);
        }
        t.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
        t.file("index.json", 0o644, &self.index);
        compress(&t.finish(), comp)
    }
}

/// A legacy `docker save` archive (`<id>/layer.tar`); a layer whose tar was
/// already written is stored as a symlink to the first copy, as docker does.
pub fn docker_archive(images: &[(&Image, &[&str])], comp: Comp) -> Vec<u8> {
    let mut t = Tar::new();
    let mut manifest = Vec::new();
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    for (img, tags) in images {
        let mut paths = Vec::new();
        for (i, l) in img.layers.iter().enumerate() {
            let id = hex_of(&sha256(
                format!("{}{}{i}", img.id(), l.diff_id()).as_bytes(),
            ))
            .to_owned();
            let path = format!("{id}/layer.tar");
            t.dir(&format!("{id}/"), 0o755);
            match written.get(&l.digest()) {
                Some(first) => {
                    t.symlink(&path, &format!("../{first}"));
                }
                None => {
                    t.file(&path, 0o644, &l.blob);
                    written.insert(l.digest(), path.clone());
                }
            }
            t.file(&format!("{id}/VERSION"), 0o644, b"1.0");
            paths.push(path);
        }
        let cfg = format!("{}.json", hex_of(&img.id()));
        t.file(&cfg, 0o644, &img.config);
        manifest.push(json!({"Config": cfg, "RepoTags": tags, "Layers": paths}));
    }
    t.file("repositories", 0o644, b"{}");
    t.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    compress(&t.finish(), comp)
}

/// A recursive listing of `dir`: path, type, mode, size and content hash.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd {
        let p = ent.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = m.file_type();
        let desc = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            format!("file {}", sha256(&std::fs::read(&p).unwrap()))
        } else if ft.is_char_device() {
            format!("chr {}", m.rdev())
        } else {
            "other".into()
        };
        out.push(format!(
            "{rel} {desc} {:o} {}:{}",
            m.mode(),
            m.uid(),
            m.gid()
        ));
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}
