//! `kill`, `delete`, `pause`, `resume`.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{io_err, Result, RuntimeError};
use crate::log;
use crate::state::{Status, Store};

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number (`15`).
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || RuntimeError::Usage(format!("unknown signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

/// `kill [--all] ID [SIGNAL]`.
pub fn kill(store: &Store, id: &str, signal: &str, all: bool) -> Result<()> {
    let sig = parse_signal(signal)?;
    let rec = store.load(id)?;
    let status = rec.status();
    if status == Status::Stopped && !all {
        return Err(RuntimeError::State("container not running".into()));
    }
    let cgroup = rec.cgroup()?;
    // A VM's host process forwards signals to the workload; SIGKILL takes
    // QEMU and virtiofsd with it.
    let all = all || (sig == Signal::SIGKILL && crate::vm::is_vm(&rec.config));
    if all {
        for pid in cgroup.pids() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
        }
    } else {
        nix::sys::signal::kill(Pid::from_raw(rec.pid), sig).map_err(|e| match e {
            nix::errno::Errno::ESRCH => RuntimeError::State("container not running".into()),
            e => io_err(format!("signalling process {}", rec.pid))(e.into()),
        })?;
    }
    // Frozen processes act on SIGKILL only once thawed.
    if status == Status::Paused && sig == Signal::SIGKILL {
        cgroup.freeze(false)?;
    }
    Ok(())
}

/// `delete [--force] ID`: a created or stopped container goes; a running
/// or paused one only with `force` (killed first). Runs poststop hooks.
pub fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    let rec = match store.load(id) {
        Ok(r) => r,
        Err(RuntimeError::NotExist(_)) if store.dir(id).is_dir() => {
            // A create that died half-way: nothing runs, clean up.
            let _ = std::fs::remove_dir_all(store.dir(id));
            return Ok(());
        }
        Err(RuntimeError::NotExist(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let _lock = store.lock(id)?;
    let status = rec.status();
    match status {
        Status::Running | Status::Paused if !force => {
            return Err(RuntimeError::State(format!(
                "cannot delete container {id} that is not stopped: {}",
                status.as_str()
            )))
        }
        _ => {}
    }
    let cgroup = rec.cgroup()?;
    if status != Status::Stopped {
        let _ = nix::sys::signal::kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
    }
    if status == Status::Paused {
        let _ = cgroup.freeze(false);
    }
    cgroup.destroy()?;
    crate::vm::cleanup(store, id);
    std::fs::remove_dir_all(store.dir(id))
        .map_err(io_err(format!("removing {}", store.dir(id).display())))?;
    let hooks = rec
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststop().clone())
        .unwrap_or_default();
    if let Err(e) =
        berth_sandbox::hooks::run_hooks("poststop", &hooks, &rec.hook_state(Status::Stopped))
    {
        log::warn(&e.to_string());
    }
    Ok(())
}

/// `pause` (`freeze`) and `resume`.
pub fn pause(store: &Store, id: &str, freeze: bool) -> Result<()> {
    let rec = store.load(id)?;
    let _lock = store.lock(id)?;
    match (rec.status(), freeze) {
        (Status::Running | Status::Created, true) | (Status::Paused, false) => {}
        (Status::Paused, true) => {
            return Err(RuntimeError::State("container already paused".into()))
        }
        (Status::Stopped | Status::Creating, _) => {
            return Err(RuntimeError::State("container not running".into()))
        }
        (_, false) => return Err(RuntimeError::State("container not paused".into())),
    }
    let cgroup = rec.cgroup()?;
    if cgroup.controller_dir("freezer").is_none() {
        return Err(RuntimeError::Unsupported(
            "pause: no freezer cgroup controller on this host".into(),
        ));
    }
    cgroup.freeze(freeze)?;
    Ok(())
}
