//! The client side of a VM's `api.sock`: `berth exec` and `berth stats`.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::conn::{write_all, Conn};
use crate::proto::{self, Frame, Kind};
use crate::{io_err, VmError};

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEnd {
    Exited(i32),
    /// It could not start (127 not found, 126 not executable, 125 other).
    Failed {
        code: i32,
        message: String,
    },
}

fn connect(sock: &Path) -> Result<Conn, VmError> {
    let s = UnixStream::connect(sock).map_err(io_err(format!(
        "connecting to the VM's host process at {}",
        sock.display()
    )))?;
    Conn::new(s.into()).map_err(io_err("the VM's API socket"))
}

/// Frames from `conn`, waiting up to `timeout` for at least one.
fn wait_frames(conn: &mut Conn, timeout: Duration) -> Result<Vec<Frame>, VmError> {
    let until = Instant::now() + timeout;
    loop {
        conn.flush();
        let frames = conn.read_frames()?;
        if !frames.is_empty() {
            return Ok(frames);
        }
        if conn.closed {
            return Err(VmError::Invalid("the VM's host process went away".into()));
        }
        if Instant::now() > until {
            return Err(VmError::Invalid("the VM did not answer in time".into()));
        }
        let mut fds = [PollFd::new(conn.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
    }
}

/// Usage of the container, measured inside the guest.
pub fn stats(sock: &Path) -> Result<proto::Stats, VmError> {
    let mut conn = connect(sock)?;
    conn.send(&Frame::new(Kind::StatsRequest, 0, Vec::new()));
    loop {
        for f in wait_frames(&mut conn, Duration::from_secs(5))? {
            if f.kind == Kind::Stats {
                return Ok(f.parse()?);
            }
        }
    }
}

/// The container's processes, as the guest sees them.
pub fn top(sock: &Path) -> Result<proto::Top, VmError> {
    let mut conn = connect(sock)?;
    conn.send(&Frame::new(Kind::TopRequest, 0, Vec::new()));
    loop {
        for f in wait_frames(&mut conn, Duration::from_secs(5))? {
            if f.kind == Kind::Top {
                return Ok(f.parse()?);
            }
        }
    }
}

/// Runs `req` in the VM's container with our stdio, forwarding signals and
/// (with `tty`) the window size, until it ends.
pub fn exec(sock: &Path, req: &proto::Exec, tty: bool) -> Result<ExecEnd, VmError> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(|e| io_err("blocking signals")(e.into()))?;
    let result = (|| {
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| io_err("creating a signalfd")(e.into()))?;
        let mut conn = connect(sock)?;
        conn.send(&Frame::json(Kind::Exec, 0, req));
        relay(&mut conn, &sfd, req, tty)
    })();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

fn relay(
    conn: &mut Conn,
    sfd: &SignalFd,
    req: &proto::Exec,
    tty: bool,
) -> Result<ExecEnd, VmError> {
    let stdin = berth_sandbox::sys::std_fd(0);
    let mut saved = None;
    if tty && req.interactive {
        if let Ok(t) = nix::sys::termios::tcgetattr(stdin) {
            let mut raw = t.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            let _ = nix::sys::termios::tcsetattr(stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
            saved = Some(t);
        }
    }
    let restore = |saved: &Option<nix::sys::termios::Termios>| {
        if let Some(t) = saved {
            let _ = nix::sys::termios::tcsetattr(stdin, nix::sys::termios::SetArg::TCSANOW, t);
        }
    };
    let mut started = false;
    let mut stdin_open = false;
    let mut buf = vec![0u8; proto::CHUNK];
    let end = loop {
        let mut fds = vec![
            PollFd::new(
                conn.fd(),
                if conn.pending() > 0 {
                    PollFlags::POLLIN | PollFlags::POLLOUT
                } else {
                    PollFlags::POLLIN
                },
            ),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, PollTimeout::from(200u16));
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready.get(2).copied().unwrap_or(false) {
            match nix::unistd::read(stdin, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    stdin_open = false;
                    conn.send(&Frame::new(Kind::StdinEof, 0, Vec::new()));
                }
                Ok(n) => conn.send(&Frame::new(Kind::Stdin, 0, buf[..n].to_vec())),
                Err(_) => {}
            }
        }
        if ready[1] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGWINCH {
                    if let Some(ws) = berth_sandbox::sys::get_winsize(stdin) {
                        conn.send(&Frame::json(
                            Kind::Resize,
                            0,
                            &proto::Resize {
                                rows: ws.rows,
                                cols: ws.cols,
                            },
                        ));
                    }
                } else if started {
                    conn.send(&Frame::json(
                        Kind::Signal,
                        0,
                        &proto::Signal { signal: signo },
                    ));
                }
            }
        }
        let frames = match conn.read_frames() {
            Ok(f) => f,
            Err(e) => break Err(e.into()),
        };
        let mut done = None;
        for f in frames {
            match f.kind {
                Kind::Started => {
                    started = true;
                    if req.detach {
                        done = Some(ExecEnd::Exited(0));
                        break;
                    }
                    stdin_open = req.interactive;
                }
                Kind::Stdout => {
                    let _ = write_all(berth_sandbox::sys::std_fd(1), &f.payload);
                }
                Kind::Stderr => {
                    let _ = write_all(berth_sandbox::sys::std_fd(2), &f.payload);
                }
                Kind::Exited => {
                    done = Some(ExecEnd::Exited(f.parse::<proto::Exited>()?.code));
                    break;
                }
                Kind::Failed => {
                    let fl: proto::Failed = f.parse()?;
                    done = Some(ExecEnd::Failed {
                        code: fl.code,
                        message: fl.message,
                    });
                    break;
                }
                _ => {}
            }
        }
        if let Some(d) = done {
            break Ok(d);
        }
        conn.flush();
        if conn.closed {
            break Err(VmError::Invalid(
                "the VM stopped while the exec was running".into(),
            ));
        }
    };
    restore(&saved);
    end
}
