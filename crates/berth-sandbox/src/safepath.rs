//! Resolving paths inside a rootfs without following symlinks out of it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Opens `path` (interpreted relative to `root`, symlinks resolved as if
/// `root` were `/`) with `flags`.
pub fn open_in_root(root: impl AsFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root.as_fd(), rel, how).map_err(io::Error::from)
}

/// The path without its leading `/`, or `.` for the root itself.
pub fn relative(path: &Path) -> &Path {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// Creates every missing directory of `path` inside `root` (mode 0755) and
/// returns an `O_PATH` descriptor of the last one. Symlinks met on the way
/// are resolved inside `root`.
pub fn mkdir_all_in_root(root: impl AsFd, path: &Path) -> io::Result<OwnedFd> {
    let root = root.as_fd();
    let mut cur = open_in_root(root, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let mut so_far = std::path::PathBuf::new();
    for comp in relative(path).components() {
        let name = match comp {
            Component::Normal(n) => n,
            Component::CurDir | Component::RootDir => continue,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("path {} has a '..' component", path.display()),
                ))
            }
        };
        match nix::sys::stat::mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        // Re-resolve from the root so that a symlink we just met stays inside.
        so_far.push(name);
        cur = open_in_root(root, &so_far, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    }
    Ok(cur)
}

/// Makes sure a mount point exists for `dest`: a directory, or an empty file
/// when `file` is set. Returns an `O_PATH` descriptor of it.
pub fn ensure_mountpoint(root: impl AsFd, dest: &Path, file: bool) -> io::Result<OwnedFd> {
    let root = root.as_fd();
    if !file {
        return mkdir_all_in_root(root, dest);
    }
    match open_in_root(root, dest, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    let name = dest.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "mount destination has no name")
    })?;
    let dir = mkdir_all_in_root(root, parent)?;
    let dirfd = nix::fcntl::openat(
        dir.as_fd(),
        ".",
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    match nix::fcntl::openat(
        dirfd.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(_) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_in_root(root, dest, OFlag::O_PATH)
}

/// `/proc/self/fd/N` for an `O_PATH` descriptor, the race-free way to name a
/// resolved path in mount(2).
pub fn fd_path(fd: &impl std::os::fd::AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}
