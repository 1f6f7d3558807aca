//! Networking of `--isolation vm`: the guest's card is a TAP device on the
//! same bridge as containers (through the VM's plumbing namespace), so
//! published ports, names on user networks, NAT to other hosts and the
//! address records work as they do for containers.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;
use crate::nethelp::*;
use crate::vm::{inspect, qemu_pids, run, vm, vms_available};

const HTTPD: &str = "mkdir -p /www && echo \"hello from $(hostname) in $(uname -r)\" > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn vm_publishes_ports_and_talks_to_containers_by_name() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let remote = Remote::new(&env);
    env.berth(&["network", "create", "--subnet", "10.211.0.0/24", "mixed"])
        .ok();
    let id = run(
        &mut vm(&env),
        &[
            "run",
            "-d",
            "--isolation",
            "vm",
            "--name",
            "vmweb",
            "--network",
            "mixed",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let guest = crate::vm::guest_release().unwrap();
    let want = format!("hello from {} in {guest}\n", &id[..12]);
    // Through the DNAT on the host, from this host and from another one.
    assert_eq!(http_get_retry(&env.netns(), "127.0.0.1:8080"), want);
    assert_eq!(
        http_get_retry(&remote.ns, &format!("{HOST_EXT_IP}:8080")),
        want
    );
    // The guest holds the recorded address and MAC; the plumbing namespace
    // holds none.
    assert_eq!(
        inspect(&env, "vmweb", "{{.NetworkSettings.IPAddress}}"),
        "10.211.0.2"
    );
    let mac = inspect(&env, "vmweb", "{{.NetworkSettings.MacAddress}}");
    let ifc = run(
        &mut vm(&env),
        &[
            "exec",
            "vmweb",
            "sh",
            "-c",
            "cat /sys/class/net/eth0/address; ip -o -4 addr show eth0; ip route",
        ],
    )
    .ok()
    .stdout;
    assert!(ifc.starts_with(&format!("{mac}\n")), "{ifc}");
    assert!(ifc.contains("inet 10.211.0.2/24"), "{ifc}");
    assert!(ifc.contains("default via 10.211.0.1 dev eth0"), "{ifc}");
    let sandbox = inspect(&env, "vmweb", "{{.NetworkSettings.SandboxKey}}");
    let plumbing = in_ns(std::path::Path::new(&sandbox), "ip", &["-o", "-4", "addr"])
        .ok()
        .stdout;
    assert!(!plumbing.contains("10.211.0.2"), "{plumbing}");
    // A container on the same network reaches the VM by name, and the VM
    // the container.
    env.berth(&[
        "run",
        "-d",
        "--name",
        "ctweb",
        "--network",
        "mixed",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ])
    .ok();
    let from_ct = env
        .berth(&[
            "run",
            "--rm",
            "--network",
            "mixed",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://vmweb/ && break; sleep 0.3; done",
        ])
        .ok()
        .stdout;
    assert_eq!(from_ct, want);
    let from_vm = run(
        &mut vm(&env),
        &[
            "exec",
            "vmweb",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://ctweb/ && break; sleep 0.3; done",
        ],
    )
    .ok()
    .stdout;
    assert!(from_vm.starts_with("hello from "), "{from_vm}");
    assert!(!from_vm.contains(&guest), "{from_vm}");
    // Running VMs keep their cards: connect/disconnect say when they can.
    env.berth(&["network", "disconnect", "mixed", "vmweb"])
        .fails_with("is a running VM");
    env.berth(&["rm", "-f", "vmweb", "ctweb"]).ok();
    assert!(qemu_pids(&id).is_empty(), "QEMU outlived its container");
    env.berth(&["network", "rm", "mixed"]).ok();
}

#[test]
fn vm_egress_is_masqueraded_and_none_means_loopback_only() {
    if !vms_available() {
        return;
    }
    let env = Env::with_busybox();
    let remote = Remote::new(&env);
    let listener = in_netns(&remote.ns, || TcpListener::bind((REMOTE_IP, 7000)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        (peer.ip().to_string(), got)
    });
    run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "busybox",
            "sh",
            "-c",
            &format!("echo hi-from-a-vm | nc {REMOTE_IP} 7000"),
        ],
    )
    .ok();
    let (peer, got) = server.join().unwrap();
    assert_eq!(got, "hi-from-a-vm\n");
    assert_eq!(peer, HOST_EXT_IP, "the remote host sees the host's address");
    let none = run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "ls /sys/class/net",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(none, "lo\n");
    run(
        &mut vm(&env),
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "--network",
            "host",
            "busybox",
            "true",
        ],
    )
    .fails_with("--network host is not possible with --isolation vm");
}
