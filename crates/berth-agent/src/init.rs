//! Bringing the guest up: pseudo filesystems, kernel modules, a root that
//! pivot_root can leave, the control port, and the container's disks.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::AgentError;

fn fail(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> AgentError {
    let what = what.into();
    move |e| AgentError::Setup(format!("{what}: {e}"))
}

fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), AgentError> {
    let _ = std::fs::create_dir_all(target);
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(fail(format!("mounting {fstype} on {target}")))
}

/// /proc, /sys and /dev.
pub fn early_mounts() -> Result<(), AgentError> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nodev, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nodev, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    Ok(())
}

/// `berth.*` arguments from the kernel command line.
pub fn cmdline_args() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|a| a.strip_prefix("berth."))
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

/// Loads /modules/*.ko in name order (the host put dependencies first).
pub fn load_modules() -> Result<(), AgentError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir("/modules") {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => return Ok(()),
    };
    files.sort();
    for f in files {
        let file = std::fs::File::open(&f)
            .map_err(|e| AgentError::Setup(format!("opening {}: {e}", f.display())))?;
        // SAFETY: finit_module reads the module from the open descriptor;
        // the parameter string is a valid empty C string; no memory of ours
        // is written.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(AgentError::Setup(format!("loading {}: {err}", f.display())));
            }
        }
        // The initramfs copy is no longer needed; free its memory.
        let _ = std::fs::remove_file(&f);
        if std::env::var_os("BERTH_AGENT_TRACE_MODULES").is_some()
            || std::fs::read_to_string("/proc/cmdline")
                .unwrap_or_default()
                .contains("berth.trace")
        {
            eprintln!("berth-agent: {:>5} ms loaded {}", uptime_ms(), f.display());
        }
    }
    Ok(())
}

