//! The escape-regression suite: each known runtime escape, run for real
//! against `berth run`, `run -d`, restarts and `exec`; each must be blocked
//! with a one-line error and leave the host unchanged.

use std::path::Path;
use std::process::Command;

use berth_fixtures::attack::{binary_of, with_open_fds};

use crate::common::*;

/// A host directory with a secret in it, to be reached through a leaked fd.
fn secret_dir(env: &Env) -> std::path::PathBuf {
    let d = env.dir.path().join("secret");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("f"), "host-secret\n").unwrap();
    d
}

/// The shell's own descriptors: 0-2 and the one its glob reads the
/// directory with (3 when nothing else is open).
const LIST_FDS: &str = "cd /proc/self/fd && echo *";

#[test]
fn cve_2024_21626_caller_fds_never_reach_a_container() {
    let env = Env::with_busybox();
    let secret = secret_dir(&env);
    let run = |args: &[&str]| {
        let mut c = env.cmd();
        c.args(args);
        Run::from(with_open_fds(c, &secret).output().unwrap())
    };
    // Foreground run: nothing but 0-2.
    let out = run(&["run", "--rm", "busybox", "sh", "-c", LIST_FDS]).ok();
    assert_eq!(out.stdout.trim(), "0 1 2 3", "fds leaked into run");
    // -w /proc/self/fd/N for every N the caller holds open: refused, one line.
    for n in 3..=30 {
        let w = format!("/proc/self/fd/{n}");
        let r = run(&["run", "--rm", "-w", &w, "busybox", "cat", "f"]);
        assert!(!r.stdout.contains("host-secret"), "-w {w} escaped");
        assert_eq!(r.code, 125, "-w {w}: {} {}", r.stdout, r.stderr);
        r.fails_with("working directory");
    }
    // Detached: the container's PID 1, a restarted life, and exec.
    run(&["run", "-d", "--name", "d", "busybox", "sleep", "300"]).ok();
    let init = env.berth(&["exec", "d", "sh", "-c", "ls /proc/1/fd | tr '\\n' ' '"]);
    assert_eq!(init.ok().stdout.trim(), "0 1 2");
    let out = run(&["exec", "d", "sh", "-c", LIST_FDS]).ok();
    assert_eq!(out.stdout.trim(), "0 1 2 3", "fds leaked into exec");
    for n in [3, 7, 30] {
        let w = format!("/proc/self/fd/{n}");
        let r = run(&["exec", "-w", &w, "d", "cat", "f"]);
        assert!(!r.stdout.contains("host-secret"), "exec -w {w} escaped");
        r.fails_with("working directory");
    }
    run(&["restart", "-t", "0", "d"]).ok();
    let init = env.berth(&["exec", "d", "sh", "-c", "ls /proc/1/fd | tr '\\n' ' '"]);
    assert_eq!(init.ok().stdout.trim(), "0 1 2", "after a restart");
    // The monitor holds only its own descriptors (log, pipes, socket).
    let monitor: i32 = env
        .berth(&["inspect", "-f", "{{.State.MonitorPid}}", "d"])
        .ok()
        .stdout
        .trim()
        .parse()
        .unwrap();
    for e in std::fs::read_dir(format!("/proc/{monitor}/fd")).unwrap() {
        let target = std::fs::read_link(e.unwrap().path()).unwrap_or_default();
        assert!(
            !target.starts_with(&secret),
            "the monitor holds {}",
            target.display()
        );
    }
}

/// The attacker: races `/proc/*/exe`, then writes through what it got.
const EXE_RACER: &str = include_str!("exe_racer.c");

