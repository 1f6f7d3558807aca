//! The content store on disk.
//!
//! ```text
//! <root>/blobs/sha256/<hex>     blobs: manifests, configs, layer blobs as imported
//! <root>/layers/<diff-id-hex>/  one unpacked layer each (an overlayfs lowerdir)
//! <root>/layerinfo/<hex>        unpacked size of that layer, in bytes (decimal)
//! <root>/tmp/                   staging; everything enters the store by rename
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::digest::{is_sha256_hex, sha256_hex};
use crate::sys::remove_tree;
use crate::ImageError;

/// A content store rooted at one directory. Cheap to clone; holds no open
/// files. Several processes may use one store: everything enters it by
/// `rename` and nothing present is ever replaced.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// Renames `from` to `to` unless `to` exists. Returns false if it existed.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<bool, ImageError> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST | Errno::ENOTEMPTY) => Ok(false),
        Err(e) => Err(ImageError::io("move into place", to, e.into())),
    }
}

impl Store {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [
            root.to_path_buf(),
            store.root.join("blobs/sha256"),
            store.root.join("layerinfo"),
        ] {
            fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
        }
        // Layers hold setuid binaries and device nodes of images: only root
        // may walk into them (overlayfs reaches them with the mounter's
        // credentials). Staging holds the same before it is committed.
        for dir in [store.root.join("layers"), store.root.join("tmp")] {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ImageError::io("create", &dir, e)),
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| ImageError::io("set permissions of", &dir, e))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the unpacked layer `diff_id` (`sha256:<hex>`). A malformed
    /// diff id yields a path below the store that never exists.
    pub fn layer_path(&self, diff_id: &str) -> PathBuf {
        match sha256_hex(diff_id) {
            Ok(hex) => self.root.join("layers").join(hex),
            Err(_) => self.root.join("layers/invalid-diff-id"),
        }
    }

    /// Whether the layer `diff_id` is unpacked in the store.
    pub fn has_layer(&self, diff_id: &str) -> bool {
        sha256_hex(diff_id).is_ok() && self.layer_path(diff_id).is_dir()
    }

    /// The unpacked size of layer `diff_id` (bytes of regular files), if
    /// the layer is present and its size was recorded.
    pub fn layer_size(&self, diff_id: &str) -> Option<u64> {
        let hex = sha256_hex(diff_id).ok()?;
        if !self.has_layer(diff_id) {
            return None;
        }
        let text = fs::read_to_string(self.layerinfo_path(hex)).ok()?;
        text.lines().find_map(|l| l.parse().ok())
    }

    /// Diff ids of all unpacked layers.
    pub fn list_layers(&self) -> Result<Vec<String>, ImageError> {
        self.list(&self.root.join("layers"))
    }

    /// Removes the unpacked layer `diff_id`; succeeds if it is absent. The
    /// directory is first renamed into `tmp/` (so a half-removed layer is
    /// never visible), then removed, fixing permissions where needed.
    pub fn remove_layer(&self, diff_id: &str) -> Result<(), ImageError> {
        let hex = sha256_hex(diff_id)?;
        let path = self.layer_path(diff_id);
        let info = self.root.join("layerinfo").join(hex);
        match fs::remove_file(&info) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(ImageError::io("remove", &info, e))
            }
            _ => {}
        }
        let doomed = self.staging_name("remove");
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("remove", &path, e)),
        }
        remove_tree(&doomed).map_err(|e| ImageError::io("remove", &doomed, e))
    }

    /// Path of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    /// Whether blob `digest` is in the store.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Reads blob `digest` whole (it was verified when it entered the store).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| ImageError::io("read", &path, e))
    }

    /// Stores `data` as a blob and returns its digest.
    pub fn write_blob(&self, data: &[u8]) -> Result<String, ImageError> {
        let digest = crate::sha256_digest(data);
        let path = self.blob_path(&digest)?;
        if path.is_file() {
            return Ok(digest);
        }
        let tmp = self.staging_name("blob");
        let mut f = fs::File::create(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        let written = f
            .write_all(data)
            .map_err(|e| ImageError::io("write", &tmp, e));
        drop(f);
        let placed = written.and_then(|()| rename_noreplace(&tmp, &path));
        let _ = fs::remove_file(&tmp);
        placed.map(|_| digest)
    }

    /// Removes blob `digest`; succeeds if it is absent.
    pub fn remove_blob(&self, digest: &str) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io("remove", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// Digests of all blobs.
    pub fn list_blobs(&self) -> Result<Vec<String>, ImageError> {
        self.list(&self.root.join("blobs/sha256"))
    }

    /// Removes staging leftovers of crashed imports: entries of `tmp/` at
    /// least `min_age` old whose creating process no longer exists. Safe to
    /// call while other processes import into the same store.
    pub fn clean_tmp(&self, min_age: Duration) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp");
        let rd = fs::read_dir(&tmp).map_err(|e| ImageError::io("read", &tmp, e))?;
        let now = SystemTime::now();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            let alive =
                pid.is_some_and(|p| !matches!(kill(Pid::from_raw(p), None), Err(Errno::ESRCH)));
            let old = ent
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= min_age);
            if old && !alive {
                let p = ent.path();
                remove_tree(&p).map_err(|e| ImageError::io("remove", &p, e))?;
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>, ImageError> {
        let rd = fs::read_dir(dir).map_err(|e| ImageError::io("read", dir, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io("read", dir, e))?;
            if let Some(name) = ent.file_name().to_str() {
                if is_sha256_hex(name) {
                    out.push(format!("sha256:{name}"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// A fresh, unused path in `tmp/`.
    pub(crate) fn staging_name(&self, what: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{seq}-{nanos}", std::process::id()))
    }

    /// `layerinfo/<diff-id-hex>`: a line with the unpacked size, and one
    /// line per blob digest verified to uncompress to this layer.
    pub(crate) fn layerinfo_path(&self, hex: &str) -> PathBuf {
        self.root.join("layerinfo").join(hex)
    }

    /// Whether layer `diff_id` is present and `blob` is known to produce it.
    pub(crate) fn layer_knows_blob(&self, diff_id: &str, blob: &str) -> bool {
        let Ok(hex) = sha256_hex(diff_id) else {
            return false;
        };
        self.has_layer(diff_id)
            && self.has_blob(blob)
            && fs::read_to_string(self.layerinfo_path(hex))
                .is_ok_and(|t| t.lines().any(|l| l == blob))
    }

    /// Records that `blob` uncompresses to layer `diff_id` (one appended
    /// line; appends of a short line are atomic).
    pub(crate) fn layer_add_blob(&self, diff_id: &str, blob: &str) -> Result<(), ImageError> {
        let path = self.layerinfo_path(sha256_hex(diff_id)?);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| ImageError::io("open", &path, e))?;
        f.write_all(format!("{blob}\n").as_bytes())
            .map_err(|e| ImageError::io("write", &path, e))
    }
}
