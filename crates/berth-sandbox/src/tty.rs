//! The container's terminal: a pty from the container's own devpts instance.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

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
    let (master, slave, name) = open_pty()?;
    let console = Path::new("/dev/console");
    if !console.exists() {
        let _ = std::fs::File::create(console);
    }
    mount(
        Some(Path::new(&name)),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(fail("bind-mounting /dev/console"))?;
    Ok((master, slave))
}

/// Opens a pty pair from the `/dev/ptmx` of the calling process's mount
/// namespace, leaving `/dev/console` alone (for a process exec'd into a
/// running container). Returns (master, slave, slave path).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd, String), SetupError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(fail("opening /dev/ptmx"))?;
    grantpt(&master).map_err(fail("grantpt"))?;
    unlockpt(&master).map_err(fail("unlockpt"))?;
    let name = ptsname_r(&master).map_err(fail("ptsname"))?;
    let slave = nix::fcntl::open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("opening the pty slave"))?;
    let master: OwnedFd = master
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| SetupError {
            step: "duplicating the pty master".into(),
            source,
        })?;
    Ok((master, slave, name))
}