fn sha256(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cve_2019_5736_exec_never_exposes_the_host_binary() {
    let env = Env::with_busybox();
    let tools = env.dir.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(tools.join("racer.c"), EXE_RACER).unwrap();
    let cc = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(tools.join("racer"))
        .arg(tools.join("racer.c"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let before = sha256(BERTH);
    let vol = format!("{}:/t:ro", tools.display());
    env.berth(&[
        "run", "-d", "--name", "c", "-v", &vol, "busybox", "sleep", "300",
    ])
    .ok();
    let racer = env
        .cmd()
        .args(["exec", "c", "/t/racer", "120"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        env.berth(&["exec", "c", "true"]).ok();
    }
    // Even the host (all capabilities) gets only a read-only view of the
    // binary of a running berth exec, and cannot write through it after the
    // exec ended (EROFS; ETXTBSY while another berth runs).
    let mut slow = env.cmd().args(["exec", "c", "sleep", "2"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (view, read_only) = binary_of(slow.id()).unwrap();
    assert!(read_only, "berth exec runs from a writable binary");
    slow.wait().unwrap();
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&view));
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&reopen)
        .expect_err("the berth binary is writable through a finished exec's /proc/PID/exe");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::ETXTBSY)),
        "{err}"
    );
    env.berth(&["exec", "c", "touch", "/tmp/stop"]).ok();
    let out = racer.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("opened=0 written=0"), "{text}");
    assert_eq!(sha256(BERTH), before, "the host's berth binary changed");
}

#[test]
fn a_zombie_is_not_up() {
    let env = Env::with_busybox();
    env.berth(&["run", "-d", "--name", "z", "busybox", "sleep", "300"])
        .ok();
    let field = |f: &str| -> i32 {
        let tpl = format!("{{{{.State.{f}}}}}");
        env.berth(&["inspect", "-f", &tpl, "z"])
            .ok()
            .stdout
            .trim()
            .parse()
            .unwrap()
    };
    let (pid, monitor) = (field("Pid"), field("MonitorPid"));
    for p in [monitor, pid] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    // Both are dead once they are zombies or gone, whoever reaps them.
    let dead = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
            .unwrap_or(true)
    };
    while !(dead(pid) && dead(monitor)) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ps = env.berth(&["ps", "-a", "--format", "{{.Status}}"]).ok();
    assert!(ps.stdout.starts_with("Exited (255)"), "{}", ps.stdout);
}

