//! Starting a created container and staying attached to it in the
//! foreground: stdio (or a pty relay), signal forwarding, exit status.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::containers::{pid_start_time, Created};
use crate::{io_err, now, rootfs, Engine, EngineError};

/// Signals forwarded to the container's main process.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit status as a shell reports it (128+N for signal N).
    pub code: i32,
    pub oom_killed: bool,
}

pub(crate) fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

/// Puts the calling terminal in raw mode until dropped.
pub(crate) struct RawMode {
    fd: OwnedFd,
    saved: termios::Termios,
}

impl RawMode {
    pub(crate) fn enter() -> Option<RawMode> {
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

/// The size of the terminal on our stdout (or stdin), if any.
pub fn terminal_size() -> Option<(u16, u16)> {
    for fd in [1, 0] {
        if let Some(ws) = berth_sandbox::sys::get_winsize(berth_sandbox::sys::std_fd(fd)) {
            if ws.rows > 0 && ws.cols > 0 {
                return Some((ws.rows, ws.cols));
            }
        }
    }
    None
}

impl Engine {
    /// Starts `c` with our stdio attached and waits for it to end.
    pub fn start_attached(&mut self, c: &Created) -> Result<Exit, EngineError> {
        let id = c.row.id.clone();
        let layout = berth_sandbox::Layout::detect()?;
        self.network_up(&c.row, &c.config)?;
        let linux = c.spec.linux().as_ref();
        let cg_path = linux
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| crate::containers::cgroups_path(&id).into());
        let cgroup = berth_sandbox::Cgroup::create(
            &layout,
            &cg_path,
            linux.and_then(|l| l.resources().as_ref()),
        )?;

        let mask = signal_set();
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
            .map_err(|e| io_err("blocking signals")(e.into()))?;
        let result = self.spawn_and_wait(c, &cgroup, &mask);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);

        let oom = cgroup.oom_killed();
        let _ = cgroup.destroy();
        let _ = rootfs::unmount(&c.bundle.join("rootfs"));
        let _ = self.network_down(&id);
        match result {
            Ok(code) => {
                // OOM kills show as SIGKILL (137), as with Docker.
                let reason = crate::vm::take_exit_reason(&c.bundle);
                self.db().set_exited(&id, code, oom, &reason, now())?;
                if oom {
                    crate::events::emit(&self.root, &c.row, "oom", &[]);
                }
                crate::events::emit(&self.root, &c.row, "die", &[("exitCode", code.to_string())]);
                Ok(Exit {
                    code,
                    oom_killed: oom,
                })
            }
            Err(e) => {
                self.db()
                    .set_exited(&id, e.exit_code(), false, &e.to_string(), now())?;
                Err(e)
            }
        }
    }

    fn spawn_and_wait(
        &mut self,
        c: &Created,
        cgroup: &berth_sandbox::Cgroup,
        mask: &SigSet,
    ) -> Result<i32, EngineError> {
        let sfd = SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| io_err("creating a signalfd")(e.into()))?;
        let cfg = &c.config;
        let stdin = if cfg.interactive {
            None
        } else {
            Some(
                std::fs::File::open("/dev/null")
                    .map_err(io_err("opening /dev/null"))?
                    .into(),
            )
        };
        let rootfs = c.bundle.join("rootfs");
        let cache = self.run_root.join("seccomp");
        let stdio = berth_sandbox::Stdio {
            stdin: if cfg.tty { None } else { stdin },
            stdout: None,
            stderr: None,
            terminal: cfg.tty,
        };
        let started = if crate::vm::is_vm(cfg) {
            self.vmm_command(&c.row.id)?.spawn(stdio, cfg.tty, false)?
        } else {
            berth_sandbox::spawn(berth_sandbox::SpawnOptions {
                spec: &c.spec,
                rootfs: &rootfs,
                cgroup: Some(cgroup),
                stdio,
                seccomp_cache: Some(&cache),
            })?
        };
        let pid = started.pid;
        let start = pid_start_time(pid.as_raw()).unwrap_or(0);
        self.db()
            .set_running(&c.row.id, pid.as_raw(), start, now())?;
        crate::events::emit(&self.root, &c.row, "start", &[]);
        wait_loop(pid, &sfd, started.pty_master, cfg.interactive)
    }
}

fn status_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

pub(crate) fn wait_loop(
    pid: Pid,
    sfd: &SignalFd,
    pty: Option<OwnedFd>,
    interactive: bool,
) -> Result<i32, EngineError> {
    let _raw = match (&pty, interactive) {
        (Some(_), true) => RawMode::enter(),
        _ => None,
    };
    if let (Some(m), Some((rows, cols))) = (&pty, terminal_size()) {
        let _ =
            berth_sandbox::sys::set_winsize(m.as_fd(), berth_sandbox::sys::WinSize { rows, cols });
    }
    let mut code: Option<i32> = None;
    let mut pty_open = pty.is_some();
    let mut stdin_open = pty.is_some() && interactive;
    let mut buf = vec![0u8; 32 * 1024];
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
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
            Err(e) => return Err(io_err("poll")(e.into())),
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
                            Ok(st) => {
                                if st.pid() == Some(pid) {
                                    code = status_code(st).or(code);
                                }
                            }
                        }
                    }
                } else if signo == libc::SIGWINCH {
                    if let (Some(m), Some((rows, cols))) = (&pty, terminal_size()) {
                        let _ = berth_sandbox::sys::set_winsize(
                            m.as_fd(),
                            berth_sandbox::sys::WinSize { rows, cols },
                        );
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
                        // End of input: send EOF (^D) to the terminal.
                        let _ = nix::unistd::write(m, b"\x04");
                    }
                }
                Ok(n) => {
                    if let Some(m) = &pty {
                        let _ = write_all_fd(m, &buf[..n]);
                    }
                }
            }
        }
    }
    Ok(code.unwrap_or(255))
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Used by `berth run`: create, start attached, and remove with `--rm`.
pub fn run_foreground(
    engine: &mut Engine,
    cfg: crate::ContainerConfig,
) -> Result<(String, Exit), EngineError> {
    let auto_remove = cfg.auto_remove;
    let console = if cfg.tty { terminal_size() } else { None };
    let created = engine.create(cfg, console)?;
    let id = created.row.id.clone();
    let result = engine.start_attached(&created);
    if auto_remove {
        let _ = engine.remove(&id, true);
    }
    result.map(|e| (id, e))
}
