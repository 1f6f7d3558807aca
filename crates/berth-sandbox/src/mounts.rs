//! Child side: the container's mount namespace (rootfs, spec mounts, /dev,
//! pivot_root, masked and read-only paths). Runs after clone, before exec.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::safepath::{ensure_mountpoint, fd_path, open_in_root};
use crate::SetupError;

/// Mount flags and data parsed from an OCI mount's options.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    /// `MOUNT_ATTR_*` bits set and cleared recursively (`rro`, `rnosuid`, ...).
    pub rec_set: u64,
    pub rec_clear: u64,
    /// `tmpcopyup`: the tmpfs starts with the covered directory's contents.
    pub tmpcopyup: bool,
    /// `idmap`/`ridmap` was asked for (refused: not supported yet).
    pub idmap: bool,
}

impl MountOptions {
    pub fn parse(opts: &[String]) -> MountOptions {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            rec_set: 0,
            rec_clear: 0,
            tmpcopyup: false,
            idmap: false,
        };
        for o in opts {
            let (set, clear) = match o.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "nosymfollow" => (crate::mount_extra::MS_NOSYMFOLLOW, MsFlags::empty()),
                "symfollow" => (MsFlags::empty(), crate::mount_extra::MS_NOSYMFOLLOW),
                "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
                "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
                "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
                "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
                "iversion" => (MsFlags::MS_I_VERSION, MsFlags::empty()),
                "noiversion" => (MsFlags::empty(), MsFlags::MS_I_VERSION),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                | "unbindable" | "runbindable" => {
                    let base = match o.trim_start_matches('r') {
                        "private" => MsFlags::MS_PRIVATE,
                        "shared" => MsFlags::MS_SHARED,
                        "slave" => MsFlags::MS_SLAVE,
                        _ => MsFlags::MS_UNBINDABLE,
                    };
                    let rec = if o.starts_with('r') {
                        MsFlags::MS_REC
                    } else {
                        MsFlags::empty()
                    };
                    out.propagation.push(base | rec);
                    continue;
                }
                // Options for the runtime, not the kernel.
                "tmpcopyup" => {
                    out.tmpcopyup = true;
                    continue;
                }
                "idmap" | "ridmap" => {
                    out.idmap = true;
                    continue;
                }
                "copy-symlink" => continue,
                o if crate::mount_extra::recursive_attr(o).is_some() => {
                    let (set, clear) = crate::mount_extra::recursive_attr(o).unwrap_or((0, 0));
                    out.rec_set = (out.rec_set & !clear) | set;
                    out.rec_clear = (out.rec_clear & !set) | clear;
                    continue;
                }
                _ => {
                    out.data.push(o.clone());
                    continue;
                }
            };
            out.flags.insert(set);
            out.flags.remove(clear);
        }
        out
    }

    fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

fn err(step: impl Into<String>) -> impl FnOnce(io::Error) -> SetupError {
    let step = step.into();
    move |source| SetupError { step, source }
}

fn nerr(step: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> SetupError {
    let step = step.into();
    move |e| SetupError {
        step,
        source: e.into(),
    }
}

/// Prepares the rootfs in the child's new mount namespace, then pivots into it.
pub fn setup_rootfs(spec: &Spec, rootfs: &Path) -> Result<(), SetupError> {
    setup_rootfs_with(spec, rootfs, false, &mut || Ok(()))
}

/// [`setup_rootfs`] with `--no-pivot` (`MS_MOVE` + chroot instead of
/// pivot_root) and a step run after the mounts, right before entering the
/// rootfs (where the runtime spec runs `createRuntime` and
/// `createContainer` hooks).
pub fn setup_rootfs_with(
    spec: &Spec,
    rootfs: &Path,
    no_pivot: bool,
    before_pivot: &mut dyn FnMut() -> Result<(), SetupError>,
) -> Result<(), SetupError> {
    let linux = spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .map_err(nerr("making / a slave mount"))?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nerr(format!("bind-mounting rootfs {}", rootfs.display())))?;

    let root_fd = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nerr(format!("opening rootfs {}", rootfs.display())))?;

    for m in spec.mounts().iter().flatten() {
        mount_one(&root_fd, m)?;
    }
    create_devices(&root_fd, linux.and_then(|l| l.devices().as_ref()))?;

    before_pivot()?;
    if no_pivot {
        crate::mount_extra::move_root(rootfs)?;
    } else {
        pivot(rootfs)?;
    }

    if let Some(linux) = linux {
        for p in linux.masked_paths().iter().flatten() {
            crate::guards::mask_path(p)?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly_path(p)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(nerr("remounting / read-only"))?;
    }
    Ok(())
}

