//! Reading a container's usage from its cgroup, and freezing it.

use std::fs;
use std::path::Path;

use super::{write_file, Cgroup, CgroupError};

/// Resource usage as `berth stats` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Total CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, bytes, without reclaimable page cache (as Docker).
    pub memory: u64,
    /// Memory limit, bytes (None: unlimited).
    pub memory_limit: Option<u64>,
    pub pids: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Cgroup {
    /// Current usage. Missing files read as zero.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        if self.v2 {
            let Some(d) = self.dir("memory") else {
                return u;
            };
            u.cpu_ns = stat_field(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
            let current = read_u64(&d.join("memory.current")).unwrap_or(0);
            let inactive = stat_field(&d.join("memory.stat"), "inactive_file").unwrap_or(0);
            u.memory = current.saturating_sub(inactive);
            u.memory_limit = read_u64(&d.join("memory.max"));
            u.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        } else {
            if let Some(d) = self.dir("cpuacct") {
                u.cpu_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
            }
            if let Some(d) = self.dir("memory") {
                let usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
                let inactive =
                    stat_field(&d.join("memory.stat"), "total_inactive_file").unwrap_or(0);
                u.memory = usage.saturating_sub(inactive);
                // v1 reports "no limit" as a huge page-rounded number.
                u.memory_limit =
                    read_u64(&d.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
            }
            if let Some(d) = self.dir("pids") {
                u.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
            }
        }
        u
    }

    /// Freezes (pause) or thaws (unpause) every process of the cgroup and
    /// waits until the kernel reports the new state.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value, want) = if self.v2 {
            ("cgroup.freeze", if frozen { "1" } else { "0" }, None)
        } else {
            let v = if frozen { "FROZEN" } else { "THAWED" };
            ("freezer.state", v, Some(v))
        };
        let Some(dir) = self.dir("freezer") else {
            return Ok(());
        };
        let path = dir.join(file);
        write_file(&path, value).map_err(|source| CgroupError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(want) = want {
            for _ in 0..1000 {
                if fs::read_to_string(&path)
                    .map(|s| s.trim() == want)
                    .unwrap_or(true)
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                let _ = write_file(&path, value);
            }
        }
        Ok(())
    }
}
