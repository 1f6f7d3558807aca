//! Running another process inside a running container (`berth exec`,
//! `berth-runtime exec`, `docker exec`).
//!
//! ```no_run
//! # fn demo(spec: &oci_spec::runtime::Spec, init_pid: i32) -> Result<(), berth_sandbox::SpawnError> {
//! use oci_spec::runtime::ProcessBuilder;
//! let process = ProcessBuilder::default()
//!     .args(vec!["ps".to_string(), "aux".to_string()])
//!     .cwd("/")
//!     .build()
//!     .unwrap();
//! let started = berth_sandbox::exec(berth_sandbox::ExecOptions {
//!     pid: init_pid,                 // the container's init, as we see it
//!     spec,                          // the container's spec: seccomp comes from it
//!     process: &process,             // what to run, and as whom
//!     cgroup: None,                  // None: the cgroup init_pid is in
//!     stdio: berth_sandbox::Stdio::default(), // inherit ours; or pipes, or a pty
//!     seccomp_cache: None,
//!     preserve_fds: 0,               // none of ours crosses over
//! })?;
//! // started.pid is our child: wait for it with waitpid.
//! # let _ = started; Ok(()) }
//! ```
//!
//! How: the caller (single-threaded, root) opens `/proc/PID/ns/*` of the
//! container and keeps those that differ from its own. It enters the
//! container's pid namespace itself around one `clone` (setns on a pid
//! namespace only affects children), so the new process is born inside it
//! and is still the caller's child; then it goes back. The child joins the
//! container's cgroup (while it still sees the host's cgroup filesystem),
//! then the user namespace first (which grants the capabilities to enter
//! the rest), then cgroup, ipc, uts, net and mount namespaces; entering the
//! mount namespace puts it at the container's root. From there it is the
//! same path as a container's init (shared with [`crate::spawn`]): a new
//! session, a pty (`stdio.terminal`; the master comes back in
//! [`Started::pty_master`] for the caller to relay, or to pass on to a
//! console socket), rlimits, oom_score_adj, user and groups, umask, cwd,
//! capabilities, no_new_privs, the container's seccomp filter, and exec.
//!
//! Failures come back like [`crate::spawn`]'s: [`SpawnError::NotFound`]
//! (exit code 127), [`SpawnError::NotExecutable`] (126), or another
//! [`SpawnError`] naming the step. On success `exec` returns once the
//! process has exec'd.
//!
//! The container must not be paused: a process joining a frozen cgroup
//! freezes before it can exec, and `exec` would wait for it.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use oci_spec::runtime::{Process, Spec};

use crate::cgroup::{Cgroup, Layout};
use crate::child::{self, ChildFailure, Tail};
use crate::process::ProcessPlan;
use crate::spawn::{ParentJoin, SpawnError, Started, Stdio};
use crate::{seccomp, SetupError};

/// What to run in which running container.
pub struct ExecOptions<'a> {
    /// A process of the container (normally its init), as the caller sees it.
    pub pid: i32,
    /// The container's spec: its `linux.seccomp` filter is applied to the
    /// new process, as runc does.
    pub spec: &'a Spec,
    /// The process: args, env, cwd, user (uid, gid, additionalGids, umask),
    /// capabilities, rlimits, noNewPrivileges, oomScoreAdj, ioPriority,
    /// consoleSize. `process.terminal` is not read: set `stdio.terminal`.
    pub process: &'a Process,
    /// The container's cgroup; `None`: the one `pid` is in.
    pub cgroup: Option<&'a Cgroup>,
    /// Standard streams (`None`: inherit the caller's), or a pty.
    pub stdio: Stdio,
    /// Where compiled seccomp programs are cached (see [`crate::SpawnOptions`]).
    pub seccomp_cache: Option<&'a Path>,
    /// Descriptors 3..3+n go into the container (runc's `--preserve-fds`);
    /// every other descriptor above 2 is closed before exec.
    pub preserve_fds: u32,
}

/// The order namespaces are entered in: user first, mount last.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Io { what, source }
}

