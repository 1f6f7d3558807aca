//! What berth builds once and every VM reuses: initramfs images,
//! snapshots of a booted guest, the accelerator probe's answer, compiled
//! guest seccomp programs. They live in `BERTH_VM_CACHE`, else the VM dir
//! (`BERTH_VM_DIR`, which also holds the read-only guest kernel), and are
//! shared by every berth root and build on the host.
//!
//! Shared means used concurrently, so:
//! - a cached file is named by what went into it, read through file
//!   identities (device, inode, size, time: [`identity`]), never by the
//!   path someone used to name an input: `target/release/berth` and its
//!   absolute path find the same snapshot;
//! - whoever uses a cached file holds a shared `flock` on it ([`InUse`])
//!   from the moment it picks the file until QEMU has read it, and pruning
//!   removes only files it can lock exclusively: nothing in use is ever
//!   deleted, and a user that loses the race to a prune sees it (the path
//!   no longer names the file it locked) and builds anew.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{io_err, VmError};

/// The cache directory: `BERTH_VM_CACHE`, else the VM directory.
pub fn dir() -> PathBuf {
    std::env::var_os("BERTH_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(crate::assets::vm_dir)
}

/// What identifies a file's content without reading it, whatever path
/// names it: device, inode, size and modification time. `None`: missing.
pub fn identity(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// A shared lock on a cached file that is in use: it is not pruned while
/// this lives.
#[derive(Debug)]
pub struct InUse(#[allow(dead_code)] Flock<File>);

/// Locks `path` as in use. `None` when it does not exist (any more): a
/// prune removed it between the caller's lookup and this lock.
pub fn use_file(path: &Path) -> Option<InUse> {
    let f = File::open(path).ok()?;
    let locked = Flock::lock(f, FlockArg::LockShared).ok()?;
    // Still the file the path names (not unlinked by a prune meanwhile)?
    let (held, named) = (locked.metadata().ok()?, std::fs::metadata(path).ok()?);
    if held.nlink() == 0 || (held.dev(), held.ino()) != (named.dev(), named.ino()) {
        return None;
    }
    Some(InUse(locked))
}

/// Removes the oldest files ending in `.ext` in `dir` beyond the newest
/// `keep` (plus `except`), skipping every file someone uses.
pub fn prune(dir: &Path, ext: &str, keep: usize, except: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext) && p != except)
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort();
    for (_, p) in files.iter().rev().skip(keep.saturating_sub(1)) {
        let Ok(f) = File::open(p) else { continue };
        // In use by a VM that is starting: leave it.
        let Ok(_held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let _ = std::fs::remove_file(p);
    }
}

/// Creates the cache's subdirectory `name`.
pub fn subdir(name: &str) -> Result<PathBuf, VmError> {
    let d = dir().join(name);
    std::fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_use_is_never_pruned() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..4).map(|i| d.path().join(format!("{i}.snap"))).collect();
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(p, b"x").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64);
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // The oldest is in use: only the second oldest goes.
        let held = use_file(&paths[0]).unwrap();
        prune(d.path(), "snap", 2, &paths[3]);
        assert!(paths[0].exists(), "a file in use was pruned");
        assert!(!paths[1].exists());
        assert!(paths[2].exists() && paths[3].exists());
        drop(held);
        prune(d.path(), "snap", 2, &paths[3]);
        assert!(!paths[0].exists());
        // A file pruned between lookup and lock is not "in use".
        assert!(use_file(&paths[1]).is_none());
    }

    #[test]
    fn identity_ignores_how_the_path_is_spelled() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let dotted = d.path().join(".").join("f");
        assert_eq!(identity(&d.path().join("f")), identity(&dotted));
        assert!(identity(&d.path().join("missing")).is_none());
    }
}
