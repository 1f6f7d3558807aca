//! Networking test helpers: every `Env` runs berth in a network namespace
//! of its own; TCP from inside namespaces (a thread joins one, its
//! sockets stay there); a second "host" joined by a veth pair; and the
//! check, after every test, that no veth, nft element, lease or namespace
//! is left.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use crate::common::{Env, Run, BERTH};

/// Makes a network namespace bind-mounted on `path`, with loopback up.
pub fn private_netns(path: &Path) {
    File::create(path).unwrap();
    let st = Command::new("unshare")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "link", "set", "lo", "up"])
        .status()
        .expect("unshare (util-linux) and ip (iproute2) are needed");
    assert!(st.success(), "making a network namespace failed");
}

fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

impl Env {
    /// The test's own network namespace.
    pub fn netns(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    /// berth in the host's namespace with networking off (for tests that
    /// need the host's loopback, like the registry ones).
    pub fn cmd_host_net(&self) -> Command {
        let mut c = Command::new(BERTH);
        c.env("BERTH_ROOT", self.root())
            .env("BERTH_RUN_ROOT", self.dir.path().join("run"))
            .env("BERTH_NETWORK", "none")
            .stdin(Stdio::null());
        c
    }

    /// A tool (ip, nft...) in the test's namespace.
    pub fn in_ns(&self, prog: &str, args: &[&str]) -> Run {
        in_ns(&self.netns(), prog, args)
    }

    /// The names of the test namespace's links.
    pub fn links(&self) -> Vec<String> {
        self.in_ns("ip", &["-o", "link"])
            .stdout
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// The elements of berth's port maps (`map element` strings).
    pub fn published(&self) -> Vec<String> {
        let out = self.in_ns("nft", &["list", "table", "ip", "berth"]).stdout;
        let mut found = Vec::new();
        let mut map = String::new();
        let mut inside = false;
        for line in out.lines() {
            let mut t = line.trim();
            if let Some(m) = t.strip_prefix("map ") {
                map = m.split_whitespace().next().unwrap_or("").to_string();
            } else if t.starts_with("set ") || t.starts_with("chain ") {
                map.clear();
            }
            if let Some(rest) = t.strip_prefix("elements = {") {
                inside = true;
                t = rest;
            }
            if !inside {
                continue;
            }
            let done = t.ends_with('}');
            if !map.is_empty() {
                for e in t.trim_end_matches('}').split(',').map(str::trim) {
                    if !e.is_empty() {
                        found.push(format!("{map} {e}"));
                    }
                }
            }
            inside = !done;
        }
        found
    }

    /// Waits until no container veth (`vb…`) is left: the kernel deletes
    /// them in the background once a container's namespace is gone.
    #[track_caller]
    pub fn assert_no_veths(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<String> = self
                .links()
                .into_iter()
                .filter(|l| l.starts_with("vb"))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "veths left: {left:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every container each network still leases an address to.
    pub fn leases(&self) -> Vec<String> {
        let names = self
            .berth(&["network", "ls", "--format", "{{.Name}}"])
            .stdout;
        let mut out = Vec::new();
        for n in names.lines().filter(|n| *n != "host" && *n != "none") {
            let v: serde_json::Value =
                serde_json::from_str(&self.berth(&["network", "inspect", n]).stdout)
                    .unwrap_or_default();
            if let Some(c) = v[0]["Containers"].as_object() {
                out.extend(c.keys().map(|k| format!("{n}:{k}")));
            }
        }
        out
    }
}

/// Runs a program in the namespace at `ns`.
pub fn in_ns(ns: &Path, prog: &str, args: &[&str]) -> Run {
    Run::from(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .arg(prog)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    )
}

/// Runs `f` on a thread that joined the namespace at `ns`.
pub fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&ns).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// `GET /` on `addr` from inside `ns`: the body, or why it failed.
pub fn http_get(ns: &Path, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_netns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        Ok(text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(text))
    })
}

/// Retries [`http_get`] while the server starts.
pub fn http_get_retry(ns: &Path, addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(ns, addr) {
            Ok(b) => return b,
            Err(e) if Instant::now() > deadline => panic!("GET {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A second machine: its own namespace, joined to the test's by a veth
/// pair, the test's side 198.51.100.1/24 (`vext0`), its own .2 (TEST-NET-2,
/// only ever inside these namespaces).
pub struct Remote {
    pub ns: PathBuf,
}

pub const HOST_EXT_IP: &str = "198.51.100.1";
pub const REMOTE_IP: &str = "198.51.100.2";

impl Remote {
    pub fn new(env: &Env) -> Remote {
        let ns = env.dir.path().join("remote-netns");
        private_netns(&ns);
        let remote = ns.display().to_string();
        env.in_ns(
            "ip",
            &[
                "link", "add", "vext0", "type", "veth", "peer", "name", "eth0", "netns", &remote,
            ],
        )
        .ok();
        env.in_ns(
            "ip",
            &["addr", "add", &format!("{HOST_EXT_IP}/24"), "dev", "vext0"],
        )
        .ok();
        env.in_ns("ip", &["link", "set", "vext0", "up"]).ok();
        in_ns(
            &ns,
            "ip",
            &["addr", "add", &format!("{REMOTE_IP}/24"), "dev", "eth0"],
        )
        .ok();
        in_ns(&ns, "ip", &["link", "set", "eth0", "up"]).ok();
        Remote { ns }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        remove_netns(&self.ns);
    }
}

/// After a test's containers are removed: nothing of theirs may be left
/// in its namespace; then the namespace goes.
pub fn check_network_and_clean(env: &Env) {
    if !std::thread::panicking() {
        env.assert_no_veths();
        assert_eq!(
            env.published(),
            Vec::<String>::new(),
            "published ports left"
        );
        assert_eq!(env.leases(), Vec::<String>::new(), "leases left");
        let left: Vec<_> = std::fs::read_dir(env.dir.path().join("run/netns"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "network namespaces left: {left:?}");
    }
    remove_netns(&env.netns());
}
