//! `berth run` as Docker users expect it: stdio, exit codes, signals, the
//! image config and the run flags.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_fixtures::ImageSpec;

use crate::common::*;

#[test]
fn exit_codes_and_missing_command() {
    let env = Env::with_busybox();
    assert_eq!(
        env.berth(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
            .code,
        3
    );
    let r = env.berth(&["run", "--rm", "busybox", "nope"]);
    assert_eq!(r.code, 127);
    assert!(
        r.stderr
            .contains("exec: \"nope\": executable file not found in $PATH"),
        "{}",
        r.stderr
    );
    let r = env.berth(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(r.code, 126, "{}", r.stderr);
    assert!(env.container_ids().is_empty(), "--rm left a record");
}

#[test]
fn stdio_is_passed_through() {
    let env = Env::with_busybox();
    let mut child = env
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "tr a-z A-Z; echo err >&2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Without -i the container's stdin is empty.
    let r = env.berth(&["run", "--rm", "busybox", "cat"]).ok();
    assert_eq!(r.stdout, "");
}

#[test]
fn signals_are_forwarded() {
    let env = Env::with_busybox();
    let mut child = env
        .cmd()
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(42));
}

#[test]
fn tty_has_window_size() {
    let env = Env::with_busybox();
    let cmd = format!(
        "stty rows 33 cols 101; BERTH_ROOT={} BERTH_RUN_ROOT={} nsenter --net={} {BERTH} run --rm -it busybox sh -c 'tty; stty size; exit 5'",
        env.root().display(),
        env.dir.path().join("run").display(),
        env.netns().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("33 101"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}

#[test]
fn image_config_is_applied_like_docker() {
    let env = Env::new();
    let spec = ImageSpec {
        name: "cfg:latest".into(),
        entrypoint: Some(vec!["/bin/echo".into(), "entry".into()]),
        cmd: Some(vec!["default-cmd".into()]),
        env: vec!["PATH=/usr/bin:/bin".into(), "FROM_IMAGE=yes".into()],
        workdir: Some("/home/app".into()),
        user: Some("app".into()),
        ..ImageSpec::default()
    };
    let tar = image_tar("cfg.tar", spec);
    env.berth(&["image", "import", tar.to_str().unwrap()]).ok();
    assert_eq!(
        env.berth(&["run", "--rm", "cfg"]).ok().stdout,
        "entry default-cmd\n"
    );
    assert_eq!(
        env.berth(&["run", "--rm", "cfg", "mine"]).ok().stdout,
        "entry mine\n"
    );
    let out = env
        .berth(&[
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            "cfg",
            "-c",
            "id -un; pwd; echo $FROM_IMAGE $PATH $HOME",
        ])
        .ok()
        .stdout;
    assert_eq!(out, "app\n/home/app\nyes /usr/bin:/bin /home/app\n");
}

#[test]
fn run_flags() {
    let env = Env::with_busybox();
    let envfile = env.dir.path().join("env.list");
    std::fs::write(&envfile, "# comment\nFROM_FILE=1\nOVERRIDE=file\n").unwrap();
    let out = env
        .cmd()
        .env("HOST_VAR", "from-host")
        .args([
            "run",
            "--rm",
            "--env-file",
            envfile.to_str().unwrap(),
            "-e",
            "OVERRIDE=flag",
            "-e",
            "HOST_VAR",
            "-w",
            "/work/dir",
            "-u",
            "1000:2000",
            "--hostname",
            "box",
            "busybox",
            "sh",
            "-c",
            "echo $FROM_FILE $OVERRIDE $HOST_VAR; pwd; id -u; id -g; hostname; cat /etc/hostname",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 flag from-host\n/work/dir\n1000\n2000\nbox\nbox\n"
    );

    // Volumes: rw and ro; tmpfs; read-only rootfs.
    let vol = env.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("in"), "host-data\n").unwrap();
    let rw = format!("{}:/mnt/rw", vol.display());
    let ro = format!("{}:/mnt/ro:ro", vol.display());
    let out = env
        .berth(&[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/scratch",
            "-v",
            &rw,
            "-v",
            &ro,
            "busybox",
            "sh",
            "-c",
            "cat /mnt/ro/in; echo out > /mnt/rw/out; touch /mnt/ro/x 2>/dev/null || echo ro-ok; \
             touch /x 2>/dev/null || echo rootfs-ro; echo t > /scratch/t && cat /scratch/t",
        ])
        .ok()
        .stdout;
    assert_eq!(out, "host-data\nro-ok\nrootfs-ro\nt\n");
    assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "out\n");
}

#[test]
fn ps_inspect_and_rm_of_a_running_container() {
    let env = Env::with_busybox();
    let mut child = env
        .cmd()
        .args([
            "run",
            "--name",
            "sleeper",
            "busybox",
            "sh",
            "-c",
            "echo inside > /marker; sleep 30",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let inspect = loop {
        let r = env.berth(&["inspect", "sleeper"]);
        if r.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            let rootfs = v[0]["Rootfs"].as_str().unwrap().to_string();
            if v[0]["State"]["Running"] == true
                && std::path::Path::new(&rootfs).join("marker").exists()
            {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "container did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let c = &inspect[0];
    assert_eq!(c["Name"], "/sleeper");
    // The host sees inside the container: its PID and its files.
    let pid = c["State"]["Pid"].as_i64().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with("sleep\u{0}30") || cmdline.starts_with("sh\0-c"),
        "{cmdline:?}"
    );
    let rootfs = c["Rootfs"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{rootfs}/marker")).unwrap(),
        "inside\n"
    );
    let ps = env.berth(&["ps"]).ok().stdout;
    assert!(ps.contains("sleeper") && ps.contains("Up "), "{ps}");
    env.berth(&["rm", "sleeper"])
        .fails_with("stop it first or use -f");
    env.berth(&["rm", "-f", "sleeper"]).ok();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert_eq!(env.berth(&["ps", "-aq"]).ok().stdout, "");
}

#[test]
fn exited_containers_stay_until_removed() {
    let env = Env::with_busybox();
    env.berth(&["run", "--name", "done", "busybox", "sh", "-c", "exit 7"]);
    let ps = env.berth(&["ps", "-a"]).ok().stdout;
    assert!(ps.contains("Exited (7)"), "{ps}");
    assert_eq!(env.berth(&["ps"]).ok().stdout.lines().count(), 1);
    env.berth(&["run", "--name", "done", "busybox", "true"])
        .fails_with("is already in use");
    env.berth(&["rm", "done"]).ok();
}
