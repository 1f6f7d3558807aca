//! Making the records match reality after monitors were killed or the host
//! restarted: a container is never shown "Up" when its process is gone.

use std::path::Path;

use crate::containers::{alive, cgroups_path};
use crate::db::ContainerRow;
use crate::{events, now, rootfs, Engine, EngineError};

/// What one reconcile pass did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Containers marked exited because their process was gone.
    pub marked_exited: Vec<String>,
    /// Containers started again by their restart policy.
    pub restarted: Vec<String>,
    /// Mount points and cgroups removed.
    pub cleaned: Vec<String>,
}

/// The errors recorded when a container was found dead without a recorded
/// exit; such containers are restarted by reconcile when their policy says so.
const LOST_MONITOR: &str =
    "container's monitor is gone (killed, or the host restarted); its exit status is unknown";
const LOST_PROCESS: &str =
    "container process is gone (its berth process was killed or the host restarted)";

impl Engine {
    /// Updates `r` (and its record) when its process is gone. A container
    /// whose monitor is alive is left to the monitor.
    pub(crate) fn reconcile_row(&mut self, r: &mut ContainerRow) -> Result<bool, EngineError> {
        let live_state = matches!(r.state.as_str(), "running" | "paused" | "restarting");
        if !live_state {
            return Ok(false);
        }
        if alive(r.pid, r.pid_start) {
            return Ok(false);
        }
        if alive(r.monitor_pid, r.monitor_start) && r.state == "running" {
            // The process is gone and its monitor is recording that (or
            // restarting it): show what it records, not "Up".
            for _ in 0..200 {
                std::thread::sleep(std::time::Duration::from_millis(5));
                match self.db().container(&r.id)? {
                    Some(now) if now.state != r.state || now.pid != r.pid => {
                        *r = now;
                        return Ok(false);
                    }
                    Some(_) if alive(r.monitor_pid, r.monitor_start) => {}
                    _ => break,
                }
            }
        }
        if alive(r.monitor_pid, r.monitor_start) {
            return Ok(false);
        }
        let error = if r.monitor_pid > 0 {
            LOST_MONITOR
        } else {
            LOST_PROCESS
        };
        let finished = now();
        self.db().set_exited(&r.id, 255, false, error, finished)?;
        events::emit(&self.root, r, "die", &[("exitCode", "255".into())]);
        r.state = "exited".into();
        r.finished_at = finished;
        r.exit_code = 255;
        r.error = error.into();
        r.pid = 0;
        Ok(true)
    }

    /// `berth system reconcile`: fixes stale records, removes mounts and
    /// cgroups of containers that do not run, and restarts containers whose
    /// policy is `always` or `unless-stopped` (unless a user stopped them).
    pub fn reconcile(&mut self) -> Result<Report, EngineError> {
        let mut report = Report::default();
        let rows = self.db().containers()?;
        let layout = berth_sandbox::Layout::detect()?;
        for mut r in rows {
            let was_stale = self.reconcile_row(&mut r)?;
            if was_stale {
                report.marked_exited.push(r.id.clone());
            }
            if matches!(r.state.as_str(), "running" | "paused" | "restarting") {
                continue;
            }
            let cg = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&r.id)));
            if !cg.pids().is_empty() || cg_exists(&layout, &r.id) {
                cg.destroy()?;
                report
                    .cleaned
                    .push(format!("cgroup {}", cgroups_path(&r.id)));
            }
            let mnt = self.container_dir(&r.id).join("rootfs");
            // A created container keeps its rootfs mounted until it starts.
            if r.state == "exited" && crate::containers::is_mountpoint(&mnt) {
                rootfs::unmount(&mnt)?;
                report.cleaned.push(format!("mount {}", mnt.display()));
            }
            let cfg = Self::config_of(&r);
            let policy_restarts = matches!(cfg.restart.name.as_str(), "always" | "unless-stopped");
            let lost = r.error == LOST_MONITOR || r.error == LOST_PROCESS;
            if r.state == "exited" && lost && policy_restarts && !r.stop_requested {
                self.start_detached(&r.id)?;
                report.restarted.push(r.id.clone());
            }
        }
        // Overlay mounts under our containers directory that belong to no record.
        let containers_dir = self.root.join("containers");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            let Some(mp) = line.split(' ').nth(4) else {
                continue;
            };
            let p = Path::new(mp);
            let Ok(rel) = p.strip_prefix(&containers_dir) else {
                continue;
            };
            let id = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if self.db().container(&id)?.is_none() {
                rootfs::unmount(p)?;
                report.cleaned.push(format!("mount {mp}"));
            }
        }
        self.reconcile_network(&mut report)?;
        Ok(report)
    }

    /// The cheap part of reconcile, run before state-changing commands:
    /// stale "running" records only.
    pub fn reconcile_quick(&mut self) -> Result<(), EngineError> {
        let stale: Vec<ContainerRow> = self
            .db()
            .containers()?
            .into_iter()
            .filter(|r| matches!(r.state.as_str(), "running" | "paused" | "restarting"))
            .filter(|r| !alive(r.pid, r.pid_start) && !alive(r.monitor_pid, r.monitor_start))
            .collect();
        if !stale.is_empty() {
            self.reconcile()?;
        }
        Ok(())
    }
}

fn cg_exists(layout: &berth_sandbox::Layout, id: &str) -> bool {
    let rel = cgroups_path(id);
    let rel = rel.trim_start_matches('/');
    match layout {
        berth_sandbox::Layout::Unified(root) => root.join(rel).exists(),
        berth_sandbox::Layout::Legacy { hierarchies, .. } => {
            hierarchies.iter().any(|(_, m)| m.join(rel).exists())
        }
    }
}
