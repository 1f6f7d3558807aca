//! Helpers every benchmark section uses: the commands for berth and podman
//! on the run's private roots, timing a command, min/median.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `berth` on the bench's own roots under `w`.
pub fn berth(exe: &Path, w: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env("BERTH_ROOT", w.join("berth-root"))
        .env("BERTH_RUN_ROOT", w.join("berth-run"));
    c
}

/// `podman` on the bench's own storage under `w` (cgroupfs, no events).
pub fn podman(w: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(w.join("podman-root"))
        .arg("--runroot")
        .arg(w.join("podman-run"))
        .args([
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
    c
}

/// Runs `c` with no stdin/stdout and returns how long it took; its stderr
/// is the error when it fails.
pub fn timed(mut c: Command, what: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// (min, median) in milliseconds.
pub fn stats(t: &[Duration]) -> (f64, f64) {
    let mut v: Vec<f64> = t.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2])
}
