//! The container's root filesystem: an overlay of the image's unpacked
//! layers (shared, read-only) under a per-container upper directory.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::{io_err, EngineError};

/// Mounts `layers` (bottom first) with `upper`/`work` at `target`.
/// `volatile` skips the sync of the upper directory on unmount (a disk flush
/// per container exit); only for containers removed when they exit, whose
/// upper directory is never mounted again (podman does the same for --rm).
pub fn mount_overlay(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), EngineError> {
    if layers.is_empty() {
        return Err(EngineError::Invalid("image has no layers".into()));
    }
    let lower: Vec<String> = layers.iter().rev().map(|p| escape(p)).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper),
        escape(work)
    );
    if volatile {
        data.push_str(",volatile");
    }
    if data.len() >= 4096 {
        return Err(EngineError::Invalid(format!(
            "image has too many layers ({}) for one overlay mount",
            layers.len()
        )));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        io_err(format!(
            "mounting the overlay rootfs at {}",
            target.display()
        ))(e.into())
    })
}

fn escape(p: &Path) -> String {
    // overlayfs splits on ':' and ','; escape them with a backslash.
    let s = p.display().to_string();
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Unmounts `target` if it is mounted (lazily, so a busy mount still goes).
pub fn unmount(target: &Path) -> Result<(), EngineError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_err(format!("unmounting {}", target.display()))(e.into())),
    }
}

/// Removes a directory tree, unmounting nothing: callers unmount first.
pub fn remove_tree(dir: &Path) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", dir.display()))(e)),
    }
}
