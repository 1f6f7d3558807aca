//! Running from a sealed view of our own binary (CVE-2019-5736).
//!
//! A process that enters a container is a copy of the runtime until it
//! execs the workload, so its `/proc/PID/exe` is the runtime's binary. A
//! container process that opens it (it needs `CAP_SYS_PTRACE` once the
//! process is not dumpable, see [`crate::fds`]) and reopens it for writing
//! after the runtime exits would replace the host's `berth`. So the
//! commands that put processes into containers first re-exec themselves
//! from a view of the binary that cannot be written: a detached, read-only
//! bind mount of just that file (`open_tree` + `mount_setattr`: no copy,
//! no mount anyone sees), or, where that is refused, a sealed memfd copy,
//! as runc does. Reopening `/proc/PID/exe` for writing then fails with
//! `EROFS` (or `EPERM` on the sealed memfd).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Where the binary was before the re-exec: siblings (the monitor, the
/// agent) and re-execs of ourselves are found from it.
const SEALED_FROM: &str = "BERTH_SEALED_FROM";

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Whether this process already runs from a view of its binary that cannot
/// be written (a read-only mount or a write-sealed memfd).
pub fn is_sealed() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    unwritable(f.as_fd())
}

fn unwritable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    if nix::sys::statvfs::fstatvfs(fd)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    {
        return true;
    }
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok_and(|s| {
        nix::fcntl::SealFlag::from_bits_truncate(s).contains(nix::fcntl::SealFlag::F_SEAL_WRITE)
    })
}

/// Re-execs this process from a sealed view of its binary, with the same
/// arguments and environment; returns at once when it already runs from
/// one. Errors when neither view can be made (or the exec fails).
pub fn reexec_sealed() -> io::Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let from = std::env::current_exe()?;
    let view = match readonly_view() {
        Ok(fd) => fd,
        Err(_) => sealed_copy()?,
    };
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != SEALED_FROM)
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()?;
    let mut kv = format!("{SEALED_FROM}=").into_bytes();
    kv.extend(from.into_os_string().into_vec());
    env.push(CString::new(kv)?);
    let err = nix::unistd::fexecve(view.as_fd(), &args, &env).unwrap_err();
    Err(err.into())
}

/// A detached read-only, nosuid, nodev bind mount of our binary.
fn readonly_view() -> io::Result<OwnedFd> {
    let fd = crate::sys::open_tree_clone(c"/proc/self/exe")?;
    crate::sys::mount_setattr_recursive(
        fd.as_fd(),
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        0,
    )?;
    if !unwritable(fd.as_fd()) {
        return Err(io::Error::from_raw_os_error(libc::EROFS));
    }
    Ok(fd)
}

/// A memfd copy of our binary, sealed against any change.
fn sealed_copy() -> io::Result<OwnedFd> {
    use nix::fcntl::SealFlag;
    let name: &CStr = c"berth-sealed";
    let fd = nix::sys::memfd::memfd_create(
        name,
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut src = std::fs::File::open("/proc/self/exe")?;
    let mut dst = std::fs::File::from(fd);
    io::copy(&mut src, &mut dst)?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    nix::fcntl::fcntl(&dst, nix::fcntl::FcntlArg::F_ADD_SEALS(seals))?;
    let fd = OwnedFd::from(dst);
    debug_assert!(fd.as_raw_fd() > 2);
    Ok(fd)
}

/// The path of this process's binary: where it was before a sealed
/// re-exec, else `std::env::current_exe`.
pub fn current_exe() -> io::Result<PathBuf> {
    if let Some(from) = std::env::var_os(SEALED_FROM) {
        let from = PathBuf::from(from);
        if is_sealed() && same_binary(&from) {
            return Ok(from);
        }
    }
    std::env::current_exe()
}

/// Whether `path` is the file this process runs (the read-only view keeps
/// its inode; a memfd copy keeps its size).
fn same_binary(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) else {
        return false;
    };
    (a.dev(), a.ino()) == (b.dev(), b.ino())
        || (std::fs::read_link("/proc/self/exe")
            .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"))
            && a.size() == b.size())
}
