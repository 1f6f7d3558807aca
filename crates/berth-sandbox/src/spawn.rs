//! Parent side: turns an OCI spec into a running container process.
//!
//! The parent validates and precomputes everything ([`ProcessPlan`], the
//! seccomp program, namespace descriptors), then clones once with the new
//! namespaces. The child sets itself up and execs; it reports failures over
//! a `SOCK_SEQPACKET` pair whose end is close-on-exec, so end-of-file means
//! the exec succeeded.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroup::Cgroup;
use crate::process::{ExecFailure, ProcessPlan};
use crate::{seccomp, SetupError};

/// Why a container could not be started.
#[derive(thiserror::Error, Debug)]
pub enum SpawnError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{0}")]
    NotFound(String),
    #[error("exec: \"{0}\": {1}")]
    NotExecutable(String, String),
    #[error("container setup failed: {0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

impl SpawnError {
    /// The exit code Docker uses for this failure (127 not found, 126 not
    /// executable, 125 for everything else berth itself failed at).
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound(_) => 127,
            SpawnError::NotExecutable(..) => 126,
            _ => 125,
        }
    }
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> SpawnError + '_ {
    move |source| SpawnError::Io {
        what: what.to_string(),
        source,
    }
}

/// Where the container's standard streams go. `None` inherits ours.
#[derive(Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Allocate a pty inside the container (process.terminal); its master is
    /// returned in [`Started::pty_master`].
    pub terminal: bool,
}

pub struct SpawnOptions<'a> {
    pub spec: &'a Spec,
    /// Absolute path of the (already mounted) root filesystem.
    pub rootfs: &'a Path,
    /// The container's cgroup, already created with its limits.
    pub cgroup: Option<&'a Cgroup>,
    pub stdio: Stdio,
    /// Where compiled seccomp programs are cached (compiling Docker's
    /// profile takes ~20 ms; loading a cached one ~50 µs). Must be writable
    /// only by root.
    pub seccomp_cache: Option<&'a Path>,
}

/// A container whose process has been exec'd.
pub struct Started {
    pub pid: Pid,
    pub pty_master: Option<OwnedFd>,
}

const MSG_PTY: u8 = b'T';
const MSG_SETUP: u8 = b'E';
const MSG_NOTFOUND: u8 = b'N';
const MSG_NOEXEC: u8 = b'X';

struct Plan<'a> {
    spec: &'a Spec,
    rootfs: &'a Path,
    cgroup: Option<&'a Cgroup>,
    process: ProcessPlan,
    filter: Option<seccomp::Filter>,
    join: Vec<(OwnedFd, CloneFlags)>,
    new_cgroupns: bool,
    new_uts: bool,
    sysctls: Vec<(PathBuf, String)>,
    stdio: Stdio,
}

/// Starts the container described by `opts.spec`. The caller must be
/// single-threaded. Signals the caller wants to handle should be blocked
/// before calling; the child resets its mask and handlers.
pub fn spawn(opts: SpawnOptions<'_>) -> Result<Started, SpawnError> {
    let spec = opts.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpawnError::Config("process is missing".into()))?;
    let plan_process = ProcessPlan::from_spec(process).map_err(SpawnError::Config)?;
    let linux = spec.linux().as_ref();
    let filter = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(match opts.seccomp_cache {
            Some(dir) => seccomp::compile_cached(s, dir)?,
            None => seccomp::compile(s)?,
        }),
        None => None,
    };
    let mut flags = CloneFlags::empty();
    let mut join = Vec::new();
    let mut new_cgroupns = false;
    let mut new_uts = false;
    let mut has_mount_ns = false;
    for ns in linux
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let flag = match ns.typ() {
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            other => {
                return Err(SpawnError::Config(format!(
                    "linux.namespaces: the {other:?} namespace is not supported yet"
                )))
            }
        };
        if flag == CloneFlags::CLONE_NEWNS {
            has_mount_ns = true;
        }
        match ns.path() {
            Some(path) => {
                if flag == CloneFlags::CLONE_NEWPID {
                    return Err(SpawnError::Config(
                        "linux.namespaces: joining a pid namespace by path is not supported yet"
                            .into(),
                    ));
                }
                let fd = nix::fcntl::open(
                    path,
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| {
                    SpawnError::Config(format!(
                        "linux.namespaces: cannot open {}: {e}",
                        path.display()
                    ))
                })?;
                join.push((fd, flag));
            }
            None if flag == CloneFlags::CLONE_NEWCGROUP => new_cgroupns = true,
            None => {
                if flag == CloneFlags::CLONE_NEWUTS {
                    new_uts = true;
                }
                flags |= flag;
            }
        }
    }
    if !has_mount_ns {
        return Err(SpawnError::Config(
            "linux.namespaces: a mount namespace is required".into(),
        ));
    }
    if spec.hostname().is_some() && !new_uts {
        return Err(SpawnError::Config(
            "hostname is set but there is no new uts namespace".into(),
        ));
    }
    let sysctls = linux
        .and_then(|l| l.sysctl().as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (Path::new("/proc/sys").join(k.replace('.', "/")), v.clone()))
                .collect()
        })
        .unwrap_or_default();

    let plan = Plan {
        spec,
        rootfs: opts.rootfs,
        cgroup: opts.cgroup,
        process: plan_process,
        filter,
        join,
        new_cgroupns,
        new_uts,
        sysctls,
        stdio: opts.stdio,
    };

    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io_err("creating the sync socket")(e.into()))?;

    let pid = match crate::sys::clone_fork(flags.bits()).map_err(io_err("clone"))? {
        None => {
            drop(parent_sock);
            child_main(plan, child_sock)
        }
        Some(pid) => pid,
    };
    drop(child_sock);
    drop(plan);
    let mut pty_master = None;
    loop {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            parent_sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(reap(pid, io_err("reading from the container")(e.into()))),
        };
        let n = msg.bytes;
        let mut fds = Vec::new();
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r.into_iter().map(crate::sys::own_fd));
            }
        }
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf[1..n]).into_owned();
        let err = match buf[0] {
            MSG_PTY => {
                pty_master = fds.pop();
                continue;
            }
            MSG_NOTFOUND => SpawnError::NotFound(text),
            MSG_NOEXEC => {
                let (name, why) = text.split_once('\0').unwrap_or((&text, ""));
                SpawnError::NotExecutable(name.to_string(), why.to_string())
            }
            _ => SpawnError::Setup(text),
        };
        return Err(reap(pid, err));
    }
    Ok(Started { pid, pty_master })
}

