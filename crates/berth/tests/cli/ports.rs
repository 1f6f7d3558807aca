//! Published ports (loopback and another host), ranges, -P, egress NAT,
//! refusals that leave nothing behind, other nft tables left alone, and
//! reconcile after a killed container.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use berth_fixtures::ImageSpec;

use crate::common::*;
use crate::nethelp::*;

const HTTPD: &str =
    "mkdir -p /www && echo hello-published > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn published_port_answers_on_loopback_and_on_external_addresses() {
    let env = Env::with_busybox();
    let remote = Remote::new(&env);
    env.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8081:80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    assert_eq!(
        http_get_retry(&env.netns(), "127.0.0.1:8080"),
        "hello-published\n"
    );
    assert_eq!(
        http_get_retry(&remote.ns, &format!("{HOST_EXT_IP}:8080")),
        "hello-published\n",
        "another host reaches the published port"
    );
    assert_eq!(
        http_get_retry(&env.netns(), "127.0.0.1:8081"),
        "hello-published\n"
    );
    assert!(
        http_get(&remote.ns, &format!("{HOST_EXT_IP}:8081")).is_err(),
        "a port published on 127.0.0.1 only is not reachable from outside"
    );
    let ports = env.berth(&["port", "web"]).ok().stdout;
    assert_eq!(ports, "80/tcp -> 0.0.0.0:8080\n80/tcp -> 127.0.0.1:8081\n");
    assert_eq!(
        env.berth(&["port", "web", "80/tcp"]).ok().stdout,
        "0.0.0.0:8080\n127.0.0.1:8081\n"
    );
    let ps = env.berth(&["ps"]).ok().stdout;
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let v: serde_json::Value =
        serde_json::from_str(&env.berth(&["inspect", "web"]).ok().stdout).unwrap();
    assert_eq!(
        v[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        "8080"
    );
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], "bridge");
    // Stopped: the ports are released; started again: back.
    env.berth(&["stop", "-t", "0", "web"]).ok();
    assert_eq!(env.published(), Vec::<String>::new());
    assert_eq!(env.berth(&["port", "web"]).ok().stdout, "");
    env.berth(&["start", "web"]).ok();
    assert_eq!(
        http_get_retry(&env.netns(), "127.0.0.1:8080"),
        "hello-published\n"
    );
    env.berth(&["rm", "-f", "web"]).ok();
    assert_eq!(env.published(), Vec::<String>::new());
}

#[test]
fn port_ranges_udp_and_publish_all() {
    let env = Env::with_busybox();
    let spec = ImageSpec {
        name: "exposing:latest".into(),
        exposed_ports: vec!["80/tcp".into(), "53/udp".into()],
        ..ImageSpec::default()
    };
    let tar = image_tar("exposing-oci-gzip.tar", spec);
    env.berth(&["image", "import", tar.to_str().unwrap()]).ok();
    env.berth(&[
        "run", "-d", "--name", "all", "-P", "exposing", "sh", "-c", HTTPD,
    ])
    .ok();
    let ports = env.berth(&["port", "all"]).ok().stdout;
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    assert!(
        lines.iter().any(|l| l.starts_with("53/udp -> 0.0.0.0:")),
        "{ports}"
    );
    let tcp = env.berth(&["port", "all", "80"]).ok().stdout;
    let host_port = tcp.trim().rsplit(':').next().unwrap().to_string();
    assert_eq!(
        http_get_retry(&env.netns(), &format!("127.0.0.1:{host_port}")),
        "hello-published\n"
    );
    env.berth(&[
        "run",
        "-d",
        "--name",
        "range",
        "-p",
        "9000-9001:80-81",
        "-p",
        "9053:53/udp",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(
        env.berth(&["port", "range"]).ok().stdout,
        "53/udp -> 0.0.0.0:9053\n80/tcp -> 0.0.0.0:9000\n81/tcp -> 0.0.0.0:9001\n"
    );
    assert_eq!(env.published().len(), 5, "{:?}", env.published());
}

#[test]
fn egress_is_masqueraded_to_the_hosts_address() {
    let env = Env::with_busybox();
    let remote = Remote::new(&env);
    let listener = in_netns(&remote.ns, || TcpListener::bind((REMOTE_IP, 7000)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        (peer.ip().to_string(), got)
    });
    env.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("echo hi-from-inside | nc {REMOTE_IP} 7000"),
    ])
    .ok();
    let (peer, got) = server.join().unwrap();
    assert_eq!(got, "hi-from-inside\n");
    assert_eq!(
        peer, HOST_EXT_IP,
        "the container's address is hidden behind the host's"
    );
}

