//! Bundles annotated `run.berth.isolation=vm`: berth-runtime runs them in
//! a microVM (QEMU under TCG here), behind the same OCI runtime interface,
//! for its own CLI and for podman. They need the guest kernel
//! (`scripts/install-guest-kernel.sh`, run by `make test`'s set-up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use berth_fixtures::{busybox_image, cached, Compression, Format, ImageSpec};
use serde_json::json;

use crate::common::*;

pub(crate) fn guest_release() -> Option<String> {
    std::fs::read_to_string("/var/lib/berth/vm/kernel/release")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The static agent, built once into `target/agent`, where a debug
/// berth-runtime looks first: podman does not pass our environment
/// (BERTH_AGENT) on to the runtime.
pub(crate) fn agent_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        if guest_release().is_none() {
            eprintln!("skipped: no guest kernel (scripts/install-guest-kernel.sh)");
            return false;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = root.join("target/agent");
        let st = Command::new(root.join("scripts/build-agent.sh"))
            .arg("--target-dir")
            .arg(&target)
            .stdin(Stdio::null())
            .status()
            .expect("running scripts/build-agent.sh");
        assert!(st.success(), "building the static berth-agent failed");
        true
    })
}

fn vm_annotation(spec: &mut serde_json::Value) {
    spec["annotations"] = json!({"run.berth.isolation": "vm"});
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(needle).then_some(c)
        })
        .collect()
}

#[test]
fn vm_bundle_boots_a_guest_and_follows_the_lifecycle() {
    if !agent_ready() {
        return;
    }
    let env = Env::new();
    let script = "echo started $(uname -r); echo written > /data/by-guest; \
                  trap 'echo bye; exit 3' TERM; while :; do sleep 0.1; done";
    let b = env.bundle("vm1", &["sh", "-c", script], vm_annotation);
    env.create("vm1", &b, &[]).ok();
    assert_eq!(env.status("vm1"), "created");
    // `start` returns once the workload runs in the guest.
    env.rt(&["start", "vm1"]).ok();
    assert_eq!(env.status("vm1"), "running");
    let guest = guest_release().unwrap();
    let e = env.rt(&["exec", "vm1", "sh", "-c", "uname -r; exit 4"]);
    assert_eq!(
        (e.code, e.stdout.trim()),
        (4, guest.as_str()),
        "{}",
        e.stderr
    );
    assert!(env
        .wait_file(&b.join("out"))
        .contains(&format!("started {guest}")));
    // The rootfs is the bundle's: what the guest writes is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.join("rootfs/data/by-guest").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest's file never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    env.rt(&["update", "--memory", "300000000", "vm1"])
        .fails_with(&["fixed while it runs"]);
    env.rt(&["kill", "vm1", "TERM"]).ok();
    env.wait_status("vm1", "stopped");
    assert!(std::fs::read_to_string(b.join("out"))
        .unwrap()
        .contains("bye"));
    env.rt(&["delete", "vm1"]).ok();
    let store = env.dir.path().display().to_string();
    assert_eq!(
        processes_naming(&store),
        Vec::<String>::new(),
        "QEMU or virtiofsd left"
    );
}

#[test]
fn vm_bundle_bad_input_is_one_line_and_leaves_nothing() {
    if !agent_ready() {
        return;
    }
    let env = Env::new();
    let small = env.bundle("small", &["true"], |s| {
        vm_annotation(s);
        s["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    });
    env.create("small", &small, &[])
        .fails_with(&["below the 128 MiB a guest needs"]);
    let missing = env.bundle("missing", &["/bin/nope"], vm_annotation);
    env.create("missing", &missing, &[]).ok();
    env.rt(&["start", "missing"])
        .fails_with(&["could not start", "nope"]);
    env.rt(&["delete", "--force", "missing"]).ok();
    assert_eq!(env.rt(&["list", "-q"]).ok().stdout, "");
    let store = env.dir.path().display().to_string();
    assert_eq!(
        processes_naming(&store),
        Vec::<String>::new(),
        "QEMU or virtiofsd left"
    );
}

fn fixture() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-fixtures");
    let spec = ImageSpec {
        format: Format::DockerSave,
        compression: Compression::None,
        ..ImageSpec::default()
    };
    cached(&dir, "rt-busybox-docker.tar", |p| busybox_image(&spec, p)).unwrap()
}

#[test]
fn podman_runs_microvms_with_berth_runtime() {
    if !agent_ready() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path();
    let podman = || {
        let mut c = env.podman();
        c.stdin(Stdio::null());
        c
    };
    let run = |c: &mut Command| Run::from(c.output().unwrap());
    run(podman().args(["load", "-q", "-i"]).arg(fixture())).ok();
    let vm = [
        "--network",
        "none",
        "--annotation",
        "run.berth.isolation=vm",
    ];
    let guest = guest_release().unwrap();
    let r = run(podman().args(["run", "--rm"]).args(vm).args([
        "busybox:latest",
        "sh",
        "-c",
        "uname -r; echo err >&2; exit 5",
    ]));
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), guest);
    assert!(r.stderr.contains("err"), "{}", r.stderr);
    let id = run(podman().args(["run", "-d", "--name", "v1"]).args(vm).args([
        "busybox:latest",
        "sh",
        "-c",
        "echo logged; trap 'exit 3' TERM; while :; do sleep 0.1; done",
    ]))
    .ok()
    .stdout
    .trim()
    .to_string();
    // Right after `run -d`: start waited for the guest.
    let e = run(podman().args(["exec", "v1", "sh", "-c", "uname -r; exit 4"]));
    assert_eq!(
        (e.code, e.stdout.trim()),
        (4, guest.as_str()),
        "{}",
        e.stderr
    );
    assert_eq!(run(podman().args(["logs", "v1"])).ok().stdout, "logged\n");
    run(podman().args(["stop", "-t", "10", "v1"])).ok();
    let st = run(podman().args(["inspect", "v1", "--format", "{{.State.ExitCode}}"])).ok();
    assert_eq!(st.stdout.trim(), "3");
    run(podman().args(["rm", "v1"])).ok();
    let _ = run(podman().args(["rm", "-af"]));
    // QEMU is named after the container; virtiofsd names podman's storage.
    let left = [
        processes_naming(&format!("berth-rt-{}", &id[..24])),
        processes_naming(&d.display().to_string()),
    ]
    .concat();
    assert_eq!(left, Vec::<String>::new(), "QEMU or virtiofsd left");
}
