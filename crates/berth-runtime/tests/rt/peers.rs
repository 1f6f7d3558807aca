//! The real clients: podman, containerd (`ctr`) and Docker run their
//! containers with berth-runtime. Each test starts its own daemons with
//! private roots and sockets, and stops them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_fixtures::{busybox_image, cached, Compression, Format, ImageSpec};

use crate::common::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[track_caller]
fn require(tools: &[&str]) {
    for t in tools {
        assert!(
            have(t),
            "{t} is not installed (scripts/setup.sh installs it)"
        );
    }
}

fn fixture(name: &str, format: Format) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-fixtures");
    let spec = ImageSpec {
        format,
        compression: if format == Format::Oci {
            Compression::Gzip
        } else {
            Compression::None
        },
        ..ImageSpec::default()
    };
    cached(&dir, name, |p| busybox_image(&spec, p)).unwrap()
}

fn sh(cmd: &mut Command) -> Run {
    Run::from(cmd.stdin(Stdio::null()).output().unwrap())
}

/// Output of `cmd` run under a pseudo-terminal (`script`), for `-it`.
fn under_tty(cmd: &str) -> Run {
    sh(Command::new("script").args(["-qec", cmd, "/dev/null"]))
}

/// A daemon we started; SIGTERM (then SIGKILL) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(path: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "daemon did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unmounts whatever a daemon left mounted below `dir`.
fn unmount_below(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn podman_runs_execs_stops_and_limits_with_berth_runtime() {
    require(&["podman", "conmon", "script"]);
    let env = Env::new();
    let d = env.dir.path();
    let podman = || env.podman();
    let limits = [
        "--network",
        "none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
    ];
    sh(podman()
        .args(["load", "-q", "-i"])
        .arg(fixture("rt-busybox-docker.tar", Format::DockerSave)))
    .ok();

    let r = sh(podman().args(["run", "--rm"]).args(limits).args([
        "busybox:latest",
        "sh",
        "-c",
        "echo out; echo err >&2; id -u; exit 5",
    ]));
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert_eq!(r.stdout, "out\n0\n");
    assert!(r.stderr.contains("err"), "{}", r.stderr);

    let id = sh(podman()
        .args([
            "run",
            "-d",
            "--name",
            "p1",
            "--pids-limit",
            "55",
            "--memory",
            "32m",
        ])
        .args(limits)
        .args(["busybox:latest", "sh", "-c", "echo logged; sleep 1000"]))
    .ok()
    .stdout
    .trim()
    .to_string();
    let r = sh(podman().args([
        "exec",
        "p1",
        "sh",
        "-c",
        "echo in-exec; ps -o comm | grep -c sleep; exit 4",
    ]));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (4, "in-exec\n1\n"),
        "{}",
        r.stderr
    );
    let logs = sh(podman().args(["logs", "p1"])).ok();
    assert_eq!(logs.stdout, "logged\n");
    let read = |ctl: &str, file: &str| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/{ctl}/libpod_parent/libpod-{id}/{file}"
        ))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
    };
    if Path::new("/sys/fs/cgroup/pids").is_dir() {
        assert_eq!(read("pids", "pids.max"), "55");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432");
    }
    let base = format!(
        "podman --root {} --runroot {} --tmpdir {} --storage-driver overlay --cgroup-manager cgroupfs \
         --events-backend none --runtime {RT}",
        d.join("proot").display(), d.join("prun").display(), d.join("ptmp").display()
    );
    let r = under_tty(&format!("{base} exec -it p1 sh -c 'tty; exit 6'"));
    assert_eq!(r.code, 6, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("/dev/pts/"), "{}", r.stdout);
    sh(podman().args(["stop", "-t", "1", "p1"])).ok();
    sh(podman().args(["rm", "p1"])).ok();
    assert!(
        read("pids", "pids.max").is_empty(),
        "cgroup of p1 left behind"
    );

    // The short sleep: under CPU contention podman/conmon can miss the
    // output of a process that prints and exits within a millisecond.
    let r = under_tty(&format!(
        "{base} run -it --rm {} busybox:latest sh -c 'tty; sleep 0.2; exit 7'",
        limits.join(" ")
    ));
    assert_eq!(r.code, 7, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("/dev/pts/0"), "{}", r.stdout);
    let _ = sh(podman().args(["rm", "-af"]));
    // podman uses the default --root; none of our containers may be left.
    let left: Vec<String> = std::fs::read_dir(berth_runtime::DEFAULT_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("state.json")).ok())
        .filter(|s| s.contains(&d.display().to_string()))
        .collect();
    assert!(
        left.is_empty(),
        "podman's containers left in berth-runtime: {left:?}"
    );
}

