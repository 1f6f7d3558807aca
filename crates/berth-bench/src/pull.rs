//! The pull benchmark: a large multi-layer image (the fixture builder's,
//! ~200 MiB unpacked in 5 layers) served by Debian's `docker-registry` on
//! 127.0.0.1, pulled into an empty store by `berth pull` (download, verify,
//! unpack), `podman pull` (the same) and `skopeo copy` to an OCI layout
//! (download and verify only), interleaved, each from a fresh store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{have, stats};
use anyhow::{bail, Context, Result};
use berth_fixtures::{big_image, cached, ImageSpec};

/// Layers of the benchmark image (besides busybox) and their size.
const LAYERS: usize = 4;
const LAYER_MIB: usize = 50;

struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Result<Registry> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry-data").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting docker-registry (make bench installs it)")?;
    let reg = Registry { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("docker-registry did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(reg)
}

fn timed(c: &mut Command, what: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Removes `dir` and flushes the file systems, so that no contender pays
/// for the write-back or the deletions of the one before it.
fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    nix::unistd::sync();
    Ok(())
}

/// Runs the pull benchmark; `BENCH_PULL_ITERATIONS` rounds (default 5).
pub fn bench(berth: &Path, fixtures: &Path, work: &Path) -> Result<()> {
    let iterations: usize = std::env::var("BENCH_PULL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if iterations == 0 {
        return Ok(());
    }
    for tool in ["docker-registry", "skopeo"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .stdout
            .is_empty()
        {
            println!("\n(pull benchmark skipped: {tool} is not installed; make bench installs it)");
            return Ok(());
        }
    }
    let spec = ImageSpec {
        name: "big:latest".into(),
        ..ImageSpec::default()
    };
    let tar = cached(fixtures, &format!("big-{LAYERS}x{LAYER_MIB}.tar"), |p| {
        big_image(&spec, LAYERS, LAYER_MIB, p)
    })?;
    let archive_mb = std::fs::metadata(&tar)?.len() as f64 / 1e6;
    let reg = start_registry(work)?;
    let reference = format!("127.0.0.1:{}/bench/big:latest", reg.port);
    let mut load = Command::new("skopeo");
    load.args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{reference}"));
    timed(&mut load, "skopeo copy (loading the registry)")?;

    println!();
    println!(
        "pull bench: {iterations} rounds, interleaved; {} layers, {} MiB unpacked, {archive_mb:.0} MB compressed, \
         from docker-registry on 127.0.0.1, into an empty store each time",
        LAYERS + 1,
        LAYERS * LAYER_MIB + 2
    );
    let broot = work.join("pull-berth");
    let proot = work.join("pull-podman");
    let sdir = work.join("pull-skopeo");
    type Cmd = Box<dyn Fn() -> Command>;
    let mut contenders: Vec<(&str, &Path, Cmd, Vec<Duration>)> = Vec::new();
    {
        let (berth, broot2, reference) = (berth.to_path_buf(), broot.clone(), reference.clone());
        contenders.push((
            "berth pull (download + verify + unpack)",
            &broot,
            Box::new(move || {
                let mut c = Command::new(&berth);
                c.env("BERTH_ROOT", broot2.join("root"))
                    .env("BERTH_RUN_ROOT", broot2.join("run"))
                    .args(["pull", "-q", &reference]);
                c
            }),
            Vec::new(),
        ));
    }
    if have("podman") {
        let (proot2, reference) = (proot.clone(), reference.clone());
        contenders.push((
            "podman pull (download + verify + unpack)",
            &proot,
            Box::new(move || {
                let mut c = Command::new("podman");
                c.arg("--root")
                    .arg(proot2.join("root"))
                    .arg("--runroot")
                    .arg(proot2.join("run"))
                    .args([
                        "--storage-driver",
                        "overlay",
                        "--cgroup-manager",
                        "cgroupfs",
                    ])
                    .args([
                        "--events-backend",
                        "none",
                        "pull",
                        "-q",
                        "--tls-verify=false",
                    ])
                    .arg(&reference);
                c
            }),
            Vec::new(),
        ));
    } else {
        println!("(podman not installed: skipped)");
    }
    {
        let (sdir2, reference) = (sdir.clone(), reference.clone());
        contenders.push((
            "skopeo copy to an OCI layout (download + verify)",
            &sdir,
            Box::new(move || {
                let mut c = Command::new("skopeo");
                c.args(["copy", "--src-tls-verify=false"])
                    .arg(format!("docker://{reference}"))
                    .arg(format!("oci:{}:big", sdir2.display()));
                c
            }),
            Vec::new(),
        ));
    }
    for round in 0..iterations {
        for (name, dir, cmd, times) in contenders.iter_mut() {
            fresh(dir)?;
            std::fs::create_dir_all(&**dir)?;
            let took = timed(&mut cmd(), name)?;
            if round > 0 || iterations == 1 {
                times.push(took);
            }
            fresh(dir)?;
        }
    }
    println!(
        "{:<52} {:>10} {:>10}",
        "contender (first round is a warm-up)", "min ms", "median ms"
    );
    for (name, _, _, times) in &contenders {
        let (min, med) = stats(times);
        println!("{name:<52} {min:>10.0} {med:>10.0}");
    }
    let (bmin, bmed) = stats(&contenders[0].3);
    for (name, _, _, times) in &contenders[1..] {
        let (min, med) = stats(times);
        println!(
            "ratio {name:<46} min {:>6.2}x  median {:>6.2}x  (>1: berth is faster)",
            min / bmin,
            med / bmed
        );
    }
    Ok(())
}

/// Where the benchmark image is cached between runs.
pub fn fixtures_dir(exe_dir: &Path) -> PathBuf {
    exe_dir.join("../bench-fixtures")
}
