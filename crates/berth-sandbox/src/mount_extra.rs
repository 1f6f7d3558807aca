//! Mount features beyond plain mount(2): recursive attributes through
//! `mount_setattr(2)` (`rro`, `rnosuid`, ... of runtime spec 1.1),
//! `tmpcopyup` (a tmpfs that starts with the contents of the directory it
//! covers), and `--no-pivot` (entering the rootfs with `MS_MOVE` + chroot).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::SetupError;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
pub const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// The `MOUNT_ATTR_*` bits (set, clear) of a recursive mount option, or
/// `None` when `opt` is not one.
pub fn recursive_attr(opt: &str) -> Option<(u64, u64)> {
    Some(match opt {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME_MASK),
        // relatime is the value 0 of the atime field.
        "rrelatime" | "ratime" | "rnorelatime" | "rnostrictatime" => (0, MOUNT_ATTR_ATIME_MASK),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Applies recursive attributes to the mount `fd` names.
pub fn apply_recursive(fd: &OwnedFd, set: u64, clear: u64, what: &str) -> Result<(), SetupError> {
    crate::sys::mount_setattr_recursive(fd.as_fd(), set, clear).map_err(|source| SetupError {
        step: format!("{what}: setting recursive mount attributes"),
        source,
    })
}

/// Copies the tree below `from` (a directory now covered by a new tmpfs,
/// reached through its descriptor) into `to` (the new mount's path).
pub fn copy_up(from: &OwnedFd, to: &str) -> Result<(), SetupError> {
    let src = crate::safepath::fd_path(from);
    copy_dir(Path::new(&src), Path::new(to)).map_err(|source| SetupError {
        step: "tmpcopyup: copying the directory's contents into the tmpfs".into(),
        source,
    })
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    let md = std::fs::metadata(from)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let md = std::fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_dir(&src, &dst)?;
            continue;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else {
            // Devices, fifos and sockets are not copied (as runc).
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()))?;
    }
    Ok(())
}

/// Makes `rootfs` the root without `pivot_root` (for a rootfs on a ramdisk,
/// where pivot_root is refused): move it over `/` and chroot into it. Less
/// safe than pivot_root: the old root stays reachable to a process that
/// escapes the chroot.
pub fn move_root(rootfs: &Path) -> Result<(), SetupError> {
    let nerr = |step: &'static str| {
        move |e: nix::errno::Errno| SetupError {
            step: step.into(),
            source: e.into(),
        }
    };
    nix::unistd::chdir(rootfs).map_err(nerr("entering rootfs"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(nerr("moving the rootfs over / (--no-pivot)"))?;
    nix::unistd::chroot(".").map_err(nerr("chroot (--no-pivot)"))?;
    nix::unistd::chdir("/").map_err(nerr("entering /"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_options_map_to_attributes() {
        assert_eq!(recursive_attr("rro"), Some((MOUNT_ATTR_RDONLY, 0)));
        assert_eq!(recursive_attr("rrw"), Some((0, MOUNT_ATTR_RDONLY)));
        assert_eq!(
            recursive_attr("rnoatime"),
            Some((MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK))
        );
        assert_eq!(recursive_attr("ro"), None);
        assert_eq!(recursive_attr("rprivate"), None);
    }
}
