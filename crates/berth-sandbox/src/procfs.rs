//! What `berth top` shows of a process, read from /proc: the same reader
//! for containers (on the host) and for VMs (in the guest, by the agent).

use serde::{Deserialize, Serialize};

/// One process, as the columns of `ps -ef` need it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// The controlling terminal's device number (0: none).
    pub tty_nr: u64,
    /// User plus system CPU time, seconds.
    pub cpu_secs: u64,
    /// Start time, seconds since the epoch.
    pub start: i64,
    /// The command line, or `[comm]` for a kernel thread.
    pub cmd: String,
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as u64)
        .unwrap_or(100)
}

/// Start time (clock ticks since boot, field 22 of /proc/PID/stat: it
/// tells a PID from a later process that reused it) and state letter of
/// process `pid`.
pub fn stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let state = after.chars().next()?;
    let start = after.split(' ').nth(19)?.parse().ok()?;
    Some((start, state))
}

/// Whether `pid` is still the process that started at `start` and has not
/// exited: a zombie (`Z`, or `X` while it is reaped) has, even while a slow
/// reaper leaves its PID and start time in /proc.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && stat(pid).is_some_and(|(s, st)| s == start && st != 'Z' && st != 'X')
}

/// When this kernel booted, seconds since the epoch.
pub fn boot_time() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Process `pid`, if it still exists; `boot` from [`boot_time`].
pub fn proc_info(pid: i32, boot: i64) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let f: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let ticks = clock_ticks();
    let ppid = f.get(1)?.parse().ok()?;
    let tty_nr = f.get(4)?.parse().ok()?;
    let cpu_secs = (f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) / ticks;
    let start = boot + (f.get(19)?.parse::<u64>().ok()? / ticks) as i64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = if cmdline.is_empty() {
        format!("[{}]", stat.get(stat.find('(')? + 1..close)?)
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    Some(ProcInfo {
        pid,
        ppid,
        uid,
        tty_nr,
        cpu_secs,
        start,
        cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let p = proc_info(me, boot_time()).unwrap();
        assert_eq!(p.pid, me);
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        assert!(p.cmd.contains("berth_sandbox"), "{}", p.cmd);
        assert!(p.start > 1_600_000_000, "{}", p.start);
        assert!(proc_info(-5, 0).is_none());
    }
}
