//! Parent side: turns an OCI spec into a running container process.
//!
//! The parent validates and precomputes everything ([`ProcessPlan`], the
//! seccomp program, namespace descriptors), then clones once with the new
//! namespaces. The child sets itself up and execs; it reports failures over
//! a `SOCK_SEQPACKET` pair whose end is close-on-exec, so end-of-file means
//! the exec succeeded.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, LinuxNamespaceType, Spec};

use crate::cgroup::Cgroup;
use crate::child::{self, ChildFailure, Tail};
use crate::process::ProcessPlan;
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
    #[error("{0}")]
    Hook(#[from] crate::hooks::HookError),
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

/// What the OCI runtime CLI needs beyond [`SpawnOptions`]. The default is
/// [`spawn`]'s behaviour: no gate, no hook state, pivot_root.
#[derive(Default)]
pub struct SpawnExtras {
    /// The container's exec fifo, opened read-write by the caller. The
    /// child sets everything up, reports ready ([`spawn_with`] returns), and
    /// then blocks reading one byte from it: `start` writes that byte. The
    /// descriptor is close-on-exec, so once every writer is gone (the child
    /// exec'd or died) a reader that opened the fifo before writing sees
    /// POLLHUP. Right before exec (after the `startContainer` hooks) the
    /// child writes `1` into the fifo: a reader that finds it knows the
    /// child got that far.
    pub exec_gate: Option<OwnedFd>,
    /// OCI state (ociVersion, id, bundle, annotations) for the hooks;
    /// `pid` and `status` are filled in here.
    pub hook_state: Option<serde_json::Value>,
    /// Enter the rootfs with `MS_MOVE` + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Descriptors 3..3+n go into the container (runc's `--preserve-fds`);
    /// every other descriptor above 2 is closed before exec.
    pub preserve_fds: u32,
}

struct Plan<'a> {
    spec: &'a Spec,
    rootfs: &'a Path,
    cgroup: Option<&'a Cgroup>,
    /// Namespaces the child joins itself (a mount namespace by path).
    join: Vec<(OwnedFd, CloneFlags)>,
    new_cgroupns: bool,
    new_uts: bool,
    user_ns: bool,
    sysctls: Vec<(PathBuf, String)>,
    personality: Option<libc::c_ulong>,
    parent_hooks: bool,
    create_hooks: Vec<Hook>,
    no_pivot: bool,
    tail: Tail<'a>,
    state: Option<serde_json::Value>,
}

fn ns_name(flag: CloneFlags) -> &'static str {
    match flag {
        CloneFlags::CLONE_NEWPID => "pid",
        CloneFlags::CLONE_NEWNET => "net",
        CloneFlags::CLONE_NEWNS => "mnt",
        CloneFlags::CLONE_NEWIPC => "ipc",
        CloneFlags::CLONE_NEWUTS => "uts",
        CloneFlags::CLONE_NEWUSER => "user",
        _ => "cgroup",
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd, SpawnError> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        SpawnError::Config(format!(
            "linux.namespaces: cannot open {}: {e}",
            path.display()
        ))
    })
}

/// Namespaces entered by the parent around clone (so that the child is
/// born in them, and a new user namespace of the child does not keep it
/// out of them); restored on drop.
pub(crate) struct ParentJoin {
    saved: Vec<(OwnedFd, CloneFlags)>,
}

impl ParentJoin {
    pub(crate) fn enter(targets: &[(OwnedFd, CloneFlags)]) -> Result<ParentJoin, SpawnError> {
        let mut me = ParentJoin { saved: Vec::new() };
        for (fd, flag) in targets {
            let own = open_ns(Path::new(&format!(
                "/proc/thread-self/ns/{}",
                ns_name(*flag)
            )))?;
            nix::sched::setns(fd, *flag).map_err(|e| SpawnError::Io {
                what: format!("joining the {} namespace", ns_name(*flag)),
                source: e.into(),
            })?;
            me.saved.push((own, *flag));
        }
        Ok(me)
    }
}

impl Drop for ParentJoin {
    fn drop(&mut self) {
        for (fd, flag) in self.saved.drain(..).rev() {
            // Going back to our own namespaces cannot fail for root; if it
            // did, continuing in the container's would be wrong: stop.
            if nix::sched::setns(&fd, flag).is_err() {
                eprintln!(
                    "berth-sandbox: cannot return to our own {} namespace",
                    ns_name(flag)
                );
                std::process::abort();
            }
        }
    }
}

fn id_map(
    field: &str,
    list: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>,
) -> Result<String, SpawnError> {
    let list = list.as_ref().filter(|l| !l.is_empty()).ok_or_else(|| {
        SpawnError::Config(format!(
            "linux.{field} is required with a new user namespace"
        ))
    })?;
    Ok(list
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect())
}

