//! Detached containers: the monitor (`berth-monitor`) and the two internal
//! commands it calls (`berth __start`, `berth __exited`), plus stop, kill,
//! wait, pause, rename and prune.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::ContainerConfig;
use crate::containers::{cgroups_path, pid_start_time, wait_dead};
use crate::db::ContainerRow;
use crate::{events, io_err, now, rootfs, Engine, EngineError};

/// Where the container's log lives.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("container.log")
}

/// Parses a signal as Docker accepts it: "TERM", "SIGTERM", "15".
pub fn parse_signal(s: &str) -> Result<Signal, EngineError> {
    let bad = || EngineError::Invalid(format!("invalid signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

/// Turns a raw wait status into a shell-style exit code.
pub fn exit_code(raw: i32) -> i32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw)
    } else if libc::WIFSIGNALED(raw) {
        128 + libc::WTERMSIG(raw)
    } else {
        255
    }
}

impl Engine {
    pub(crate) fn config_of(row: &ContainerRow) -> ContainerConfig {
        serde_json::from_str(&row.config).unwrap_or_default()
    }

    pub(crate) fn load_spec(&self, id: &str) -> Result<oci_spec::runtime::Spec, EngineError> {
        let path = self.container_dir(id).join("config.json");
        let bytes = std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Mounts the rootfs if it is not mounted (after an exit or a reboot).
    pub(crate) fn ensure_rootfs(&mut self, row: &ContainerRow) -> Result<(), EngineError> {
        let dir = self.container_dir(&row.id);
        let target = dir.join("rootfs");
        if crate::containers::is_mountpoint(&target) {
            return Ok(());
        }
        let img = self
            .db()
            .image(&row.image_id)?
            .ok_or_else(|| EngineError::NoSuchImage(row.image_id.clone()))?;
        let layers = self.layer_dirs(&img)?;
        let cfg = Self::config_of(row);
        rootfs::mount_overlay(
            &layers,
            &dir.join("upper"),
            &dir.join("work"),
            &target,
            cfg.auto_remove,
        )
    }

    /// `berth __start ID`: run by the monitor. Starts the container with
    /// the monitor's pipes as stdout/stderr and sends the monitor its PID.
    pub fn internal_start(&mut self, id: &str, notify: OwnedFd) -> i32 {
        let result = self.internal_start_inner(id, &notify);
        match result {
            Ok(()) => 0,
            Err(e) => {
                let code = e.exit_code();
                if let Ok(Some(row)) = self.db().container(id) {
                    let _ = self
                        .db()
                        .set_exited(&row.id, code, false, &e.to_string(), now());
                    let _ = self.cleanup_runtime(&row.id);
                }
                code
            }
        }
    }

    fn internal_start_inner(&mut self, id: &str, notify: &OwnedFd) -> Result<(), EngineError> {
        let row = self
            .db()
            .container(id)?
            .ok_or_else(|| EngineError::NoSuchContainer(id.into()))?;
        if row.stop_requested {
            // Stopped by a user while waiting to restart: stay stopped. The
            // monitor sees no PID and ends.
            self.db().set_state(id, "exited")?;
            let _ = rootfs::unmount(&self.container_dir(id).join("rootfs"));
            return Ok(());
        }
        let cfg = Self::config_of(&row);
        self.ensure_rootfs(&row)?;
        self.network_up(&row, &cfg)?;
        let spec = self.load_spec(id)?;
        let layout = berth_sandbox::Layout::detect()?;
        let linux = spec.linux().as_ref();
        let cg_path = linux
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| cgroups_path(id).into());
        let cgroup = berth_sandbox::Cgroup::create(
            &layout,
            &cg_path,
            linux.and_then(|l| l.resources().as_ref()),
        )?;
        let rootfs = self.container_dir(id).join("rootfs");
        let cache = self.run_root.join("seccomp");
        let stdin: OwnedFd = std::fs::File::open("/dev/null")
            .map_err(io_err("opening /dev/null"))?
            .into();
        let stdio = berth_sandbox::Stdio {
            stdin: if cfg.tty { None } else { Some(stdin) },
            stdout: None,
            stderr: None,
            terminal: cfg.tty,
        };
        let started = if crate::vm::is_vm(&cfg) {
            self.vmm_command(id)?.spawn(stdio, cfg.tty, false)
        } else {
            berth_sandbox::spawn(berth_sandbox::SpawnOptions {
                spec: &spec,
                rootfs: &rootfs,
                cgroup: Some(&cgroup),
                stdio,
                seccomp_cache: Some(&cache),
            })
            .map_err(Into::into)
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = cgroup.destroy();
                return Err(e);
            }
        };
        let pid = started.pid.as_raw();
        let start = pid_start_time(pid).unwrap_or(0);
        let monitor = nix::unistd::getppid().as_raw();
        self.db().set_running(id, pid, start, now())?;
        self.db()
            .set_monitor(id, monitor, pid_start_time(monitor).unwrap_or(0))?;
        events::emit(&self.root, &row, "start", &[]);
        send_pid(notify, pid, started.pty_master.as_ref())
    }

    /// `berth __exited ID --status RAW`: run by the monitor when the
    /// container's process ended. Records it, cleans up, and returns the
    /// delay before a restart when the restart policy asks for one.
    pub fn internal_exited(
        &mut self,
        id: &str,
        raw_status: i32,
    ) -> Result<Option<u64>, EngineError> {
        let Some(row) = self.db().container(id)? else {
            // Removed meanwhile (rm -f): only make sure nothing is left.
            let _ = self.cleanup_runtime(id);
            return Ok(None);
        };
        let code = exit_code(raw_status);
        let layout = berth_sandbox::Layout::detect()?;
        let cgroup = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(id)));
        let oom = cgroup.oom_killed();
        let _ = cgroup.destroy();
        crate::vm::cleanup_run_dir(&self.run_root, id);
        let reason = crate::vm::take_exit_reason(&self.container_dir(id));
        // Free the network and the rootfs mount of a final exit before the
        // record says exited: `stop` returns on that, and a `start` (which
        // mounts the rootfs again) may follow at once.
        let cfg = Self::config_of(&row);
        if !cfg
            .restart
            .should_restart(code, row.restart_count, row.stop_requested)
        {
            let _ = self.network_down(id);
            let _ = rootfs::unmount(&self.container_dir(id).join("rootfs"));
        }
        self.db().set_exited(id, code, oom, &reason, now())?;
        if oom {
            events::emit(&self.root, &row, "oom", &[]);
        }
        events::emit(&self.root, &row, "die", &[("exitCode", code.to_string())]);
        let cfg = Self::config_of(&row);
        if cfg
            .restart
            .should_restart(code, row.restart_count, row.stop_requested)
        {
            self.db().bump_restart_count(id)?;
            // Docker's back-off: 100 ms doubling per restart, up to a minute;
            // back to 100 ms when the container had run for 10 s.
            let ran = now() - row.started_at;
            let delay = if ran >= 10 {
                100
            } else {
                100u64 << row.restart_count.clamp(0, 10)
            };
            return Ok(Some(delay.min(60_000)));
        }
        if cfg.auto_remove {
            self.cleanup_files(id)?;
            self.db().delete_container(id)?;
            events::emit(&self.root, &row, "destroy", &[]);
        }
        Ok(None)
    }

    /// Removes the cgroup and the rootfs mount of a container that is not
    /// running; its files stay.
    pub(crate) fn cleanup_runtime(&mut self, id: &str) -> Result<(), EngineError> {
        if let Ok(layout) = berth_sandbox::Layout::detect() {
            berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(id))).destroy()?;
        }
        let _ = self.network_down(id);
        crate::vm::cleanup_run_dir(&self.run_root, id);
        rootfs::unmount(&self.container_dir(id).join("rootfs"))
    }

    fn stop_signal(&mut self, row: &ContainerRow) -> Result<Signal, EngineError> {
        let cfg = Self::config_of(row);
        if let Some(s) = &cfg.stop_signal {
            return parse_signal(s);
        }
        let image_signal = self
            .db()
            .image(&row.image_id)?
            .and_then(|i| crate::images::image_config(&i.config).ok())
            .and_then(|c| c.config().as_ref().and_then(|c| c.stop_signal().clone()));
        match image_signal {
            Some(s) => parse_signal(&s),
            None => Ok(Signal::SIGTERM),
        }
    }

    /// Waits until the record says the container is no longer running.
    fn wait_recorded(&mut self, id: &str, deadline: Duration) -> Result<ContainerRow, EngineError> {
        let start = Instant::now();
        loop {
            let row = self.find(id)?;
            if !matches!(row.state.as_str(), "running" | "paused") || start.elapsed() > deadline {
                return Ok(row);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `berth stop [-t SECS]`: the stop signal, then SIGKILL after the timeout.
    pub fn stop(&mut self, key: &str, timeout: Option<i64>) -> Result<ContainerRow, EngineError> {
        let row = self.find(key)?;
        if !matches!(row.state.as_str(), "running" | "paused" | "restarting") {
            return Ok(row);
        }
        self.db().set_stop_requested(&row.id, true)?;
        let cfg = Self::config_of(&row);
        let timeout = timeout.or(cfg.stop_timeout).unwrap_or(10).max(0);
        let sig = self.stop_signal(&row)?;
        // Never signal PID 0 (our own process group).
        let pid = Pid::from_raw(row.pid.max(-1).max(1));
        let layout = berth_sandbox::Layout::detect()?;
        let cgroup = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&row.id)));
        if row.pid <= 0 || row.state == "restarting" {
            // Between two lives: nothing runs; the stop request ends the
            // restarts (the monitor's next start sees it and gives up).
            self.db().set_state(&row.id, "exited")?;
        } else if row.state == "paused" {
            let _ = nix::sys::signal::kill(pid, sig);
            cgroup.freeze(false)?;
        } else if row.state == "running" {
            let _ = nix::sys::signal::kill(pid, sig);
        }
        if !wait_dead(row.pid, row.pid_start, Duration::from_secs(timeout as u64)) {
            cgroup.kill_all();
        }
        events::emit(&self.root, &row, "stop", &[]);
        let mut stopped = self.wait_recorded(&row.id, Duration::from_secs(10))?;
        if row.state == "restarting" {
            // A start that was already under way when we marked the stop:
            // let it land, then stop that life too.
            std::thread::sleep(Duration::from_millis(200));
            let again = self.find(&row.id)?;
            if again.state == "running" {
                stopped = self.stop(&row.id, Some(timeout))?;
            }
        }
        // Its ports are free once `stop` returns (the monitor does it too).
        let _ = self.network_down(&row.id);
        Ok(stopped)
    }

    /// `berth kill [-s SIG]`.
    pub fn kill(&mut self, key: &str, signal: &str) -> Result<ContainerRow, EngineError> {
        let sig = parse_signal(signal)?;
        let row = self.find(key)?;
        if (row.state != "running" && row.state != "paused") || row.pid <= 0 {
            return Err(EngineError::Invalid(format!(
                "container {} is not running",
                row.name
            )));
        }
        if sig == Signal::SIGKILL || sig == self.stop_signal(&row)? {
            self.db().set_stop_requested(&row.id, true)?;
        }
        nix::sys::signal::kill(Pid::from_raw(row.pid), sig)
            .map_err(|e| io_err(format!("signalling container {}", row.name))(e.into()))?;
        events::emit(
            &self.root,
            &row,
            "kill",
            &[("signal", (sig as i32).to_string())],
        );
        Ok(row)
    }

    /// `berth wait`: blocks until the container stops; its exit code.
    pub fn wait(&mut self, key: &str) -> Result<i32, EngineError> {
        let id = self.find(key)?.id;
        loop {
            let row = match self.find(&id) {
                Ok(r) => r,
                // Removed after exiting (--rm): Docker reports the exit too,
                // but the record is gone; report success of the wait.
                Err(EngineError::NoSuchContainer(_)) => return Ok(0),
                Err(e) => return Err(e),
            };
            if matches!(row.state.as_str(), "exited" | "created") {
                return Ok(row.exit_code);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `berth pause` / `unpause`: the cgroup freezer.
    pub fn set_paused(&mut self, key: &str, paused: bool) -> Result<ContainerRow, EngineError> {
        let row = self.find(key)?;
        let (from, to, action) = if paused {
            ("running", "paused", "pause")
        } else {
            ("paused", "running", "unpause")
        };
        if row.state != from {
            return Err(EngineError::Invalid(format!(
                "container {} is not {from}",
                row.name
            )));
        }
        let layout = berth_sandbox::Layout::detect()?;
        berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&row.id))).freeze(paused)?;
        self.db().set_state(&row.id, to)?;
        events::emit(&self.root, &row, action, &[]);
        self.find(&row.id)
    }

    /// `berth rename OLD NEW`.
    pub fn rename(&mut self, key: &str, name: &str) -> Result<(), EngineError> {
        if !crate::names::valid_name(name) {
            return Err(EngineError::BadName(name.to_string()));
        }
        let row = self.find(key)?;
        self.db().rename(&row.id, name)?;
        events::emit(&self.root, &row, "rename", &[("oldName", row.name.clone())]);
        Ok(())
    }

    /// `berth container prune`: removes every stopped container.
    pub fn prune(&mut self) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for row in self.containers()? {
            if matches!(row.state.as_str(), "exited" | "created") {
                self.remove(&row.id, false)?;
                removed.push(row.id);
            }
        }
        Ok(removed)
    }
}

/// Sends "pid N" (and the pty master) to the monitor.
fn send_pid(sock: &OwnedFd, pid: i32, pty: Option<&OwnedFd>) -> Result<(), EngineError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let text = format!("pid {pid}");
    let iov = [IoSlice::new(text.as_bytes())];
    let fds;
    let cmsgs: Vec<ControlMessage<'_>> = match pty {
        Some(m) => {
            fds = [m.as_raw_fd()];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
        .map_err(|e| io_err("telling the monitor the container's PID")(e.into()))?;
    Ok(())
}

/// Takes an inherited descriptor named on the command line.
pub fn inherited_fd(fd: RawFd) -> Result<OwnedFd, EngineError> {
    if fd < 3
        || nix::fcntl::fcntl(
            berth_sandbox::sys::borrow_fd(fd),
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        return Err(EngineError::Invalid(format!("descriptor {fd} is not open")));
    }
    // Keep it out of the container, which inherits what is not close-on-exec.
    nix::fcntl::fcntl(
        berth_sandbox::sys::borrow_fd(fd),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| io_err(format!("preparing descriptor {fd}"))(e.into()))?;
    Ok(berth_sandbox::sys::own_fd(fd))
}
