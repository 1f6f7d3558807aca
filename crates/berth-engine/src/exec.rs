//! `berth exec`: another process in a running container, with the
//! container's namespaces, cgroup, capabilities, seccomp and environment.

use std::os::fd::OwnedFd;

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::{events, io_err, Engine, EngineError};

/// What `berth exec` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    /// `K=V` entries over the container's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub interactive: bool,
    pub tty: bool,
    pub detach: bool,
}

impl Engine {
    /// Runs `cfg.cmd` in the container; returns its exit code (0 at once
    /// with `detach`).
    pub fn exec(&mut self, key: &str, cfg: &ExecConfig) -> Result<i32, EngineError> {
        let row = self.find(key)?;
        match row.state.as_str() {
            "running" => {}
            "paused" => {
                return Err(EngineError::Invalid(format!(
                    "container {} is paused, unpause it first",
                    row.name
                )))
            }
            _ => {
                return Err(EngineError::Invalid(format!(
                    "container {} is not running",
                    row.name
                )))
            }
        }
        if cfg.cmd.is_empty() {
            return Err(EngineError::Invalid("no command given to exec".into()));
        }
        if let Some(w) = &cfg.workdir {
            if !w.starts_with('/') {
                return Err(EngineError::Invalid(format!(
                    "the working directory {w:?} is invalid, it needs to be an absolute path"
                )));
            }
        }
        let spec = self.load_spec(&row.id)?;
        let mut process = spec.process().clone().ok_or_else(|| {
            EngineError::Invalid("the container's config.json has no process".into())
        })?;
        process.set_args(Some(cfg.cmd.clone()));
        let mut env = process.env().clone().unwrap_or_default();
        for e in &cfg.env {
            let key = e.split('=').next().unwrap_or(e);
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        if let Some(u) = &cfg.user {
            let rootfs = self.container_dir(&row.id).join("rootfs");
            let user = crate::user::resolve_user(&rootfs, u)?;
            let mut spec_user = process.user().clone();
            spec_user.set_uid(user.uid);
            spec_user.set_gid(user.gid);
            spec_user.set_additional_gids(Some(user.additional_gids.clone()));
            process.set_user(spec_user);
            env.retain(|e| !e.starts_with("HOME="));
            env.push(format!("HOME={}", user.home));
        }
        process.set_env(Some(env));
        if let Some(w) = &cfg.workdir {
            process.set_cwd(w.into());
        }
        if let (true, Some((rows, cols))) = (cfg.tty, crate::run::terminal_size()) {
            let size = oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(rows))
                .width(u64::from(cols))
                .build()
                .map_err(|e| EngineError::Invalid(e.to_string()))?;
            process.set_console_size(Some(size));
        }
        if crate::vm::is_vm(&Self::config_of(&row)) {
            return self.vm_exec(&row, process, cfg);
        }

        let null = || -> Result<Option<OwnedFd>, EngineError> {
            Ok(Some(
                std::fs::File::open("/dev/null")
                    .map_err(io_err("opening /dev/null"))?
                    .into(),
            ))
        };
        let null_w = || -> Result<Option<OwnedFd>, EngineError> {
            Ok(Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/null")
                    .map_err(io_err("opening /dev/null"))?
                    .into(),
            ))
        };
        let stdio = if cfg.detach {
            berth_sandbox::Stdio {
                stdin: null()?,
                stdout: null_w()?,
                stderr: null_w()?,
                terminal: false,
            }
        } else {
            berth_sandbox::Stdio {
                stdin: if cfg.interactive || cfg.tty {
                    None
                } else {
                    null()?
                },
                stdout: None,
                stderr: None,
                terminal: cfg.tty,
            }
        };
        let mask = crate::run::signal_set();
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
            .map_err(|e| io_err("blocking signals")(e.into()))?;
        let result = (|| {
            let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                .map_err(|e| io_err("creating a signalfd")(e.into()))?;
            let cache = self.run_root.join("seccomp");
            let started = berth_sandbox::exec(berth_sandbox::ExecOptions {
                pid: row.pid,
                spec: &spec,
                process: &process,
                cgroup: None,
                stdio,
                seccomp_cache: Some(&cache),
                preserve_fds: 0,
            })?;
            events::emit(
                &self.root,
                &row,
                "exec_start",
                &[("execID", started.pid.to_string())],
            );
            if cfg.detach {
                return Ok(0);
            }
            let code =
                crate::run::wait_loop(started.pid, &sfd, started.pty_master, cfg.interactive)?;
            events::emit(
                &self.root,
                &row,
                "exec_die",
                &[("exitCode", code.to_string())],
            );
            Ok(code)
        })();
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        result
    }
}
