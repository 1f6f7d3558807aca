//! Which descriptors cross into a container, and which never do.
//!
//! A runtime process holds descriptors the workload must not see: whatever
//! its caller left open (`exec 7</secret; berth run ...`), its own database,
//! directories and sockets. One of them reaching the container is an escape
//! (CVE-2024-21626: `-w /proc/self/fd/N` or an fd walk lands on the host's
//! filesystem). So:
//! - the binaries mark every inherited descriptor close-on-exec as they
//!   start ([`seal_inherited`]), except those handed over on purpose
//!   (`LISTEN_FDS` socket activation), so no helper (QEMU, virtiofsd,
//!   hooks, the DNS responder, the monitor) inherits them;
//! - the process that becomes a container closes every descriptor but its
//!   standard streams, its runtime socket, the exec gate and those the
//!   caller preserves on purpose ([`close_except`]) before it enters the
//!   working directory, loads seccomp or execs;
//! - that process is not dumpable from before it is cloned until it execs
//!   the workload ([`set_undumpable`]), so no process of the container can
//!   open its `/proc/PID/exe` (the host binary: CVE-2019-5736) or
//!   `/proc/PID/fd/*` meanwhile.

use std::io;
use std::os::fd::RawFd;

const CLOSE_RANGE_CLOEXEC: u32 = 4;

/// Closes every descriptor of this process except 0-2 and `keep`.
pub fn close_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for k in keep.iter().copied().chain([u32::MAX]) {
        if k > first {
            let last = if k == u32::MAX { u32::MAX } else { k - 1 };
            match crate::sys::close_range(first, last, 0) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    for fd in open_fds()? {
                        if fd >= first as RawFd && (fd as u32) <= last {
                            crate::sys::close_raw(fd);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        first = k.saturating_add(1);
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    match crate::sys::close_range(first as u32, u32::MAX, CLOSE_RANGE_CLOEXEC) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
            for fd in open_fds()?.into_iter().filter(|&fd| fd >= first) {
                // The listing's own descriptor is closed by now: EBADF is fine.
                let _ = crate::sys::set_cloexec(fd, true);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// What a binary of berth does first: every inherited descriptor above 2
/// becomes close-on-exec, except the `LISTEN_FDS` ones passed to this very
/// process (systemd's socket activation: `LISTEN_PID` is ours), which stay
/// as they are. Returns how many were passed that way.
pub fn seal_inherited() -> u32 {
    let passed = listen_fds();
    let _ = cloexec_from(3 + passed as RawFd);
    passed
}

/// The number of descriptors passed by socket activation to this process.
fn listen_fds() -> u32 {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if !ours {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
        .min(1024)
}

/// The descriptors open in this process now.
pub fn open_fds() -> io::Result<Vec<RawFd>> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// Makes this process (and what it clones, which copies the flag) not
/// dumpable: no other process without `CAP_SYS_PTRACE` over it may open its
/// `/proc/PID/exe`, `/proc/PID/fd/*`, `/proc/PID/mem` or ptrace it. `execve`
/// of the workload resets the flag.
pub fn set_undumpable() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)
}
