//! `--isolation vm`: the same image and command in a microVM with its own
//! kernel (QEMU under TCG here). Each test boots one VM where it can; a VM
//! start is about a second from a snapshot, two to three when booting.
//!
//! They need the guest kernel (`scripts/install-guest-kernel.sh`, run by
//! `make test`'s set-up) and QEMU; without them they say so and pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_fixtures::ImageSpec;

use crate::common::*;

pub(crate) fn vm_dir() -> PathBuf {
    std::env::var_os("BERTH_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/berth/vm"))
}

pub(crate) fn guest_release() -> Option<String> {
    std::fs::read_to_string(vm_dir().join("kernel/release"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The static agent, built once per test run (incrementally) into its own
/// target directory.
fn agent() -> &'static Path {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = root.join("target/agent");
        let status = Command::new(root.join("scripts/build-agent.sh"))
            .arg("--target-dir")
            .arg(&target)
            .stdin(Stdio::null())
            .status()
            .expect("running scripts/build-agent.sh");
        assert!(status.success(), "building the static berth-agent failed");
        target.join("x86_64-unknown-linux-gnu/debug/berth-agent")
    })
}

/// Whether VMs can run here; if not, the reason is printed.
pub(crate) fn vms_available() -> bool {
    if guest_release().is_none() {
        eprintln!("skipped: no guest kernel (scripts/install-guest-kernel.sh)");
        return false;
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return false;
    }
    true
}

pub(crate) fn vm(env: &Env) -> Command {
    let mut c = env.cmd();
    c.env("BERTH_AGENT", agent());
    c
}

pub(crate) fn run(c: &mut Command, args: &[&str]) -> Run {
    Run::from(c.args(args).output().unwrap())
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

pub(crate) fn inspect(env: &Env, name: &str, fmt: &str) -> String {
    env.berth(&["inspect", name, "--format", fmt])
        .ok()
        .stdout
        .trim()
        .to_string()
}

fn wait_exited(env: &Env, name: &str) {
    let start = Instant::now();
    while inspect(env, name, "{{.State.Status}}") != "exited" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes whose command line names `needle` (QEMU names the disks of
/// this test's store).
pub(crate) fn processes_naming(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// QEMU processes of container `id` (named `berth-ID12`).
pub(crate) fn qemu_pids(id: &str) -> Vec<i32> {
    let name = format!("berth-{}", &id[..12]);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&name))
                .unwrap_or(false)
        })
        .collect()
}

/// Builds the per-image disk and the writable-disk template (caches, like
/// the image store) so that store comparisons see only what a run leaves.
pub(crate) fn warm_caches(env: &Env) {
    let id = run(
        &mut vm(env),
        &["create", "--isolation", "vm", "busybox", "true"],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    run(&mut vm(env), &["start", "-a", &id]).ok();
    env.berth(&["rm", &id]).ok();
}

pub(crate) fn run_dir(env: &Env, id: &str) -> PathBuf {
    env.dir.path().join("run/vm").join(&id[..12])
}

#[test]
fn vm_has_its_own_kernel_and_only_the_workload() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    // ps writes to a file: in a pipe, the next command may not exist yet.
    let script = "uname -r; ps -o comm= > ps.txt; tr '\\n' ' ' < ps.txt; echo; echo $FOO; pwd; id -u; exit 3";
    let out = run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "-u",
            "1000",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], guest_release().unwrap(), "{}", out.stdout);
    assert_ne!(lines[0], host_release());
    // sh and ps: nothing of the guest's or the host's.
    assert_eq!(lines[1].trim(), "sh ps", "{}", out.stdout);
    assert_eq!(&lines[2..], ["bar", "/tmp", "1000"]);
    let c = env.berth(&["run", "--rm", "busybox", "uname", "-r"]).ok();
    assert_eq!(
        c.stdout.trim(),
        host_release(),
        "a container shares the host's kernel"
    );
}

#[test]
fn vm_file_is_not_a_host_file() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let name = format!("mydummytestfile-{}.txt", std::process::id());
    let write = format!("echo secret > /{name}");
    for iso in ["container", "vm"] {
        run(
            &mut vm(&env),
            &[
                "run",
                "--name",
                iso,
                "--isolation",
                iso,
                "busybox",
                "sh",
                "-c",
                &write,
            ],
        )
        .ok();
    }
    let mut found = Vec::new();
    find(&env.dir.path().to_path_buf(), &name, &mut found);
    let cid = inspect(&env, "container", "{{.Id}}");
    let vid = inspect(&env, "vm", "{{.Id}}");
    assert!(
        found.iter().any(|p| p.contains(&cid)),
        "the container's file is on the host: {found:?}"
    );
    assert!(
        !found.iter().any(|p| p.contains(&vid)),
        "the VM's file is on the host: {found:?}"
    );
    // The VM's writable disk keeps it across a restart.
    let again = run(&mut vm(&env), &["start", "-a", "vm"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let cat = format!("cat /{name}");
    let c = vm(&env)
        .args([
            "run",
            "--rm",
            "--isolation",
            "vm",
            "busybox",
            "sh",
            "-c",
            &cat,
        ])
        .output()
        .unwrap();
    assert_ne!(
        c.status.code(),
        Some(0),
        "a new VM must not see another's file"
    );
}

fn find(dir: &PathBuf, name: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_str() == Some(name) {
            out.push(p.display().to_string());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find(&p, name, out);
        }
    }
}

