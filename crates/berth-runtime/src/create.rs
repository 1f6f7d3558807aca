//! `create`, `start` and `run`.
//!
//! `create` sets the container up and leaves its init process blocked
//! right before exec, reading one byte from `<root>/<id>/exec.fifo`
//! (opened read-write, so opening it never blocks). `start` opens the fifo
//! for reading, then for writing, writes that byte, and waits for POLLHUP
//! on its reader: every writer is gone once the init exec'd (its
//! descriptor is close-on-exec) or died. The init writes `1` into the fifo
//! right before exec; finding it tells `start` which of the two happened. `create` returns as soon as the
//! init waits; the init then belongs to our caller's subreaper
//! (containerd-shim, conmon), as with runc.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_sandbox::{Cgroup, Layout, SpawnExtras, SpawnOptions, Started, Stdio};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::bundle;
use crate::console;
use crate::error::{io_err, nix_err, Result, RuntimeError};
use crate::log;
use crate::state::{proc_stat, Record, Status, Store};

/// Options of `create` (and `run`).
pub struct CreateOpts<'a> {
    /// Run the bundle in a microVM whatever its annotations say
    /// (`--isolation vm`).
    pub vm: bool,
    pub id: &'a str,
    pub bundle: Option<&'a Path>,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
}

/// Removes what a failed `create` made.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Keeps descriptors 3..3+n open into the container (main made every
/// inherited descriptor close-on-exec, and the container's process closes
/// all others: `berth_sandbox::fds`).
pub(crate) fn prepare_fds(preserve: u32) -> Result<()> {
    for fd in 3..3 + preserve as i32 {
        berth_sandbox::sys::set_cloexec(fd, false)
            .map_err(io_err(format!("--preserve-fds: descriptor {fd}")))?;
    }
    Ok(())
}

/// The spec's resources plus, as runc, device rules allowing the spec's
/// own devices and the devices every container needs (null, zero, full,
/// tty, random, urandom, ptmx and ptys, tun; mknod of any).
fn effective_resources(spec: &oci_spec::runtime::Spec) -> oci_spec::runtime::LinuxResources {
    let linux = spec.linux().as_ref();
    let mut r = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let mut rules = r.devices().clone().unwrap_or_default();
    let rule = |typ: &str, major: Option<i64>, minor: Option<i64>, access: &str| {
        serde_json::from_value(serde_json::json!({
            "allow": true, "type": typ, "major": major, "minor": minor, "access": access,
        }))
        .expect("a valid device rule")
    };
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let typ = serde_json::to_value(d.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "c".into());
        let typ = if typ == "u" { "c".to_string() } else { typ };
        rules.push(rule(&typ, Some(d.major()), Some(d.minor()), "rwm"));
    }
    for (typ, major, minor, access) in [
        ("c", None, None, "m"),
        ("b", None, None, "m"),
        ("c", Some(1), Some(3), "rwm"),
        ("c", Some(1), Some(5), "rwm"),
        ("c", Some(1), Some(7), "rwm"),
        ("c", Some(1), Some(8), "rwm"),
        ("c", Some(1), Some(9), "rwm"),
        ("c", Some(5), Some(0), "rwm"),
        ("c", Some(5), Some(2), "rwm"),
        ("c", Some(136), None, "rwm"),
        ("c", Some(10), Some(200), "rwm"),
    ] {
        rules.push(rule(typ, major, minor, access));
    }
    r.set_devices(Some(rules));
    r
}

pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err(format!("writing --pid-file {}", path.display())))
}

/// A created container; `pty` is its terminal when no console socket took it.
pub struct Created {
    pub record: Record,
    pub pty: Option<OwnedFd>,
}