/// The container's namespaces that differ from ours, in entering order.
fn container_namespaces(pid: i32) -> Result<Vec<(OwnedFd, CloneFlags)>, SpawnError> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let t = match std::fs::metadata(&theirs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && *name != "mnt" => continue,
            Err(e) => return Err(io_err(format!("container process {pid}: {theirs}"))(e)),
        };
        if let Ok(o) = std::fs::metadata(format!("/proc/self/ns/{name}")) {
            if (o.dev(), o.ino()) == (t.dev(), t.ino()) {
                continue;
            }
        }
        let fd = nix::fcntl::open(
            theirs.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io_err(format!("opening {theirs}"))(e.into()))?;
        out.push((fd, *flag));
    }
    Ok(out)
}

/// Runs `opts.process` inside the running container of `opts.pid`; see the
/// module documentation. The caller must be single-threaded and root.
pub fn exec(opts: ExecOptions<'_>) -> Result<Started, SpawnError> {
    let process = opts.process;
    child::check_process(process).map_err(SpawnError::Config)?;
    let plan_process = ProcessPlan::from_spec(process).map_err(SpawnError::Config)?;
    let filter = match opts
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
    {
        Some(s) => Some(match opts.seccomp_cache {
            Some(dir) => seccomp::compile_cached(s, dir)?,
            None => seccomp::compile(s)?,
        }),
        None => None,
    };
    let cgroup = match opts.cgroup {
        Some(c) => c.clone(),
        None => {
            let layout = Layout::detect().map_err(|e| SpawnError::Setup(e.to_string()))?;
            Cgroup::of_pid(&layout, opts.pid).map_err(|e| SpawnError::Setup(e.to_string()))?
        }
    };
    let mut namespaces = container_namespaces(opts.pid)?;
    let pid_ns: Vec<_> = namespaces
        .iter()
        .position(|(_, f)| *f == CloneFlags::CLONE_NEWPID)
        .map(|i| namespaces.remove(i))
        .into_iter()
        .collect();
    let no_hooks = Vec::new();
    let tail = Tail {
        process: plan_process,
        filter,
        stdio: opts.stdio,
        console_size: process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16)),
        console: false,
        ioprio: child::io_priority(process),
        gate: None,
        start_hooks: &no_hooks,
        preserve_fds: opts.preserve_fds,
    };
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io_err("creating the sync socket".into())(e.into()))?;
    // Born not dumpable, so the container's processes cannot open this
    // process's /proc/PID/exe (the host binary) or fds before it execs.
    crate::fds::set_undumpable().map_err(io_err("making the runtime undumpable".into()))?;
    let entered = ParentJoin::enter(&pid_ns)?;
    let cloned = crate::sys::clone_fork(0);
    if let Ok(None) = cloned {
        drop(parent_sock);
        let result = exec_child(&tail, &cgroup, &namespaces, &child_sock);
        child::child_exit(&child_sock, result)
    }
    drop(entered);
    let pid = cloned
        .map_err(io_err("clone".into()))?
        .expect("parent side of clone");
    drop(child_sock);
    drop(tail);
    child::send(&parent_sock, child::MSG_GO, &pid.to_string(), None);
    child::parent_wait(&parent_sock, pid, &mut || Ok(()))
}

fn exec_child(
    tail: &Tail<'_>,
    cgroup: &Cgroup,
    namespaces: &[(OwnedFd, CloneFlags)],
    sock: &OwnedFd,
) -> Result<std::convert::Infallible, ChildFailure> {
    crate::sys::reset_signal_dispositions();
    let fail = |step: String| {
        move |e: nix::errno::Errno| SetupError {
            step,
            source: e.into(),
        }
    };
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(fail("resetting the signal mask".into()))?;
    child::wait_go(sock)?;
    cgroup.join_self_single_threaded().map_err(|e| SetupError {
        step: format!("joining the container's cgroup: {e}"),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    })?;
    for (fd, flag) in namespaces {
        let name = NAMESPACES
            .iter()
            .find(|(_, f)| f == flag)
            .map_or("a", |(n, _)| n);
        nix::sched::setns(fd, *flag).map_err(fail(format!("joining the {name} namespace")))?;
    }
    child::finish(tail, sock, &None)
}
