//! Detached containers: the monitor, logs, stop/kill/start/restart/wait,
//! pause, rename, restart policies, events, and records that never lie.

use std::time::{Duration, Instant};

use crate::common::*;

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(env: &Env, name: &str) -> String {
    env.berth(&["inspect", "--format", "{{.State.Status}}", name])
        .stdout
        .trim()
        .to_string()
}

#[test]
fn run_detached_logs_stop_start() {
    let env = Env::with_busybox();
    let out = env
        .berth(&["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "echo started; echo oops >&2; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"])
        .ok();
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id:?}");
    assert_eq!(state(&env, "ticker"), "running");
    wait_for("log output", 10, || {
        env.berth(&["logs", "ticker"]).stdout.contains("started")
    });
    let logs = env.berth(&["logs", "ticker"]).ok();
    assert_eq!(logs.stdout, "started\n");
    assert_eq!(logs.stderr, "oops\n");
    let ts = env.berth(&["logs", "-t", "--tail", "1", "ticker"]).ok();
    // The last line is on stderr, as it was written.
    let ts = ts.stdout + &ts.stderr;
    assert!(
        ts.contains("Z ") && (ts.ends_with("started\n") || ts.ends_with("oops\n")),
        "{ts}"
    );
    // The log is Docker's json-file format.
    let raw = std::fs::read_to_string(
        env.root()
            .join("containers")
            .join(&id)
            .join("container.log"),
    )
    .unwrap();
    assert!(
        raw.lines()
            .any(|l| l.starts_with("{\"log\":\"started\\n\",\"stream\":\"stdout\",\"time\":\"")),
        "{raw}"
    );

    let ps = env.berth(&["ps"]).ok().stdout;
    assert!(ps.contains("ticker") && ps.contains("Up "), "{ps}");
    env.berth(&["stop", "ticker"]).ok();
    assert_eq!(state(&env, "ticker"), "exited");
    assert_eq!(
        env.berth(&["inspect", "--format", "{{.State.ExitCode}}", "ticker"])
            .stdout
            .trim(),
        "0"
    );
    assert!(env.berth(&["logs", "ticker"]).stdout.ends_with("bye\n"));
    // Start again: same container, new process, the log grows.
    env.berth(&["start", "ticker"]).ok();
    assert_eq!(state(&env, "ticker"), "running");
    wait_for("second start output", 10, || {
        env.berth(&["logs", "ticker"])
            .stdout
            .matches("started")
            .count()
            == 2
    });
    env.berth(&["kill", "ticker"]).ok();
    wait_for("kill to be recorded", 10, || {
        state(&env, "ticker") == "exited"
    });
    assert_eq!(
        env.berth(&["inspect", "--format", "{{.State.ExitCode}}", "ticker"])
            .stdout
            .trim(),
        "137"
    );
    env.berth(&["rm", "ticker"]).ok();
}

#[test]
fn stop_timeout_kills_a_process_that_ignores_the_signal() {
    let env = Env::with_busybox();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.1; done",
    ])
    .ok();
    let t = Instant::now();
    env.berth(&["stop", "-t", "1", "stubborn"]).ok();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        env.berth(&["inspect", "--format", "{{.State.ExitCode}}", "stubborn"])
            .stdout
            .trim(),
        "137"
    );
}

#[test]
fn wait_pause_rename_top_stats() {
    let env = Env::with_busybox();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "w",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 4",
    ])
    .ok();
    assert_eq!(env.berth(&["wait", "w"]).ok().stdout, "4\n");
    env.berth(&["rename", "w", "w2"]).ok();
    env.berth(&["inspect", "w"]).fails_with("no such object: w");
    env.berth(&[
        "run", "-d", "--name", "p", "--memory", "64m", "busybox", "sleep", "30",
    ])
    .ok();
    env.berth(&["pause", "p"]).ok();
    assert_eq!(state(&env, "p"), "paused");
    assert!(env.berth(&["ps"]).stdout.contains("(Paused)"));
    env.berth(&["unpause", "p"]).ok();
    assert_eq!(state(&env, "p"), "running");
    let top = env.berth(&["top", "p"]).ok().stdout;
    assert!(top.starts_with("UID") && top.contains("sleep 30"), "{top}");
    let stats = env.berth(&["stats", "--no-stream", "p"]).ok().stdout;
    assert!(
        stats.contains("/ 64MiB") && stats.contains(" p "),
        "{stats}"
    );
    env.berth(&["rm", "-f", "p", "w2"]).ok();
}

