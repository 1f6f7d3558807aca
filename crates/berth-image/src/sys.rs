//! The small syscall layer: confined path resolution, xattrs and tree
//! removal. The only `unsafe` of the crate lives here (xattr calls, which
//! nix does not wrap).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fchmodat, fstat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Opens `path` (relative, no `..`) below `root` without following any
/// symlink or leaving `root`. `path` may be empty or "." for `root` itself.
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    loop {
        match openat2(root, path, how) {
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            other => return other,
        }
    }
}

/// Opens a directory for reading, refusing a symlink.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(AT_FDCWD, path, flags, Mode::empty())?)
}

fn c_key(key: &[u8]) -> io::Result<CString> {
    CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Sets xattr `key` on the open file `fd`.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = c_key(key)?;
    // SAFETY: `fd` is a valid open descriptor for the duration of the call,
    // `key` is a NUL-terminated string and `value` a live buffer of
    // `value.len()` bytes; the kernel only reads from both.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets xattr `key` on `name` in directory `dir` without following `name`
/// if it is a symlink. Goes through `/proc/self/fd/<dir>/<name>`: the magic
/// link resolves to the already-confined directory, and `name` is a single
/// component that `lsetxattr` does not follow.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: &[u8],
) -> io::Result<()> {
    if name.is_empty() || name.contains(&b'/') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = c_key(&path)?;
    let key = c_key(key)?;
    // SAFETY: `path` and `key` are NUL-terminated strings and `value` a live
    // buffer of `value.len()` bytes; the kernel only reads from them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads xattr `name` of `path` without following a final symlink.
/// `Ok(None)` when the attribute is not set.
pub fn read_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = c_key(path.as_os_str().as_bytes())?;
    let key = c_key(name.as_bytes())?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `cpath` and `key` are NUL-terminated; `buf` is a live,
        // writable buffer of `buf.len()` bytes that the kernel fills.
        let rc = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Removes `path` and everything below it, never following symlinks and
/// adding owner write/search permission to directories that lack it.
/// A missing `path` is not an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    let top = match open_dir(path) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
            open_dir(path)?
        }
        Err(e) => return Err(e),
    };
    empty_dir(top.as_fd())?;
    drop(top);
    match fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes `name` in `dir` (a whole tree if it is a directory).
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let top = openat(dir, name, flags, Mode::empty())?;
    empty_dir(top.as_fd())?;
    drop(top);
    Ok(unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
}

/// Relative paths longer than this start a new top directory.
const REBASE_AT: usize = 2048;

/// One directory being emptied: its subdirectories still to do.
struct Level {
    subs: Vec<Vec<u8>>,
    /// Length of the parent's relative path before this name was appended.
    rel_len: usize,
    /// Whether this directory got its own top descriptor.
    rebased: bool,
}

fn top_of<'a>(root: BorrowedFd<'a>, tops: &'a [OwnedFd]) -> BorrowedFd<'a> {
    tops.last().map_or(root, |f| f.as_fd())
}

/// Empties the directory `root`, depth first without recursion. Few
/// descriptors are open at any time however deep the tree: each directory
/// is reopened by its path relative to a "top" (`root`, or once that path
/// grows long, a descriptor for a deeper directory).
fn empty_dir(root: BorrowedFd<'_>) -> io::Result<()> {
    let mut tops: Vec<OwnedFd> = Vec::new();
    let mut rels: Vec<Vec<u8>> = vec![Vec::new()];
    let mut stack = vec![Level {
        subs: unlink_files(root, b"")?,
        rel_len: 0,
        rebased: false,
    }];
    while let Some(level) = stack.last_mut() {
        let rel = rels.last_mut().expect("one path per top");
        if let Some(sub) = level.subs.pop() {
            let rel_len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&sub);
            let next = if rel.len() > REBASE_AT {
                let fd =
                    open_beneath(top_of(root, &tops), rel, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
                let subs = unlink_files(fd.as_fd(), b"")?;
                tops.push(fd);
                rels.push(Vec::new());
                Level {
                    subs,
                    rel_len,
                    rebased: true,
                }
            } else {
                let subs = unlink_files(top_of(root, &tops), rel)?;
                Level {
                    subs,
                    rel_len,
                    rebased: false,
                }
            };
            stack.push(next);
            continue;
        }
        let done = stack.pop().expect("a level");
        if stack.is_empty() {
            break; // `root` itself: the caller removes it
        }
        if done.rebased {
            tops.pop();
            rels.pop();
        }
        let rel = rels.last_mut().expect("one path per top");
        unlinkat(
            top_of(root, &tops),
            rel.as_slice(),
            UnlinkatFlags::RemoveDir,
        )?;
        rel.truncate(done.rel_len);
    }
    Ok(())
}

/// Opens directory `rel` below `top` (making it accessible if needed),
/// removes every non-directory in it and returns the subdirectory names.
fn unlink_files(top: BorrowedFd<'_>, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let fd = match open_beneath(top, rel, flags) {
        Err(Errno::EACCES) => {
            let path: &[u8] = if rel.is_empty() { b"." } else { rel };
            fchmodat(top, path, Mode::S_IRWXU, FchmodatFlags::NoFollowSymlink)?;
            open_beneath(top, rel, flags)?
        }
        other => other?,
    };
    let st = fstat(&fd)?;
    if st.st_mode & 0o700 != 0o700 {
        fchmod(&fd, Mode::from_bits_truncate(st.st_mode | 0o700))?;
    }
    let mut dir = Dir::from_fd(fd)?;
    let mut names: Vec<(Vec<u8>, Option<Type>)> = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), entry.file_type()));
        }
    }
    let mut subdirs = Vec::new();
    for (name, kind) in names {
        let is_dir = match kind {
            Some(t) => t == Type::Directory,
            None => {
                let st = fstatat(&dir, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
            }
        };
        if is_dir {
            subdirs.push(name);
        } else {
            unlinkat(&dir, name.as_slice(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    Ok(subdirs)
}
