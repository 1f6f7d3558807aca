//! Staging of an outer image archive: every regular entry is written to a
//! file under the store's `tmp/` while it is hashed, so that the archive's
//! entry order does not matter and every blob is verified before use.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tar::EntryType;

use crate::compress::{decompress, EofWatch, BUF_SIZE};
use crate::digest::{is_sha256_hex, sha256_hex, Hasher};
use crate::store::Store;
use crate::sys::remove_tree;
use crate::ImageError;

/// The largest JSON document (index, manifest, config) we parse.
pub const MAX_JSON_SIZE: u64 = 4 << 20;

/// One regular file of the archive.
#[derive(Debug)]
pub(crate) struct Staged {
    /// Where its content is: a staging file, or the store's own blob when
    /// the store already had a blob of that name (then nothing is copied).
    pub path: PathBuf,
    /// `sha256:<hex>` of the content as it was in the archive.
    pub digest: String,
    pub size: u64,
    pub in_store: bool,
}

/// A staged archive. Dropping it removes the staging directory.
pub(crate) struct Staging {
    pub dir: PathBuf,
    files: HashMap<String, Staged>,
    links: HashMap<String, String>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_tree(&self.dir);
    }
}

fn corrupt(e: io::Error) -> ImageError {
    ImageError::Corrupt(e.to_string())
}

