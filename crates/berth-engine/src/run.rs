//! Starting a created container and staying attached to it in the
//! foreground: stdio (or a pty relay), signal forwarding, exit status.

use std::os::fd::OwnedFd;

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::containers::{pid_start_time, Created};
use crate::{io_err, now, rootfs, Engine, EngineError};

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit status as a shell reports it (128+N for signal N).
    pub code: i32,
    pub oom_killed: bool,
}

pub use berth_sandbox::foreground::terminal_size;
pub(crate) use berth_sandbox::foreground::{signal_set, RawMode};

impl Engine {
    /// Starts `c` with our stdio attached and waits for it to end.
    pub fn start_attached(&mut self, c: &Created) -> Result<Exit, EngineError> {
        let id = c.row.id.clone();
        let layout = berth_sandbox::Layout::detect()?;
        self.network_up(&c.row, &c.config)?;
        berth_sandbox::fault::point("run:network");
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
        crate::vm::cleanup_run_dir(&self.run_root, &id);
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
        berth_sandbox::fault::point("run:started");
        wait_loop(pid, &sfd, started.pty_master, cfg.interactive)
    }
}

pub(crate) fn wait_loop(
    pid: Pid,
    sfd: &SignalFd,
    pty: Option<OwnedFd>,
    interactive: bool,
) -> Result<i32, EngineError> {
    berth_sandbox::foreground::wait(pid, sfd, pty, interactive)
        .map_err(io_err("waiting for the container"))
}

/// Used by `berth run`: create, start attached, and remove with `--rm`.
pub fn run_foreground(
    engine: &mut Engine,
    cfg: crate::ContainerConfig,
) -> Result<(String, Exit), EngineError> {
    let auto_remove = cfg.auto_remove;
    let console = if cfg.tty { terminal_size() } else { None };
    let created = engine.create(cfg, console)?;
    berth_sandbox::fault::point("run:created");
    let id = created.row.id.clone();
    let result = engine.start_attached(&created);
    if auto_remove {
        let _ = engine.remove(&id, true);
    }
    result.map(|e| (id, e))
}
