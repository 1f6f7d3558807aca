//! `berth top` and `berth stats`: a container's processes and usage, read
//! from its cgroup and /proc.

use std::path::Path;

use crate::containers::cgroups_path;
use crate::{Engine, EngineError};

/// One line of `berth top` (the columns of `ps -ef`).
#[derive(Debug, Clone)]
pub struct Process {
    pub uid: String,
    pub pid: i32,
    pub ppid: i32,
    pub stime: String,
    pub tty: String,
    pub time: String,
    pub cmd: String,
}

/// One container's sample for `berth stats`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    pub name: String,
    pub usage: berth_sandbox::cgroup::Usage,
    pub host_memory: u64,
}

/// A process as `top` shows it (uid as the number, as `ps -ef` does when
/// names are not known).
pub(crate) fn to_process(p: berth_sandbox::procfs::ProcInfo) -> Process {
    let t = crate::containers::rfc3339(p.start);
    Process {
        uid: p.uid.to_string(),
        pid: p.pid,
        ppid: p.ppid,
        stime: t[11..16].to_string(),
        tty: if p.tty_nr == 0 {
            "?".into()
        } else {
            format!("pts/{}", p.tty_nr & 0xff)
        },
        time: format!(
            "{:02}:{:02}:{:02}",
            p.cpu_secs / 3600,
            p.cpu_secs % 3600 / 60,
            p.cpu_secs % 60
        ),
        cmd: p.cmd,
    }
}

impl Engine {
    /// The container's processes: host PIDs from its cgroup, or for a VM
    /// the guest's, from its agent.
    pub fn top(&mut self, key: &str) -> Result<Vec<Process>, EngineError> {
        let row = self.find(key)?;
        if !matches!(row.state.as_str(), "running" | "paused") {
            return Err(EngineError::Invalid(format!(
                "container {} is not running",
                row.name
            )));
        }
        if let Some(procs) = crate::vm::top(&self.run_root, &row) {
            return Ok(procs?.into_iter().map(to_process).collect());
        }
        let layout = berth_sandbox::Layout::detect()?;
        let cg = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&row.id)));
        let boot = berth_sandbox::procfs::boot_time();
        let mut pids = cg.pids();
        pids.sort_unstable();
        Ok(pids
            .into_iter()
            .filter_map(|p| berth_sandbox::procfs::proc_info(p, boot))
            .map(to_process)
            .collect())
    }

    /// Usage of the named containers, or of every running one.
    pub fn stats_sample(&mut self, keys: &[String]) -> Result<Vec<Sample>, EngineError> {
        let rows = if keys.is_empty() {
            self.containers()?
                .into_iter()
                .filter(|r| r.state == "running" || r.state == "paused")
                .collect()
        } else {
            keys.iter()
                .map(|k| self.find(k))
                .collect::<Result<Vec<_>, _>>()?
        };
        let layout = berth_sandbox::Layout::detect()?;
        let host_memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                })
            })
            .flatten()
            .unwrap_or(0)
            * 1024;
        Ok(rows
            .into_iter()
            .map(|r| {
                let cg = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&r.id)));
                let usage = if r.state == "running" || r.state == "paused" {
                    // A VM's usage is measured inside its guest.
                    crate::vm::usage(&self.run_root, &r).unwrap_or_else(|| cg.usage())
                } else {
                    Default::default()
                };
                Sample {
                    id: r.id,
                    name: r.name,
                    usage,
                    host_memory,
                }
            })
            .collect())
    }
}
