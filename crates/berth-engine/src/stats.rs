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

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as u64)
        .unwrap_or(100)
}

fn process(pid: i32, boot: i64) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let f: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ppid = f.get(1)?.parse().ok()?;
    let tty_nr: u64 = f.get(4)?.parse().ok()?;
    let cpu = (f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) / clock_ticks();
    let start = boot + (f.get(19)?.parse::<u64>().ok()? / clock_ticks()) as i64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = if cmdline.is_empty() {
        format!("[{}]", &stat[stat.find('(')? + 1..close])
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    let t = crate::containers::rfc3339(start);
    Some(Process {
        uid,
        pid,
        ppid,
        stime: t[11..16].to_string(),
        tty: if tty_nr == 0 {
            "?".into()
        } else {
            format!("pts/{}", tty_nr & 0xff)
        },
        time: format!("{:02}:{:02}:{:02}", cpu / 3600, cpu % 3600 / 60, cpu % 60),
        cmd,
    })
}

fn boot_time() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

impl Engine {
    /// The container's processes (host PIDs), from its cgroup.
    pub fn top(&mut self, key: &str) -> Result<Vec<Process>, EngineError> {
        let row = self.find(key)?;
        if !matches!(row.state.as_str(), "running" | "paused") {
            return Err(EngineError::Invalid(format!(
                "container {} is not running",
                row.name
            )));
        }
        let layout = berth_sandbox::Layout::detect()?;
        let cg = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&row.id)));
        let boot = boot_time();
        let mut pids = cg.pids();
        pids.sort_unstable();
        Ok(pids.into_iter().filter_map(|p| process(p, boot)).collect())
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
