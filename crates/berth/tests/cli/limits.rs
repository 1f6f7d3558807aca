//! cgroup limits are enforced (v1, v2 or this host's hybrid layout).

use crate::common::*;

#[test]
fn memory_limit_kills_with_oom() {
    let env = Env::with_busybox();
    let r = env.berth(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "16m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(r.code, 137, "{}", r.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&env.berth(&["inspect", "hog"]).ok().stdout).unwrap();
    assert_eq!(v[0]["State"]["OOMKilled"], true);
    assert_eq!(v[0]["State"]["ExitCode"], 137);
    assert_eq!(v[0]["HostConfig"]["Memory"], 16 << 20);
    // Below the limit the same command is fine.
    env.berth(&[
        "run",
        "--rm",
        "--memory",
        "128m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=32M",
        "count=1",
    ])
    .ok();
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let env = Env::with_busybox();
    let out = env
        .berth(&[
            "run",
            "--rm",
            "--pids-limit",
            "12",
            "busybox",
            "sh",
            "-c",
            "bomb() { bomb | bomb & }; bomb; sleep 1; ps -o pid= | wc -l",
        ])
        .stdout;
    let n: usize = out
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(usize::MAX);
    assert!(n <= 12, "processes: {n}");
}

#[test]
fn cpu_quota_is_written() {
    let env = Env::with_busybox();
    // From inside, a busy loop for a while; from the host, the quota file.
    let mut child = env
        .cmd()
        .args([
            "run", "--name", "cpu", "--cpus", "0.5", "busybox", "sleep", "30",
        ])
        .spawn()
        .unwrap();
    let id = loop {
        if let Some(id) = env.container_ids().first() {
            break id.clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let v1 = format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_quota_us");
    let v2 = format!("/sys/fs/cgroup/berth/{id}/cpu.max");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let quota = loop {
        if let Ok(q) = std::fs::read_to_string(&v1).or_else(|_| std::fs::read_to_string(&v2)) {
            break q;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(quota.starts_with("50000"), "{quota}");
    env.berth(&["rm", "-f", "cpu"]).ok();
    child.wait().unwrap();
}
