//! Detached containers: `run -d` latency and the memory of each container's
//! monitor (berth-monitor) next to podman's conmon, in the same run.

use std::path::Path;
use std::time::Duration;

use crate::util::{berth, podman, stats, timed};
use anyhow::Result;

const COUNT: usize = 20;

/// (RSS, USS) in KiB of every process whose command line contains both
/// `name` and `marker`.
fn memory(name: &str, marker: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(name) || !cmd.contains(marker) {
            continue;
        }
        let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |k: &str| {
            smaps
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.push((
            field("Rss:"),
            field("Private_Clean:") + field("Private_Dirty:"),
        ));
    }
    out
}

fn avg(v: &[(u64, u64)]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    (
        v.iter().map(|x| x.0).sum::<u64>() as f64 / n,
        v.iter().map(|x| x.1).sum::<u64>() as f64 / n,
    )
}

pub fn bench(exe: &Path, w: &Path, with_podman: bool) -> Result<()> {
    println!();
    println!("detached containers: {COUNT} x `run -d IMG sleep 600`, interleaved");
    let mut bt = Vec::new();
    let mut pt = Vec::new();
    for i in 0..COUNT {
        let mut c = berth(exe, w);
        c.args([
            "run",
            "-d",
            "--name",
            &format!("bench-d{i}"),
            "busybox",
            "sleep",
            "600",
        ]);
        bt.push(timed(c, "berth run -d")?);
        if with_podman {
            let mut c = podman(w);
            c.args([
                "run",
                "-d",
                "--network",
                "none",
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ]);
            c.args([
                "--name",
                &format!("bench-d{i}"),
                "busybox:latest",
                "sleep",
                "600",
            ]);
            pt.push(timed(c, "podman run -d")?);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let berth_mem = memory("berth-monitor", &w.join("berth-root").display().to_string());
    let conmon_mem = memory("conmon", &w.join("podman-run").display().to_string());
    let (bmin, bmed) = stats(&bt);
    println!(
        "{:<48} {:>10.2} {:>10.2}",
        "berth run -d (ms, min / median)", bmin, bmed
    );
    if with_podman {
        let (pmin, pmed) = stats(&pt);
        println!(
            "{:<48} {:>10.2} {:>10.2}",
            "podman run -d --network none (ms)", pmin, pmed
        );
        println!(
            "ratio podman/berth run -d: min {:.2}x  median {:.2}x  (>1: berth is faster)",
            pmin / bmin,
            pmed / bmed
        );
    }
    let (br, bu) = avg(&berth_mem);
    println!(
        "berth-monitor x{}: RSS {br:.0} KiB, USS {bu:.0} KiB per container",
        berth_mem.len()
    );
    if with_podman {
        let (pr, pu) = avg(&conmon_mem);
        println!(
            "conmon        x{}: RSS {pr:.0} KiB, USS {pu:.0} KiB per container",
            conmon_mem.len()
        );
        if bu > 0.0 {
            println!(
                "ratio conmon/berth-monitor USS: {:.2}x  (>1: berth uses less)",
                pu / bu
            );
        }
    }
    // exec into a running container.
    let mut be = Vec::new();
    let mut pe = Vec::new();
    for _ in 0..COUNT {
        let mut c = berth(exe, w);
        c.args(["exec", "bench-d0", "/bin/true"]);
        be.push(timed(c, "berth exec")?);
        if with_podman {
            let mut c = podman(w);
            c.args(["exec", "bench-d0", "/bin/true"]);
            pe.push(timed(c, "podman exec")?);
        }
    }
    let (emin, emed) = stats(&be);
    println!(
        "{:<48} {:>10.2} {:>10.2}",
        "berth exec CTR /bin/true (ms)", emin, emed
    );
    if with_podman {
        let (pmin, pmed) = stats(&pe);
        println!(
            "{:<48} {:>10.2} {:>10.2}",
            "podman exec CTR /bin/true (ms)", pmin, pmed
        );
        println!(
            "ratio podman/berth exec: min {:.2}x  median {:.2}x  (>1: berth is faster)",
            pmin / emin,
            pmed / emed
        );
    }
    // Clean up both.
    let mut c = berth(exe, w);
    c.args(["rm", "-f"]);
    for i in 0..COUNT {
        c.arg(format!("bench-d{i}"));
    }
    timed(c, "berth rm -f")?;
    if with_podman {
        let mut c = podman(w);
        c.args(["rm", "-f", "-t", "0", "-a"]);
        let _ = timed(c, "podman rm");
    }
    Ok(())
}
