//! What a hostile rootfs, bundle or volume must not turn a mount into.
//!
//! - procfs and sysfs go on ordinary directories only, nothing else goes on
//!   `/proc`, and nothing lands inside a procfs except the few files runc
//!   allows (lxcfs): a rootfs whose `/proc` is a symlink, or a volume that
//!   swaps a symlink to `/proc` in, cannot redirect a mount onto
//!   `/proc/self/attr` or `/proc/sys` (CVE-2019-16884, CVE-2019-19921,
//!   CVE-2023-27561).
//! - Masking binds the container's `/dev/null` only after checking that it
//!   is the null device, reached without symlinks, through its descriptor
//!   (CVE-2025-31133: a `/dev/null` swapped for a symlink to a procfs file
//!   would have bound that file, writable, over a masked path).
//! - The console is bound from the pty the runtime holds (`TIOCGPTPEER`,
//!   no path lookup) onto a `/dev/console` that is no symlink
//!   (CVE-2025-52565).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::safepath::{fd_path, relative};
use crate::SetupError;

/// Files inside /proc that may be mounted over (runc's list, for lxcfs).
const PROC_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

fn refuse(step: String) -> SetupError {
    SetupError {
        step,
        source: io::Error::from_raw_os_error(libc::EPERM),
    }
}

/// `dest` without `.`, `..` (clamped at `/`) or repeated slashes.
fn clean(dest: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Checks a mount of type `typ` on `dest` (inside `root`) before its
/// mount point is made: what the destination's name says.
pub(crate) fn check_destination(root: impl AsFd, dest: &Path, typ: &str) -> Result<(), SetupError> {
    let d = clean(dest);
    let shown = dest.display();
    if typ == "proc" || typ == "sysfs" {
        // An ordinary directory: no symlink anywhere on the way.
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2(root.as_fd(), relative(dest), how) {
            Ok(fd) => {
                let md = std::fs::metadata(fd_path(&fd)).map_err(|source| SetupError {
                    step: format!("mounts[{shown}]: checking the destination"),
                    source,
                })?;
                if !md.is_dir() {
                    return Err(refuse(format!(
                        "mounts[{shown}]: {typ} must be mounted on an ordinary directory"
                    )));
                }
            }
            Err(nix::errno::Errno::ENOENT) => {}
            Err(nix::errno::Errno::ELOOP) | Err(nix::errno::Errno::EXDEV) => {
                return Err(refuse(format!(
                    "mounts[{shown}]: {typ} must be mounted on an ordinary directory, not through a symlink"
                )))
            }
            Err(e) => {
                return Err(SetupError {
                    step: format!("mounts[{shown}]: checking the destination"),
                    source: e.into(),
                })
            }
        }
        return Ok(());
    }
    if d == Path::new("/proc") {
        return Err(refuse(format!(
            "mounts[{shown}]: only a proc filesystem may be mounted on /proc (here: {typ})"
        )));
    }
    if d.starts_with("/proc") && !PROC_ALLOWED.iter().any(|p| d == Path::new(p)) {
        return Err(refuse(format!(
            "mounts[{shown}]: {} cannot be mounted over because it is inside /proc",
            d.display()
        )));
    }
    Ok(())
}

/// Checks the resolved mount point (`target`, an `O_PATH` descriptor) of a
/// mount of type `typ` on `dest`: a symlink in the rootfs or a volume must
/// not have led it into a procfs.
pub(crate) fn check_target(target: &OwnedFd, dest: &Path, typ: &str) -> Result<(), SetupError> {
    if typ == "proc" {
        return Ok(());
    }
    let in_proc = nix::sys::statfs::fstatfs(target)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
    if !in_proc {
        return Ok(());
    }
    let d = clean(dest);
    if PROC_ALLOWED.iter().any(|p| d == Path::new(p)) {
        return Ok(());
    }
    Err(refuse(format!(
        "mounts[{}]: the destination resolves into a proc filesystem (a symlink?); refused",
        dest.display()
    )))
}

/// Opens `path` (absolute, in the container after pivot_root) without
/// following a symlink in its last component.
fn open_nofollow(path: &str) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The file type of what an `O_PATH` descriptor names (a symlink itself
/// when opened with `O_NOFOLLOW`).
fn file_kind(fd: &OwnedFd) -> nix::Result<SFlag> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok(SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT))
}