#[test]
fn vm_detached_exec_stats_stop() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let script = "echo started; trap 'echo bye; exit 7' TERM; while :; do sleep 0.1; done";
    let id = run(
        &mut vm(&env),
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--isolation",
            "vm",
            "--memory",
            "256m",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    assert_eq!(inspect(&env, "web", "{{.Isolation}}"), "vm");
    let ps = env.berth(&["ps"]).ok().stdout;
    assert!(ps.contains("web") && ps.contains(" vm"), "{ps}");
    let e = run(
        &mut vm(&env),
        &["exec", "web", "sh", "-c", "echo in-vm; uname -r; exit 4"],
    );
    assert_eq!(e.code, 4, "{}", e.stderr);
    assert_eq!(e.stdout, format!("in-vm\n{}\n", guest_release().unwrap()));
    run(&mut vm(&env), &["exec", "web", "nope"]).fails_with("executable file not found");
    let stats = env
        .berth(&["stats", "--no-stream", "--format", "json", "web"])
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(stats.lines().next().unwrap()).unwrap();
    // Measured in the guest: its limit is the guest's RAM as the guest sees
    // it (a bit under the 256 MiB asked for).
    let usage = v["MemUsage"].as_str().unwrap_or("").to_string();
    let limit: f64 = usage
        .split(" / ")
        .nth(1)
        .and_then(|l| l.strip_suffix("MiB"))
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    assert!(limit > 150.0 && limit < 256.0, "{stats}");
    assert!(!qemu_pids(&id).is_empty());
    // The guest's processes, not the VMM's.
    let top = env.berth(&["top", "web"]).ok().stdout;
    assert!(
        top.starts_with("UID ") && top.contains("sh -c echo started"),
        "{top}"
    );
    assert!(!top.contains("qemu") && !top.contains("__vm"), "{top}");
    env.berth(&["stop", "-t", "10", "web"]).ok();
    assert_eq!(env.berth(&["wait", "web"]).ok().stdout.trim(), "7");
    let logs = env.berth(&["logs", "web"]).ok().stdout;
    assert_eq!(logs, "started\nbye\n");
    assert!(qemu_pids(&id).is_empty(), "QEMU outlived its container");
    assert!(!run_dir(&env, &id).exists());
    env.berth(&["rm", "web"]).ok();
}

#[test]
fn vm_killed_vmm_is_recorded_with_a_reason() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let id = run(
        &mut vm(&env),
        &[
            "run",
            "-d",
            "--name",
            "k",
            "--isolation",
            "vm",
            "busybox",
            "sleep",
            "60",
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    for pid in qemu_pids(&id) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    wait_exited(&env, "k");
    assert_eq!(inspect(&env, "k", "{{.State.ExitCode}}"), "137");
    let err = inspect(&env, "k", "{{.State.Error}}");
    assert!(err.contains("killed by signal 9"), "{err}");
    assert!(!run_dir(&env, &id).exists());
}

#[test]
fn vm_guest_panic_is_recorded_and_logged() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    run(
        vm(&env).env("BERTH_VM_KERNEL_ARGS", "berth.test=panic"),
        &[
            "run",
            "-d",
            "--name",
            "p",
            "--isolation",
            "vm",
            "busybox",
            "sleep",
            "60",
        ],
    )
    .ok();
    wait_exited(&env, "p");
    let err = inspect(&env, "p", "{{.State.Error}}");
    assert!(err.contains("guest kernel crashed (kernel panic)"), "{err}");
    let logs = env.berth(&["logs", "p"]).ok();
    assert!(
        logs.stdout.contains("Kernel panic") || logs.stderr.contains("Kernel panic"),
        "{}",
        logs.stderr
    );
}

#[test]
fn vm_unresponsive_agent_times_out_and_leaves_nothing() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    warm_caches(&env);
    let before = env.snapshot();
    let start = Instant::now();
    run(
        vm(&env)
            .env("BERTH_VM_KERNEL_ARGS", "berth.test=hang")
            .env("BERTH_VM_BOOT_TIMEOUT", "5"),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "--name",
            "hang",
            "busybox",
            "true",
        ],
    )
    .fails_with("did not answer within 5 s");
    assert!(start.elapsed() < Duration::from_secs(30));
    env.snapshot().assert_same(&before, "a VM whose agent hung");
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path().join("run/vm"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let store = env.dir.path().display().to_string();
    assert!(processes_naming(&store).is_empty(), "QEMU is still running");
}

