//! Staying attached to a process in the foreground: forwarding signals to
//! it, relaying its pty (raw mode, window size) and collecting its exit
//! status. Shared by `berth run`/`exec` and `berth-runtime run`/`exec`.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals forwarded to the foreground process.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals [`wait`] handles: block them before spawning, read them
/// through a signalfd made from this set.
pub fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

/// Puts the calling terminal in raw mode until dropped.
pub struct RawMode {
    fd: OwnedFd,
    saved: termios::Termios,
}

impl RawMode {
    /// None when stdin is no terminal.
    pub fn enter() -> Option<RawMode> {
        let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
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

/// The size of the terminal on our stdout (or stdin), if any: (rows, cols).
pub fn terminal_size() -> Option<(u16, u16)> {
    for fd in [1, 0] {
        if let Some(ws) = crate::sys::get_winsize(crate::sys::std_fd(fd)) {
            if ws.rows > 0 && ws.cols > 0 {
                return Some((ws.rows, ws.cols));
            }
        }
    }
    None
}

fn sync_winsize(pty: &OwnedFd) {
    if let Some((rows, cols)) = terminal_size() {
        let _ = crate::sys::set_winsize(pty.as_fd(), crate::sys::WinSize { rows, cols });
    }
}

/// Exit status as a shell reports it (128+N for signal N).
pub fn status_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Waits for `pid` (our child; the signals of [`signal_set`] blocked and
/// read from `sfd`), forwarding signals to it and relaying `pty` if given
/// (our stdin goes to it when `forward_stdin`, in raw mode on a terminal;
/// end of input sends ^D). Reaps every child meanwhile. Returns the exit
/// status as a shell reports it.
pub fn wait(
    pid: Pid,
    sfd: &SignalFd,
    pty: Option<OwnedFd>,
    forward_stdin: bool,
) -> io::Result<i32> {
    let _raw = match (&pty, forward_stdin) {
        (Some(_), true) => RawMode::enter(),
        _ => None,
    };
    if let Some(m) = &pty {
        sync_winsize(m);
    }
    let mut code: Option<i32> = None;
    let mut pty_open = pty.is_some();
    let mut stdin_open = pty.is_some() && forward_stdin;
    let mut buf = vec![0u8; 32 * 1024];
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    loop {
        // A child that ended before the signalfd existed has no SIGCHLD
        // left to read: ask once per round.
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
        // Once the process is gone, drain the pty without blocking forever.
        let timeout = if code.is_some() {
            PollTimeout::from(200u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) if code.is_some() => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
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
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    if let Some(m) = &pty {
                        write_all_fd(m, b"\x04");
                    }
                }
                Ok(n) => {
                    if let Some(m) = &pty {
                        write_all_fd(m, &buf[..n]);
                    }
                }
            }
        }
    }
    Ok(code.unwrap_or(255))
}
