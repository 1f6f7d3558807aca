//! Networks: the default bridge and its leases, generated files, none and
//! host modes, user networks with name resolution, connect/disconnect,
//! and refusals. Each test runs in a network namespace of its own.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::common::*;

fn ip_of(env: &Env, name: &str) -> String {
    env.berth(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        name,
    ])
    .ok()
    .stdout
    .trim()
    .to_string()
}

const HTTPD: &str = "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn default_bridge_gives_an_address_routes_and_files() {
    let env = Env::with_busybox();
    let out = env
        .berth(&[
            "run", "--rm", "--hostname", "web1", "--add-host", "db.local:10.9.8.7", "--dns", "192.0.2.53",
            "--dns-search", "example.test", "busybox", "sh", "-c",
            "ip -4 -o addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf; ping -c1 -W2 172.17.0.1 >/dev/null && echo gateway-ok",
        ])
        .ok()
        .stdout;
    assert!(out.contains("inet 172.17.0.2/16"), "{out}");
    assert!(out.contains("default via 172.17.0.1 dev eth0"), "{out}");
    assert!(out.contains("172.17.0.2\tweb1\n"), "{out}");
    assert!(out.contains("10.9.8.7\tdb.local\n"), "{out}");
    assert!(
        out.contains("nameserver 192.0.2.53\n") && out.contains("search example.test\n"),
        "{out}"
    );
    assert!(out.contains("gateway-ok"), "{out}");
    // The bridge is on the test's "host" with the gateway address; a root
    // other than /var/lib/berth has a bridge name of its own.
    let bridge = crate::roots::bridge_of(&|args| env.berth(args));
    assert!(
        bridge.starts_with("berth-") && bridge.len() == 12,
        "{bridge}"
    );
    let addr = env
        .in_ns("ip", &["-4", "-o", "addr", "show", &bridge])
        .ok()
        .stdout;
    assert!(addr.contains("172.17.0.1/16"), "{addr}");
    // Two containers reach each other over the bridge.
    env.berth(&["run", "-d", "--name", "srv", "busybox", "sh", "-c", HTTPD])
        .ok();
    let srv = ip_of(&env, "srv");
    let got = env
        .berth(&["run", "--rm", "busybox", "sh", "-c", &format!("for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://{srv}/ && break; sleep 0.2; done")])
        .ok()
        .stdout;
    assert!(got.starts_with("hello from "), "{got}");
}

#[test]
fn address_is_stable_across_stop_start_restart_and_freed_by_rm() {
    let env = Env::with_busybox();
    env.berth(&["run", "-d", "--name", "a", "busybox", "sleep", "1000"])
        .ok();
    env.berth(&["run", "-d", "--name", "b", "busybox", "sleep", "1000"])
        .ok();
    let (a, b) = (ip_of(&env, "a"), ip_of(&env, "b"));
    assert_eq!(a, "172.17.0.2");
    assert_eq!(b, "172.17.0.3");
    env.berth(&["stop", "-t", "0", "a"]).ok();
    assert_eq!(ip_of(&env, "a"), a, "a stopped container keeps its lease");
    env.berth(&["start", "a"]).ok();
    assert_eq!(ip_of(&env, "a"), a);
    env.berth(&["restart", "-t", "0", "a"]).ok();
    assert_eq!(ip_of(&env, "a"), a);
    let inside = env
        .berth(&["exec", "a", "ip", "-4", "-o", "addr", "show", "eth0"])
        .ok()
        .stdout;
    assert!(inside.contains(&format!("inet {a}/16")), "{inside}");
    env.berth(&["rm", "-f", "b"]).ok();
    assert_eq!(env.leases().len(), 1, "b's lease is gone");
    env.berth(&["run", "-d", "--name", "c", "busybox", "sleep", "1000"])
        .ok();
    assert_eq!(ip_of(&env, "c"), b, "the freed address is handed out again");
}

#[test]
fn none_and_host_networks() {
    let env = Env::with_busybox();
    let out = env
        .berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "ls",
            "/sys/class/net",
        ])
        .ok()
        .stdout;
    assert_eq!(out, "lo\n");
    let ino = std::fs::metadata(env.netns()).unwrap().ino();
    let out = env
        .berth(&[
            "run",
            "--rm",
            "--network",
            "host",
            "busybox",
            "readlink",
            "/proc/self/ns/net",
        ])
        .ok()
        .stdout;
    assert_eq!(
        out.trim(),
        format!("net:[{ino}]"),
        "--network host shares berth's namespace"
    );
    env.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "80:80",
        "busybox",
        "true",
    ])
    .fails_with("conflicting options: port publishing and --network none");
}