#[test]
fn vm_bad_input_is_one_line_and_leaves_nothing() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    warm_caches(&env);
    let before = env.snapshot();
    run(
        vm(&env).env("BERTH_VM_DIR", env.dir.path().join("nothing")),
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
    )
    .fails_with("install-guest-kernel.sh");
    run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-m",
            "64m",
            "busybox",
            "true",
        ],
    )
    .fails_with("below the 128MiB");
    run(
        &mut vm(&env),
        &["run", "--rm", "--isolation", "tent", "busybox", "true"],
    )
    .fails_with("invalid isolation");
    env.snapshot().assert_same(&before, "refused VM runs");
    let missing = run(
        &mut vm(&env),
        &["run", "--rm", "--isolation", "vm", "busybox", "nope"],
    );
    assert_eq!(missing.code, 127, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("executable file not found"),
        "{}",
        missing.stderr
    );
    env.snapshot()
        .assert_same(&before, "a VM whose command is missing");
    // A guest that cannot boot (no init: the kernel panics).
    run(
        vm(&env).env("BERTH_VM_KERNEL_ARGS", "rdinit=/nope"),
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
    )
    .fails_with("guest kernel crashed while booting");
    env.snapshot().assert_same(&before, "a VM that cannot boot");
    let store = env.dir.path().display().to_string();
    assert!(processes_naming(&store).is_empty(), "QEMU is still running");
}

#[test]
fn vm_is_the_default_by_label_or_config_file() {
    if !vms_available() {
        return;
    }
    let env = Env::new();
    let mut spec = ImageSpec {
        name: "vmdefault:latest".into(),
        ..ImageSpec::default()
    };
    spec.labels
        .insert("run.berth.isolation".into(), "vm".into());
    env.berth(&[
        "image",
        "import",
        image_tar("vmdefault.tar", spec).to_str().unwrap(),
    ])
    .ok();
    env.berth(&["image", "import", busybox_tar().to_str().unwrap()])
        .ok();
    let out = run(&mut vm(&env), &["run", "--rm", "vmdefault", "uname", "-r"]).ok();
    assert_eq!(out.stdout.trim(), guest_release().unwrap());
    let out = run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "container",
            "vmdefault",
            "uname",
            "-r",
        ],
    )
    .ok();
    assert_eq!(out.stdout.trim(), host_release());
    let cfg = env.dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"defaultIsolation": "vm"}"#).unwrap();
    let info = run(vm(&env).env("BERTH_CONFIG", &cfg), &["info"])
        .ok()
        .stdout;
    assert!(info.contains("default: vm"), "{info}");
    assert!(
        info.contains("MicroVM accelerator: TCG") || info.contains("MicroVM accelerator: KVM"),
        "{info}"
    );
    let out = run(
        vm(&env).env("BERTH_CONFIG", &cfg),
        &["run", "--name", "d", "busybox", "true"],
    )
    .ok();
    assert_eq!(out.code, 0);
    assert_eq!(inspect(&env, "d", "{{.Isolation}}"), "vm");
}

#[test]
fn vm_tty_has_window_size() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let cmd = format!(
        "stty rows 33 cols 101; BERTH_AGENT={} BERTH_VM_CACHE={} BERTH_ROOT={} BERTH_RUN_ROOT={} nsenter --net={} {BERTH} run --rm -it --isolation vm busybox sh -c 'tty; stty size; exit 5'",
        agent().display(),
        vm_cache_dir().display(),
        env.root().display(),
        env.dir.path().join("run").display(),
        env.netns().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("33 101"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}

/// The note a traced VM start prints: how it started.
fn start_note(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("berth-vm: restored from") || l.starts_with("berth-vm: booted"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn vm_snapshot_is_stable_and_inspect_says_how_it_started() {
    if !vms_available() {
        return;
    }
    // The roots are in a 0700 directory the VM's uid cannot enter: QEMU
    // must not need to (it once reopened disks by path while restoring).
    let env = Env::with_busybox();
    let first = run(
        vm(&env).env("BERTH_VM_TRACE", "1"),
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
    )
    .ok();
    let note = start_note(&first.stderr);
    assert!(
        note.starts_with("berth-vm: restored from"),
        "{}",
        first.stderr
    );
    // The same binary named by a relative path finds the same snapshot.
    let bin = Path::new(BERTH);
    let absolute = vm(&env);
    let mut relative = Command::new("nsenter");
    relative
        .args(absolute.get_args().take(1))
        .arg("./berth")
        .envs(absolute.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("BERTH_VM_TRACE", "1")
        .current_dir(bin.parent().unwrap())
        .stdin(Stdio::null());
    let second = run(
        &mut relative,
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
    )
    .ok();
    assert_eq!(start_note(&second.stderr), note, "{}", second.stderr);
    run(
        &mut vm(&env),
        &[
            "run",
            "-d",
            "--name",
            "d",
            "--isolation",
            "vm",
            "busybox",
            "sleep",
            "60",
        ],
    )
    .ok();
    let how = inspect(&env, "d", "{{.VM.Start}}");
    assert_eq!(format!("berth-vm: {how}"), note);
    env.berth(&["rm", "-f", "d"]).ok();
}