#[test]
fn refusals_leave_nothing_half_set_up() {
    let env = Env::with_busybox();
    let before = env.snapshot();
    for bad in [
        "80:abc",
        "70000:80",
        "8080:80/sctp",
        "8000-8002:80-81",
        "[::1]:80:80",
    ] {
        env.berth(&["run", "--rm", "-p", bad, "busybox", "true"])
            .fails_with("invalid port specification");
    }
    // A port another program holds.
    let holder = in_netns(&env.netns(), || {
        TcpListener::bind(("0.0.0.0", 8090)).unwrap()
    });
    env.berth(&["run", "-d", "-p", "8090:80", "busybox", "sleep", "100"])
        .fails_with("host port 0.0.0.0:8090/tcp is already in use by another program");
    // As with Docker, the container is created (and can be started later).
    let created = env.container_ids();
    assert_eq!(created.len(), 1);
    env.berth(&["rm", &created[0]]).ok();
    env.berth(&["run", "--rm", "-p", "127.0.0.1:8090:80", "busybox", "true"])
        .fails_with("already in use");
    drop(holder);
    // A port another container publishes.
    env.berth(&[
        "run", "-d", "--name", "first", "-p", "8091:80", "busybox", "sleep", "100",
    ])
    .ok();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "second",
        "-p",
        "127.0.0.1:8091:80",
        "busybox",
        "sleep",
        "100",
    ])
    .fails_with("host port 127.0.0.1:8091/tcp is already published by container first");
    assert_eq!(
        env.container_ids().len(),
        2,
        "a failed run -d leaves its container created, as Docker does"
    );
    env.berth(&["rm", "second"]).ok();
    assert_eq!(env.published().len(), 1);
    env.berth(&["rm", "-f", "first"]).ok();
    env.assert_no_veths();
    before.assert_same(&env.snapshot(), "refused runs");
}

#[test]
fn rules_berth_did_not_write_are_left_alone() {
    let env = Env::with_busybox();
    let theirs = "table inet theirs {\n chain input { type filter hook input priority 0; policy accept; tcp dport 9999 counter accept; }\n}\n\
                  table ip nat {\n chain postrouting { type nat hook postrouting priority 100; policy accept; oifname \"vext9\" masquerade; }\n}\n";
    let script = env.dir.path().join("theirs.nft");
    std::fs::write(&script, theirs).unwrap();
    env.in_ns("nft", &["-f", script.to_str().unwrap()]).ok();
    let list = |env: &Env| {
        let a = env
            .in_ns("nft", &["list", "table", "inet", "theirs"])
            .ok()
            .stdout;
        let b = env
            .in_ns("nft", &["list", "table", "ip", "nat"])
            .ok()
            .stdout;
        a + &b
    };
    let before = list(&env);
    env.berth(&["network", "create", "--subnet", "10.240.0.0/24", "n1"])
        .ok();
    env.berth(&[
        "run",
        "-d",
        "--name",
        "w",
        "--network",
        "n1",
        "-p",
        "8100:80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    assert_eq!(
        http_get_retry(&env.netns(), "127.0.0.1:8100"),
        "hello-published\n"
    );
    env.berth(&["rm", "-f", "w"]).ok();
    env.berth(&["network", "rm", "n1"]).ok();
    assert_eq!(list(&env), before, "berth changed rules it did not write");
    let ours = env
        .in_ns("nft", &["list", "table", "ip", "berth"])
        .ok()
        .stdout;
    assert!(!ours.contains("10.240.0.0"), "{ours}");
}

#[test]
fn reconcile_removes_what_a_killed_container_left() {
    let env = Env::with_busybox();
    env.berth(&[
        "run", "-d", "--name", "k", "-p", "8110:80", "busybox", "sleep", "1000",
    ])
    .ok();
    let pid = |what: &str| -> i32 {
        env.berth(&[
            "inspect",
            "--format",
            &format!("{{{{.State.{what}}}}}"),
            "k",
        ])
        .ok()
        .stdout
        .trim()
        .parse()
        .unwrap()
    };
    let (monitor, ctr) = (pid("MonitorPid"), pid("Pid"));
    let ctr_id = env.berth(&["ps", "-q"]).ok().stdout.trim().to_string();
    for p in [monitor, ctr] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL).unwrap();
    }
    // Once init has reaped them, `ps` shows the container exited.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.berth(&["ps", "-q"]).stdout.contains(&ctr_id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed container still shows as running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        env.published().len(),
        1,
        "the killed container's port is still there"
    );
    let out = env.berth(&["system", "reconcile"]).ok().stdout;
    assert!(out.contains("removed: network namespace of"), "{out}");
    assert_eq!(env.published(), Vec::<String>::new());
    env.assert_no_veths();
    assert!(std::fs::read_dir(env.dir.path().join("run/netns"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(
        env.leases().len(),
        1,
        "the container still exists and keeps its address"
    );
    env.berth(&["rm", "k"]).ok();
    assert!(env.leases().is_empty());
}