/// Waits for a child that failed before exec, so no zombie is left.
fn reap(pid: Pid, err: SpawnError) -> SpawnError {
    let _ = nix::sys::wait::waitpid(pid, None);
    err
}

fn send(sock: &OwnedFd, kind: u8, text: &str, fd: Option<&OwnedFd>) {
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
    let _ = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None);
}

fn child_main(plan: Plan<'_>, sock: OwnedFd) -> ! {
    let code = match child_setup(&plan, &sock) {
        Ok(never) => match never {},
        Err(ChildFailure::Setup(e)) => {
            send(&sock, MSG_SETUP, &e.to_string(), None);
            1
        }
        Err(ChildFailure::Exec(ExecFailure::NotFound(m))) => {
            send(&sock, MSG_NOTFOUND, &m, None);
            127
        }
        Err(ChildFailure::Exec(ExecFailure::NotExecutable(name, why))) => {
            send(&sock, MSG_NOEXEC, &format!("{name}\0{why}"), None);
            126
        }
    };
    crate::sys::exit_now(code)
}

enum ChildFailure {
    Setup(SetupError),
    Exec(ExecFailure),
}

impl From<SetupError> for ChildFailure {
    fn from(e: SetupError) -> Self {
        ChildFailure::Setup(e)
    }
}

fn step(what: &str) -> impl FnOnce(nix::errno::Errno) -> SetupError + '_ {
    move |e| SetupError {
        step: what.to_string(),
        source: e.into(),
    }
}

fn child_setup(plan: &Plan<'_>, sock: &OwnedFd) -> Result<std::convert::Infallible, ChildFailure> {
    crate::sys::reset_signal_dispositions();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(step("resetting the signal mask"))?;
    if let Some(cg) = plan.cgroup {
        cg.join_self_single_threaded().map_err(|e| SetupError {
            step: format!("joining the cgroup: {e}"),
            source: io::Error::from_raw_os_error(libc::EIO),
        })?;
    }
    if plan.new_cgroupns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(step("creating the cgroup namespace"))?;
    }
    for (fd, flag) in &plan.join {
        nix::sched::setns(fd, *flag).map_err(step("joining a namespace"))?;
    }
    if plan.new_uts {
        if let Some(h) = plan.spec.hostname() {
            nix::unistd::sethostname(h).map_err(step("setting the hostname"))?;
        }
    }

    crate::mounts::setup_rootfs(plan.spec, plan.rootfs)?;

    for (path, value) in &plan.sysctls {
        std::fs::write(path, value).map_err(|source| SetupError {
            step: format!("setting sysctl {}", path.display()),
            source,
        })?;
    }

    nix::unistd::setsid().map_err(step("creating a session"))?;
    if plan.stdio.terminal {
        let (master, slave) = crate::tty::open_container_pty()?;
        send(sock, MSG_PTY, "", Some(&master));
        drop(master);
        crate::sys::set_controlling_tty(slave.as_fd()).map_err(|source| SetupError {
            step: "setting the controlling terminal".into(),
            source,
        })?;
        if let Some(size) = plan.spec.process().as_ref().and_then(|p| p.console_size()) {
            let _ = crate::sys::set_winsize(
                slave.as_fd(),
                crate::sys::WinSize {
                    rows: size.height() as u16,
                    cols: size.width() as u16,
                },
            );
        }
        for target in 0..=2 {
            dup_onto(&slave, target)?;
        }
    } else {
        let s = &plan.stdio;
        for (fd, target) in [(&s.stdin, 0), (&s.stdout, 1), (&s.stderr, 2)] {
            if let Some(fd) = fd {
                dup_onto(fd, target)?;
            }
        }
    }

    plan.process.apply()?;
    let exe = plan.process.resolve().map_err(ChildFailure::Exec)?;
    if let Some(f) = &plan.filter {
        f.load().map_err(|e| SetupError {
            step: format!("loading seccomp: {e}"),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    }
    let argv: Vec<&std::ffi::CStr> = plan.process.args.iter().map(|a| a.as_c_str()).collect();
    let envp: Vec<&std::ffi::CStr> = plan.process.env.iter().map(|a| a.as_c_str()).collect();
    let err = crate::sys::execve(&exe, &argv, &envp);
    let name = plan.process.args[0].to_string_lossy().into_owned();
    Err(match err.raw_os_error() {
        Some(libc::ENOENT) => ChildFailure::Exec(ExecFailure::NotFound(format!(
            "exec: \"{name}\": no such file or directory"
        ))),
        _ => ChildFailure::Exec(ExecFailure::NotExecutable(name, err.to_string())),
    })
}

fn dup_onto(fd: &OwnedFd, target: i32) -> Result<(), SetupError> {
    crate::sys::dup_onto(fd.as_fd(), target).map_err(|source| SetupError {
        step: "redirecting standard streams".into(),
        source,
    })
}