/// Moves everything onto a tmpfs mounted over the initramfs: pivot_root
/// (which the sandbox uses) refuses to leave the initramfs root itself.
pub fn switch_root() -> Result<(), AgentError> {
    let new = "/newroot";
    mount_fs("tmpfs", new, "tmpfs", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(format!("{new}/{d}"))
            .map_err(|e| AgentError::Setup(format!("creating {new}/{d}: {e}")))?;
    }
    for d in ["/proc", "/sys", "/dev"] {
        mount(
            Some(d),
            format!("{new}{d}").as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(fail(format!("moving {d}")))?;
    }
    nix::unistd::chdir(new).map_err(fail("chdir to the new root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(fail("moving the new root onto /"))?;
    nix::unistd::chroot(".").map_err(fail("chroot into the new root"))?;
    nix::unistd::chdir("/").map_err(fail("chdir /"))?;
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, None)?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620"),
    )?;
    mount_fs("tmpfs", "/dev/shm", "tmpfs", nodev, Some("mode=1777"))?;
    Ok(())
}

/// Finds the host's virtio-serial port by name (it appears late) and opens
/// it once (a second open fails with EBUSY), then waits until the host end
/// is connected.
pub fn open_port(name: &str, deadline: Duration) -> Result<OwnedFd, AgentError> {
    let start = Instant::now();
    let dev = loop {
        if let Some(d) = find_port(name) {
            break d;
        }
        if start.elapsed() > deadline {
            return Err(AgentError::Setup(format!(
                "no virtio-serial port named {name} within {deadline:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let fd = loop {
        match nix::fcntl::open(
            dev.as_path(),
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => break fd,
            Err(nix::errno::Errno::ENOENT) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(AgentError::Setup(format!("opening {}: {e}", dev.display()))),
        }
    };
    // POLLHUP while the host end is not connected.
    loop {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLOUT,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
        let hup = fds[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
        if !hup {
            return Ok(fd);
        }
        if start.elapsed() > deadline {
            return Err(AgentError::Setup(
                "the host never connected to the control port".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn find_port(name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

/// The block device whose virtio serial is `serial`.
fn disk_by_serial(serial: &str) -> Result<PathBuf, AgentError> {
    let start = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
                if s.trim() == serial {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(AgentError::Setup(format!("no disk with serial {serial}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub const ROOTFS: &str = berth_vm::GUEST_ROOTFS;

/// Drops a disk's page cache: in a guest restored from a snapshot it holds
/// what the snapshot's placeholder disks read back as.
fn flush_buffers(dev: &Path) -> Result<(), AgentError> {
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    let f = std::fs::File::open(dev)
        .map_err(|e| AgentError::Setup(format!("opening {}: {e}", dev.display())))?;
    // SAFETY: BLKFLSBUF takes no argument and only drops the device's
    // cached pages; no memory of ours is involved.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(AgentError::Setup(format!(
            "flushing {}: {e}",
            dev.display()
        )));
    }
    Ok(())
}

/// Sets the clock and mixes `seed` into the kernel's RNG, reseeding it: a
/// guest restored from a snapshot has the snapshot's time and RNG state.
pub fn set_clock_and_seed(realtime_ns: u64, seed: &[u8]) {
    if realtime_ns > 0 {
        let ts = nix::sys::time::TimeSpec::new(
            (realtime_ns / 1_000_000_000) as i64,
            (realtime_ns % 1_000_000_000) as i64,
        );
        let _ = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts);
    }
    if seed.is_empty() {
        return;
    }
    let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/urandom") else {
        return;
    };
    if std::io::Write::write_all(&mut f, seed).is_ok() {
        const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
        // SAFETY: RNDRESEEDCRNG takes no argument; it makes the kernel
        // rekey its CRNG from the input pool we just wrote to.
        let _ = unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG, 0) };
    }
}

/// Mounts the image disk read-only, the writable disk, and the overlay of
/// the two at [`ROOTFS`].
pub fn mount_rootfs(image_fs: &str) -> Result<(), AgentError> {
    let image = disk_by_serial(berth_vm::IMAGE_DISK_SERIAL)?;
    let rw = disk_by_serial(berth_vm::RW_DISK_SERIAL)?;
    flush_buffers(&image)?;
    flush_buffers(&rw)?;
    let fstype = match image_fs {
        "ext4" => "ext4",
        _ => "erofs",
    };
    mount_fs(
        &image.display().to_string(),
        "/run/berth/image",
        fstype,
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
    )?;
    // No background inode-table zeroing: under emulation it costs CPU,
    // and the host's sparse file would fill up with zeroes.
    mount_fs(
        &rw.display().to_string(),
        "/run/berth/rw",
        "ext4",
        MsFlags::MS_NODEV,
        Some("noinit_itable"),
    )?;
    for d in ["/run/berth/rw/upper", "/run/berth/rw/work"] {
        std::fs::create_dir_all(d).map_err(|e| AgentError::Setup(format!("creating {d}: {e}")))?;
    }
    mount_fs(
        "overlay",
        ROOTFS,
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/run/berth/image,upperdir=/run/berth/rw/upper,workdir=/run/berth/rw/work"),
    )
}

/// Mounts the container's root from a host directory served by virtiofsd
/// (a bundle's rootfs, for `berth-runtime`): writes land in the host's
/// directory, as they would for a container.
pub fn mount_shared_root(tag: &str) -> Result<(), AgentError> {
    mount_fs(tag, ROOTFS, "virtiofs", MsFlags::empty(), None)
}

/// Mounts a host directory the host serves with virtiofsd (`-v`).
pub fn mount_volume(v: &berth_vm::proto::GuestVolume) -> Result<(), AgentError> {
    if !v.path.starts_with("/run/berth/volumes/") || v.path.contains("..") {
        return Err(AgentError::Setup(format!("bad volume path {}", v.path)));
    }
    let flags = if v.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount_fs(&v.tag, &v.path, "virtiofs", flags, None)
}

/// Unmounts the container's filesystems (so the writable disk is clean).
pub fn unmount_rootfs() {
    if let Ok(rd) = std::fs::read_dir("/run/berth/volumes") {
        for e in rd.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    for m in [ROOTFS, "/run/berth/rw", "/run/berth/image"] {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Milliseconds since the guest kernel started.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

/// Syncs and powers the VM off; QEMU exits.
pub fn poweroff() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reached if the kernel refused: PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
