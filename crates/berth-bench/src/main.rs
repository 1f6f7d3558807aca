//! `make bench`: measures berth against peers in the same run, interleaved
//! so that machine noise hits every contender alike, and prints min/median
//! and ratios. Timing is never asserted in tests; this is where it lives.

mod detached;
mod microvm;
mod network;
mod pull;
mod runtime;
mod util;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_fixtures::{busybox_image, Compression, Format, ImageSpec};
use util::{have, stats};

struct Contender {
    name: &'static str,
    cmd: Box<dyn Fn(usize) -> Command>,
    times: Vec<Duration>,
}

fn run_ok(c: &mut Command, what: &str) -> Result<()> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs in a private mount namespace without the cgroup2 mount of the hybrid
/// layout: crun 1.8 refuses that layout (DESIGN.md), berth does not care.
fn private_mount_ns() -> Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    let _ = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH);
    Ok(())
}

fn main() -> Result<()> {
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let exe_dir: PathBuf = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let berth = exe_dir.join("berth");
    if !berth.exists() {
        bail!(
            "{} is missing: run `cargo build --release` first",
            berth.display()
        );
    }
    private_mount_ns()?;
    // Like the peers, berth runs with --network none here (and never
    // touches the host's network); network.rs measures the bridge.
    std::env::set_var("BERTH_NETWORK", "none");
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in("/tmp")?;
    let w = work.path().to_path_buf();
    let oci = w.join("busybox-oci.tar");
    let docker = w.join("busybox-docker.tar");
    busybox_image(&ImageSpec::default(), &oci)?;
    busybox_image(
        &ImageSpec {
            format: Format::DockerSave,
            compression: Compression::None,
            ..ImageSpec::default()
        },
        &docker,
    )?;

    let berth_env = |c: &mut Command| {
        c.env("BERTH_ROOT", w.join("berth-root"))
            .env("BERTH_RUN_ROOT", w.join("berth-run"));
    };
    let mut c = Command::new(&berth);
    berth_env(&mut c);
    run_ok(c.args(["image", "import"]).arg(&oci), "berth image import")?;
    let bundle = w.join("bundle");
    let mut c = Command::new(&berth);
    berth_env(&mut c);
    run_ok(
        c.args(["create", "--bundle-only"])
            .arg(&bundle)
            .args(["busybox", "/bin/true"]),
        "berth create --bundle-only",
    )?;

    println!(
        "berth bench: {iterations} iterations each, interleaved; busybox image, command /bin/true"
    );
    println!(
        "host: {} CPUs, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );

    let mut contenders: Vec<Contender> = Vec::new();
    {
        let berth = berth.clone();
        let w = w.clone();
        contenders.push(Contender {
            name: "berth run --rm IMG /bin/true (net none, e2e)",
            cmd: Box::new(move |_| {
                let mut c = Command::new(&berth);
                c.env("BERTH_ROOT", w.join("berth-root"))
                    .env("BERTH_RUN_ROOT", w.join("berth-run"));
                c.args(["run", "--rm", "busybox", "/bin/true"]);
                c
            }),
            times: Vec::new(),
        });
    }
    if have("crun") {
        let bundle = bundle.clone();
        let root = w.join("crun-root");
        contenders.push(Contender {
            name: "crun run (prepared bundle)",
            cmd: Box::new(move |i| {
                let mut c = Command::new("crun");
                c.arg("--root")
                    .arg(&root)
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(format!("bench-{}-{i}", std::process::id()));
                c
            }),
            times: Vec::new(),
        });
    } else {
        println!("(crun not installed: skipped)");
    }
    if have("podman") {
        let proot = w.join("podman-root");
        let prun = w.join("podman-run");
        let base = move || {
            let mut c = Command::new("podman");
            c.arg("--root")
                .arg(&proot)
                .arg("--runroot")
                .arg(&prun)
                .args([
                    "--storage-driver",
                    "overlay",
                    "--cgroup-manager",
                    "cgroupfs",
                    "--events-backend",
                    "none",
                ]);
            c
        };
        let mut load = base();
        load.args(["load", "-q", "-i"]).arg(&docker);
        match run_ok(&mut load, "podman load") {
            Ok(()) => contenders.push(Contender {
                name: "podman run --rm --network none IMG /bin/true",
                cmd: Box::new(move |_| {
                    let mut c = base();
                    c.args([
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        "--ulimit",
                        "nofile=20000:20000",
                        "--ulimit",
                        "nproc=32768:32768",
                        "busybox:latest",
                        "/bin/true",
                    ]);
                    c
                }),
                times: Vec::new(),
            }),
            Err(e) => println!("(podman skipped: {e})"),
        }
    } else {
        println!("(podman not installed: skipped)");
    }
    contenders.push(Contender {
        name: "unshare -muinpCf true (namespace floor)",
        cmd: Box::new(|_| {
            let mut c = Command::new("unshare");
            c.args(["-muinpCf", "true"]);
            c
        }),
        times: Vec::new(),
    });

    // One warm-up each (page cache, seccomp cache), then interleaved rounds.
    for c in contenders.iter() {
        run_ok(&mut (c.cmd)(usize::MAX), c.name)?;
    }
    for i in 0..iterations {
        for c in contenders.iter_mut() {
            let mut cmd = (c.cmd)(i);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let start = Instant::now();
            let out = cmd.output()?;
            let took = start.elapsed();
            if !out.status.success() {
                bail!(
                    "{} failed: {}",
                    c.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            c.times.push(took);
        }
    }

    println!();
    println!("{:<48} {:>10} {:>10}", "contender", "min ms", "median ms");
    for c in &contenders {
        let (min, med) = stats(&c.times);
        println!("{:<48} {:>10.2} {:>10.2}", c.name, min, med);
    }
    println!();
    let (bmin, bmed) = stats(&contenders[0].times);
    for c in &contenders[1..] {
        let (min, med) = stats(&c.times);
        println!(
            "ratio {:<42} min {:>6.2}x  median {:>6.2}x  (>1: berth is faster)",
            c.name,
            min / bmin,
            med / bmed
        );
    }
    runtime::bench(&exe_dir, &w, iterations)?;
    detached::bench(&berth, &w, have("podman"))?;
    pull::bench(&berth, &pull::fixtures_dir(&exe_dir), &w)?;
    network::bench(&berth, &w, iterations, have("podman"))?;
    microvm::bench(&berth, &w)
}
