//! `berth top` and `berth stats`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_engine::Engine;

use crate::cli::StatsArgs;
use crate::format::Table;

pub fn top(engine: &mut Engine, key: &str) -> Result<u8> {
    let procs = engine.top(key)?;
    let mut t = Table::new(&["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
    for p in procs {
        t.row(vec![
            p.uid,
            p.pid.to_string(),
            p.ppid.to_string(),
            "0".into(),
            p.stime,
            p.tty,
            p.time,
            p.cmd,
        ]);
    }
    t.print();
    Ok(0)
}

fn iec(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    // Four significant digits, as Docker's "%.4g": 1.344MiB, 184KiB, 64MiB.
    let int_digits = if v < 1.0 {
        1
    } else {
        (v.log10().floor() as usize) + 1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", units[i])
}

pub fn stats(engine: &mut Engine, a: &StatsArgs) -> Result<u8> {
    let json = match a.format.as_deref() {
        None => false,
        Some("json") | Some("{{json .}}") => true,
        Some(f) => anyhow::bail!("unsupported --format {f:?} for stats: use json"),
    };
    let mut first = engine.stats_sample(&a.containers)?;
    let mut t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(if a.no_stream { 500 } else { 1000 }));
        let second = engine.stats_sample(&a.containers)?;
        let wall = t0.elapsed().as_nanos().max(1) as f64;
        t0 = Instant::now();
        let mut table = Table::new(&[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "PIDS",
        ]);
        for s in &second {
            let before = first
                .iter()
                .find(|f| f.id == s.id)
                .map(|f| f.usage.cpu_ns)
                .unwrap_or(s.usage.cpu_ns);
            let cpu = (s.usage.cpu_ns.saturating_sub(before)) as f64 / wall * 100.0;
            let limit = s.usage.memory_limit.unwrap_or(s.host_memory);
            let mem_pct = if limit > 0 {
                s.usage.memory as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ID": &s.id[..12], "Name": s.name, "CPUPerc": format!("{cpu:.2}%"),
                        "MemUsage": format!("{} / {}", iec(s.usage.memory), iec(limit)),
                        "MemPerc": format!("{mem_pct:.2}%"), "PIDs": s.usage.pids.to_string(),
                    })
                );
            } else {
                table.row(vec![
                    s.id[..12].to_string(),
                    s.name.clone(),
                    format!("{cpu:.2}%"),
                    format!("{} / {}", iec(s.usage.memory), iec(limit)),
                    format!("{mem_pct:.2}%"),
                    s.usage.pids.to_string(),
                ]);
            }
        }
        if !json {
            if !a.no_stream {
                // Redraw in place, as docker stats does.
                print!("\x1b[2J\x1b[H");
            }
            table.print();
        }
        let _ = std::io::stdout().flush();
        if a.no_stream {
            return Ok(0);
        }
        first = second;
    }
}
