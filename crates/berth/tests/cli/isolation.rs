//! What a container can and cannot see and do.

use crate::common::*;

fn ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn namespaces_are_private() {
    let env = Env::with_busybox();
    let out = env
        .berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "echo $$; for n in mnt uts ipc net pid cgroup; do readlink /proc/self/ns/$n; done; \
             ls /sys/class/net; ps -o comm= > /tmp/ps.txt; tr '\\n' ' ' < /tmp/ps.txt",
        ])
        .ok()
        .stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the command is PID 1");
    for (i, kind) in ["mnt", "uts", "ipc", "net", "pid", "cgroup"]
        .iter()
        .enumerate()
    {
        assert_ne!(
            lines[i + 1],
            ns(kind),
            "{kind} namespace is shared with the host"
        );
    }
    assert_eq!(lines[7], "lo", "only loopback with --network none");
    // ps sees only the container's own processes: the shell and ps itself.
    assert_eq!(lines[8].trim(), "sh ps", "{out}");
}

#[test]
fn privileges_are_dropped() {
    let env = Env::with_busybox();
    let out = env
        .berth(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        ])
        .ok()
        .stdout;
    // Docker's default set: chown dac_override fowner fsetid kill setgid setuid
    // setpcap net_bind_service net_raw sys_chroot mknod audit_write setfcap.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // Seccomp and capabilities refuse what Docker refuses.
    let out = env
        .berth(&[
            "run", "--rm", "busybox", "sh", "-c",
            "mount -t tmpfs t /mnt 2>/dev/null || echo no-mount; unshare -n true 2>/dev/null || echo no-unshare; \
             echo x > /proc/sys/kernel/hostname 2>/dev/null || echo proc-sys-ro; echo 1 > /sys/kernel/profiling 2>/dev/null || echo sys-ro; \
             cat /proc/kcore 2>/dev/null | wc -c; hostname other 2>/dev/null || echo no-sethostname",
        ])
        .ok()
        .stdout;
    assert_eq!(
        out,
        "no-mount\nno-unshare\nproc-sys-ro\nsys-ro\n0\nno-sethostname\n"
    );
}

#[test]
fn devices_are_minimal() {
    let env = Env::with_busybox();
    let out = env
        .berth(&["run", "--rm", "busybox", "ls", "/dev"])
        .ok()
        .stdout;
    let devs: Vec<&str> = out.lines().collect();
    for want in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
    ] {
        assert!(devs.contains(&want), "/dev/{want} missing: {devs:?}");
    }
    assert!(
        !devs
            .iter()
            .any(|d| d.starts_with("sd") || d.starts_with("vd") || *d == "mem" || *d == "kmsg"),
        "{devs:?}"
    );
    let out = env
        .berth(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo ok > /dev/null && head -c 4 /dev/zero | wc -c",
        ])
        .ok();
    assert_eq!(out.stdout, "ok\n".replace("ok\n", "") + "4\n");
}

/// The seeds' experiment: a file written in a container is a plain file on
/// the host (shared kernel, one filesystem); with a microVM it will not be.
#[test]
fn container_files_are_visible_from_the_host() {
    let env = Env::with_busybox();
    env.berth(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo dummy > /mydummytestfile.txt",
    ])
    .ok();
    let found: Vec<_> = walkdir(&env.root())
        .into_iter()
        .filter(|p| p.ends_with("mydummytestfile.txt"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("/upper/"));
    env.berth(&["rm", "writer"]).ok();
}

fn walkdir(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walkdir(&path));
            }
        }
    }
    out
}
