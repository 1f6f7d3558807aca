//! Crashes at every named step (`BERTH_FAULT`, see berth-sandbox's
//! `fault`): afterwards `ps` tells the truth and `system reconcile` leaves
//! no mount, cgroup, network namespace, published port, QEMU or virtiofsd
//! of a container that does not run. Also: a full disk during import.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// `ps -a` agrees with the processes: "Up" only with a live process.
#[track_caller]
fn ps_is_truthful(env: &Env, step: &str) {
    let ps = env
        .berth(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Status}}"])
        .ok();
    for line in ps.stdout.lines() {
        let (id, status) = line.split_once(' ').unwrap();
        let pid: i64 = env
            .berth(&["inspect", "-f", "{{.State.Pid}}", id])
            .ok()
            .stdout
            .trim()
            .parse()
            .unwrap_or(0);
        if status.starts_with("Up") {
            assert!(
                pid > 0 && alive(pid),
                "after {step}: {line} but pid {pid} is dead"
            );
        }
    }
}

/// Processes whose command line names this test's directory.
fn processes_of(env: &Env, what: &str) -> Vec<String> {
    let dir = env.dir.path().display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&dir) && cmd.contains(what) {
            out.push(cmd);
        }
    }
    out
}

/// After `system reconcile`: nothing of a container that does not run.
#[track_caller]
fn nothing_left(env: &Env, step: &str) {
    env.berth(&["system", "reconcile"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ps = env
        .berth(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}"])
        .ok();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in ps.stdout.lines() {
        let (id, state) = line.split_once(' ').unwrap();
        if state == "running" {
            continue;
        }
        let dir = env.root().join("containers").join(id);
        let rootfs = dir.join("rootfs").display().to_string();
        // A created container keeps its rootfs mounted until it starts.
        let allowed = if state == "created" { 1 } else { 0 };
        let n = mounts.lines().filter(|l| l.contains(&rootfs)).count();
        assert!(n <= allowed, "after {step}: {id} ({state}) left {n} mounts");
        assert!(
            !Path::new("/sys/fs/cgroup/memory/berth").join(id).exists(),
            "after {step}: {id} ({state}) left its cgroup"
        );
        assert!(
            !env.dir.path().join("run/netns").join(id).exists(),
            "after {step}: {id} ({state}) left its network namespace"
        );
    }
    for what in ["qemu-system", "virtiofsd"] {
        while !processes_of(env, what).is_empty() {
            assert!(
                Instant::now() < deadline,
                "after {step}: {what} left: {:?}",
                processes_of(env, what)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `args` with the crash point `step`: it must abort there.
#[track_caller]
fn crash(env: &Env, step: &str, args: &[&str]) {
    let mut c = crate::vm::vm(env);
    c.env("BERTH_FAULT", step).args(args);
    let out = c.output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{step}: no crash");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("BERTH_FAULT={step}")),
        "{step} was never reached: {said}"
    );
}

#[test]
fn crashes_at_every_step_leave_truthful_records_and_nothing_behind() {
    let env = Env::with_busybox();
    let tar = busybox_tar();
    let steps: &[(&str, &[&str])] = &[
        (
            "run:created",
            &["run", "--name", "a1", "-p", "8181:80", "busybox", "true"],
        ),
        (
            "run:network",
            &["run", "--name", "a2", "-p", "8182:80", "busybox", "true"],
        ),
        (
            "run:started",
            &[
                "run", "--name", "a3", "-p", "8183:80", "busybox", "sleep", "1",
            ],
        ),
        (
            "start:network",
            &[
                "run", "-d", "--name", "b1", "-p", "8184:80", "busybox", "sleep", "30",
            ],
        ),
        (
            "start:spawned",
            &[
                "run", "-d", "--name", "b2", "-p", "8185:80", "busybox", "sleep", "30",
            ],
        ),
        (
            "start:recorded",
            &["run", "-d", "--name", "b3", "busybox", "sleep", "1"],
        ),
        ("import:stored", &["image", "import", tar.to_str().unwrap()]),
    ];
    for (step, args) in steps {
        crash(&env, step, args);
        ps_is_truthful(&env, step);
        nothing_left(&env, step);
    }
    // The foreground and detached containers whose command ended are
    // exited now, and nothing of theirs is left either.
    std::thread::sleep(Duration::from_millis(1200));
    ps_is_truthful(&env, "their exits");
    nothing_left(&env, "their exits");
    // rm crashed after the kill, or after the cleanup: rm again finishes.
    for step in ["rm:killed", "rm:cleaned"] {
        env.berth(&[
            "run", "-d", "--name", "r", "-p", "8190:80", "busybox", "sleep", "30",
        ])
        .ok();
        crash(&env, step, &["rm", "-f", "r"]);
        ps_is_truthful(&env, step);
        nothing_left(&env, step);
        env.berth(&["rm", "-f", "r"]).ok();
    }
    // Every record can still be removed, the image is still usable.
    for id in env.container_ids() {
        env.berth(&["rm", "-f", &id]).ok();
    }
    env.berth(&["run", "--rm", "busybox", "true"]).ok();
}

#[test]
fn vm_crashes_leave_no_qemu_and_truthful_records() {
    if !crate::vm::vms_available() {
        return;
    }
    let env = Env::with_busybox();
    for (i, step) in ["vm:prepared", "vm:qemu"].iter().enumerate() {
        crash(
            &env,
            step,
            &["run", "--rm", "--isolation", "vm", "busybox", "true"],
        );
        ps_is_truthful(&env, step);
        nothing_left(&env, step);
        // Detached, the host process's last words go nowhere (its monitor
        // never started): the run fails with one line instead.
        let name = format!("v{i}");
        let mut c = crate::vm::vm(&env);
        c.env("BERTH_FAULT", step).args([
            "run",
            "-d",
            "--name",
            &name,
            "--isolation",
            "vm",
            "busybox",
            "sleep",
            "30",
        ]);
        Run::from(c.output().unwrap())
            .fails_with("the VM's host process ended before the container started");
        ps_is_truthful(&env, step);
        nothing_left(&env, step);
    }
}

#[test]
fn a_full_disk_during_import_is_one_line_and_changes_nothing() {
    let env = Env::new();
    // The store on a filesystem too small for the image.
    let small = SmallFs::new(&env, "1600k");
    let berth = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("BERTH_ROOT", small.path.join("root")).args(args);
        Run::from(c.output().unwrap())
    };
    berth(&["images"]).ok();
    let before = small.files();
    let r = berth(&["image", "import", busybox_tar().to_str().unwrap()]);
    assert_ne!(r.code, 0, "the import fit: {}", r.stdout);
    r.fails_with("No space left on device");
    assert_eq!(small.files(), before, "a failed import changed the store");
    assert_eq!(berth(&["images", "-q"]).ok().stdout, "");
}

/// The sizes of a container's log files (`container.log*`).
fn log_bytes(env: &Env, name: &str) -> Vec<u64> {
    let id = env
        .berth(&["inspect", "-f", "{{.Id}}", name])
        .ok()
        .stdout
        .trim()
        .to_string();
    let dir = env.root().join("containers").join(id);
    let mut sizes: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .collect();
    sizes.sort();
    sizes
}

#[test]
fn output_floods_stay_within_the_log_limits() {
    let env = Env::with_busybox();
    let mut isolations = vec!["container"];
    if crate::vm::vms_available() {
        isolations.push("vm");
    }
    for iso in isolations {
        let name = format!("flood-{iso}");
        let mut c = crate::vm::vm(&env);
        c.args([
            "run",
            "-d",
            "--name",
            &name,
            "--isolation",
            iso,
            "--log-opt",
            "max-size=64k",
            "--log-opt",
            "max-file=3",
            "busybox",
            "sh",
            "-c",
            "yes flooding-the-host-disk",
        ]);
        Run::from(c.output().unwrap()).ok();
        // Until several rotations have happened.
        let deadline = Instant::now() + Duration::from_secs(60);
        while log_bytes(&env, &name).len() < 3 {
            assert!(Instant::now() < deadline, "{iso}: the log never rotated");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let sizes = log_bytes(&env, &name);
        assert!(sizes.len() <= 3, "{iso}: {sizes:?}");
        // A file may pass max-size by the line that crossed it.
        assert!(
            sizes.iter().all(|s| *s <= 64 * 1024 + 4096),
            "{iso}: {sizes:?}"
        );
        env.berth(&["rm", "-f", &name]).ok();
    }
}