#[test]
fn restart_policies() {
    let env = Env::with_busybox();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 3",
    ])
    .ok();
    wait_for("two restarts then giving up", 20, || {
        state(&env, "flaky") == "exited"
            && env.berth(&["logs", "flaky"]).stdout.matches("try").count() == 3
    });
    assert_eq!(
        env.berth(&["inspect", "--format", "{{.RestartCount}}", "flaky"])
            .stdout
            .trim(),
        "2"
    );
    assert!(env.berth(&["ps", "-a"]).stdout.contains("(restarts: 2)"));
    env.berth(&[
        "run",
        "-d",
        "--name",
        "forever",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2; exit 0",
    ])
    .ok();
    wait_for("an always container to restart", 20, || {
        env.berth(&["inspect", "--format", "{{.RestartCount}}", "forever"])
            .stdout
            .trim()
            .parse::<i32>()
            .unwrap_or(0)
            >= 2
    });
    // A user's stop ends the restarts.
    env.berth(&["stop", "forever"]).ok();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(state(&env, "forever"), "exited");
}

#[test]
fn records_never_lie_after_a_killed_monitor_or_reboot() {
    let env = Env::with_busybox();
    env.berth(&["run", "-d", "--name", "victim", "busybox", "sleep", "60"])
        .ok();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "phoenix",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "60",
    ])
    .ok();
    // "Reboot": kill every process of these containers and their monitors.
    for name in ["victim", "phoenix"] {
        let v: serde_json::Value =
            serde_json::from_str(&env.berth(&["inspect", name]).ok().stdout).unwrap();
        let monitor = v[0]["State"]["MonitorPid"].as_i64().unwrap() as i32;
        let pid = v[0]["State"]["Pid"].as_i64().unwrap() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(monitor),
            nix::sys::signal::SIGKILL,
        );
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(env.dir.path().join("run"));
    wait_for("processes to die", 10, || {
        let ps = env.berth(&["ps"]).stdout;
        !ps.contains("victim")
    });
    let ps = env.berth(&["ps", "-a"]).ok().stdout;
    assert!(ps.contains("Exited (255)"), "{ps}");
    let err = env
        .berth(&["inspect", "--format", "{{.State.Error}}", "victim"])
        .stdout;
    assert!(err.contains("monitor is gone"), "{err}");
    let r = env.berth(&["system", "reconcile"]).ok().stdout;
    assert!(
        r.contains("restarted:") || state(&env, "phoenix") == "running",
        "{r}"
    );
    wait_for("phoenix to run again", 10, || {
        state(&env, "phoenix") == "running"
    });
    env.berth(&["rm", "-f", "victim", "phoenix"]).ok();
}

#[test]
fn events_are_recorded() {
    let env = Env::with_busybox();
    let since = berth_engine_now().to_string();
    env.berth(&["run", "--rm", "--name", "ev", "busybox", "true"])
        .ok();
    let until = (berth_engine_now() + 1).to_string();
    let out = env
        .berth(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=ev",
            "--format",
            "json",
        ])
        .ok()
        .stdout;
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["Action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["create", "start", "die", "destroy"]);
    env.berth(&["events", "--filter", "colour=red", "--until", "0"])
        .fails_with("invalid filter key");
}