/// `create`; with `foreground` (run without --detach) a terminal is kept
/// for the caller to relay instead of needing a console socket.
pub fn create(store: &Store, o: &CreateOpts<'_>, foreground: bool) -> Result<Created> {
    let mut b = bundle::load(o.bundle)?;
    if o.vm && !crate::vm::is_vm(&b.spec) {
        let mut ann = b.spec.annotations().clone().unwrap_or_default();
        ann.insert(bundle::ISOLATION_ANNOTATION.into(), "vm".into());
        b.spec.set_annotations(Some(ann));
        crate::vm::preflight(&b.spec).map_err(|e| RuntimeError::Config {
            bundle: b.dir.clone(),
            msg: format!("--isolation vm: {e}"),
        })?;
    }
    let process = b.spec.process().as_ref().expect("checked by bundle::load");
    let terminal = process.terminal().unwrap_or(false);
    let console = match (terminal, o.console_socket) {
        (true, Some(p)) => Some(console::connect(p)?),
        (true, None) if foreground => None,
        (true, None) => {
            return Err(RuntimeError::Usage(
                "process.terminal is true: --console-socket is required".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(RuntimeError::Usage(
                "--console-socket given but process.terminal is false".into(),
            ))
        }
        (false, None) => None,
    };
    // Relative to where we were called, before entering the bundle below.
    let pid_file = o
        .pid_file
        .map(std::path::absolute)
        .transpose()
        .map_err(io_err("--pid-file"))?;
    let dir = store.create_dir(o.id)?;
    let mut undo = Undo {
        dir: Some(dir.clone()),
        cgroup: None,
        pid: None,
    };
    log::debug(&format!("create {}: bundle {}", o.id, b.dir.display()));
    // Relative mount sources are relative to the bundle, as with runc.
    std::env::set_current_dir(&b.dir).map_err(io_err(format!("entering {}", b.dir.display())))?;
    let cg_path = bundle::cgroup_path(&b.spec, o.id);
    let layout = Layout::detect()?;
    let cgroup = Cgroup::create(&layout, Path::new(&cg_path), None)?;
    undo.cgroup = Some(cgroup.clone());
    let vm = crate::vm::is_vm(&b.spec);
    if vm {
        cgroup.apply_all(&crate::vm::host_resources(&b.spec))?;
    } else {
        cgroup.apply_all(&effective_resources(&b.spec))?;
    }
    let fifo = store.fifo(o.id);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
        .map_err(nix_err(format!("creating {}", fifo.display())))?;
    let gate = nix::fcntl::open(&fifo, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(nix_err(format!("opening {}", fifo.display())))?;
    prepare_fds(o.preserve_fds)?;
    let annotations = b.spec.annotations().clone().unwrap_or_default();
    let hook_state = serde_json::json!({
        "ociVersion": b.spec.version(),
        "id": o.id,
        "bundle": b.dir,
        "annotations": annotations,
    });
    let cache = store.root.join(".seccomp-cache");
    let started: Started = if vm {
        spawn_vm_host(store, o.id, gate, terminal, &cgroup)?
    } else {
        berth_sandbox::spawn_with(
            SpawnOptions {
                spec: &b.spec,
                rootfs: &b.rootfs,
                cgroup: Some(&cgroup),
                stdio: Stdio {
                    terminal,
                    ..Stdio::default()
                },
                seccomp_cache: Some(&cache),
            },
            SpawnExtras {
                exec_gate: Some(gate),
                hook_state: Some(hook_state),
                no_pivot: o.no_pivot,
                preserve_fds: o.preserve_fds,
            },
        )?
    };
    let pid = started.pid.as_raw();
    undo.pid = Some(pid);
    let mut pty = started.pty_master;
    if let (Some(sock), Some(master)) = (&console, &pty) {
        console::send_master(sock, master)?;
        pty = None;
    }
    let record = Record {
        id: o.id.to_string(),
        pid,
        pid_start: proc_stat(pid).map(|(s, _)| s).unwrap_or(0),
        bundle: b.dir.clone(),
        rootfs: b.rootfs.clone(),
        created: log::now_rfc3339(),
        status: Status::Created,
        cgroup: cg_path,
        annotations: annotations.into_iter().collect(),
        config: b.spec,
    };
    store.save(&record)?;
    if let Some(p) = &pid_file {
        write_pid_file(p, pid)?;
    }
    undo.dir = None;
    undo.cgroup = None;
    undo.pid = None;
    Ok(Created { record, pty })
}

/// A VM's host process (`berth-runtime __vm`), where a container's init
/// would be: in the cgroup, with our stdio (or a new terminal), holding
/// the exec fifo until `start`.
fn spawn_vm_host(
    store: &Store,
    id: &str,
    gate: OwnedFd,
    terminal: bool,
    cgroup: &Cgroup,
) -> Result<Started> {
    use std::os::fd::AsRawFd;
    let mut c = crate::vm::host_command(store, id, gate.as_raw_fd())?;
    let mut master = None;
    if terminal {
        let (m, slave) = berth_sandbox::tty::open_pty()
            .map_err(|e| RuntimeError::Unsupported(format!("opening a pty: {e}")))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(io_err("duplicating the pty"));
        c.stdin(std::process::Stdio::from(dup(&slave)?))
            .stdout(std::process::Stdio::from(dup(&slave)?))
            .stderr(std::process::Stdio::from(slave));
        master = Some(m);
    }
    berth_sandbox::sys::set_cloexec(gate.as_raw_fd(), false)
        .map_err(io_err("passing the exec fifo"))?;
    let child = c.spawn().map_err(io_err("starting the VM's host process"));
    drop(gate);
    drop(c);
    let child = child?;
    let pid = child.id() as i32;
    // Dropping the handle neither kills nor waits: our caller reaps it.
    drop(child);
    cgroup.join(pid)?;
    Ok(Started {
        pid: nix::unistd::Pid::from_raw(pid),
        pty_master: master,
    })
}

/// `start`: lets the created container's init exec, then runs the
/// poststart hooks.
pub fn start(store: &Store, id: &str) -> Result<()> {
    let mut rec = store.load(id)?;
    let _lock = store.lock(id)?;
    match rec.status() {
        Status::Created => {}
        Status::Stopped => {
            return Err(RuntimeError::State(
                "cannot start a container that has stopped".into(),
            ))
        }
        s => {
            return Err(RuntimeError::State(format!(
                "cannot start an already {} container",
                s.as_str()
            )))
        }
    }
    let fifo = store.fifo(id);
    let reader = nix::fcntl::open(
        &fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_err(format!("opening {}", fifo.display())))?;
    let writer = nix::fcntl::open(
        &fifo,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_err(format!("opening {}", fifo.display())))?;
    nix::unistd::write(&writer, b"0").map_err(nix_err("writing to the exec fifo"))?;
    drop(writer);
    loop {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&reader),
            nix::poll::PollFlags::empty(),
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) if fds[0].revents().is_some_and(|r| !r.is_empty()) => break,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(nix_err("waiting for the container to start")(e)),
        }
    }
    let _ = std::fs::remove_file(&fifo);
    let mut ack = [0u8; 4096];
    let got = nix::unistd::read(&reader, &mut ack).unwrap_or(0);
    let ack = String::from_utf8_lossy(&ack[..got]);
    // A microVM's host process answers "ok" once the workload runs in the
    // guest, or why it could not start it.
    if let Some(why) = ack.lines().find_map(|l| l.strip_prefix("err ")) {
        let msg = why.split_once(' ').map_or(why, |(_, m)| m);
        return Err(RuntimeError::State(format!(
            "the container's process could not start: {msg}"
        )));
    }
    if !ack.contains('1') && !ack.starts_with("ok") {
        return Err(RuntimeError::State(
            "the container's process exited before it could start (see its hooks and output)"
                .into(),
        ));
    }
    rec.status = Status::Running;
    store.save(&rec)?;
    let hooks = rec
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().clone())
        .unwrap_or_default();
    if let Err(e) =
        berth_sandbox::hooks::run_hooks("poststart", &hooks, &rec.hook_state(Status::Running))
    {
        log::warn(&e.to_string());
    }
    Ok(())
}

/// `run`: create, start, and (unless `detach`) wait for the init, forward
/// signals to it, and delete it afterwards unless `keep`.
pub fn run(store: &Store, o: &CreateOpts<'_>, detach: bool, keep: bool) -> Result<i32> {
    if !detach {
        console::block_signals()?;
    }
    let created = create(store, o, !detach)?;
    if let Err(e) = start(store, o.id) {
        let _ = crate::lifecycle::delete(store, o.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let pid = nix::unistd::Pid::from_raw(created.record.pid);
    let code = console::wait_foreground(pid, created.pty)?;
    if !keep {
        crate::lifecycle::delete(store, o.id, true)?;
    }
    Ok(code)
}
