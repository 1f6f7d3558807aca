//! The runc command line as containerd and podman drive it: create, start,
//! state, kill, delete, run, exec, ps, pause/resume, update, events.

use std::process::Stdio;

use serde_json::json;

use crate::common::*;

#[test]
fn create_start_state_kill_delete() {
    let env = Env::new();
    let script = "trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.1; done";
    let b = env.bundle("b", &["sh", "-c", script], |_| {});
    let pid_file = env.dir.path().join("pid");
    env.create("c1", &b, &["--pid-file", pid_file.to_str().unwrap()])
        .ok();
    let st = env.state("c1");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "c1");
    assert_eq!(st["bundle"], b.to_str().unwrap());
    assert_eq!(st["ociVersion"], "1.0.2");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(st["pid"].to_string(), pid);
    // Created: set up but not yet running the command.
    assert_eq!(std::fs::read_to_string(b.join("out")).unwrap(), "");
    env.rt(&["start", "c1"]).ok();
    assert_eq!(env.wait_file(&b.join("out")), "started\n");
    assert_eq!(env.status("c1"), "running");
    env.rt(&["start", "c1"])
        .fails_with(&["cannot start an already running container"]);
    let list = env.rt(&["list", "--format", "json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], "c1");
    env.rt(&["kill", "c1", "TERM"]).ok();
    env.wait_status("c1", "stopped");
    assert_eq!(
        std::fs::read_to_string(b.join("out")).unwrap(),
        "started\ngot-term\n"
    );
    assert_eq!(env.state("c1")["pid"], 0);
    env.rt(&["delete", "c1"]).ok();
    assert!(!env.root().join("c1").exists());
    env.rt(&["state", "c1"]).fails_with(&["does not exist"]);
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    let env = Env::new();
    let b = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; hostname; id -u; exit 3",
        ],
        |s| s["hostname"] = json!("rt-test"),
    );
    let r = Run::from(
        env.cmd()
            .args(["run", "--bundle"])
            .arg(&b)
            .arg("r1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "out\nrt-test\n0\n");
    assert_eq!(r.stderr, "err\n");
    assert!(!env.root().join("r1").exists());
    // --detach returns at once; --keep is implied by detach.
    let b2 = env.bundle("b2", &["sleep", "1000"], |_| {});
    let r = env
        .cmd()
        .args(["run", "-d", "--bundle"])
        .arg(&b2)
        .arg("r2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(r.success());
    assert_eq!(env.status("r2"), "running");
    env.rt(&["delete", "r2"])
        .fails_with(&["cannot delete container r2 that is not stopped: running"]);
    env.rt(&["delete", "--force", "r2"]).ok();
}

#[test]
fn exec_ps_pause_resume_update_events() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"], |s| {
        s["process"]["env"] = json!(["PATH=/bin", "FROM_SPEC=1"]);
        s["linux"]["resources"]["pids"] = json!({"limit": 50});
    });
    env.create("e1", &b, &[]).ok();
    env.rt(&["start", "e1"]).ok();
    let init = env.state("e1")["pid"].as_i64().unwrap();

    let r = env.rt(&[
        "exec",
        "--env",
        "X=42",
        "--cwd",
        "/tmp",
        "e1",
        "sh",
        "-c",
        "echo $X $FROM_SPEC $(pwd) $(hostname); cat /proc/1/cmdline; echo; exit 7",
    ]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(r.stdout, "42 1 /tmp berth\nsleep\u{0}1000\u{0}\n");
    // The exec'd process is in the container's cgroup namespace (its
    // cgroup is the namespace's root); `ps` below shows it in the cgroup.
    let r = env
        .rt(&["exec", "e1", "grep", "pids", "/proc/self/cgroup"])
        .ok();
    assert!(r.stdout.trim_end().ends_with(":pids:/"), "{}", r.stdout);
    let r = env.rt(&["exec", "--user", "1000:1000", "e1", "id"]).ok();
    assert_eq!(r.stdout.trim(), "uid=1000 gid=1000");
    env.rt(&["exec", "e1", "nosuch"])
        .fails_with(&["executable file not found in $PATH"]);
    assert_eq!(env.rt(&["exec", "e1", "nosuch"]).code, 127);

    // --process and --detach with --pid-file, as containerd calls it.
    let pf = env.dir.path().join("process.json");
    std::fs::write(
        &pf,
        json!({"args": ["sh", "-c", "echo detached > /tmp/d; sleep 1000"], "cwd": "/",
               "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}})
        .to_string(),
    )
    .unwrap();
    let epid = env.dir.path().join("exec.pid");
    // The detached process keeps its stdio: give it none of ours, as a pipe
    // would stay open (containerd passes fifos).
    let st = env
        .cmd()
        .args([
            "exec",
            "--process",
            pf.to_str().unwrap(),
            "--detach",
            "--pid-file",
        ])
        .arg(&epid)
        .arg("e1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let exec_pid: i64 = env.wait_file(&epid).trim().parse().unwrap();
    let r = env.rt(&["ps", "--format", "json", "e1"]).ok();
    let pids: Vec<i64> = serde_json::from_str(&r.stdout).unwrap();
    assert!(pids.contains(&init) && pids.contains(&exec_pid), "{pids:?}");
    let r = env.rt(&["ps", "e1"]).ok();
    assert!(
        r.stdout.starts_with("UID") || r.stdout.contains("PID"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("sleep 1000"), "{}", r.stdout);

    env.rt(&["pause", "e1"]).ok();
    assert_eq!(env.status("e1"), "paused");
    env.rt(&["exec", "e1", "true"]).fails_with(&["paused"]);
    env.rt(&["resume", "e1"]).ok();
    assert_eq!(env.status("e1"), "running");
    env.rt(&["resume", "e1"]).fails_with(&["not paused"]);

    let pids_max = |env: &Env| {
        env.cgroup_dirs()
            .iter()
            .map(|d| d.join("b/pids.max"))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
    };
    assert_eq!(pids_max(&env).as_deref(), Some("50"));
    env.rt(&["update", "--pids-limit", "77", "e1"]).ok();
    assert_eq!(pids_max(&env).as_deref(), Some("77"));

    let r = env.rt(&["events", "--stats", "e1"]).ok();
    let ev: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["data"]["pids"]["current"], 2);

    env.rt(&["kill", "--all", "e1", "KILL"]).ok();
    env.wait_status("e1", "stopped");
    env.rt(&["kill", "e1"])
        .fails_with(&["container not running"]);
    env.rt(&["delete", "e1"]).ok();
}

#[test]
fn exec_with_a_terminal_through_a_console_socket() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"], |_| {});
    env.create("t1", &b, &[]).ok();
    env.rt(&["start", "t1"]).ok();
    let sock_path = env.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let r = env.rt(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "t1",
        "sh",
        "-c",
        "tty; sleep 2",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (conn, _) = listener.accept().unwrap();
    let master = recv_fd(&conn);
    let mut out = String::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    while !out.contains('\n') {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(out.contains("/dev/pts/"), "{out}");
    env.rt(&["delete", "--force", "t1"]).ok();
}

/// Receives one descriptor over a unix socket (the console socket protocol).
pub fn recv_fd(conn: &std::os::unix::net::UnixStream) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            return berth_sandbox::sys::own_fd(fds[0]);
        }
    }
    panic!("no descriptor received");
}
