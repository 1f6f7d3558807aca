//! cgroups v1, v2 and the hybrid layout (v1 controllers plus a cgroup2 mount
//! at `/sys/fs/cgroup/unified`, where no controllers live): resources are set
//! on whatever hierarchy holds each controller.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

mod resources;
mod stats;
pub use stats::Usage;

/// v1 controllers a container gets its own group in.
const V1_CONTROLLERS: &[&str] = &[
    "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio",
];

#[derive(thiserror::Error, Debug)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot set {what} to {value}: {source}")]
    Limit {
        what: &'static str,
        value: String,
        source: io::Error,
    },
    #[error("no cgroup filesystem is mounted under /sys/fs/cgroup")]
    NoCgroupFs,
    /// A resource this host's cgroup layout cannot enforce; names the field.
    #[error("{0}")]
    Unsupported(String),
}

/// Which cgroup layout the host uses.
#[derive(Clone, Debug)]
pub enum Layout {
    /// cgroup v2 only, mounted at the given path.
    Unified(PathBuf),
    /// v1 hierarchies (controller name and mount point); `unified` is the
    /// cgroup2 mount of the hybrid layout, if any.
    Legacy {
        hierarchies: Vec<(String, PathBuf)>,
        unified: Option<PathBuf>,
    },
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout, CgroupError> {
        let info =
            fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Io {
                path: "/proc/self/mountinfo".into(),
                source,
            })?;
        let mut hierarchies = Vec::new();
        let mut unified = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mountpoint = left.split(' ').nth(4).unwrap_or("");
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let superopts = r.nth(1).unwrap_or("");
            if !mountpoint.starts_with("/sys/fs/cgroup") {
                continue;
            }
            match fstype {
                "cgroup2" => unified = Some(PathBuf::from(mountpoint)),
                "cgroup" => {
                    for opt in superopts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            hierarchies.push((opt.to_string(), PathBuf::from(mountpoint)));
                        }
                    }
                }
                _ => {}
            }
        }
        if !hierarchies.is_empty() {
            return Ok(Layout::Legacy {
                hierarchies,
                unified,
            });
        }
        unified.map(Layout::Unified).ok_or(CgroupError::NoCgroupFs)
    }

    /// A short name for `berth info`: "v2", "v1" or "hybrid".
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Unified(_) => "v2",
            Layout::Legacy { unified: None, .. } => "v1",
            Layout::Legacy { .. } => "hybrid",
        }
    }
}

/// A container's cgroup: one directory per v1 hierarchy, or one on v2.
#[derive(Clone, Debug)]
pub struct Cgroup {
    v2: bool,
    /// (controller, directory); on v2 a single entry named "unified".
    dirs: Vec<(String, PathBuf)>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

impl Cgroup {
    /// The cgroup at `rel` (a path below each hierarchy's root) without
    /// touching the filesystem.
    pub fn at(layout: &Layout, rel: &Path) -> Cgroup {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        match layout {
            Layout::Unified(root) => Cgroup {
                v2: true,
                dirs: vec![("unified".into(), root.join(rel))],
            },
            Layout::Legacy { hierarchies, .. } => {
                let mut dirs: Vec<(String, PathBuf)> = Vec::new();
                for (ctl, mnt) in hierarchies {
                    dirs.push((ctl.clone(), mnt.join(rel)));
                }
                Cgroup { v2: false, dirs }
            }
        }
    }

