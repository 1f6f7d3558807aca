//! All-or-nothing import of an image archive into the store.
//!
//! 1. stage: every archive entry goes to a file under `tmp/`, hashed on the
//!    way ([`Staging`]);
//! 2. plan: read `index.json` / `manifest.json`, verify every referenced
//!    blob's digest and size ([`plans`]);
//! 3. unpack every layer the store lacks into staging, checking its
//!    uncompressed stream against the config's diff id;
//! 4. commit: rename blobs and layers into place (never replacing what is
//!    there); on any error undo the renames. Staging is always removed.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::compress::{decompress, BUF_SIZE};
use crate::digest::{sha256_hex, HashingReader};
use crate::manifest::{plans, BlobRef, Plan};
use crate::staging::Staging;
use crate::store::{rename_noreplace, Store};
use crate::sys::remove_tree;
use crate::unpack::unpack_layer_digest;
use crate::ImageError;

/// One image found in an imported archive.
#[derive(Clone, Debug)]
pub struct ImportedImage {
    /// `sha256:<hex>` of the config blob: the image id.
    pub id: String,
    /// Digest of the image manifest; `None` for a legacy `docker save`
    /// archive, which has no manifest blob.
    pub manifest_digest: Option<String>,
    /// Names as the archive gives them, not normalised: docker's
    /// `RepoTags`, or for an OCI layout the index annotation
    /// `io.containerd.image.name` (a full name) when present, else
    /// `org.opencontainers.image.ref.name` (which may be only a tag such as
    /// "latest"). When an archive has both `index.json` and `manifest.json`
    /// (docker 25+), `RepoTags` are used for images the index leaves unnamed.
    pub repo_tags: Vec<String>,
    /// The parsed image config.
    pub config: ImageConfiguration,
    /// The config blob's bytes, exactly as stored.
    pub config_json: Vec<u8>,
    /// The config's `rootfs.diff_ids`, bottom layer first.
    pub diff_ids: Vec<String>,
    /// Layer blob digests as in the manifest (for `docker save`: sha256 of
    /// the layer file), parallel to `diff_ids`.
    pub layer_digests: Vec<String>,
    /// Sum of the unpacked sizes (bytes of regular files) of the image's
    /// distinct layers; for a layer whose unpacked size the store did not
    /// record, its blob size is counted instead.
    pub size: u64,
    /// Non-fatal problems met while unpacking this image's layers (device
    /// nodes or xattrs the kernel refused, ...), each prefixed with the
    /// layer. Empty for layers that were already in the store.
    pub warnings: Vec<String>,
}

/// A layer unpacked into staging during this import.
struct NewLayer {
    hex: String,
    dir: PathBuf,
    size: u64,
    warnings: Vec<String>,
}

/// What was renamed into the store, to undo on failure.
#[derive(Default)]
pub(crate) struct Committed {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) dirs: Vec<PathBuf>,
}

impl Store {
    /// Imports an OCI image-layout tarball or a `docker save` tarball
    /// (plain, gzip or zstd). All-or-nothing: on any error the store is as
    /// it was before. Layers and blobs already present are not touched, so
    /// importing the same archive twice unpacks nothing the second time.
    pub fn import(&self, reader: impl Read) -> Result<Vec<ImportedImage>, ImageError> {
        let staging = Staging::stage(self, reader)?;
        let plans = plans(&staging)?;
        let layers_dir = staging.dir.join("layers");
        fs::create_dir(&layers_dir).map_err(|e| ImageError::io("create", &layers_dir, e))?;

        let mut new_layers: HashMap<String, NewLayer> = HashMap::new();
        // (layer blob, diff id) pairs known to match.
        let mut verified: HashSet<(String, String)> = HashSet::new();
        for plan in &plans {
            for (blob, diff_id) in plan.layers.iter().zip(&plan.diff_ids) {
                self.prepare_layer(blob, diff_id, &layers_dir, &mut new_layers, &mut verified)?;
            }
        }

        let mut done = Committed::default();
        if let Err(e) = self.commit(&plans, &new_layers, &verified, &mut done) {
            self.undo(done);
            return Err(e);
        }
        Ok(plans
            .into_iter()
            .map(|p| self.imported(p, &new_layers))
            .collect())
    }

