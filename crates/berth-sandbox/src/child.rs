//! What [`crate::spawn`] and [`crate::exec`] share: the messages between the
//! parent and the child over their `SOCK_SEQPACKET` pair, the parent's
//! receive loop, and the child's last steps (session, terminal, standard
//! streams, identity, the `start` gate, `startContainer` hooks, seccomp,
//! exec).
//!
//! The protocol, one message per packet, first byte the kind:
//! - parent → child `G<pid>`: go on (after uid/gid maps and cgroup moves the
//!   parent made for the child); `<pid>` is the child's PID as the parent
//!   sees it, for the hooks' state.
//! - child → parent `T` + a pty master (SCM_RIGHTS); `H`: run the runtime's
//!   hooks now (the parent answers `C` to go on); `R`: set up and waiting
//!   at the gate; `E`/`N`/`X` + text: failed (setup / not found / not
//!   executable).
//! - end of file: the child exec'd (the child's end is close-on-exec).

use std::ffi::CStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Process};

use crate::process::{ExecFailure, ProcessPlan};
use crate::spawn::{SpawnError, Started, Stdio};
use crate::{seccomp, SetupError};

pub(crate) const MSG_GO: u8 = b'G';
pub(crate) const MSG_CONTINUE: u8 = b'C';
pub(crate) const MSG_PTY: u8 = b'T';
pub(crate) const MSG_HOOKS: u8 = b'H';
pub(crate) const MSG_READY: u8 = b'R';
pub(crate) const MSG_SETUP: u8 = b'E';
pub(crate) const MSG_NOTFOUND: u8 = b'N';
pub(crate) const MSG_NOEXEC: u8 = b'X';

/// Sends one message; returns whether it went out (not when the parent
/// stopped listening: after the gate). `MSG_NOSIGNAL`: no SIGPIPE then.
pub(crate) fn send(sock: &OwnedFd, kind: u8, text: &str, fd: Option<&OwnedFd>) -> bool {
    let mut msg = Vec::with_capacity(1 + text.len());
    msg.push(kind);
    msg.extend_from_slice(&text.as_bytes()[..text.len().min(4000)]);
    let iov = [IoSlice::new(&msg)];
    let raw;
    let cmsgs: Vec<ControlMessage<'_>> = match fd {
        Some(f) => {
            raw = [f.as_raw_fd()];
            vec![ControlMessage::ScmRights(&raw)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).is_ok()
}

/// One received message: kind (0 at end of file), text, passed descriptors.
pub(crate) fn recv(sock: &OwnedFd) -> io::Result<(u8, String, Vec<OwnedFd>)> {
    loop {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let n = msg.bytes;
        let mut fds = Vec::new();
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r.into_iter().map(crate::sys::own_fd));
            }
        }
        if n == 0 {
            return Ok((0, String::new(), fds));
        }
        let text = String::from_utf8_lossy(&buf[1..n]).into_owned();
        return Ok((buf[0], text, fds));
    }
}

/// Kills (when `kill`) and reaps a child that will not exec, so that no
/// zombie is left; returns `err`.
pub(crate) fn reap(pid: Pid, err: SpawnError, kill: bool) -> SpawnError {
    if kill {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = nix::sys::wait::waitpid(pid, None);
    err
}

/// The parent's side after clone: reads the child's messages until it
/// exec'd (end of file) or waits at the gate (`R`). `on_hooks` runs the
/// runtime's hooks when the child asks (`H`).
pub(crate) fn parent_wait(
    sock: &OwnedFd,
    pid: Pid,
    on_hooks: &mut dyn FnMut() -> Result<(), SpawnError>,
) -> Result<Started, SpawnError> {
    let mut pty_master = None;
    loop {
        let (kind, text, mut fds) = match recv(sock) {
            Ok(m) => m,
            Err(e) => {
                let err = SpawnError::Io {
                    what: "reading from the container".into(),
                    source: e,
                };
                return Err(reap(pid, err, true));
            }
        };
        let err = match kind {
            0 | MSG_READY => return Ok(Started { pid, pty_master }),
            MSG_PTY => {
                pty_master = fds.pop();
                continue;
            }
            MSG_HOOKS => match on_hooks() {
                Ok(()) => {
                    send(sock, MSG_CONTINUE, "", None);
                    continue;
                }
                Err(e) => return Err(reap(pid, e, true)),
            },
            MSG_NOTFOUND => SpawnError::NotFound(text),
            MSG_NOEXEC => {
                let (name, why) = text.split_once('\0').unwrap_or((&text, ""));
                SpawnError::NotExecutable(name.to_string(), why.to_string())
            }
            _ => SpawnError::Setup(text),
        };
        return Err(reap(pid, err, false));
    }
}

/// In the child: waits for the parent's go (`G<pid>`); returns the PID the
/// parent sees.
pub(crate) fn wait_go(sock: &OwnedFd) -> Result<i32, SetupError> {
    let fail = |source| SetupError {
        step: "waiting for the runtime".into(),
        source,
    };
    let (kind, text, _) = recv(sock).map_err(fail)?;
    if kind != MSG_GO {
        return Err(fail(io::Error::from(io::ErrorKind::BrokenPipe)));
    }
    Ok(text.parse().unwrap_or(0))
}

/// In the child: asks the parent to run its hooks and waits for its answer.
pub(crate) fn ask_hooks(sock: &OwnedFd) -> Result<(), SetupError> {
    send(sock, MSG_HOOKS, "", None);
    match recv(sock) {
        Ok((MSG_CONTINUE, _, _)) => Ok(()),
        Ok(_) => Err(SetupError {
            step: "runtime hooks failed".into(),
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        }),
        Err(source) => Err(SetupError {
            step: "waiting for the runtime's hooks".into(),
            source,
        }),
    }
}

/// Refuses process fields berth cannot honour, naming them.
pub fn check_process(p: &Process) -> Result<(), String> {
    if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) {
        return Err("process.apparmorProfile: AppArmor is not supported".into());
    }
    if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) {
        return Err("process.selinuxLabel: SELinux is not supported".into());
    }
    if p.scheduler().is_some() {
        return Err("process.scheduler is not supported".into());
    }
    if p.exec_cpu_affinity().is_some() {
        return Err("process.execCPUAffinity is not supported".into());
    }
    Ok(())
}