fn berth_engine_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn bad_lifecycle_input() {
    let env = Env::with_busybox();
    env.berth(&["run", "-d", "--name", "dup", "busybox", "sleep", "30"])
        .ok();
    let before = env.snapshot();
    env.berth(&["run", "-d", "--name", "dup", "busybox", "true"])
        .fails_with("already in use");
    env.berth(&["stop", "nosuch"])
        .fails_with("no such container: nosuch");
    env.berth(&["kill", "nosuch"])
        .fails_with("no such container: nosuch");
    env.berth(&["logs", "nosuch"])
        .fails_with("no such container: nosuch");
    env.berth(&["kill", "-s", "SIGNOPE", "dup"])
        .fails_with("invalid signal \"SIGNOPE\"");
    env.berth(&["run", "-d", "--restart", "sometimes", "busybox", "true"])
        .fails_with("invalid restart policy");
    env.berth(&["run", "-d", "--log-opt", "colour=red", "busybox", "true"])
        .fails_with("unknown --log-opt");
    before.assert_same(&env.snapshot(), "bad lifecycle input");
    env.berth(&["rm", "-f", "dup"]).ok();
    env.berth(&["run", "--name", "stopped", "busybox", "true"])
        .ok();
    env.berth(&["unpause", "stopped"])
        .fails_with("is not paused");
}

#[test]
fn fifty_concurrent_runs_and_removals_stay_consistent() {
    let env = Env::with_busybox();
    let spawn_all = |args: &dyn Fn(usize) -> Vec<String>| {
        let children: Vec<_> = (0..50)
            .map(|i| {
                env.cmd()
                    .args(args(i))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    spawn_all(&|i| {
        vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            format!("c{i}"),
            "busybox".into(),
            "sleep".into(),
            "60".into(),
        ]
    });
    let running = env.berth(&["ps", "-q"]).ok().stdout.lines().count();
    assert_eq!(running, 50);
    spawn_all(&|i| vec!["rm".into(), "-f".into(), format!("c{i}")]);
    assert_eq!(env.berth(&["ps", "-aq"]).ok().stdout, "");
    wait_for("monitors to exit", 20, || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("berth-monitor.*{}", env.root().display())])
            .output()
            .unwrap();
        out.stdout.is_empty()
    });
}

#[test]
fn exec_joins_the_container() {
    let env = Env::with_busybox();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "box",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sh",
        "-c",
        "echo $$ > /init.pid; sleep 60",
    ])
    .ok();
    let out = env
        .berth(&["exec", "box", "sh", "-c", "echo $FROM_RUN; hostname; cat /init.pid; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"])
        .ok()
        .stdout;
    let host_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&env.berth(&["inspect", "box"]).ok().stdout).unwrap();
    let pid = v[0]["State"]["Pid"].as_i64().unwrap();
    let hostname = v[0]["Config"]["Hostname"].as_str().unwrap().to_string();
    assert_eq!(
        out,
        format!("1\n{hostname}\n1\nCapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n")
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        host_ns
    );
    // User, working directory, environment, exit code.
    let r = env.berth(&[
        "exec",
        "-u",
        "app",
        "-w",
        "/tmp",
        "-e",
        "X=2",
        "box",
        "sh",
        "-c",
        "id -un; pwd; echo $X; exit 9",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (9, "app\n/tmp\n2\n"));
    // stdin with -i.
    let mut child = env
        .cmd()
        .args(["exec", "-i", "box", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout),
        "PIPED\n"
    );
    // The exec'd process is in the container's cgroup.
    let r = env.berth(&["exec", "-d", "box", "sleep", "5"]).ok();
    assert_eq!(r.stdout, "");
    wait_for("the detached exec in top", 5, || {
        env.berth(&["top", "box"]).stdout.contains("sleep 5")
    });
    let r = env.berth(&["exec", "box", "nope"]);
    assert_eq!(r.code, 127);
    assert!(
        r.stderr.contains("executable file not found"),
        "{}",
        r.stderr
    );
    env.berth(&["stop", "-t", "0", "box"]).ok();
    env.berth(&["exec", "box", "true"])
        .fails_with("is not running");
}

#[test]
fn attach_forwards_input_and_output() {
    let env = Env::with_busybox();
    env.berth(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read a; read b; echo \"$a+$b\"; echo bye >&2; exit 6",
    ])
    .ok();
    let mut child = env
        .cmd()
        .args(["attach", "reader"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"x\ny\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x+y\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "bye\n");
    assert_eq!(out.status.code(), Some(6));
    env.berth(&["attach", "reader"])
        .fails_with("cannot attach to a stopped container");
}
