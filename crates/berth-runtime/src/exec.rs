//! `exec`: another process in a running container, through
//! [`berth_sandbox::exec`]. The process comes from `--process FILE` (an
//! OCI process JSON) or from the container's own process with the command
//! line's overrides, as runc builds it.

use std::path::{Path, PathBuf};

use berth_sandbox::{ExecOptions, Stdio};
use oci_spec::runtime::{Capability, Process};

use crate::console;
use crate::error::{io_err, Result, RuntimeError};
use crate::state::{Status, Store};

#[derive(Default)]
pub struct ExecOpts {
    pub process: Option<PathBuf>,
    pub tty: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub preserve_fds: u32,
    pub ignore_paused: bool,
    pub args: Vec<String>,
}

fn usage(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Usage(msg.into())
}

fn build_process(base: &Process, o: &ExecOpts) -> Result<Process> {
    if let Some(path) = &o.process {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(io_err("reading the process from stdin"))?;
            s
        } else {
            std::fs::read_to_string(path)
                .map_err(io_err(format!("reading --process {}", path.display())))?
        };
        return serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "--process {}: invalid process: {e}",
                path.display()
            ))
        });
    }
    if o.args.is_empty() {
        return Err(usage("exec: a command is required (or --process FILE)"));
    }
    let mut p = base.clone();
    p.set_args(Some(o.args.clone()));
    p.set_terminal(Some(o.tty));
    p.set_console_size(None);
    if let Some(cwd) = &o.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(o.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(u) = &o.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .map_err(|_| usage(format!("--user {u:?}: expected UID[:GID] as numbers")))?;
        let gid: u32 = match gid {
            Some(g) => g
                .parse()
                .map_err(|_| usage(format!("--user {u:?}: expected UID[:GID] as numbers")))?,
            None => 0,
        };
        let user = p.user_mut();
        user.set_uid(uid);
        user.set_gid(gid);
    }
    if !o.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(o.additional_gids.clone()));
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !o.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for c in &o.caps {
            let name = c.trim_start_matches("CAP_");
            let cap: Capability = serde_json::from_value(serde_json::json!(format!("CAP_{name}")))
                .map_err(|_| usage(format!("--cap {c}: unknown capability")))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (bo, ef, pe) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(bo);
            caps.set_effective(ef);
            caps.set_permitted(pe);
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// Runs `exec`; returns the exit status to leave with.
pub fn exec(store: &Store, id: &str, o: &ExecOpts) -> Result<i32> {
    let rec = store.load(id)?;
    match rec.status() {
        Status::Running | Status::Created => {}
        Status::Paused if o.ignore_paused => {}
        Status::Paused => {
            return Err(RuntimeError::State(
                "cannot exec in a paused container (use --ignore-paused)".into(),
            ))
        }
        _ => {
            return Err(RuntimeError::State(
                "cannot exec in a stopped container".into(),
            ))
        }
    }
    let base = rec.config.process().clone().unwrap_or_default();
    let process = build_process(&base, o)?;
    let terminal = process.terminal().unwrap_or(false);
    let console = match (terminal, &o.console_socket) {
        (true, Some(p)) => Some(console::connect(p)?),
        (true, None) if !o.detach => None,
        (true, None) => {
            return Err(usage(
                "cannot allocate a tty with --detach without --console-socket",
            ))
        }
        (false, Some(_)) => {
            return Err(usage(
                "--console-socket needs a terminal (-t or process.terminal)",
            ))
        }
        (false, None) => None,
    };
    crate::create::prepare_fds(o.preserve_fds)?;
    if crate::vm::is_vm(&rec.config) {
        return exec_vm(store, &rec, process, console, o);
    }
    if !o.detach {
        console::block_signals()?;
    }
    let cgroup = rec.cgroup()?;
    let cache = store.root.join(".seccomp-cache");
    let started = berth_sandbox::exec(ExecOptions {
        pid: rec.pid,
        spec: &rec.config,
        process: &process,
        cgroup: Some(&cgroup),
        stdio: Stdio {
            terminal,
            ..Stdio::default()
        },
        seccomp_cache: Some(&cache),
        preserve_fds: o.preserve_fds,
    })?;
    let mut pty = started.pty_master;
    if let (Some(sock), Some(master)) = (&console, &pty) {
        console::send_master(sock, master)?;
        pty = None;
    }
    if let Some(p) = &o.pid_file {
        crate::create::write_pid_file(p, started.pid.as_raw())?;
    }
    if o.detach {
        return Ok(0);
    }
    console::wait_foreground(started.pid, pty)
}

/// `exec` into a microVM: the guest runs the process; here a relay carries
/// its stdio, signals and exit code. With `--detach` the relay is a child
/// process whose PID is the exec's (conmon waits for it and gets its
/// output, as it would from a container's process).
fn exec_vm(
    store: &Store,
    rec: &crate::state::Record,
    process: Process,
    console: Option<std::os::unix::net::UnixStream>,
    o: &ExecOpts,
) -> Result<i32> {
    if !o.detach {
        return crate::vm::exec(store, rec, process);
    }
    let pty = if process.terminal().unwrap_or(false) {
        let (m, s) = berth_sandbox::tty::open_pty()
            .map_err(|e| RuntimeError::Unsupported(format!("opening a pty: {e}")))?;
        Some((m, s))
    } else {
        None
    };
    // SAFETY: this process is single-threaded; the child only runs the
    // relay and exits.
    match unsafe { nix::unistd::fork() }.map_err(crate::error::nix_err("forking the exec relay"))? {
        nix::unistd::ForkResult::Child => {
            if let Some((m, s)) = pty {
                drop(m);
                let _ = nix::unistd::setsid();
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this
                    // fresh child; `s` stays open until after.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&s), fd) };
                }
                drop(s);
                let _ = berth_sandbox::sys::set_controlling_tty(berth_sandbox::sys::std_fd(0));
            }
            let code = crate::vm::exec(store, rec, process).unwrap_or_else(|e| {
                eprintln!("berth-runtime: {e}");
                125
            });
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            if let (Some(sock), Some((m, _))) = (&console, &pty) {
                console::send_master(sock, m)?;
            }
            if let Some(p) = &o.pid_file {
                crate::create::write_pid_file(p, child.as_raw())?;
            }
            Ok(0)
        }
    }
}