/// Lexically resolves `name` (relative to `base`, a directory in the
/// archive) into a clean archive path; `None` if it climbs above the root.
fn clean(base: &str, name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let start = if name.starts_with('/') { "" } else { base };
    for comp in start.split('/').chain(name.split('/')) {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Staging {
    /// Reads the whole outer archive (plain, gzip or zstd) into staging.
    pub fn stage(store: &Store, reader: impl Read) -> Result<Staging, ImageError> {
        let dir = store.staging_name("import");
        fs::create_dir(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
        let mut staging = Staging {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let (_, stream) = decompress(reader).map_err(corrupt)?;
        let mut archive = tar::Archive::new(EofWatch::new(stream));
        let mut buf = vec![0u8; BUF_SIZE];
        let mut seq = 0u64;
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let Ok(raw) = std::str::from_utf8(&entry.path_bytes()).map(str::to_owned) else {
                continue; // no image format uses non-UTF-8 names
            };
            let Some(name) = clean("", &raw) else {
                continue; // never looked up, never written by name
            };
            match entry.header().entry_type() {
                EntryType::Regular | EntryType::Continuous => {
                    seq += 1;
                    let staged = staging.stage_file(store, &mut entry, &name, seq, &mut buf)?;
                    staging.links.remove(&name);
                    staging.files.insert(name, staged);
                }
                kind @ (EntryType::Symlink | EntryType::Link) => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    let target = String::from_utf8_lossy(&target);
                    let base = match kind {
                        EntryType::Symlink => name.rsplit_once('/').map_or("", |(d, _)| d),
                        _ => "",
                    };
                    if let Some(t) = clean(base, &target) {
                        staging.files.remove(&name);
                        staging.links.insert(name, t);
                    }
                }
                _ => {}
            }
        }
        let mut rest = archive.into_inner();
        if rest.hit_eof {
            return Err(ImageError::Corrupt(
                "archive ends without an end-of-archive marker".into(),
            ));
        }
        // Read the trailer too, so a compressed stream's checksum is checked.
        io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
        Ok(staging)
    }

    fn stage_file<R: Read>(
        &self,
        store: &Store,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        seq: u64,
        buf: &mut [u8],
    ) -> Result<Staged, ImageError> {
        // A blob the store already has is only hashed, not copied.
        let known = name
            .strip_prefix("blobs/sha256/")
            .filter(|hex| is_sha256_hex(hex))
            .map(|hex| format!("sha256:{hex}"))
            .filter(|d| store.has_blob(d));
        let (path, mut out) = match &known {
            Some(d) => (store.blob_path(d)?, None),
            None => {
                let path = self.dir.join(format!("f{seq}"));
                let f = File::create(&path).map_err(|e| ImageError::io("create", &path, e))?;
                (path, Some(f))
            }
        };
        let mut hasher = Hasher::new();
        loop {
            let n = match entry.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::Corrupt(format!("{name}: {e}"))),
            };
            hasher.update(&buf[..n]);
            if let Some(f) = &mut out {
                f.write_all(&buf[..n])
                    .map_err(|e| ImageError::io("write", &path, e))?;
            }
        }
        if hasher.len() != entry.size() {
            return Err(ImageError::Corrupt(format!(
                "{name} ends after {} of {} bytes",
                hasher.len(),
                entry.size()
            )));
        }
        Ok(Staged {
            path,
            digest: hasher.digest(),
            size: hasher.len(),
            in_store: known.is_some(),
        })
    }

    /// The staged file called `name` in the archive, following links.
    pub fn find(&self, name: &str) -> Option<&Staged> {
        let mut name = clean("", name)?;
        for _ in 0..16 {
            if let Some(s) = self.files.get(&name) {
                return Some(s);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    /// The blob `digest` (under `blobs/sha256/`), verified against its
    /// digest and, when given, its size. `what` names it in errors.
    pub fn blob(&self, what: &str, digest: &str, size: Option<u64>) -> Result<&Staged, ImageError> {
        let hex = sha256_hex(digest)?;
        let path = format!("blobs/sha256/{hex}");
        let staged = self.find(&path).ok_or_else(|| ImageError::MissingBlob {
            what: what.to_owned(),
            path,
        })?;
        verify(what, staged, digest, size)?;
        Ok(staged)
    }

    /// A file named by path (docker save's manifest.json); if the path is
    /// `blobs/sha256/<hex>`, its content must match that digest.
    pub fn file(&self, what: &str, path: &str) -> Result<&Staged, ImageError> {
        let staged = self.find(path).ok_or_else(|| ImageError::MissingBlob {
            what: what.to_owned(),
            path: path.to_owned(),
        })?;
        if let Some(hex) = clean("", path)
            .as_deref()
            .and_then(|p| p.strip_prefix("blobs/sha256/"))
            .filter(|h| is_sha256_hex(h))
        {
            verify(what, staged, &format!("sha256:{hex}"), None)?;
        }
        Ok(staged)
    }

    /// Parses a staged JSON document of at most [`MAX_JSON_SIZE`] bytes;
    /// returns it with its raw bytes.
    pub fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        staged: &Staged,
    ) -> Result<(T, Vec<u8>), ImageError> {
        read_json(what, &staged.path, staged.size)
    }
}

fn verify(what: &str, staged: &Staged, digest: &str, size: Option<u64>) -> Result<(), ImageError> {
    if staged.digest != digest {
        return Err(ImageError::DigestMismatch {
            what: what.to_owned(),
            expected: digest.to_owned(),
            actual: staged.digest.clone(),
        });
    }
    match size {
        Some(expected) if expected != staged.size => Err(ImageError::SizeMismatch {
            what: what.to_owned(),
            expected,
            actual: staged.size,
        }),
        _ => Ok(()),
    }
}

pub(crate) fn read_json<T: DeserializeOwned>(
    what: &str,
    path: &Path,
    size: u64,
) -> Result<(T, Vec<u8>), ImageError> {
    if size > MAX_JSON_SIZE {
        return Err(ImageError::TooLarge {
            what: what.to_owned(),
            size,
            limit: MAX_JSON_SIZE,
        });
    }
    let bytes = fs::read(path).map_err(|e| ImageError::io("read", path, e))?;
    let value = serde_json::from_slice(&bytes).map_err(|error| ImageError::InvalidJson {
        what: what.to_owned(),
        error,
    })?;
    Ok((value, bytes))
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn cleans_names() {
        assert_eq!(clean("", "./index.json").as_deref(), Some("index.json"));
        assert_eq!(clean("a", "../b/layer.tar").as_deref(), Some("b/layer.tar"));
        assert_eq!(clean("a", "/b").as_deref(), Some("b"));
        assert_eq!(clean("", "../x"), None);
    }
}