fn personality(spec: &Spec) -> Result<Option<libc::c_ulong>, SpawnError> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(None);
    };
    let mut v: libc::c_ulong = match p.domain() {
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0,
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    for f in p.flags().iter().flatten() {
        v |= match f.as_str() {
            "ADDR_NO_RANDOMIZE" => 0x0040000,
            "ADDR_COMPAT_LAYOUT" => 0x0200000,
            "READ_IMPLIES_EXEC" => 0x0400000,
            "ADDR_LIMIT_32BIT" => 0x0800000,
            "SHORT_INODE" => 0x1000000,
            "WHOLE_SECONDS" => 0x2000000,
            "STICKY_TIMEOUTS" => 0x4000000,
            "ADDR_LIMIT_3GB" => 0x8000000,
            "UNAME26" => 0x0020000,
            "MMAP_PAGE_ZERO" => 0x0100000,
            "FDPIC_FUNCPTRS" => 0x0080000,
            other => {
                return Err(SpawnError::Config(format!(
                    "linux.personality.flags: unknown flag {other}"
                )))
            }
        };
    }
    Ok(Some(v))
}

/// Refuses `linux` fields berth cannot honour, naming them.
fn check_linux(spec: &Spec) -> Result<(), SpawnError> {
    let Some(l) = spec.linux() else { return Ok(()) };
    let refuse = |field: &str| {
        Err(SpawnError::Config(format!(
            "linux.{field} is not supported"
        )))
    };
    if l.mount_label().as_ref().is_some_and(|s| !s.is_empty()) {
        return refuse("mountLabel (SELinux)");
    }
    if l.intel_rdt().is_some() {
        return refuse("intelRdt");
    }
    if l.memory_policy().is_some() {
        return refuse("memoryPolicy");
    }
    if l.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
        return refuse("timeOffsets (time namespace)");
    }
    if l.net_devices().as_ref().is_some_and(|t| !t.is_empty()) {
        return refuse("netDevices");
    }
    Ok(())
}

/// Starts the container described by `opts.spec`. The caller must be
/// single-threaded. Signals the caller wants to handle should be blocked
/// before calling; the child resets its mask and handlers.
pub fn spawn(opts: SpawnOptions<'_>) -> Result<Started, SpawnError> {
    spawn_with(opts, SpawnExtras::default())
}