    /// Unpacks one layer, or only verifies the blob against the diff id
    /// when the layer is already there but this blob is not known to
    /// produce it (e.g. the same layer with another compression).
    fn prepare_layer(
        &self,
        blob: &BlobRef,
        diff_id: &str,
        layers_dir: &Path,
        new_layers: &mut HashMap<String, NewLayer>,
        verified: &mut HashSet<(String, String)>,
    ) -> Result<(), ImageError> {
        let key = (blob.digest.clone(), diff_id.to_owned());
        if verified.contains(&key) || self.layer_knows_blob(diff_id, &blob.digest) {
            return Ok(());
        }
        let mismatch = |actual: String| ImageError::DiffIdMismatch {
            layer: blob.digest.clone(),
            expected: diff_id.to_owned(),
            actual,
        };
        let file = File::open(&blob.path).map_err(|e| ImageError::io("open", &blob.path, e))?;
        if new_layers.contains_key(diff_id) || self.has_layer(diff_id) {
            let in_layer =
                |e: std::io::Error| ImageError::Corrupt(e.to_string()).in_layer(&blob.digest);
            let (_, stream) = decompress(file).map_err(in_layer)?;
            let mut buf = vec![0u8; BUF_SIZE];
            let actual = HashingReader::new(stream)
                .finish(&mut buf)
                .map_err(in_layer)?
                .digest();
            if actual != diff_id {
                return Err(mismatch(actual));
            }
        } else {
            let hex = sha256_hex(diff_id)?.to_owned();
            let dir = layers_dir.join(&hex);
            let (report, actual) =
                unpack_layer_digest(file, &dir).map_err(|e| e.in_layer(&blob.digest))?;
            if actual != diff_id {
                return Err(mismatch(actual));
            }
            new_layers.insert(
                diff_id.to_owned(),
                NewLayer {
                    hex,
                    dir,
                    size: report.size,
                    warnings: report.warnings,
                },
            );
        }
        verified.insert(key);
        Ok(())
    }

    fn commit(
        &self,
        plans: &[Plan],
        new_layers: &HashMap<String, NewLayer>,
        verified: &HashSet<(String, String)>,
        done: &mut Committed,
    ) -> Result<(), ImageError> {
        let mut placed: HashSet<&str> = HashSet::new();
        for plan in plans {
            for blob in plan.meta_blobs.iter().chain(&plan.layers) {
                if blob.in_store || !placed.insert(&blob.digest) {
                    continue;
                }
                let to = self.blob_path(&blob.digest)?;
                if rename_noreplace(&blob.path, &to)? {
                    done.files.push(to);
                }
            }
        }
        for (diff_id, layer) in new_layers {
            let info = self.layerinfo_path(&layer.hex);
            let tmp = layer.dir.with_extension("info");
            let mut text = format!("{}\n", layer.size);
            for (blob, _) in verified.iter().filter(|(_, d)| d == diff_id) {
                text.push_str(blob);
                text.push('\n');
            }
            fs::write(&tmp, text).map_err(|e| ImageError::io("write", &tmp, e))?;
            if rename_noreplace(&tmp, &info)? {
                done.files.push(info);
            }
            let to = self.layer_path(diff_id);
            if rename_noreplace(&layer.dir, &to)? {
                done.dirs.push(to);
            }
        }
        // Blobs newly verified against layers that were already there.
        for (blob, diff_id) in verified {
            if !new_layers.contains_key(diff_id) {
                self.layer_add_blob(diff_id, blob)?;
            }
        }
        Ok(())
    }

    pub(crate) fn undo(&self, done: Committed) {
        for f in done.files {
            let _ = fs::remove_file(f);
        }
        for d in done.dirs {
            let doomed = self.staging_name("undo");
            if fs::rename(&d, &doomed).is_ok() {
                let _ = remove_tree(&doomed);
            }
        }
    }

    fn imported(&self, p: Plan, new_layers: &HashMap<String, NewLayer>) -> ImportedImage {
        let mut size = 0;
        let mut warnings = Vec::new();
        let mut seen = HashSet::new();
        for (blob, diff_id) in p.layers.iter().zip(&p.diff_ids) {
            if !seen.insert(diff_id) {
                continue;
            }
            match new_layers.get(diff_id) {
                Some(l) => {
                    size += l.size;
                    warnings.extend(l.warnings.iter().map(|w| format!("layer {diff_id}: {w}")));
                }
                None => size += self.layer_size(diff_id).unwrap_or(blob.size),
            }
        }
        ImportedImage {
            id: p.config_digest,
            manifest_digest: p.manifest_digest,
            repo_tags: p.names,
            config: p.config,
            config_json: p.config_json,
            layer_digests: p.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: p.diff_ids,
            size,
            warnings,
        }
    }
}