fn mount_one(root: &OwnedFd, m: &Mount) -> Result<(), SetupError> {
    let dest = m.destination();
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.is_bind() { "bind" } else { "none" });
    let step = |what: &str| format!("mounting {typ} on {}: {what}", dest.display());
    if opts.idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(SetupError {
            step: format!(
                "mounts[{}]: idmapped mounts (idmap, uidMappings) are not supported",
                dest.display()
            ),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, dest, &opts);
    }
    let bind = opts.is_bind() || typ == "bind";
    let source: Option<PathBuf> = m.source().clone();
    let is_file = bind
        && source
            .as_ref()
            .and_then(|s| fs::metadata(s).ok())
            .is_some_and(|md| !md.is_dir());
    if bind {
        if let Some(src) = &source {
            if !src.exists() {
                return Err(SetupError {
                    step: format!("bind mount source {}", src.display()),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
        }
    }
    crate::guards::check_destination(root, dest, typ)?;
    let target =
        ensure_mountpoint(root, dest, is_file).map_err(err(step("creating mount point")))?;
    crate::guards::check_target(&target, dest, typ)?;
    let target = fd_path(&target);
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let covered = if opts.tmpcopyup && typ == "tmpfs" {
        Some(
            nix::fcntl::open(
                target.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(nerr(step("tmpcopyup")))?,
        )
    } else {
        None
    };
    if bind {
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(
            source.as_deref(),
            target.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(nerr(step("bind")))?;
    } else {
        let src = source
            .as_deref()
            .map(Path::as_os_str)
            .unwrap_or(typ.as_ref());
        mount(Some(src), target.as_str(), Some(typ), opts.flags, data)
            .map_err(nerr(step("mount")))?;
    }
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    if let Some(old) = &covered {
        let mounted = open_in_root(root, dest, OFlag::O_PATH).map_err(err(step("reopening")))?;
        crate::mount_extra::copy_up(old, &fd_path(&mounted))?;
    }
    if (bind && !extra.is_empty()) || !opts.propagation.is_empty() {
        // The descriptor above names the directory under the new mount:
        // reopen the path to reach the mount itself.
        let mounted = open_in_root(root, dest, OFlag::O_PATH).map_err(err(step("reopening")))?;
        let mounted = fd_path(&mounted);
        if bind && !extra.is_empty() {
            mount(
                None::<&str>,
                mounted.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )
            .map_err(nerr(step("remount")))?;
        }
        for p in &opts.propagation {
            mount(
                None::<&str>,
                mounted.as_str(),
                None::<&str>,
                *p,
                None::<&str>,
            )
            .map_err(nerr(step("setting propagation")))?;
        }
    }
    // Last: a bind remount above would reset the top mount's attributes.
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        let mounted = open_in_root(root, dest, OFlag::O_PATH).map_err(err(step("reopening")))?;
        crate::mount_extra::apply_recursive(
            &mounted,
            opts.rec_set,
            opts.rec_clear,
            &step("attributes"),
        )?;
    }
    Ok(())
}

/// cgroup mounts: cgroup2 where the host is v2; on v1/hybrid hosts a
/// read-only tmpfs (a full v1 view is not offered yet).
fn mount_cgroup(root: &OwnedFd, dest: &Path, opts: &MountOptions) -> Result<(), SetupError> {
    let target =
        ensure_mountpoint(root, dest, false).map_err(err("creating cgroup mount point"))?;
    let target = fd_path(&target);
    let flags = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if v2 {
        mount(
            Some("cgroup2"),
            target.as_str(),
            Some("cgroup2"),
            flags,
            None::<&str>,
        )
        .map_err(nerr("mounting cgroup2"))
    } else {
        mount(
            Some("tmpfs"),
            target.as_str(),
            Some("tmpfs"),
            flags,
            Some("mode=755,size=4k"),
        )
        .map_err(nerr("mounting cgroup tmpfs"))
    }
}

/// The devices every container gets (OCI runtime spec, "Default Devices").
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn create_devices(root: &OwnedFd, extra: Option<&Vec<LinuxDevice>>) -> Result<(), SetupError> {
    let dev = match open_in_root(root, Path::new("/dev"), OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err("opening /dev")(e)),
    };
    for (name, major, minor) in DEFAULT_DEVICES {
        make_node(
            &dev,
            Path::new(name),
            SFlag::S_IFCHR,
            makedev(*major, *minor),
            0o666,
            0,
            0,
        )?;
    }
    for d in extra.into_iter().flatten() {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let path = d.path();
        let rel = path.strip_prefix("/dev").unwrap_or(path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::safepath::mkdir_all_in_root(&dev, parent)
                .map_err(err("creating device directory"))?;
        }
        make_node(
            &dev,
            rel,
            kind,
            makedev(d.major() as u64, d.minor() as u64),
            d.file_mode().unwrap_or(0o666),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        )?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ];
    for (name, target) in links {
        match nix::unistd::symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(nerr(format!("creating /dev/{name}"))(e)),
        }
    }
    // /dev/ptmx must be the devpts instance's, when /dev/pts is mounted.
    if nix::sys::stat::fstatat(&dev, "pts/ptmx", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
        let _ = nix::unistd::unlinkat(&dev, "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat("pts/ptmx", dev.as_fd(), "ptmx")
            .map_err(nerr("creating /dev/ptmx"))?;
    }
    Ok(())
}

fn make_node(
    dev: &OwnedFd,
    name: &Path,
    kind: SFlag,
    rdev: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), SetupError> {
    let step = || format!("creating device /dev/{}", name.display());
    let _ = nix::unistd::unlinkat(dev, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    // The mode goes in with the node (no chmod afterwards: a chmod by name
    // would follow a symlink swapped in meanwhile, onto a host file).
    let old_umask = nix::sys::stat::umask(Mode::empty());
    let made = mknodat(dev, name, kind, Mode::from_bits_truncate(mode), rdev);
    nix::sys::stat::umask(old_umask);
    match made {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) => {
            // Not allowed to create nodes (e.g. in a user namespace): bind the host's.
            let host = Path::new("/dev").join(name);
            let target = ensure_mountpoint(dev, name, true).map_err(err(step()))?;
            mount(
                Some(&host),
                fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(nerr(step()))?;
            return Ok(());
        }
        Err(e) => return Err(nerr(step())(e)),
    }
    nix::unistd::fchownat(
        dev,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nerr(step()))?;
    Ok(())
}

/// `pivot_root(".", ".")` and a lazy unmount of the old root, as runc does:
/// no directory for the old root is needed inside the container.
fn pivot(rootfs: &Path) -> Result<(), SetupError> {
    nix::unistd::chdir(rootfs).map_err(nerr("entering rootfs"))?;
    nix::unistd::pivot_root(".", ".").map_err(nerr("pivot_root"))?;
    // The old root is stacked on top; keep the unmount from propagating to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nerr("making the old root a slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nerr("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(nerr("entering /"))?;
    Ok(())
}

fn readonly_path(p: &str) -> Result<(), SetupError> {
    match mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(nerr(format!("making {p} read-only"))(e)),
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(nerr(format!("making {p} read-only")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_propagation_and_data() {
        let o = MountOptions::parse(&[
            "rbind".into(),
            "ro".into(),
            "nosuid".into(),
            "rprivate".into(),
            "mode=755".into(),
            "size=65536k".into(),
        ]);
        assert!(o.flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(
            o.data,
            vec!["mode=755".to_string(), "size=65536k".to_string()]
        );
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let o = MountOptions::parse(&["ro".into(), "rw".into()]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }
}
