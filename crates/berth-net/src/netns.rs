//! Network namespaces kept as bind mounts (as `ip netns add` and CNI do):
//! made before the container starts, configured from outside, joined by
//! the sandbox through the spec's `path`, removed when the container stops.
//!
//! Only the calling thread changes namespace, and only for the moment it
//! takes to make the namespace and open a netlink socket inside it; the
//! socket stays bound to the new namespace afterwards.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::netlink::Netlink;
use crate::{errno, io_err, NetError, Result};

const SELF_NET: &str = "/proc/thread-self/ns/net";
/// `statfs` type of a mounted namespace file.
const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);

/// An open handle on a namespace: its file descriptor (for moving links
/// into it) and a netlink socket talking to it.
pub struct Handle {
    pub fd: OwnedFd,
    pub nl: Netlink,
}

/// Runs `f` with the calling thread in a new network namespace, which is
/// bind-mounted on `path`; then returns to the original namespace.
pub fn create(path: &Path) -> Result<Handle> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    let orig = File::open(SELF_NET).map_err(io_err(format!("opening {SELF_NET}")))?;
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        let _ = std::fs::remove_file(path);
        return Err(errno("creating a network namespace")(e));
    }
    let inside = (|| -> Result<Handle> {
        mount(
            Some(SELF_NET),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno(format!(
            "bind-mounting the namespace on {}",
            path.display()
        )))?;
        let fd = File::open(SELF_NET)
            .map_err(io_err(format!("opening {SELF_NET}")))?
            .into();
        Ok(Handle {
            fd,
            nl: Netlink::open()?,
        })
    })();
    // Back to where we came from; nothing else may run in the new one.
    if let Err(e) = setns(&orig, CloneFlags::CLONE_NEWNET) {
        let _ = remove(path);
        return Err(errno("returning to the original network namespace")(e));
    }
    if inside.is_err() {
        let _ = remove(path);
    }
    inside
}

/// Opens an existing namespace at `path`.
pub fn open(path: &Path) -> Result<Handle> {
    let target = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let orig = File::open(SELF_NET).map_err(io_err(format!("opening {SELF_NET}")))?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(errno(format!(
        "entering the network namespace {}",
        path.display()
    )))?;
    let nl = Netlink::open();
    setns(&orig, CloneFlags::CLONE_NEWNET)
        .map_err(errno("returning to the original network namespace"))?;
    Ok(Handle {
        fd: target.into(),
        nl: nl?,
    })
}

/// Runs `f` with the calling thread inside the namespace at `path`.
pub fn run_in<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    let target = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let orig = File::open(SELF_NET).map_err(io_err(format!("opening {SELF_NET}")))?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(errno(format!(
        "entering the network namespace {}",
        path.display()
    )))?;
    let out = f();
    setns(&orig, CloneFlags::CLONE_NEWNET)
        .map_err(errno("returning to the original network namespace"))?;
    Ok(out)
}

/// Whether a namespace is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Unmounts and removes `path`; a missing file is not an error. The
/// namespace itself ends when its last process is gone.
pub fn remove(path: &Path) -> Result<()> {
    while is_mounted(path) {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Not mounted any more, or removed meanwhile by another berth
            // process tearing the same container down (rm -f racing the
            // monitor's exit handling).
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(errno(format!("unmounting {}", path.display()))(e)),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::Io {
            what: format!("removing {}", path.display()),
            source: e,
        }),
    }
}