/// The I/O priority (class, level) of `process.ioPriority`.
pub(crate) fn io_priority(p: &Process) -> Option<(u32, u32)> {
    let io = p.io_priority().as_ref()?;
    let class = match serde_json::to_value(io.class()).ok()?.as_str()? {
        "IOPRIO_CLASS_RT" => 1,
        "IOPRIO_CLASS_BE" => 2,
        _ => 3,
    };
    Some((class, io.priority().clamp(0, 7) as u32))
}

/// Everything the child's last steps need, computed before clone.
pub(crate) struct Tail<'a> {
    pub process: ProcessPlan,
    pub filter: Option<seccomp::Filter>,
    pub stdio: Stdio,
    pub console_size: Option<(u16, u16)>,
    /// Bind the pty slave over /dev/console (a container's init, not exec).
    pub console: bool,
    pub ioprio: Option<(u32, u32)>,
    /// The exec fifo (opened read-write): wait here for `start`.
    pub gate: Option<OwnedFd>,
    pub start_hooks: &'a [Hook],
    /// Descriptors 3..3+n that the caller passes on purpose (runc's
    /// `--preserve-fds`); every other one is closed before exec.
    pub preserve_fds: u32,
}

pub(crate) enum ChildFailure {
    Setup(SetupError),
    Exec(ExecFailure),
}

impl From<SetupError> for ChildFailure {
    fn from(e: SetupError) -> Self {
        ChildFailure::Setup(e)
    }
}

/// Reports a failure to the parent and ends the child with the shell's
/// code for it.
pub(crate) fn child_exit(
    sock: &OwnedFd,
    result: Result<std::convert::Infallible, ChildFailure>,
) -> ! {
    let (kind, text, code) = match result {
        Ok(never) => match never {},
        Err(ChildFailure::Setup(e)) => (MSG_SETUP, e.to_string(), 1),
        Err(ChildFailure::Exec(ExecFailure::NotFound(m))) => (MSG_NOTFOUND, m, 127),
        Err(ChildFailure::Exec(ExecFailure::NotExecutable(name, why))) => {
            (MSG_NOEXEC, format!("{name}\0{why}"), 126)
        }
    };
    if !send(sock, kind, &text, None) {
        // Nobody listens any more (a failure after `start`): tell the
        // container's stderr, the only witness left.
        let line = format!(
            "berth: container setup failed: {}\n",
            text.replace('\0', ": ")
        );
        let _ = nix::unistd::write(crate::sys::std_fd(2), line.as_bytes());
    }
    crate::sys::exit_now(code)
}

fn step(what: &str) -> impl FnOnce(nix::errno::Errno) -> SetupError + '_ {
    move |e| SetupError {
        step: what.to_string(),
        source: e.into(),
    }
}

fn dup_onto(fd: &OwnedFd, target: i32) -> Result<(), SetupError> {
    crate::sys::dup_onto(fd.as_fd(), target).map_err(|source| SetupError {
        step: "redirecting standard streams".into(),
        source,
    })
}

