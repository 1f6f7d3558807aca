//! Starting a detached container: the CLI forks once; the child starts the
//! container (its own child) with pipes for its output, then becomes the
//! monitor by exec'ing `berth-monitor`, which keeps the container as its
//! child. One process start fewer than running a helper from the monitor
//! (restarts use the `berth __start` helper).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::containers::{cgroups_path, pid_start_time};
use crate::db::ContainerRow;
use crate::lifecycle::log_path;
use crate::{events, io_err, now, Engine, EngineError};

/// Everything the forked child needs, computed before the fork (the child
/// must not touch the database connection it inherited).
struct Launch {
    id: String,
    spec: oci_spec::runtime::Spec,
    rootfs: PathBuf,
    seccomp_cache: PathBuf,
    tty: bool,
    /// Keep the container's stdin open for `berth attach` (-i).
    interactive: bool,
    monitor: CString,
    argv: Vec<CString>,
    /// The monitor's environment: PATH and berth's own settings, which
    /// its restarts (`berth __start`, `berth __vm`) need as the first
    /// life had them.
    env: Vec<CString>,
    /// Bound before the monitor starts, so `attach` can connect as soon as
    /// `run -d` returns.
    attach_socket: PathBuf,
    /// For a VM: its host process starts instead of the sandbox.
    vmm: Option<crate::vm::VmmCommand>,
}

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(s.as_ref().as_bytes()).unwrap_or_default()
}

fn write_all(fd: &OwnedFd, s: &str) {
    let _ = nix::unistd::write(fd, s.as_bytes());
}

impl Engine {
    /// Starts a created or exited container under a new monitor and returns
    /// once its process runs (or failed to start).
    pub fn start_detached(&mut self, key: &str) -> Result<ContainerRow, EngineError> {
        let row = self.find(key)?;
        match row.state.as_str() {
            "running" | "restarting" => return Ok(row),
            "paused" => {
                return Err(EngineError::Invalid(format!(
                    "container {} is paused: unpause it instead",
                    row.name
                )))
            }
            _ => {}
        }
        self.db().set_stop_requested(&row.id, false)?;
        let cfg = Self::config_of(&row);
        self.ensure_rootfs(&row)?;
        let exe = berth_sandbox::seal::current_exe().map_err(io_err("finding the berth binary"))?;
        let monitor = exe.with_file_name("berth-monitor");
        let mut argv = vec![cstr(&monitor)];
        for (k, v) in [
            ("--berth", exe.as_os_str().to_owned()),
            ("--root", self.root.as_os_str().to_owned()),
            ("--run-root", self.run_root.as_os_str().to_owned()),
            ("--id", row.id.clone().into()),
            (
                "--log",
                log_path(&self.container_dir(&row.id)).into_os_string(),
            ),
            ("--log-max-size", cfg.log_max_size.to_string().into()),
            ("--log-max-file", cfg.log_max_file.max(1).to_string().into()),
        ] {
            argv.push(cstr(k));
            argv.push(cstr(v));
        }
        if cfg.tty {
            argv.push(cstr("--tty"));
        }
        // The log exists once `run -d` returns (the monitor appends to it).
        let log = log_path(&self.container_dir(&row.id));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log)
            .map_err(io_err(format!("creating {}", log.display())))?;
        let socket = self.attach_socket(&row.id);
        argv.push(cstr("--attach"));
        argv.push(cstr(&socket));
        let launch = Launch {
            id: row.id.clone(),
            spec: self.load_spec(&row.id)?,
            rootfs: self.container_dir(&row.id).join("rootfs"),
            seccomp_cache: self.run_root.join("seccomp"),
            tty: cfg.tty,
            interactive: cfg.interactive,
            monitor: cstr(&monitor),
            argv,
            env: monitor_env(),
            attach_socket: socket,
            vmm: if crate::vm::is_vm(&cfg) {
                Some(self.vmm_command(&row.id)?)
            } else {
                None
            },
        };
        // The network namespace exists before the container does.
        if let Err(e) = self.network_up(&row, &cfg) {
            let _ = self.cleanup_runtime(&row.id);
            return Err(e);
        }
        berth_sandbox::fault::point("start:network");
        let (res_r, res_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("creating a pipe")(e.into()))?;
        // berth's CLI is single-threaded: forking is safe.
        let child = berth_sandbox::sys::clone_fork(0).map_err(io_err("forking the monitor"))?;
        let Some(monitor_pid) = child else {
            drop(res_r);
            let code = become_monitor(&launch, &res_w);
            berth_sandbox::sys::exit_now(code);
        };
        drop(res_w);
        let mut answer = String::new();
        let _ = std::fs::File::from(res_r).read_to_string(&mut answer);
        let mut pid = None;
        let mut failure = None;
        for line in answer.lines() {
            if let Some(p) = line.strip_prefix("pid ") {
                pid = p.trim().parse::<i32>().ok();
            } else if let Some(rest) = line.strip_prefix("err ") {
                let (c, m) = rest.split_once(' ').unwrap_or((rest, ""));
                failure = Some((c.parse::<i32>().unwrap_or(125), m.to_string()));
            }
        }
        match (pid, failure) {
            (Some(pid), None) => {
                let start = pid_start_time(pid).unwrap_or(0);
                self.db().set_running(&row.id, pid, start, now())?;
                let m = monitor_pid.as_raw();
                self.db()
                    .set_monitor(&row.id, m, pid_start_time(m).unwrap_or(0))?;
                events::emit(&self.root, &row, "start", &[]);
                berth_sandbox::fault::point("start:recorded");
                self.find(&row.id)
            }
            (_, failure) => {
                let (code, msg) =
                    failure.unwrap_or((125, "the container's monitor failed to start".into()));
                let _ = nix::sys::wait::waitpid(monitor_pid, None);
                self.db().set_exited(&row.id, code, false, &msg, now())?;
                let _ = self.cleanup_runtime(&row.id);
                Err(EngineError::StartFailed { code, msg })
            }
        }
    }
}

