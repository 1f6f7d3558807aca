//! Ingest: the store side of a pull. Blobs and layer streams arrive from
//! any reader (a registry connection, a file), possibly from several
//! threads at once; each layer is written to staging, hashed and unpacked
//! in one pass as its bytes arrive, then checked against its digest, its
//! size and the config's diff id. Nothing enters the store until
//! [`Ingest::commit`], which places everything or nothing. Dropping an
//! uncommitted ingest removes its staging directory, so a failed pull
//! leaves no partial blob behind.
//!
//! ```
//! # fn main() -> Result<(), berth_image::ImageError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = berth_image::Store::open(dir.path())?;
//! let ingest = store.begin_ingest()?;
//! let layer = b"not a layer";
//! let digest = berth_image::sha256_digest(layer);
//! let err = ingest.add_layer(&layer[..], &digest, 999, &digest).unwrap_err();
//! assert!(err.to_string().contains("not the size"), "{err}");
//! drop(ingest);
//! assert!(store.list_blobs()?.is_empty());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::compress::{decompress, BUF_SIZE};
use crate::digest::{sha256_hex, Hasher, HashingReader};
use crate::import::{Committed, ImportedImage};
use crate::store::{rename_noreplace, Store};
use crate::sys::remove_tree;
use crate::unpack::unpack_layer_digest;
use crate::ImageError;

/// What [`Ingest::add_layer`] did with a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerOutcome {
    /// The store already had the layer and knew this blob produces it;
    /// the reader was not read.
    Present,
    /// The layer was unpacked into staging.
    Unpacked {
        /// Bytes of regular files.
        size: u64,
        warnings: Vec<String>,
    },
    /// The layer was already there (or unpacked by another call of this
    /// ingest); the blob was verified to produce it.
    Verified,
}

/// The image an ingest commits: everything but the layer contents.
#[derive(Clone, Debug)]
pub struct IngestImage {
    /// Digest of the image manifest (added with [`Ingest::add_blob`]).
    pub manifest_digest: String,
    /// Digest of the config blob (added with [`Ingest::add_blob`]).
    pub config_digest: String,
    pub config_json: Vec<u8>,
    /// `(blob digest, blob size)` per layer, bottom first.
    pub layers: Vec<(String, u64)>,
    /// The config's diff ids, parallel to `layers`.
    pub diff_ids: Vec<String>,
}

struct NewLayer {
    dir: PathBuf,
    size: u64,
    warnings: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Staged blobs to place: (digest, staging file).
    blobs: Vec<(String, PathBuf)>,
    /// Unpacked layers by diff id.
    layers: HashMap<String, NewLayer>,
    /// Diff ids some call is unpacking right now.
    claimed: HashSet<String>,
    /// (blob digest, diff id) pairs verified in this ingest.
    verified: Vec<(String, String)>,
    seq: u64,
}

/// A pull in progress; see the module docs. `Sync`: layers may be added
/// from several threads.
pub struct Ingest<'s> {
    store: &'s Store,
    dir: PathBuf,
    state: Mutex<State>,
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        let _ = remove_tree(&self.dir);
    }
}

impl Store {
    /// Starts an ingest (a staging directory under `tmp/`).
    pub fn begin_ingest(&self) -> Result<Ingest<'_>, ImageError> {
        let dir = self.staging_name("pull");
        fs::create_dir(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
        Ok(Ingest {
            store: self,
            dir,
            state: Mutex::new(State::default()),
        })
    }

    /// Whether layer `diff_id` is present and blob `digest` is known to
    /// produce it: then a pull need not fetch the blob.
    pub fn has_layer_blob(&self, digest: &str, diff_id: &str) -> bool {
        self.layer_knows_blob(diff_id, digest)
    }
}

/// A reader that hashes, counts and copies to a file what passes through,
/// refuses to read past `limit` bytes, and remembers its source's error.
struct Tee<R> {
    inner: R,
    out: BufWriter<File>,
    hasher: Hasher,
    limit: u64,
    source_error: Option<(io::ErrorKind, String)>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.source_error = Some((e.kind(), e.to_string()));
                return Err(e);
            }
        };
        if self.hasher.len() + n as u64 > self.limit {
            let msg = format!("more than the {} bytes its descriptor says", self.limit);
            self.source_error = Some((io::ErrorKind::InvalidData, msg.clone()));
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        self.hasher.update(&buf[..n]);
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl<R: Read> Tee<R> {
    /// Reads the rest of the source (bytes after the end of the
    /// compressed stream or the tar's end marker still count).
    fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        self.out.flush()
    }
}

