//! Terminals and foreground processes: sending a pty master to the
//! caller's `--console-socket` (as runc: one message whose data is the pty
//! name, the descriptor in SCM_RIGHTS), and, for `run`/`exec` without
//! `--detach`, waiting for the process while forwarding signals and
//! relaying a pty to our own standard streams.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::signal::SigmaskHow;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;

use crate::error::{nix_err, Result, RuntimeError};

/// Connects to the console socket (before anything is created, so that a
/// wrong path fails early).
pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| RuntimeError::Io {
        what: format!("console socket {}", path.display()),
        source: e,
    })
}

/// Sends the pty master over the console socket.
pub fn send_master(sock: &UnixStream, master: &OwnedFd) -> Result<()> {
    // runc sends the pty's name as the data; clients only take the fd.
    let iov = [IoSlice::new(b"/dev/ptmx")];
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(nix_err("sending the pty master to the console socket"))?;
    Ok(())
}

/// The signals `wait_foreground` handles; block them before spawning.
pub use berth_sandbox::foreground::signal_set;

pub fn block_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signal_set()), None)
        .map_err(nix_err("blocking signals"))
}

/// Waits for `pid` (our child; signals of [`signal_set`] already blocked),
/// forwarding signals to it and relaying `pty` if given. Returns its exit
/// status as a shell reports it.
pub fn wait_foreground(pid: Pid, pty: Option<OwnedFd>) -> Result<i32> {
    let sfd = SignalFd::with_flags(
        &signal_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(nix_err("creating a signalfd"))?;
    let forward_stdin = pty.is_some();
    berth_sandbox::foreground::wait(pid, &sfd, pty, forward_stdin).map_err(|source| {
        RuntimeError::Io {
            what: "waiting for the container".into(),
            source,
        }
    })
}