/// The container's `/dev/null`, checked to be the null device (1:3).
fn null_device() -> Result<OwnedFd, SetupError> {
    let fd = open_nofollow("/dev/null").map_err(|e| SetupError {
        step: "opening /dev/null to mask paths (is it a symlink?)".into(),
        source: e.into(),
    })?;
    let md = std::fs::metadata(fd_path(&fd)).map_err(|source| SetupError {
        step: "checking /dev/null".into(),
        source,
    })?;
    if !md.file_type().is_char_device() || md.rdev() != nix::sys::stat::makedev(1, 3) {
        return Err(refuse(
            "/dev/null in the container is not the null device; refusing to mask paths with it"
                .into(),
        ));
    }
    Ok(fd)
}

/// Masks `p` (after pivot_root): an empty read-only tmpfs over a
/// directory, the checked null device over anything else; a missing path
/// or a symlink is left alone.
pub(crate) fn mask_path(p: &str) -> Result<(), SetupError> {
    let fail = |e: nix::errno::Errno| SetupError {
        step: format!("masking {p}"),
        source: e.into(),
    };
    let target = match open_nofollow(p) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    let kind = file_kind(&target).map_err(fail)?;
    let res = if kind == SFlag::S_IFLNK || kind == SFlag::S_IFSOCK {
        return Ok(());
    } else if kind == SFlag::S_IFDIR {
        mount(
            Some("tmpfs"),
            fd_path(&target).as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k,mode=555"),
        )
    } else {
        let null = null_device()?;
        mount(
            Some(fd_path(&null).as_str()),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    match res {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

/// Binds the pty slave `slave` over `/dev/console` (after pivot_root),
/// replacing a `/dev/console` that is a symlink by an empty file.
pub(crate) fn bind_console(slave: &OwnedFd) -> Result<(), SetupError> {
    let fail = |step: &str| {
        let step = step.to_string();
        move |e: nix::errno::Errno| SetupError {
            step,
            source: e.into(),
        }
    };
    let md = std::fs::metadata(fd_path(slave)).map_err(|source| SetupError {
        step: "checking the console's pty".into(),
        source,
    })?;
    // Unix98 ptys: majors 136-143.
    let major = nix::sys::stat::major(md.rdev());
    if !md.file_type().is_char_device() || !(136..=143).contains(&major) {
        return Err(refuse("the console's pty is not a pty".into()));
    }
    let console = match open_nofollow("/dev/console") {
        Ok(fd) if file_kind(&fd).is_ok_and(|k| k != SFlag::S_IFLNK) => fd,
        Ok(_) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ELOOP) => {
            let _ = std::fs::remove_file("/dev/console");
            let f = nix::fcntl::open(
                "/dev/console",
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(fail("creating /dev/console"))?;
            drop(f);
            open_nofollow("/dev/console").map_err(fail("opening /dev/console"))?
        }
        Err(e) => return Err(fail("opening /dev/console")(e)),
    };
    mount(
        Some(fd_path(slave).as_str()),
        fd_path(&console).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(fail("bind-mounting /dev/console"))?;
    debug_assert!(console.as_raw_fd() > 2);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_in_proc_are_refused() {
        let root = nix::fcntl::open("/", OFlag::O_PATH, Mode::empty()).unwrap();
        for (dest, typ) in [
            ("/proc", "bind"),
            ("/proc/", "tmpfs"),
            ("/proc/self/attr/exec", "bind"),
            ("/x/../proc/sys", "bind"),
        ] {
            let e = check_destination(&root, Path::new(dest), typ).unwrap_err();
            assert!(e.step.contains("proc"), "{dest}: {}", e.step);
        }
        for (dest, typ) in [
            ("/proc/cpuinfo", "bind"),
            ("/data", "bind"),
            ("/proc", "proc"),
        ] {
            check_destination(&root, Path::new(dest), typ).unwrap();
        }
    }
}