impl Ingest<'_> {
    /// The store this ingest commits into.
    pub fn store(&self) -> &Store {
        self.store
    }

    fn staging_file(&self, what: &str) -> PathBuf {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.seq += 1;
        self.dir.join(format!("{what}-{}", st.seq))
    }

    /// Adds a small blob (manifest, config) whose bytes are at hand,
    /// checking them against `digest`.
    pub fn add_blob(&self, what: &str, data: &[u8], digest: &str) -> Result<(), ImageError> {
        sha256_hex(digest)?;
        let actual = crate::sha256_digest(data);
        if actual != digest {
            return Err(ImageError::ContentMismatch {
                what: what.to_owned(),
                expected: digest.to_owned(),
                actual,
            });
        }
        if self.store.has_blob(digest) {
            return Ok(());
        }
        let path = self.staging_file("blob");
        fs::write(&path, data).map_err(|e| ImageError::io("write", &path, e))?;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.blobs.push((digest.to_owned(), path));
        Ok(())
    }

    /// Reads one layer blob (`digest`, `size` bytes) from `reader`, writing
    /// it to staging and unpacking it as it arrives (unless the layer is
    /// already there: then it is only verified against `diff_id`).
    pub fn add_layer(
        &self,
        reader: impl Read,
        digest: &str,
        size: u64,
        diff_id: &str,
    ) -> Result<LayerOutcome, ImageError> {
        sha256_hex(digest)?;
        let diff_hex = sha256_hex(diff_id)?.to_owned();
        if self.store.layer_knows_blob(diff_id, digest) {
            return Ok(LayerOutcome::Present);
        }
        let blob_path = self.staging_file("layerblob");
        let file = File::create(&blob_path).map_err(|e| ImageError::io("create", &blob_path, e))?;
        let mut tee = Tee {
            inner: reader,
            out: BufWriter::with_capacity(BUF_SIZE, file),
            hasher: Hasher::new(),
            limit: size,
            source_error: None,
        };
        let unpack_dir = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let free = !st.layers.contains_key(diff_id)
                && !st.claimed.contains(diff_id)
                && !self.store.has_layer(diff_id);
            if free {
                st.claimed.insert(diff_id.to_owned());
            }
            free.then(|| self.dir.join(format!("layer-{diff_hex}")))
        };
        let result = self.read_layer(&mut tee, unpack_dir.as_ref(), digest, size, diff_id);
        drop(tee);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if unpack_dir.is_some() {
            st.claimed.remove(diff_id);
        }
        match result {
            Ok(report) => {
                st.verified.push((digest.to_owned(), diff_id.to_owned()));
                if self.store.has_blob(digest) {
                    let _ = fs::remove_file(&blob_path);
                } else {
                    st.blobs.push((digest.to_owned(), blob_path));
                }
                Ok(match (report, unpack_dir) {
                    (Some(report), Some(dir)) => {
                        let outcome = LayerOutcome::Unpacked {
                            size: report.size,
                            warnings: report.warnings.clone(),
                        };
                        st.layers.insert(
                            diff_id.to_owned(),
                            NewLayer {
                                dir,
                                size: report.size,
                                warnings: report.warnings,
                            },
                        );
                        outcome
                    }
                    _ => LayerOutcome::Verified,
                })
            }
            Err(e) => {
                let _ = fs::remove_file(&blob_path);
                if let Some(dir) = unpack_dir {
                    let _ = remove_tree(&dir);
                }
                Err(e.in_layer(digest))
            }
        }
    }

    /// The one pass over a layer stream; `Some(report)` when unpacked.
    fn read_layer<R: Read>(
        &self,
        tee: &mut Tee<R>,
        unpack_dir: Option<&PathBuf>,
        digest: &str,
        size: u64,
        diff_id: &str,
    ) -> Result<Option<crate::UnpackReport>, ImageError> {
        // An unpack error of content that is not what the descriptor
        // names is reported as that: the wrong content is the cause.
        let source = |tee: &mut Tee<R>, e: ImageError| match &tee.source_error {
            Some((kind, msg)) => ImageError::Source {
                what: "blob".to_owned(),
                error: io::Error::new(*kind, msg.clone()),
            },
            None => match tee.drain() {
                Ok(()) => check_blob(tee, digest, size).err().unwrap_or(e),
                Err(_) => e,
            },
        };
        let (report, actual_diff) = match unpack_dir {
            Some(dir) => match unpack_layer_digest(&mut *tee, dir) {
                Ok((report, actual)) => (Some(report), actual),
                Err(e) => return Err(source(tee, e)),
            },
            None => {
                let corrupt = |e: io::Error| ImageError::Corrupt(e.to_string());
                let hashed = decompress(&mut *tee)
                    .map_err(corrupt)
                    .and_then(|(_, stream)| {
                        HashingReader::new(stream)
                            .finish(&mut vec![0u8; BUF_SIZE])
                            .map_err(corrupt)
                    });
                match hashed {
                    Ok(h) => (None, h.digest()),
                    Err(e) => return Err(source(tee, e)),
                }
            }
        };
        if let Err(e) = tee.drain() {
            return Err(source(tee, ImageError::Corrupt(e.to_string())));
        }
        check_blob(tee, digest, size)?;
        if actual_diff != diff_id {
            return Err(ImageError::DiffIdMismatch {
                layer: digest.to_owned(),
                expected: diff_id.to_owned(),
                actual: actual_diff,
            });
        }
        Ok(report)
    }

    /// Places every staged blob and layer into the store, or none: on an
    /// error the renames done so far are undone.
    pub fn commit(self, image: IngestImage) -> Result<ImportedImage, ImageError> {
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&image.config_json).map_err(|error| {
                ImageError::InvalidJson {
                    what: format!("config {}", image.config_digest),
                    error,
                }
            })?;
        let st = std::mem::take(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()));
        for ((digest, _), diff_id) in image.layers.iter().zip(&image.diff_ids) {
            let known = st.verified.iter().any(|(b, d)| b == digest && d == diff_id);
            if !known && !self.store.layer_knows_blob(diff_id, digest) {
                return Err(ImageError::Corrupt(format!(
                    "layer {digest} was never added to the pull"
                )));
            }
        }
        let mut done = Committed::default();
        if let Err(e) = self.place(&st, &mut done) {
            self.store.undo(done);
            return Err(e);
        }
        let mut size = 0;
        let mut warnings = Vec::new();
        let mut seen = HashSet::new();
        for ((_, blob_size), diff_id) in image.layers.iter().zip(&image.diff_ids) {
            if !seen.insert(diff_id) {
                continue;
            }
            match st.layers.get(diff_id) {
                Some(l) => {
                    size += l.size;
                    warnings.extend(l.warnings.iter().map(|w| format!("layer {diff_id}: {w}")));
                }
                None => size += self.store.layer_size(diff_id).unwrap_or(*blob_size),
            }
        }
        Ok(ImportedImage {
            id: image.config_digest,
            manifest_digest: Some(image.manifest_digest),
            repo_tags: Vec::new(),
            config,
            config_json: image.config_json,
            diff_ids: image.diff_ids,
            layer_digests: image.layers.into_iter().map(|(d, _)| d).collect(),
            size,
            warnings,
        })
    }

    fn place(&self, st: &State, done: &mut Committed) -> Result<(), ImageError> {
        for (digest, path) in &st.blobs {
            let to = self.store.blob_path(digest)?;
            if rename_noreplace(path, &to)? {
                done.files.push(to);
            }
        }
        for (diff_id, layer) in &st.layers {
            let hex = sha256_hex(diff_id)?;
            let info = self.store.layerinfo_path(hex);
            let tmp = layer.dir.with_extension("info");
            let mut text = format!("{}\n", layer.size);
            for (blob, _) in st.verified.iter().filter(|(_, d)| d == diff_id) {
                text.push_str(blob);
                text.push('\n');
            }
            fs::write(&tmp, text).map_err(|e| ImageError::io("write", &tmp, e))?;
            if rename_noreplace(&tmp, &info)? {
                done.files.push(info);
            }
            let to = self.store.layer_path(diff_id);
            if rename_noreplace(&layer.dir, &to)? {
                done.dirs.push(to);
            }
        }
        for (blob, diff_id) in &st.verified {
            if !st.layers.contains_key(diff_id) && !self.store.layer_knows_blob(diff_id, blob) {
                self.store.layer_add_blob(diff_id, blob)?;
            }
        }
        Ok(())
    }
}

/// Checks what passed through `tee` against the descriptor.
fn check_blob<R>(tee: &Tee<R>, digest: &str, size: u64) -> Result<(), ImageError> {
    let got = tee.hasher.len();
    if got != size {
        return Err(ImageError::ContentSize {
            what: "blob".to_owned(),
            expected: size,
            actual: got,
        });
    }
    let actual = tee.hasher.digest();
    if actual != digest {
        return Err(ImageError::ContentMismatch {
            what: "blob".to_owned(),
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(())
}
