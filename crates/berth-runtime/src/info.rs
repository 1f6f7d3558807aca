//! `state`, `list`, `ps`, `events` and `update`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use crate::error::{io_err, Result, RuntimeError};
use crate::state::{Record, Status, Store};

fn print_json(v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(io_err("writing to stdout"))
}

/// `state ID`: the OCI state as JSON.
pub fn state(store: &Store, id: &str) -> Result<()> {
    print_json(&store.load(id)?.oci_state())
}

/// `list [--format table|json] [-q]`.
pub fn list(store: &Store, format: &str, quiet: bool) -> Result<()> {
    let recs: Vec<Record> = store
        .ids()
        .iter()
        .filter_map(|id| store.load(id).ok())
        .collect();
    let mut out = std::io::stdout().lock();
    let w = |r: std::io::Result<()>| r.map_err(io_err("writing to stdout"));
    if quiet {
        for r in &recs {
            w(writeln!(out, "{}", r.id))?;
        }
        return Ok(());
    }
    match format {
        "json" => {
            let all: Vec<serde_json::Value> = recs.iter().map(Record::oci_state).collect();
            w(writeln!(out, "{}", serde_json::Value::from(all)))
        }
        "table" => {
            w(writeln!(
                out,
                "{:<20} {:<10} {:<10} {:<40} {:<31} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            ))?;
            for r in &recs {
                let s = r.oci_state();
                w(writeln!(
                    out,
                    "{:<20} {:<10} {:<10} {:<40} {:<31} root",
                    r.id,
                    s["pid"],
                    r.status().as_str(),
                    r.bundle.display(),
                    r.created
                ))?;
            }
            Ok(())
        }
        other => Err(RuntimeError::Usage(format!(
            "invalid --format {other:?} (table or json)"
        ))),
    }
}

/// `ps [--format table|json] ID [ps options]`: the container's processes.
pub fn ps(store: &Store, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let rec = store.load(id)?;
    let pids = rec.cgroup()?.pids();
    match format {
        "json" => print_json(&serde_json::Value::from(pids)),
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(io_err("running ps"))?;
            if !out.status.success() {
                return Err(RuntimeError::Usage(format!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| RuntimeError::Usage("ps output has no PID column".into()))?;
            let mut stdout = std::io::stdout().lock();
            let w = |o: &mut std::io::StdoutLock<'_>, l: &str| {
                writeln!(o, "{l}").map_err(io_err("writing to stdout"))
            };
            w(&mut stdout, header)?;
            for l in lines {
                let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
                if pid.is_some_and(|p: i32| pids.contains(&p)) {
                    w(&mut stdout, l)?;
                }
            }
            Ok(())
        }
        other => Err(RuntimeError::Usage(format!(
            "invalid --format {other:?} (table or json)"
        ))),
    }
}

fn read_u64(dir: Option<&Path>, file: &str) -> u64 {
    dir.and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// One `stats` event, in runc's shape (the fields this host has).
fn stats_event(rec: &Record) -> Result<serde_json::Value> {
    let cg = rec.cgroup()?;
    let u = cg.usage();
    let pids_dir = cg.controller_dir("pids");
    let mem_dir = cg.controller_dir("memory");
    let (max, failcnt) = if cg.is_v2() {
        (read_u64(mem_dir, "memory.peak"), 0)
    } else {
        (
            read_u64(mem_dir, "memory.max_usage_in_bytes"),
            read_u64(mem_dir, "memory.failcnt"),
        )
    };
    Ok(serde_json::json!({
        "type": "stats",
        "id": rec.id,
        "data": {
            "cpu": {"usage": {"total": u.cpu_ns}},
            "memory": {"usage": {
                "usage": u.memory,
                "limit": u.memory_limit.unwrap_or(u64::MAX),
                "max": max,
                "failcnt": failcnt,
            }},
            "pids": {"current": u.pids, "limit": read_u64(pids_dir, "pids.max")},
        }
    }))
}

/// `events [--stats] [--interval D] ID`: one stats event, or stats every
/// interval (and an `oom` event when the OOM killer struck) until the
/// container stops.
pub fn events(store: &Store, id: &str, stats: bool, interval: Duration) -> Result<()> {
    let rec = store.load(id)?;
    if rec.status() == Status::Stopped {
        return Err(RuntimeError::State("container not running".into()));
    }
    let emit = |v: serde_json::Value| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")
            .and_then(|()| out.flush())
            .map_err(io_err("writing to stdout"))
    };
    if stats {
        return emit(stats_event(&rec)?);
    }
    let cg = rec.cgroup()?;
    let mut oom = cg.oom_killed();
    while rec.alive() {
        emit(stats_event(&rec)?)?;
        let now = cg.oom_killed();
        if now && !oom {
            emit(serde_json::json!({"type": "oom", "id": rec.id}))?;
        }
        oom = now;
        std::thread::sleep(interval);
    }
    Ok(())
}

/// Resource options of `update` given on the command line.
#[derive(Default)]
pub struct UpdateOpts {
    pub resources: Option<std::path::PathBuf>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
}

/// `update`: new limits for a running container.
pub fn update(store: &Store, id: &str, o: &UpdateOpts) -> Result<()> {
    let mut rec = store.load(id)?;
    let _lock = store.lock(id)?;
    if rec.status() == Status::Stopped {
        return Err(RuntimeError::State("container not running".into()));
    }
    if crate::vm::is_vm(&rec.config) {
        return Err(RuntimeError::Unsupported(
            "update: a microVM's guest RAM and vCPUs are fixed while it runs".into(),
        ));
    }
    let mut r: serde_json::Value = match &o.resources {
        Some(p) if p == Path::new("-") => serde_json::from_reader(std::io::stdin())
            .map_err(|e| RuntimeError::Usage(format!("--resources -: {e}")))?,
        Some(p) => {
            let text = std::fs::read(p).map_err(io_err(format!("reading {}", p.display())))?;
            serde_json::from_slice(&text)
                .map_err(|e| RuntimeError::Usage(format!("--resources {}: {e}", p.display())))?
        }
        None => serde_json::json!({}),
    };
    let mut set = |section: &str, key: &str, v: serde_json::Value| {
        if !r[section].is_object() {
            r[section] = serde_json::json!({});
        }
        r[section][key] = v;
    };
    if let Some(v) = o.memory {
        set("memory", "limit", v.into());
    }
    if let Some(v) = o.memory_swap {
        set("memory", "swap", v.into());
    }
    if let Some(v) = o.memory_reservation {
        set("memory", "reservation", v.into());
    }
    if let Some(v) = o.cpu_shares {
        set("cpu", "shares", v.into());
    }
    if let Some(v) = o.cpu_quota {
        set("cpu", "quota", v.into());
    }
    if let Some(v) = o.cpu_period {
        set("cpu", "period", v.into());
    }
    if let Some(v) = &o.cpuset_cpus {
        set("cpu", "cpus", v.clone().into());
    }
    if let Some(v) = &o.cpuset_mems {
        set("cpu", "mems", v.clone().into());
    }
    if let Some(v) = o.pids_limit {
        set("pids", "limit", v.into());
    }
    if let Some(v) = o.blkio_weight {
        set("blockIO", "weight", v.into());
    }
    let res: LinuxResources = serde_json::from_value(r)
        .map_err(|e| RuntimeError::Usage(format!("invalid resources: {e}")))?;
    rec.cgroup()?.apply_all(&res)?;
    if let Some(linux) = rec.config.linux_mut() {
        linux.set_resources(Some(res));
    }
    store.save(&rec)
}