/// [`spawn`] with the OCI runtime's extras: the `start` gate, hooks with
/// their state, `--no-pivot`. Beyond `spawn`'s work this handles, from the
/// spec: a new user namespace with its ID mappings, namespaces joined by
/// path (the pid namespace included, by entering it around clone), the
/// `prestart`/`createRuntime` hooks (run here, in the caller's namespaces,
/// before pivot_root), `createContainer` and `startContainer` hooks (run
/// by the child), `domainname`, `linux.personality`, `process.ioPriority`.
pub fn spawn_with(opts: SpawnOptions<'_>, extras: SpawnExtras) -> Result<Started, SpawnError> {
    let spec = opts.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpawnError::Config("process is missing".into()))?;
    child::check_process(process).map_err(SpawnError::Config)?;
    check_linux(spec)?;
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
    let mut parent_join = Vec::new();
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
            LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
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
            Some(_) if flag == CloneFlags::CLONE_NEWUSER => {
                return Err(SpawnError::Config(
                    "linux.namespaces: joining a user namespace by path is not supported yet"
                        .into(),
                ))
            }
            Some(path) if flag == CloneFlags::CLONE_NEWNS => join.push((open_ns(path)?, flag)),
            Some(path) => parent_join.push((open_ns(path)?, flag)),
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
    let user_ns = flags.contains(CloneFlags::CLONE_NEWUSER);
    let maps = if user_ns {
        if !join.is_empty() {
            return Err(SpawnError::Config(
                "linux.namespaces: joining a mount namespace with a new user namespace is not supported".into(),
            ));
        }
        let none = None;
        Some((
            id_map("uidMappings", linux.map_or(&none, |l| l.uid_mappings()))?,
            id_map("gidMappings", linux.map_or(&none, |l| l.gid_mappings()))?,
        ))
    } else {
        if linux.is_some_and(|l| l.uid_mappings().is_some() || l.gid_mappings().is_some()) {
            return Err(SpawnError::Config(
                "linux.uidMappings/gidMappings are set but there is no new user namespace".into(),
            ));
        }
        None
    };
    if spec.hostname().is_some() && !new_uts {
        return Err(SpawnError::Config(
            "hostname is set but there is no new uts namespace".into(),
        ));
    }
    if spec.domainname().is_some() && !new_uts {
        return Err(SpawnError::Config(
            "domainname is set but there is no new uts namespace".into(),
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
    #[allow(deprecated)]
    let (prestart, create_runtime, create_container, start_container) = match spec.hooks() {
        Some(h) => (
            h.prestart().clone().unwrap_or_default(),
            h.create_runtime().clone().unwrap_or_default(),
            h.create_container().clone().unwrap_or_default(),
            h.start_container().clone().unwrap_or_default(),
        ),
        None => Default::default(),
    };
    let console_size = process
        .console_size()
        .map(|b| (b.height() as u16, b.width() as u16));
    let mut state = extras.hook_state.clone().or_else(|| {
        (spec.hooks().is_some()).then(|| serde_json::json!({"ociVersion": spec.version()}))
    });
    let plan = Plan {
        spec,
        rootfs: opts.rootfs,
        cgroup: opts.cgroup,
        join,
        new_cgroupns,
        new_uts,
        user_ns,
        sysctls,
        personality: personality(spec)?,
        parent_hooks: !prestart.is_empty() || !create_runtime.is_empty(),
        create_hooks: create_container,
        no_pivot: extras.no_pivot,
        tail: Tail {
            process: plan_process,
            filter,
            stdio: opts.stdio,
            console_size,
            console: true,
            ioprio: child::io_priority(process),
            gate: extras.exec_gate,
            start_hooks: &start_container,
            preserve_fds: extras.preserve_fds,
        },
        state: state.clone(),
    };

    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io_err("creating the sync socket")(e.into()))?;

    let entered = ParentJoin::enter(&parent_join)?;
    // The child is born not dumpable (the flag is copied with the address
    // space) and stays so until it execs the workload: see crate::fds.
    crate::fds::set_undumpable().map_err(io_err("making the runtime undumpable"))?;
    let cloned = crate::sys::clone_fork(flags.bits());
    if let Ok(None) = cloned {
        drop(parent_sock);
        child_main(plan, child_sock)
    }
    drop(entered);
    let pid = cloned
        .map_err(io_err("clone"))?
        .expect("parent side of clone");
    drop(child_sock);
    drop(plan);
    if let Some((uid_map, gid_map)) = &maps {
        let write = |file: &str, map: &str| {
            std::fs::write(format!("/proc/{pid}/{file}"), map).map_err(|source| SpawnError::Io {
                what: format!(
                    "writing linux.{} to /proc/{pid}/{file}",
                    if file == "uid_map" {
                        "uidMappings"
                    } else {
                        "gidMappings"
                    }
                ),
                source,
            })
        };
        let r = write("uid_map", uid_map)
            .and_then(|()| write("gid_map", gid_map))
            .and_then(|()| match opts.cgroup {
                Some(cg) => cg
                    .add_task(pid.as_raw())
                    .map_err(|e| SpawnError::Setup(format!("joining the cgroup: {e}"))),
                None => Ok(()),
            });
        if let Err(e) = r {
            return Err(child::reap(pid, e, true));
        }
    }
    child::send(&parent_sock, child::MSG_GO, &pid.to_string(), None);
    if let Some(s) = state.as_mut() {
        s["pid"] = pid.as_raw().into();
    }
    let mut run_hooks = || -> Result<(), SpawnError> {
        let st = child::state_with(&state, "creating");
        crate::hooks::run_hooks("prestart", &prestart, &st)?;
        crate::hooks::run_hooks("createRuntime", &create_runtime, &st)?;
        Ok(())
    };
    child::parent_wait(&parent_sock, pid, &mut run_hooks)
}

fn child_main(plan: Plan<'_>, sock: OwnedFd) -> ! {
    let result = child_setup(&plan, &sock);
    child::child_exit(&sock, result)
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
    let pid = child::wait_go(sock)?;
    let mut state = plan.state.clone();
    if let Some(s) = state.as_mut() {
        s["pid"] = pid.into();
    }
    if plan.user_ns {
        // Become the namespace's root (when mapped), so files we create are
        // owned by a mapped ID.
        let root = nix::unistd::Gid::from_raw(0);
        let _ = nix::unistd::setresgid(root, root, root);
        let uroot = nix::unistd::Uid::from_raw(0);
        let _ = nix::unistd::setresuid(uroot, uroot, uroot);
    } else if let Some(cg) = plan.cgroup {
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
        if let Some(d) = plan.spec.domainname() {
            crate::sys::set_domainname(d.as_bytes()).map_err(|source| SetupError {
                step: "setting the domainname".into(),
                source,
            })?;
        }
    }

    // Sysctls go through the host's /proc before pivot_root: the container's
    // /proc/sys is read-only by then (linux.readonlyPaths), and namespaced
    // sysctls resolve to the writer's namespaces anyway.
    let mut before_pivot = || -> Result<(), SetupError> {
        for (path, value) in &plan.sysctls {
            std::fs::write(path, value).map_err(|source| SetupError {
                step: format!("setting sysctl {}", path.display()),
                source,
            })?;
        }
        if plan.parent_hooks {
            child::ask_hooks(sock)?;
        }
        if !plan.create_hooks.is_empty() {
            let st = child::state_with(&state, "creating");
            crate::hooks::run_hooks("createContainer", &plan.create_hooks, &st).map_err(|e| {
                SetupError {
                    step: e.to_string(),
                    source: io::Error::from_raw_os_error(libc::EIO),
                }
            })?;
        }
        Ok(())
    };
    crate::mounts::setup_rootfs_with(plan.spec, plan.rootfs, plan.no_pivot, &mut before_pivot)?;
    if let Some(p) = plan.personality {
        crate::sys::set_personality(p).map_err(|source| SetupError {
            step: "setting linux.personality".into(),
            source,
        })?;
    }
    child::finish(&plan.tail, sock, &state)
}
