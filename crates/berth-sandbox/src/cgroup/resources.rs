//! The OCI resources beyond the common ones (`Cgroup::apply`): block I/O,
//! hugepages, realtime and burst CPU, swappiness, the OOM killer, v2
//! `unified` keys. Whatever this host's layout cannot enforce is refused
//! with an error naming the field, never ignored. Also: finding a running
//! process's cgroup, and adding one task to a cgroup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxResources, LinuxThrottleDevice};

use super::{write_file, Cgroup, CgroupError, Layout};

fn unsupported(field: &str, why: &str) -> CgroupError {
    CgroupError::Unsupported(format!("linux.resources.{field}: {why}"))
}

impl Cgroup {
    /// Whether this is a cgroup v2 group.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The directory holding `controller`'s files (on v2 the one group).
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.dir(controller)
    }

    /// Writes `value` to `file` of `controller` for the OCI field `field`.
    /// A file the kernel does not offer (or a missing controller) means this
    /// host cannot honour the field: an error naming it.
    fn put(
        &self,
        controller: &str,
        file: &str,
        field: &str,
        value: String,
    ) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(controller) else {
            return Err(unsupported(
                field,
                &format!("no {controller} cgroup controller on this host"),
            ));
        };
        match write_file(&dir.join(file), &value) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unsupported(
                field,
                &format!(
                    "this kernel has no {file} ({} cgroup {})",
                    controller,
                    if self.v2 { "v2" } else { "v1" }
                ),
            )),
            Err(source) => Err(CgroupError::Io {
                path: dir.join(file),
                source,
            }),
        }
    }

    /// Applies every resource of the OCI spec ([`Cgroup::apply`] plus the
    /// rest), refusing with an error that names the field what this host's
    /// cgroup layout cannot enforce.
    pub fn apply_all(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        // Zero means "not set" for these (Docker sends cpu.shares 0 and
        // blockIO.weight 0), as runc reads them.
        let mut r = r.clone();
        if let Some(mut c) = r.cpu().clone() {
            if c.shares() == Some(0) {
                c.set_shares(None);
                r.set_cpu(Some(c));
            }
        }
        if let Some(mut b) = r.block_io().clone() {
            if b.weight() == Some(0) {
                b.set_weight(None);
            }
            if b.leaf_weight() == Some(0) {
                b.set_leaf_weight(None);
            }
            r.set_block_io(Some(b));
        }
        let r = &r;
        if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(unsupported("rdma", "the rdma controller is not supported"));
        }
        if let Some(n) = r.network() {
            if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
                return Err(unsupported("network", "net_cls/net_prio are not supported"));
            }
        }
        if let Some(m) = r.memory() {
            if m.kernel().is_some() {
                return Err(unsupported(
                    "memory.kernel",
                    "kernel memory limits are gone from Linux 6",
                ));
            }
            if m.kernel_tcp().is_some() {
                return Err(unsupported("memory.kernelTCP", "not supported"));
            }
        }
        self.apply(r)?;
        if let Some(m) = r.memory() {
            if let Some(res) = m.reservation() {
                if self.v2 {
                    self.put("memory", "memory.low", "memory.reservation", limit(res))?;
                } else {
                    self.put(
                        "memory",
                        "memory.soft_limit_in_bytes",
                        "memory.reservation",
                        res.to_string(),
                    )?;
                }
            }
            if let Some(sw) = m.swappiness().filter(|s| *s <= 100) {
                if self.v2 {
                    return Err(unsupported(
                        "memory.swappiness",
                        "cgroup v2 has no per-group swappiness",
                    ));
                }
                self.put(
                    "memory",
                    "memory.swappiness",
                    "memory.swappiness",
                    sw.to_string(),
                )?;
            }
            if m.disable_oom_killer() == Some(true) {
                if self.v2 {
                    return Err(unsupported(
                        "memory.disableOOMKiller",
                        "cgroup v2 cannot disable the OOM killer",
                    ));
                }
                self.put(
                    "memory",
                    "memory.oom_control",
                    "memory.disableOOMKiller",
                    "1".into(),
                )?;
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(b) = c.burst() {
                let file = if self.v2 {
                    "cpu.max.burst"
                } else {
                    "cpu.cfs_burst_us"
                };
                self.put("cpu", file, "cpu.burst", b.to_string())?;
            }
            if let Some(i) = c.idle() {
                self.put("cpu", "cpu.idle", "cpu.idle", i.to_string())?;
            }
            if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
                if self.v2 {
                    return Err(unsupported(
                        "cpu.realtimeRuntime",
                        "cgroup v2 has no realtime CPU limits",
                    ));
                }
                if let Some(p) = c.realtime_period() {
                    self.put(
                        "cpu",
                        "cpu.rt_period_us",
                        "cpu.realtimePeriod",
                        p.to_string(),
                    )?;
                }
                if let Some(rt) = c.realtime_runtime() {
                    self.put(
                        "cpu",
                        "cpu.rt_runtime_us",
                        "cpu.realtimeRuntime",
                        rt.to_string(),
                    )?;
                }
            }
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b)?;
        }
        for h in r.hugepage_limits().iter().flatten() {
            if !self.v2 {
                return Err(unsupported(
                    "hugepageLimits",
                    "the v1 hugetlb controller is not managed",
                ));
            }
            let file = format!("hugetlb.{}.max", h.page_size());
            self.put("hugetlb", &file, "hugepageLimits", limit(h.limit()))?;
        }
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            if !self.v2 {
                return Err(unsupported(
                    "unified",
                    "needs a cgroup v2 host (this one has v1 controllers)",
                ));
            }
            let mut keys: Vec<_> = u.iter().collect();
            keys.sort();
            for (k, v) in keys {
                if k.contains('/') || k.starts_with('.') {
                    return Err(unsupported("unified", &format!("bad key {k:?}")));
                }
                let ctl = k.split('.').next().unwrap_or("");
                self.put(ctl, k, &format!("unified[{k}]"), v.clone())?;
            }
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<(), CgroupError> {
        let (ctl, weight_file) = if self.v2 {
            ("io", "io.weight")
        } else {
            ("blkio", "blkio.weight")
        };
        if let Some(w) = b.weight() {
            let v = if self.v2 {
                format!("default {w}")
            } else {
                w.to_string()
            };
            self.put(ctl, weight_file, "blockIO.weight", v)?;
        }
        if let Some(w) = b.leaf_weight() {
            if self.v2 {
                return Err(unsupported(
                    "blockIO.leafWeight",
                    "cgroup v2 has no leaf weight",
                ));
            }
            self.put(
                ctl,
                "blkio.leaf_weight",
                "blockIO.leafWeight",
                w.to_string(),
            )?;
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                self.put(
                    ctl,
                    weight_file,
                    "blockIO.weightDevice",
                    format!("{}:{} {w}", d.major(), d.minor()),
                )?;
            }
            if d.leaf_weight().is_some() {
                return Err(unsupported(
                    "blockIO.weightDevice.leafWeight",
                    "not supported",
                ));
            }
        }
        let throttles: [(&Option<Vec<LinuxThrottleDevice>>, &str, &str, &str); 4] = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
                "blockIO.throttleReadBpsDevice",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
                "blockIO.throttleWriteBpsDevice",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
                "blockIO.throttleReadIOPSDevice",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
                "blockIO.throttleWriteIOPSDevice",
            ),
        ];
        for (list, v1_file, v2_key, field) in throttles {
            for d in list.iter().flatten() {
                let dev = format!("{}:{}", d.major(), d.minor());
                if self.v2 {
                    self.put(ctl, "io.max", field, format!("{dev} {v2_key}={}", d.rate()))?;
                } else {
                    self.put(ctl, v1_file, field, format!("{dev} {}", d.rate()))?;
                }
            }
        }
        Ok(())
    }

    /// The cgroup a running process is in, on every hierarchy of `layout`
    /// (from `/proc/PID/cgroup`, as seen from our cgroup namespace).
    pub fn of_pid(layout: &Layout, pid: i32) -> Result<Cgroup, CgroupError> {
        let file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text =
            fs::read_to_string(&file).map_err(|source| CgroupError::Io { path: file, source })?;
        let mut lines = text.lines().filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctls, path) = (it.next()?, it.next()?, it.next()?);
            Some((ctls, path.trim_start_matches('/')))
        });
        match layout {
            Layout::Unified(root) => {
                let path = lines
                    .find(|(c, _)| c.is_empty())
                    .map(|(_, p)| p)
                    .unwrap_or("");
                Ok(Cgroup {
                    v2: true,
                    dirs: vec![("unified".into(), root.join(path))],
                })
            }
            Layout::Legacy { hierarchies, .. } => {
                let entries: Vec<(&str, &str)> = lines.collect();
                let dirs = hierarchies
                    .iter()
                    .filter_map(|(ctl, mnt)| {
                        entries
                            .iter()
                            .find(|(c, _)| c.split(',').any(|x| x == ctl))
                            .map(|(_, p)| (ctl.clone(), mnt.join(p)))
                    })
                    .collect();
                Ok(Cgroup { v2: false, dirs })
            }
        }
    }

    /// Moves the single-threaded process `pid` into this cgroup from
    /// outside (v1: its one task through `tasks`, which avoids the
    /// threadgroup lock of `cgroup.procs`; v2: `cgroup.procs`).
    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        if self.v2 {
            return self.join(pid);
        }
        let mut seen: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if seen.contains(&d.as_path()) {
                continue;
            }
            seen.push(d);
            let p = d.join("tasks");
            write_file(&p, &pid.to_string()).map_err(|source| CgroupError::Io {
                path: p.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Whether the freezer holds the group frozen (paused).
    pub fn is_frozen(&self) -> bool {
        let (file, frozen) = if self.v2 {
            ("cgroup.freeze", "1")
        } else {
            ("freezer.state", "FROZEN")
        };
        self.dir("freezer")
            .and_then(|d| fs::read_to_string(d.join(file)).ok())
            .is_some_and(|s| s.trim() == frozen)
    }
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}