#[test]
fn user_network_resolves_container_names() {
    let env = Env::with_busybox();
    let id = env
        .berth(&["network", "create", "--subnet", "10.210.0.0/24", "appnet"])
        .ok()
        .stdout;
    assert_eq!(id.trim().len(), 64);
    let ls = env.berth(&["network", "ls"]).ok().stdout;
    assert!(
        ls.starts_with("NETWORK ID") && ls.contains(" appnet ") && ls.contains(" bridge "),
        "{ls}"
    );
    env.berth(&[
        "run",
        "-d",
        "--network",
        "appnet",
        "--name",
        "web",
        "--network-alias",
        "api",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    assert_eq!(ip_of(&env, "web"), "10.210.0.2");
    let out = env
        .berth(&[
            "run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
            "cat /etc/resolv.conf; nslookup web; for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/ && break; sleep 0.2; done; wget -qO- http://api/",
        ])
        .ok()
        .stdout;
    assert!(out.contains("nameserver 10.210.0.1"), "{out}");
    assert!(out.contains("10.210.0.2"), "{out}");
    assert_eq!(out.matches("hello from ").count(), 2, "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.berth(&["network", "inspect", "appnet"]).ok().stdout).unwrap();
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.210.0.0/24");
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 1);
    // In use: refused, one line, nothing changed.
    env.berth(&["network", "rm", "appnet"])
        .fails_with("network appnet is in use by container(s) web");
    // The responder goes when the last container leaves.
    let pid_file = std::fs::read_dir(env.dir.path().join("run/networks"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("dns.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    env.berth(&["rm", "-f", "web"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.contains("berth-dns"))
    {
        assert!(Instant::now() < deadline, "berth-dns still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.berth(&["network", "rm", "appnet"]).ok();
    assert!(
        !env.links().iter().any(|l| l.starts_with("br-")),
        "{:?}",
        env.links()
    );
    assert!(!env.berth(&["network", "ls"]).stdout.contains("appnet"));
}

#[test]
fn connect_and_disconnect_a_running_container() {
    let env = Env::with_busybox();
    env.berth(&[
        "network",
        "create",
        "--subnet",
        "10.211.0.0/24",
        "--gateway",
        "10.211.0.254",
        "net2",
    ])
    .ok();
    env.berth(&["run", "-d", "--name", "x", "busybox", "sleep", "1000"])
        .ok();
    env.berth(&["network", "connect", "net2", "x"]).ok();
    let out = env
        .berth(&["exec", "x", "ip", "-4", "-o", "addr"])
        .ok()
        .stdout;
    assert!(
        out.contains("eth1") && out.contains("10.211.0.1/24"),
        "{out}"
    );
    env.berth(&["network", "connect", "net2", "x"])
        .fails_with("already connected to network net2");
    env.berth(&["network", "disconnect", "net2", "x"]).ok();
    let out = env
        .berth(&["exec", "x", "ip", "-4", "-o", "addr"])
        .ok()
        .stdout;
    assert!(!out.contains("eth1"), "{out}");
    env.berth(&["network", "disconnect", "net2", "x"])
        .fails_with("is not connected to network net2");
    // Connected while stopped: the interface comes with the next start.
    env.berth(&["stop", "-t", "0", "x"]).ok();
    env.berth(&["network", "connect", "net2", "x"]).ok();
    env.berth(&["start", "x"]).ok();
    let out = env
        .berth(&["exec", "x", "ip", "-4", "-o", "addr"])
        .ok()
        .stdout;
    assert!(out.contains("eth1"), "{out}");
    env.berth(&["rm", "-f", "x"]).ok();
    let pruned = env.berth(&["network", "prune"]).ok().stdout;
    assert_eq!(pruned, "Deleted Networks:\nnet2\n");
}

#[test]
fn bad_network_input_is_refused_cleanly() {
    let env = Env::with_busybox();
    let before = env.snapshot();
    env.berth(&["run", "--rm", "--network", "nope", "busybox", "true"])
        .fails_with("network nope not found");
    env.berth(&["create", "--network", "nope", "busybox", "true"])
        .fails_with("network nope not found");
    before.assert_same(&env.snapshot(), "a run on an unknown network");
    env.berth(&["network", "create", "--subnet", "10.220.0.0/16", "one"])
        .ok();
    env.berth(&["network", "create", "--subnet", "10.220.5.0/24", "two"])
        .fails_with("subnet 10.220.5.0/24 overlaps with network one (10.220.0.0/16)");
    env.berth(&["network", "create", "--subnet", "10.230.0.1/24", "three"])
        .fails_with("host bits are set");
    env.berth(&[
        "network",
        "create",
        "--subnet",
        "10.230.0.0/24",
        "--gateway",
        "10.231.0.1",
        "three",
    ])
    .fails_with("is not a host address of subnet");
    env.berth(&["network", "create", "one"])
        .fails_with("network with name one already exists");
    env.berth(&["network", "rm", "bridge"])
        .fails_with("pre-defined network");
    env.berth(&["network", "rm", "zzz"])
        .fails_with("network zzz not found");
    env.berth(&["run", "--rm", "--add-host", "nocolon", "busybox", "true"])
        .fails_with("invalid --add-host");
    env.berth(&["run", "--rm", "--dns", "not-an-ip", "busybox", "true"])
        .fails_with("invalid --dns");
    let ls = env
        .berth(&["network", "ls", "--format", "{{.Name}}"])
        .ok()
        .stdout;
    assert_eq!(ls, "bridge\nhost\nnone\none\n");
    env.berth(&["network", "rm", "one"]).ok();
}
