//! Side by side with real peers: a bundle from `berth create --bundle-only`
//! runs under the real `crun` with the same output as `berth run`.

use std::process::Command;

use crate::common::*;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn crun_runs_berth_bundles_with_the_same_output() {
    assert!(
        have("crun"),
        "crun is not installed (make test installs it)"
    );
    let env = Env::with_busybox();
    let script = "echo out; echo err >&2; hostname; id; pwd; ls /; cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'; exit 4";
    let args = [
        "--hostname",
        "peer",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        script,
    ];
    let bundle = env.dir.path().join("bundle");
    let mut create = vec!["create", "--bundle-only", bundle.to_str().unwrap()];
    create.extend(args);
    env.berth(&create).ok();
    // crun 1.8 refuses the hybrid cgroup layout: hide the cgroup2 mount in a
    // private mount namespace, as DESIGN.md records.
    let name = format!("berth-peer-{}", std::process::id());
    let crun = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root {} run --bundle {} {name}",
            env.dir.path().join("crun").display(),
            bundle.display()
        ))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let mut run = vec!["run", "--rm"];
    run.extend(args);
    let berth = env.berth(&run);
    assert_eq!(
        crun.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&crun.stderr)
    );
    assert_eq!(berth.code, 4);
    assert_eq!(String::from_utf8_lossy(&crun.stdout), berth.stdout);
    assert_eq!(String::from_utf8_lossy(&crun.stderr), berth.stderr);
}