/// State JSON for hooks with `status` filled in.
pub(crate) fn state_with(state: &Option<serde_json::Value>, status: &str) -> String {
    let mut s = state.clone().unwrap_or_else(|| serde_json::json!({}));
    s["status"] = status.into();
    s.to_string()
}

fn load_filter(t: &Tail<'_>) -> Result<(), SetupError> {
    if let Some(f) = &t.filter {
        f.load().map_err(|e| SetupError {
            step: format!("loading seccomp: {e}"),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    }
    Ok(())
}

/// The child's last steps, in the container's namespaces and root: session
/// and terminal, standard streams, identity and limits, the gate, the
/// `startContainer` hooks, seccomp, exec.
pub(crate) fn finish(
    t: &Tail<'_>,
    sock: &OwnedFd,
    state: &Option<serde_json::Value>,
) -> Result<std::convert::Infallible, ChildFailure> {
    nix::unistd::setsid().map_err(step("creating a session"))?;
    if t.stdio.terminal {
        let (master, slave) = if t.console {
            crate::tty::open_container_pty()?
        } else {
            let (m, s) = crate::tty::open_pty()?;
            (m, s)
        };
        send(sock, MSG_PTY, "", Some(&master));
        drop(master);
        crate::sys::set_controlling_tty(slave.as_fd()).map_err(|source| SetupError {
            step: "setting the controlling terminal".into(),
            source,
        })?;
        if let Some((rows, cols)) = t.console_size {
            let _ = crate::sys::set_winsize(slave.as_fd(), crate::sys::WinSize { rows, cols });
        }
        for target in 0..=2 {
            dup_onto(&slave, target)?;
        }
    } else {
        let s = &t.stdio;
        for (fd, target) in [(&s.stdin, 0), (&s.stdout, 1), (&s.stderr, 2)] {
            if let Some(fd) = fd {
                dup_onto(fd, target)?;
            }
        }
    }
    // Nothing of the runtime's crosses into the container: its caller's
    // descriptors, its database, directories and sockets (CVE-2024-21626).
    // Closed before the working directory is entered, so `-w /proc/self/fd/N`
    // cannot land outside the rootfs.
    let mut keep: Vec<i32> = (3..3 + t.preserve_fds as i32).collect();
    keep.push(sock.as_raw_fd());
    keep.extend(t.gate.as_ref().map(|g| g.as_raw_fd()));
    crate::fds::close_except(&keep).map_err(|source| SetupError {
        step: "closing the runtime's descriptors".into(),
        source,
    })?;
    if let Some((class, level)) = t.ioprio {
        crate::sys::set_ioprio(class, level).map_err(|source| SetupError {
            step: "setting process.ioPriority".into(),
            source,
        })?;
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
    // apply() may drop: load it first, as runc does (the filter then has to
    // allow setuid, capset and the rest, as Docker's and podman's do).
    let early = !t.process.no_new_privs;
    if early {
        load_filter(t)?;
    }
    t.process.apply()?;
    let exe = t.process.resolve().map_err(ChildFailure::Exec)?;
    if let Some(gate) = &t.gate {
        send(sock, MSG_READY, "", None);
        let mut b = [0u8; 1];
        loop {
            match nix::unistd::read(gate, &mut b) {
                Ok(1) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Ok(_) | Err(_) => {
                    return Err(SetupError {
                        step: "waiting for start on the exec fifo".into(),
                        source: io::Error::from(io::ErrorKind::UnexpectedEof),
                    }
                    .into())
                }
            }
        }
    }
    if !t.start_hooks.is_empty() {
        let state = state_with(state, "created");
        crate::hooks::run_hooks("startContainer", t.start_hooks, &state).map_err(|e| {
            SetupError {
                step: e.to_string(),
                source: io::Error::from_raw_os_error(libc::EIO),
            }
        })?;
    }
    if let Some(gate) = &t.gate {
        // Tell `start` we got this far: it reads this byte once every
        // writer is gone, and without it knows the process died first.
        let _ = nix::unistd::write(gate, b"1");
    }
    if !early {
        load_filter(t)?;
    }
    let argv: Vec<&CStr> = t.process.args.iter().map(|a| a.as_c_str()).collect();
    let envp: Vec<&CStr> = t.process.env.iter().map(|a| a.as_c_str()).collect();
    let err = crate::sys::execve(&exe, &argv, &envp);
    let name = t.process.args[0].to_string_lossy().into_owned();
    Err(match err.raw_os_error() {
        Some(libc::ENOENT) => ChildFailure::Exec(ExecFailure::NotFound(format!(
            "exec: \"{name}\": no such file or directory"
        ))),
        _ => ChildFailure::Exec(ExecFailure::NotExecutable(name, err.to_string())),
    })
}