    /// Creates the cgroup and applies `resources`. On error nothing is left
    /// behind.
    pub fn create(
        layout: &Layout,
        rel: &Path,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup, CgroupError> {
        let cg = Cgroup::at(layout, rel);
        let result = cg.create_dirs().and_then(|()| match resources {
            Some(r) => cg.apply(r),
            None => Ok(()),
        });
        if let Err(e) = result {
            let _ = cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_dirs(&self) -> Result<(), CgroupError> {
        let mut seen: Vec<&Path> = Vec::new();
        for (ctl, dir) in &self.dirs {
            if seen.contains(&dir.as_path()) {
                continue;
            }
            seen.push(dir);
            if self.v2 {
                enable_v2_controllers(dir);
            }
            if ctl == "cpuset" {
                create_cpuset(dir)?;
            } else {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
        }
        Ok(())
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(|(_, d)| d.as_path());
        }
        self.dirs
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn set(
        &self,
        controller: &str,
        file: &str,
        what: &'static str,
        value: String,
    ) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(controller) else {
            return Ok(());
        };
        write_file(&dir.join(file), &value).map_err(|source| CgroupError::Limit {
            what,
            value,
            source,
        })
    }

    /// Applies the OCI resources this cgroup layout can express.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(mem) = r.memory() {
            if let Some(limit) = mem.limit() {
                if self.v2 {
                    self.set("memory", "memory.max", "memory limit", limit_str(limit))?;
                    if let Some(swap) = mem.swap() {
                        let swap_only = if swap > 0 { swap - limit.max(0) } else { swap };
                        let _ = self.set(
                            "memory",
                            "memory.swap.max",
                            "memory+swap limit",
                            limit_str(swap_only.max(0)),
                        );
                    }
                } else {
                    self.set(
                        "memory",
                        "memory.limit_in_bytes",
                        "memory limit",
                        limit.to_string(),
                    )?;
                    if let Some(swap) = mem.swap() {
                        let path = self
                            .dir("memory")
                            .map(|d| d.join("memory.memsw.limit_in_bytes"));
                        if path.is_some_and(|p| p.exists()) {
                            self.set(
                                "memory",
                                "memory.memsw.limit_in_bytes",
                                "memory+swap limit",
                                swap.to_string(),
                            )?;
                        }
                    }
                }
            }
        }
        if let Some(pids) = r.pids() {
            let limit = pids.limit();
            let value = if limit <= 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            self.set("pids", "pids.max", "pids limit", value)?;
        }
        if let Some(cpu) = r.cpu() {
            let period = cpu.period().unwrap_or(100_000);
            if let Some(quota) = cpu.quota() {
                if self.v2 {
                    self.set(
                        "cpu",
                        "cpu.max",
                        "cpu quota",
                        format!("{} {period}", limit_str(quota)),
                    )?;
                } else {
                    self.set("cpu", "cpu.cfs_period_us", "cpu period", period.to_string())?;
                    self.set("cpu", "cpu.cfs_quota_us", "cpu quota", quota.to_string())?;
                }
            }
            if let Some(shares) = cpu.shares() {
                if self.v2 {
                    // The conversion runc and crun use from shares to weight.
                    let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    self.set("cpu", "cpu.weight", "cpu weight", weight.to_string())?;
                } else {
                    self.set("cpu", "cpu.shares", "cpu shares", shares.to_string())?;
                }
            }
            if let Some(cpus) = cpu.cpus() {
                self.set("cpuset", "cpuset.cpus", "cpuset", cpus.clone())?;
            }
            if let Some(mems) = cpu.mems() {
                self.set("cpuset", "cpuset.mems", "cpuset mems", mems.clone())?;
            }
        }
        if !self.v2 {
            if let Some(devices) = r.devices() {
                for d in devices {
                    let file = if d.allow() {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    let typ = d
                        .typ()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_else(|| "a".into());
                    let major = d.major().map_or("*".to_string(), |m| m.to_string());
                    let minor = d.minor().map_or("*".to_string(), |m| m.to_string());
                    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
                    let rule = if typ == "a" {
                        "a".to_string()
                    } else {
                        format!("{typ} {major}:{minor} {access}")
                    };
                    self.set("devices", file, "device rule", rule)?;
                }
            }
        }
        Ok(())
    }

    /// Files a process writes "0" to (or its PID) to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, d) in &self.dirs {
            let p = d.join("cgroup.procs");
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Moves `pid` (0: the calling process) into this cgroup.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for p in self.procs_files() {
            write_file(&p, &value).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Moves the calling, single-threaded process into this cgroup. On v1
    /// this writes "0" to `tasks`: the kernel then skips the global
    /// threadgroup lock that a `cgroup.procs` write takes, which costs an RCU
    /// grace period (8-25 ms measured here) per container start.
    pub fn join_self_single_threaded(&self) -> Result<(), CgroupError> {
        if self.v2 {
            return self.join(0);
        }
        let mut seen: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if seen.contains(&d.as_path()) {
                continue;
            }
            seen.push(d);
            let p = d.join("tasks");
            write_file(&p, "0").map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// PIDs in the cgroup (from the memory or unified hierarchy).
    pub fn pids(&self) -> Vec<i32> {
        let dir = self.dir("pids").or_else(|| self.dir("memory"));
        let Some(dir) = dir else { return Vec::new() };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let Some(dir) = self.dir("memory") else {
            return false;
        };
        let Ok(text) = fs::read_to_string(dir.join(file)) else {
            return false;
        };
        text.lines().any(|l| {
            let mut it = l.split_whitespace();
            it.next() == Some(key) && it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0
        })
    }

    /// SIGKILLs every process in the cgroup.
    pub fn kill_all(&self) {
        if self.v2 {
            if let Some(dir) = self.dir("memory") {
                if write_file(&dir.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        for pid in self.pids() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }

    /// Kills what is left and removes the directories. Missing ones are fine.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut tries = 0;
        loop {
            let mut busy = None;
            for (_, d) in &self.dirs {
                match fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => busy = Some((d.clone(), e)),
                }
            }
            match busy {
                None => return Ok(()),
                Some((path, source)) => {
                    tries += 1;
                    if tries > 200 {
                        return Err(CgroupError::Io { path, source });
                    }
                    self.kill_all();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

fn limit_str(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// A v1 cpuset group is unusable until cpus and mems are set: copy them from
/// the parent, creating ancestors the same way.
fn create_cpuset(dir: &Path) -> Result<(), CgroupError> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_cpuset(parent)?;
        fs::create_dir(dir)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io_err(dir))?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let cur = fs::read_to_string(dir.join(f)).unwrap_or_default();
            if cur.trim().is_empty() {
                let v = fs::read_to_string(parent.join(f)).map_err(io_err(parent))?;
                write_file(&dir.join(f), v.trim()).map_err(io_err(dir))?;
            }
        }
    }
    Ok(())
}

/// On v2, controllers must be enabled in every ancestor's subtree_control.
fn enable_v2_controllers(dir: &Path) {
    let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
    ancestors.reverse();
    for a in ancestors {
        let inside = a
            .parent()
            .is_some_and(|p| p.join("cgroup.controllers").exists());
        if !a.exists() && inside {
            let _ = fs::create_dir(a);
        }
        if !a.join("cgroup.controllers").exists() {
            continue;
        }
        let available = fs::read_to_string(a.join("cgroup.controllers")).unwrap_or_default();
        let enabled = fs::read_to_string(a.join("cgroup.subtree_control")).unwrap_or_default();
        for c in ["cpu", "memory", "pids", "io", "cpuset"] {
            if available.split_whitespace().any(|x| x == c)
                && !enabled.split_whitespace().any(|x| x == c)
            {
                let _ = write_file(&a.join("cgroup.subtree_control"), &format!("+{c}"));
            }
        }
    }
}