#[test]
fn proc_cannot_be_redirected_by_an_image_or_a_volume() {
    let env = Env::with_busybox();
    // An image whose /proc is a symlink (CVE-2019-16884, CVE-2023-27561):
    // the rootfs is prepared at create, then made hostile before start.
    env.berth(&["create", "--name", "p", "busybox", "true"])
        .ok();
    let rootfs = env
        .berth(&["inspect", "-f", "{{.Rootfs}}", "p"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let proc_dir = Path::new(&rootfs).join("proc");
    let _ = std::fs::remove_dir(&proc_dir);
    std::os::unix::fs::symlink("/", &proc_dir).unwrap();
    env.berth(&["start", "-a", "p"])
        .fails_with("proc must be mounted on an ordinary directory");
    // Volumes over /proc or inside it.
    let vol = env.dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    for dest in ["/proc", "/proc/sys/kernel"] {
        let v = format!("{}:{dest}", vol.display());
        let r = env.berth(&["run", "--rm", "-v", &v, "busybox", "true"]);
        assert_eq!(r.code, 125);
        r.fails_with("/proc");
    }
}

const HTTPD: &str =
    "mkdir -p /www && echo hello-from-n2 > /www/index.html && exec httpd -f -p 80 -h /www";

/// A network's gateway and prefix length, from `network inspect`.
fn gateway(env: &Env, net: &str) -> (String, String) {
    let out = env.berth(&["network", "inspect", net]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    let cfg = &v["IPAM"]["Config"][0];
    let prefix = cfg["Subnet"].as_str().unwrap().split('/').nth(1).unwrap();
    (
        cfg["Gateway"].as_str().unwrap().to_string(),
        prefix.to_string(),
    )
}

#[test]
fn networks_are_isolated_except_through_published_ports() {
    let env = Env::with_busybox();
    for n in ["n1", "n2"] {
        env.berth(&["network", "create", n]).ok();
    }
    env.berth(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "n2",
        "-p",
        "8300:80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    let srv = env
        .berth(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "srv"])
        .ok()
        .stdout
        .trim()
        .to_string();
    // `tries` attempts of 3 s each from a container on `net`.
    let get = |net: &str, url: &str, tries: u32| {
        let script = format!(
            "for i in $(seq 1 {tries}); do timeout 3 wget -q -O- {url} 2>/dev/null && exit 0; sleep 0.2; done; echo unreachable"
        );
        env.berth(&[
            "run",
            "--rm",
            "--network",
            net,
            "busybox",
            "sh",
            "-c",
            &script,
        ])
        .ok()
        .stdout
    };
    let direct = format!("http://{srv}/");
    // The same network reaches it.
    assert_eq!(get("n2", &direct, 10), "hello-from-n2\n");
    // Another user network and the default bridge do not...
    let once = |net: &str| get(net, &direct, 1);
    assert_eq!(once("n1"), "unreachable\n", "n1 reached n2's container");
    assert_eq!(
        once("bridge"),
        "unreachable\n",
        "bridge reached n2's container"
    );
    // ...except through its published port on the host.
    let (gw1, _) = gateway(&env, "n1");
    assert_eq!(
        get("n1", &format!("http://{gw1}:8300/"), 10),
        "hello-from-n2\n"
    );
    env.berth(&["rm", "-f", "srv"]).ok();
    for n in ["n1", "n2"] {
        env.berth(&["network", "rm", n]).ok();
    }
}

/// A TCP listener process; killed when dropped (also when a test fails).
struct Listener(std::process::Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP listener on `addr` in namespace `ns` (python3), answering "hi".
fn listener(ns: &Path, addr: &str, port: u16) -> Listener {
    let code = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{addr}',{port}))\ns.listen(8)\nprint('ready',flush=True)\n\
         while True:\n c,_=s.accept()\n c.sendall(b'hi')\n c.close()\n"
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["python3", "-c", &code])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    Listener(child)
}

/// Connects from namespace `ns` to `addr:port` (2 s); what it read or why not.
fn connect_from(ns: &Path, addr: &str, port: u16) -> String {
    let code = format!(
        "import socket\ns=socket.socket()\ns.settimeout(2)\n\
         try:\n s.connect(('{addr}',{port}))\n print(s.recv(10).decode())\n\
         except Exception as e:\n print('failed', type(e).__name__)\n"
    );
    crate::nethelp::in_ns(ns, "python3", &["-c", &code])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[test]
fn cve_2020_8558_a_neighbour_cannot_reach_the_hosts_loopback() {
    let env = Env::with_busybox();
    env.berth(&["run", "-d", "--name", "c", "busybox", "sleep", "60"])
        .ok();
    let bridge = crate::roots::bridge_of(&|args| env.berth(args));
    let (gw, prefix) = gateway(&env, "bridge");
    // The host's services: one on loopback only, one on the gateway.
    let _local = listener(&env.netns(), "127.0.0.1", 9555);
    let _public = listener(&env.netns(), &gw, 9556);
    // The attacker: a neighbour on the bridge (a container with
    // CAP_NET_ADMIN, or a VM) that routes 127.0.0.1 to the gateway.
    let atk = env.dir.path().join("attacker-netns");
    crate::nethelp::private_netns(&atk);
    // Gone with the test, whether it passes or not.
    struct Netns<'a>(&'a Path);
    impl Drop for Netns<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _atk_ns = Netns(&atk);
    let atk_s = atk.display().to_string();
    env.in_ns(
        "ip",
        &[
            "link", "add", "atk0", "type", "veth", "peer", "name", "eth0", "netns", &atk_s,
        ],
    )
    .ok();
    env.in_ns("ip", &["link", "set", "atk0", "master", &bridge, "up"])
        .ok();
    let me = format!("{}.250/{prefix}", gw.rsplit_once('.').unwrap().0);
    for args in [
        vec!["addr", "add", &me, "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec![
            "route",
            "del",
            "local",
            "127.0.0.0/8",
            "dev",
            "lo",
            "table",
            "local",
        ],
        vec![
            "route",
            "del",
            "local",
            "127.0.0.1",
            "dev",
            "lo",
            "table",
            "local",
        ],
    ] {
        crate::nethelp::in_ns(&atk, "ip", &args);
    }
    crate::nethelp::in_ns(
        &atk,
        "sh",
        &["-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"],
    )
    .ok();
    crate::nethelp::in_ns(
        &atk,
        "ip",
        &[
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            &gw,
            "dev",
            "eth0",
            "onlink",
        ],
    )
    .ok();
    // The neighbour reaches the gateway's service (the path works)...
    assert_eq!(connect_from(&atk, &gw, 9556), "hi");
    // ...and nothing of its reaches the host's loopback service through it
    // (counted where the host would deliver it: the replies could not even
    // get back; the packets getting there is the breach).
    let probe =
        "table ip probe {\n chain input { type filter hook input priority 0; policy accept; \
                 ip daddr 127.0.0.1 tcp dport 9555 iifname != \"lo\" counter; }\n}\n";
    let script = env.dir.path().join("probe.nft");
    std::fs::write(&script, probe).unwrap();
    env.in_ns("nft", &["-f", script.to_str().unwrap()]).ok();
    let got = connect_from(&atk, "127.0.0.1", 9555);
    let counted = env
        .in_ns("nft", &["list", "table", "ip", "probe"])
        .ok()
        .stdout;
    env.in_ns("nft", &["delete", "table", "ip", "probe"]).ok();
    assert!(
        got.starts_with("failed"),
        "the host's loopback answered: {got}"
    );
    assert!(
        counted.contains("packets 0 "),
        "packets for 127.0.0.1 from the bridge reached the host: {counted}"
    );
    env.in_ns("ip", &["link", "del", "atk0"]);
}

#[test]
fn a_microvm_guest_reaches_no_host_loopback_service() {
    if !crate::vm::vms_available() {
        return;
    }
    let env = Env::with_busybox();
    // The default network exists once a container used it.
    env.berth(&["run", "--rm", "busybox", "true"]).ok();
    let (gw, _) = gateway(&env, "bridge");
    let _local = listener(&env.netns(), "127.0.0.1", 9565);
    let _public = listener(&env.netns(), &gw, 9566);
    let script = format!(
        "echo gw:$(nc -w 2 {gw} 9566 </dev/null); \
         echo lo-via-gw:$(nc -w 2 {gw} 9565 </dev/null 2>&1 | head -c 20); \
         echo lo:$(nc -w 2 127.0.0.1 9565 </dev/null 2>&1 | head -c 20); \
         ls /run/berth 2>&1; true"
    );
    let out = crate::vm::run(
        &mut crate::vm::vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "busybox",
            "sh",
            "-c",
            &script,
        ],
    )
    .ok()
    .stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "gw:hi", "the guest's network works: {out}");
    assert!(
        !lines[1].contains("hi"),
        "the host's loopback answered: {out}"
    );
    assert!(
        !lines[2].contains("hi"),
        "the guest's loopback is the host's: {out}"
    );
    // The host's sockets (QEMU's, the agent channel's, virtiofsd's) are
    // no files of the guest's.
    assert!(!out.contains(".sock"), "{out}");
}

#[test]
fn cve_2024_21626_no_helper_inherits_the_callers_fds() {
    let env = Env::with_busybox();
    let secret = secret_dir(&env);
    let run = |args: &[&str]| {
        let mut c = crate::vm::vm(&env);
        c.args(args);
        Run::from(with_open_fds(c, &secret).output().unwrap())
    };
    // berth-dns (a user network), the monitor, and for a VM with a volume
    // the VM's host process, QEMU and virtiofsd.
    run(&["network", "create", "fdnet"]).ok();
    run(&[
        "run",
        "-d",
        "--name",
        "d",
        "--network",
        "fdnet",
        "busybox",
        "sleep",
        "60",
    ])
    .ok();
    if crate::vm::vms_available() {
        let vol = env.dir.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let v = format!("{}:/vol", vol.display());
        run(&[
            "run",
            "-d",
            "--name",
            "v",
            "--isolation",
            "vm",
            "-v",
            &v,
            "busybox",
            "sleep",
            "60",
        ])
        .ok();
    }
    let dir = env.dir.path().display().to_string();
    let mut checked = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(&dir) {
            continue;
        }
        checked += 1;
        for fd in std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert!(
                !target.starts_with(&secret),
                "{cmd} holds {}",
                target.display()
            );
        }
    }
    assert!(checked >= 2, "no helper processes found");
    env.berth(&["rm", "-f", "d"]).ok();
    let _ = env.berth(&["rm", "-f", "v"]);
    env.berth(&["network", "rm", "fdnet"]).ok();
}
