//! The container's terminal: a pty from the container's own devpts instance.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, unlockpt};

use crate::SetupError;

fn fail(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> SetupError {
    move |e| SetupError {
        step: step.to_string(),
        source: io::Error::from(e),
    }
}

/// Opens a pty pair inside the container (after pivot_root) and bind-mounts
/// the slave over `/dev/console`. Returns (master, slave).
pub fn open_container_pty() -> Result<(OwnedFd, OwnedFd), SetupError> {
    let (master, slave) = open_pty()?;
    crate::guards::bind_console(&slave)?;
    Ok((master, slave))
}

/// Opens a pty pair from the `/dev/ptmx` of the calling process's mount
/// namespace, leaving `/dev/console` alone (for a process exec'd into a
/// running container). Returns (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), SetupError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(fail("opening /dev/ptmx"))?;
    grantpt(&master).map_err(fail("grantpt"))?;
    unlockpt(&master).map_err(fail("unlockpt"))?;
    // The peer of this master, with no path lookup a container could
    // redirect (CVE-2025-52565).
    let slave = crate::sys::pty_peer(
        master.as_fd(),
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
    )
    .map_err(|source| SetupError {
        step: "opening the pty slave".into(),
        source,
    })?;
    let master: OwnedFd = master
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| SetupError {
            step: "duplicating the pty master".into(),
            source,
        })?;
    Ok((master, slave))
}
