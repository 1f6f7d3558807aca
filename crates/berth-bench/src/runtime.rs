//! OCI runtimes side by side: `run` and `create`+`start`+`delete` of one
//! `/bin/true` bundle with berth-runtime, crun and runc, interleaved.
//! Runs inside main's private mount namespace (no cgroup2 mount of the
//! hybrid layout, which crun 1.8 refuses).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::stats;
use anyhow::{bail, Context, Result};

/// Runs `c` with its stderr in a file: a pipe would stay open in the
/// container that `create` leaves behind.
fn ok(c: &mut Command, what: &str) -> Result<()> {
    use std::io::{Read, Seek};
    let mut err = tempfile::tempfile().context("a temporary file")?;
    let status = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone()?)
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        let mut text = String::new();
        err.rewind()?;
        err.read_to_string(&mut text)?;
        bail!("{what} failed: {}", text.trim());
    }
    Ok(())
}

/// A bundle with a busybox rootfs and runc's default spec running /bin/true.
fn make_bundle(runtime: &Path, dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copying /bin/busybox")?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true"))?;
    ok(
        Command::new(runtime).arg("spec").arg("--bundle").arg(dir),
        "berth-runtime spec",
    )?;
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

struct Runtime {
    name: &'static str,
    bin: String,
    root: std::path::PathBuf,
    run: Vec<Duration>,
    lifecycle: Vec<Duration>,
}

impl Runtime {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c
    }
}

pub fn bench(exe_dir: &Path, w: &Path, iterations: usize) -> Result<()> {
    let ours = exe_dir.join("berth-runtime");
    if !ours.exists() {
        bail!(
            "{} is missing: run `cargo build --release` first",
            ours.display()
        );
    }
    let bundle = w.join("rt-bundle");
    make_bundle(&ours, &bundle)?;
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut rts = vec![Runtime {
        name: "berth-runtime",
        bin: ours.display().to_string(),
        root: w.join("rt-berth"),
        run: Vec::new(),
        lifecycle: Vec::new(),
    }];
    for (name, bin) in [("crun", "crun"), ("runc", "runc")] {
        if have(bin) {
            rts.push(Runtime {
                name,
                bin: bin.into(),
                root: w.join(format!("rt-{name}")),
                run: Vec::new(),
                lifecycle: Vec::new(),
            });
        } else {
            println!("({name} not installed: skipped)");
        }
    }
    println!();
    println!("OCI runtimes: {iterations} rounds, interleaved; bundle runs /bin/true");
    let b = bundle.to_str().context("bundle path")?;
    for i in 0..=iterations {
        for rt in rts.iter_mut() {
            let id = format!("bench-{i}");
            let t = Instant::now();
            ok(
                rt.cmd().args(["run", "--bundle", b, &id]),
                &format!("{} run", rt.name),
            )?;
            let run = t.elapsed();
            let id = format!("bench-life-{i}");
            let t = Instant::now();
            ok(
                rt.cmd().args(["create", "--bundle", b, &id]),
                &format!("{} create", rt.name),
            )?;
            ok(rt.cmd().args(["start", &id]), &format!("{} start", rt.name))?;
            ok(
                rt.cmd().args(["delete", "--force", &id]),
                &format!("{} delete", rt.name),
            )?;
            let life = t.elapsed();
            // Round 0 warms caches up and is not counted.
            if i > 0 {
                rt.run.push(run);
                rt.lifecycle.push(life);
            }
        }
    }
    println!("{:<40} {:>10} {:>10}", "runtime", "min ms", "median ms");
    for rt in &rts {
        let (a, b) = stats(&rt.run);
        println!("{:<40} {:>10.2} {:>10.2}", format!("{} run", rt.name), a, b);
        let (a, b) = stats(&rt.lifecycle);
        println!(
            "{:<40} {:>10.2} {:>10.2}",
            format!("{} create+start+delete", rt.name),
            a,
            b
        );
    }
    let (rmin, rmed) = stats(&rts[0].run);
    let (lmin, lmed) = stats(&rts[0].lifecycle);
    for rt in &rts[1..] {
        let (a, b) = stats(&rt.run);
        println!(
            "ratio {:<34} min {:>6.2}x  median {:>6.2}x  (>1: berth-runtime is faster)",
            format!("{} run", rt.name),
            a / rmin,
            b / rmed
        );
        let (a, b) = stats(&rt.lifecycle);
        println!(
            "ratio {:<34} min {:>6.2}x  median {:>6.2}x  (>1: berth-runtime is faster)",
            format!("{} create+start+delete", rt.name),
            a / lmin,
            b / lmed
        );
    }
    Ok(())
}
