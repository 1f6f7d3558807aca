//! Terminals and foreground processes: sending a pty master to the
//! caller's `--console-socket` (as runc: one message whose data is the pty
//! name, the descriptor in SCM_RIGHTS), and, for `run`/`exec` without
//! `--detach`, waiting for the process while forwarding signals and
//! relaying a pty to our own standard streams.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
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

/// Signals forwarded to the foreground process.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals `wait_foreground` handles; block them before spawning.
pub fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

pub fn block_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signal_set()), None)
        .map_err(nix_err("blocking signals"))
}

struct RawMode {
    fd: OwnedFd,
    saved: termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let saved = termios::tcgetattr(&fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&fd, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, termios::SetArg::TCSANOW, &self.saved);
    }
}

fn sync_winsize(pty: &OwnedFd) {
    for fd in [0, 1] {
        if let Some(ws) = berth_sandbox::sys::get_winsize(berth_sandbox::sys::std_fd(fd)) {
            if ws.rows > 0 {
                let _ = berth_sandbox::sys::set_winsize(pty.as_fd(), ws);
                return;
            }
        }
    }
}

fn status_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
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
    let _raw = pty.as_ref().and_then(|_| RawMode::enter());
    if let Some(m) = &pty {
        sync_winsize(m);
    }
    let mut code: Option<i32> = None;
    let mut pty_open = pty.is_some();
    let mut stdin_open = pty.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        // A child that ended before we started waiting sent its SIGCHLD
        // already: poll waitpid once per round.
        if code.is_none() {
            if let Ok(st) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                code = status_code(st);
            }
        }
        if code.is_some() && !pty_open {
            break;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let pty_idx = pty.as_ref().filter(|_| pty_open).map(|m| {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_idx = stdin_open.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let timeout = if code.is_some() {
            PollTimeout::from(200u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) if code.is_some() => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(nix_err("poll")(e)),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents()).is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (sig_ready, pty_ready, in_ready) = (ready(Some(0)), ready(pty_idx), ready(stdin_idx));
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    // Reap every child (we may be a subreaper's stand-in).
                    loop {
                        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(st) if st.pid() == Some(pid) => code = status_code(st).or(code),
                            Ok(_) => {}
                        }
                    }
                } else if signo == libc::SIGWINCH {
                    if let Some(m) = &pty {
                        sync_winsize(m);
                    }
                } else if let Ok(sig) = Signal::try_from(signo) {
                    let _ = kill(pid, sig);
                }
            }
        }
        if pty_ready {
            if let Some(m) = &pty {
                match nix::unistd::read(m, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => pty_open = false,
                    Ok(n) => {
                        let _ = stdout.write_all(&buf[..n]);
                        let _ = stdout.flush();
                    }
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                    Err(_) => pty_open = false,
                }
            }
        }
        if in_ready {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if let Some(m) = &pty {
                        let mut data = &buf[..n];
                        while !data.is_empty() {
                            match nix::unistd::write(m, data) {
                                Ok(w) => data = &data[w..],
                                Err(nix::errno::Errno::EINTR) => {}
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(code.unwrap_or(255))
}