#[test]
fn containerd_runs_and_execs_with_berth_runtime() {
    require(&["containerd", "ctr", "containerd-shim-runc-v2"]);
    let env = Env::new();
    let d = env.dir.path().join("ctd");
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("c.sock");
    let config = format!(
        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \
         \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \
         \"io.containerd.snapshotter.v1.aufs\"]\n\
         [grpc]\n  address = \"{0}/c.sock\"\n[ttrpc]\n  address = \"{0}/c.sock.ttrpc\"\n",
        d.display()
    );
    std::fs::write(d.join("config.toml"), config).unwrap();
    let log = d.join("containerd.log");
    let daemon = Daemon(
        Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock, &log);
    // A namespace of our own: the shim keeps its runtime root (--root of
    // berth-runtime) in /run/containerd/runc/<namespace>.
    let ns = format!("berth-rt-{}", std::process::id());
    let ctr = || {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&sock).arg("--namespace").arg(&ns);
        c
    };
    sh(ctr()
        .args(["image", "import"])
        .arg(fixture("rt-busybox-oci.tar", Format::Oci)))
    .ok();
    let id = |n: &str| format!("berth-rt-{n}-{}", std::process::id());

    let r = sh(ctr()
        .args([
            "run",
            "--runc-binary",
            RT,
            "--rm",
            "busybox:latest",
            &id("a"),
        ])
        .args(["sh", "-c", "echo hello from ctr; exit 3"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "hello from ctr\n");
    // The same through the annotation that picks a microVM.
    if crate::vm::agent_ready() {
        let r = sh(ctr()
            .args(["run", "--runc-binary", RT, "--rm"])
            .args(["--annotation", "run.berth.isolation=vm"])
            .args(["busybox:latest", &id("vm")])
            .args(["sh", "-c", "uname -r; exit 3"]));
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert_eq!(
            Some(r.stdout.trim().to_string()),
            crate::vm::guest_release()
        );
    }

    let b = id("b");
    sh(ctr().args([
        "run",
        "-d",
        "--runc-binary",
        RT,
        "busybox:latest",
        &b,
        "sleep",
        "1000",
    ]))
    .ok();
    let r = sh(ctr().args([
        "task",
        "exec",
        "--exec-id",
        "e1",
        &b,
        "sh",
        "-c",
        "echo in-exec; exit 6",
    ]));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (6, "in-exec\n"),
        "{}",
        r.stderr
    );
    let ps = sh(ctr().args(["task", "ps", &b])).ok();
    assert_eq!(ps.stdout.lines().count(), 2, "{}", ps.stdout);
    sh(ctr().args(["task", "pause", &b])).ok();
    assert!(sh(ctr().args(["task", "ls"]))
        .ok()
        .stdout
        .contains("PAUSED"));
    sh(ctr().args(["task", "resume", &b])).ok();
    sh(ctr().args(["task", "kill", "-s", "SIGKILL", &b])).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sh(ctr().args(["task", "ls"])).stdout.contains("STOPPED") {
        assert!(Instant::now() < deadline, "task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(ctr().args(["task", "delete", &b])).ok();
    sh(ctr().args(["container", "delete", &b])).ok();
    assert!(!Path::new("/run/containerd/runc")
        .join(&ns)
        .join(&b)
        .exists());
    let _ = sh(ctr().args(["image", "rm", "busybox:latest"]));
    drop(daemon);
    unmount_below(env.dir.path());
    // containerd puts containers in /<namespace>/<id>: ours are gone, so
    // the namespace's group and runtime root are empty now.
    for root in cgroup_roots() {
        let _ = std::fs::remove_dir(root.join(&ns));
    }
    let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&ns));
}

#[test]
fn docker_runs_with_berth_runtime() {
    require(&["dockerd", "docker", "containerd"]);
    let env = Env::new();
    let d = env.dir.path().join("dk");
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("docker.sock");
    let log = d.join("dockerd.log");
    // A second runtime entry for microVMs: this dockerd (API 1.41) cannot
    // pass annotations, so the runtime gets `--isolation=vm` instead.
    let conf = d.join("daemon.json");
    let runtimes = serde_json::json!({"runtimes": {"berth-vm": {"path": RT, "runtimeArgs": ["--isolation=vm"]}}});
    std::fs::write(&conf, runtimes.to_string()).unwrap();
    let daemon = Daemon(
        Command::new("dockerd")
            .arg("--config-file")
            .arg(&conf)
            .arg(format!("--add-runtime=berth={RT}"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&sock, &log);
    let docker = || {
        let mut c = Command::new("docker");
        c.arg("--host").arg(format!("unix://{}", sock.display()));
        c
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sh(docker().arg("version")).code != 0 {
        assert!(Instant::now() < deadline, "dockerd does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    sh(docker()
        .args(["load", "-i"])
        .arg(fixture("rt-busybox-docker.tar", Format::DockerSave)))
    .ok();
    let r = sh(docker()
        .args([
            "run",
            "--runtime",
            "berth",
            "--rm",
            "--network",
            "none",
            "busybox:latest",
        ])
        .args(["sh", "-c", "echo hi from docker; id -u; exit 3"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "hi from docker\n0\n");
    if crate::vm::agent_ready() {
        let r = sh(docker()
            .args(["run", "--runtime", "berth-vm", "--rm", "--network", "none"])
            .args(["busybox:latest", "sh", "-c", "uname -r; exit 3"]));
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert_eq!(
            Some(r.stdout.trim().to_string()),
            crate::vm::guest_release()
        );
    }

    sh(docker()
        .args([
            "run",
            "-d",
            "--name",
            "d1",
            "--runtime",
            "berth",
            "--network",
            "none",
        ])
        .args(["--memory", "64m", "busybox:latest", "sleep", "1000"]))
    .ok();
    let r = sh(docker().args(["exec", "d1", "sh", "-c", "echo in-exec; exit 2"]));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (2, "in-exec\n"),
        "{}",
        r.stderr
    );
    // Docker maps a failed exec to 126, with runc as with berth-runtime.
    let r = sh(docker().args(["exec", "d1", "nosuch"]));
    assert_eq!(r.code, 126, "{}", r.stderr);
    assert!(
        (r.stdout.clone() + &r.stderr).contains("executable file not found"),
        "{}",
        r.stderr
    );
    sh(docker().args(["stop", "-t", "1", "d1"])).ok();
    sh(docker().args(["rm", "d1"])).ok();
    drop(daemon);
    unmount_below(env.dir.path());
}