/// In the forked child: start the container, report, exec the monitor.
/// Returns an exit code only on failure.
fn become_monitor(l: &Launch, res: &OwnedFd) -> i32 {
    let _ = nix::unistd::setsid();
    let fail = |code: i32, msg: String| {
        write_all(res, &format!("err {code} {msg}\n"));
        code
    };
    let layout = match berth_sandbox::Layout::detect() {
        Ok(l) => l,
        Err(e) => return fail(125, e.to_string()),
    };
    let linux = l.spec.linux().as_ref();
    let cg_path = linux
        .and_then(|x| x.cgroups_path().clone())
        .unwrap_or_else(|| cgroups_path(&l.id).into());
    let cgroup = match berth_sandbox::Cgroup::create(
        &layout,
        &cg_path,
        linux.and_then(|x| x.resources().as_ref()),
    ) {
        Ok(c) => c,
        Err(e) => return fail(125, e.to_string()),
    };
    let pipes = if l.tty {
        None
    } else {
        match (
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC),
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC),
        ) {
            (Ok(o), Ok(e)) => Some((o, e)),
            _ => return fail(125, "creating the output pipes failed".into()),
        }
    };
    // With -i the container reads a pipe the monitor feeds from attach clients.
    let stdin_pipe = if l.interactive && !l.tty {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => Some(p),
            Err(e) => return fail(125, format!("creating the stdin pipe: {e}")),
        }
    } else {
        None
    };
    let stdin: Option<OwnedFd> = match &stdin_pipe {
        Some((r, _)) => r.try_clone().ok(),
        None => std::fs::File::open("/dev/null").ok().map(Into::into),
    };
    let (out_w, err_w) = match &pipes {
        Some(((_, ow), (_, ew))) => (ow.try_clone().ok(), ew.try_clone().ok()),
        None => (None, None),
    };
    let stdio = berth_sandbox::Stdio {
        stdin: if l.tty { None } else { stdin },
        stdout: out_w,
        stderr: err_w,
        terminal: l.tty,
    };
    let started = match &l.vmm {
        // Returns once the workload runs in the guest (or failed to start).
        Some(vmm) => vmm
            .spawn(stdio, l.tty, true)
            .map_err(|e| (e.exit_code(), e.to_string())),
        None => berth_sandbox::spawn(berth_sandbox::SpawnOptions {
            spec: &l.spec,
            rootfs: &l.rootfs,
            cgroup: Some(&cgroup),
            stdio,
            seccomp_cache: Some(&l.seccomp_cache),
        })
        .map_err(|e| (e.exit_code(), e.to_string())),
    };
    let started = match started {
        Ok(s) => s,
        Err((code, msg)) => {
            let _ = cgroup.destroy();
            return fail(code, msg);
        }
    };
    berth_sandbox::fault::point("start:spawned");
    let mut argv = l.argv.clone();
    argv.push(cstr("--pid"));
    argv.push(cstr(started.pid.as_raw().to_string()));
    let mut keep: Vec<OwnedFd> = Vec::new();
    match (pipes, started.pty_master) {
        (Some(((out_r, out_w), (err_r, err_w))), _) => {
            drop((out_w, err_w));
            argv.push(cstr("--out-fd"));
            argv.push(cstr(out_r.as_raw_fd().to_string()));
            argv.push(cstr("--err-fd"));
            argv.push(cstr(err_r.as_raw_fd().to_string()));
            keep.push(out_r);
            keep.push(err_r);
        }
        (None, Some(master)) => {
            argv.push(cstr("--pty-fd"));
            argv.push(cstr(master.as_raw_fd().to_string()));
            keep.push(master);
        }
        (None, None) => return fail(125, "no output stream for the container".into()),
    }
    if let Some(listener) = listen(&l.attach_socket) {
        argv.push(cstr("--attach-fd"));
        argv.push(cstr(listener.as_raw_fd().to_string()));
        keep.push(listener);
    }
    if let Some((r, w)) = stdin_pipe {
        drop(r);
        argv.push(cstr("--in-fd"));
        argv.push(cstr(w.as_raw_fd().to_string()));
        keep.push(w);
    }
    for fd in &keep {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
    }
    write_all(res, &format!("pid {}\n", started.pid.as_raw()));
    let argv_refs: Vec<&std::ffi::CStr> = argv.iter().map(|a| a.as_c_str()).collect();
    let env_refs: Vec<&std::ffi::CStr> = l.env.iter().map(|a| a.as_c_str()).collect();
    let err = berth_sandbox::sys::execve(&l.monitor, &argv_refs, &env_refs);
    // The container runs but nobody watches it: stop it.
    let _ = nix::sys::signal::kill(started.pid, nix::sys::signal::SIGKILL);
    fail(
        125,
        format!(
            "starting {}: {err}",
            Path::new(std::ffi::OsStr::from_bytes(l.monitor.as_bytes())).display()
        ),
    )
}

/// The attach socket, listening, mode 0600 (None: attach will not work,
/// the container still runs).
fn listen(path: &Path) -> Option<OwnedFd> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).ok()?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    l.set_nonblocking(true).ok()?;
    Some(l.into())
}

/// PATH and every `BERTH_*` variable of ours, for the monitor.
fn monitor_env() -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| k == "PATH" || k.as_bytes().starts_with(b"BERTH_"))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}
