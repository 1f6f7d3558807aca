//! The OCI runtime spec's features, one container each: hooks, user
//! namespaces, namespaces joined by path, mounts and their options,
//! process attributes, resources.

use serde_json::json;

use crate::common::*;

fn run(env: &Env, id: &str, b: &std::path::Path) -> Run {
    Run::from(
        env.cmd()
            .args(["run", "--bundle"])
            .arg(b)
            .arg(id)
            .output()
            .unwrap(),
    )
}

#[test]
fn every_hook_kind_runs_with_the_state_on_stdin() {
    let env = Env::new();
    let log = env.dir.path().join("hooks.log");
    let hook = |name: &str| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!(
                "read s; echo \"{name} $HOOK_ENV $s\" >> {}", log.display())],
            "env": ["HOOK_ENV=yes"],
            "timeout": 5,
        })
    };
    // startContainer runs inside the container: its path resolves there.
    let in_container = json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", "read s; echo \"startContainer $s\" > /data/start"],
    });
    let b = env.bundle("b", &["cat", "/data/start"], |s| {
        s["hooks"] = json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [in_container],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
        s["annotations"] = json!({"org.example": "v"});
    });
    let r = run(&env, "h1", &b);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("startContainer {"), "{}", r.stdout);
    assert!(r.stdout.contains("\"status\":\"created\""), "{}", r.stdout);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    for l in &lines {
        assert!(l.contains(" yes {"), "{l}");
        let state: serde_json::Value =
            serde_json::from_str(l.splitn(3, ' ').nth(2).unwrap()).unwrap();
        assert_eq!(state["id"], "h1");
        assert_eq!(state["annotations"]["org.example"], "v");
        assert!(state["pid"].as_i64().unwrap() > 0, "{l}");
    }
    assert!(lines[0].contains("\"status\":\"creating\""));
    assert!(lines[3].contains("\"status\":\"running\""));
    assert!(lines[4].contains("\"status\":\"stopped\""));
}

#[test]
fn a_failing_hook_fails_create_and_leaves_nothing() {
    let env = Env::new();
    let b = env.bundle("b", &["true"], |s| {
        s["hooks"] = json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 9"]}
        ]});
    });
    env.create("f1", &b, &[])
        .fails_with(&["createRuntime hook /bin/sh exited with", "broken"]);
    assert!(!env.root().join("f1").exists());
    let b = env.bundle("b2", &["true"], |s| {
        s["hooks"] = json!({"prestart": [
            {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}
        ]});
    });
    env.create("f2", &b, &[])
        .fails_with(&["timed out after 1 s"]);
    assert!(!env.root().join("f2").exists());
}

#[test]
fn user_namespace_with_mappings() {
    let env = Env::new();
    let b = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/x; stat -c %u /tmp/x",
        ],
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            s["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            s["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            s["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["type"] != "cgroup");
        },
    );
    let tmp = b.join("rootfs/tmp");
    std::os::unix::fs::chown(&tmp, Some(100000), Some(100000)).unwrap();
    let r = run(&env, "u1", &b);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let words: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "100000", "65536", "0", "100000", "65536", "0", "0"]
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(tmp.join("x")).unwrap().uid(), 100000);
}

#[test]
fn namespaces_joined_by_path_including_pid() {
    let env = Env::new();
    let a = env.bundle("a", &["sleep", "1000"], |s| s["hostname"] = json!("first"));
    env.create("a1", &a, &[]).ok();
    env.rt(&["start", "a1"]).ok();
    let pid = env.state("a1")["pid"].as_i64().unwrap();
    let b = env.bundle(
        "b",
        &["sh", "-c", "hostname; ps -o comm | grep -c sleep"],
        |s| {
            s["hostname"] = serde_json::Value::Null;
            s["linux"]["namespaces"] = json!([
                {"type": "mount"},
                {"type": "pid", "path": format!("/proc/{pid}/ns/pid")},
                {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
                {"type": "network", "path": format!("/proc/{pid}/ns/net")},
                {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
            ]);
        },
    );
    let r = run(&env, "b1", &b);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "first\n1\n");
    env.rt(&["delete", "--force", "a1"]).ok();
}

#[test]
fn mounts_and_process_attributes() {
    let env = Env::new();
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    std::fs::write(shared.join("f"), "host file\n").unwrap();
    let script = "cat /mnt/ro/f; touch /mnt/ro/x 2>/dev/null || echo ro-refused; \
        ls /etc/seeded; umask; cat /proc/self/oom_score_adj; \
        grep -E '^(NoNewPrivs|Groups)' /proc/self/status; ulimit -n; uname -m; \
        cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/domainname; \
        touch /rootfs-write 2>/dev/null || echo root-ro";
    let b = env.bundle("b", &["sh", "-c", script], |s| {
        let m = s["mounts"].as_array_mut().unwrap();
        m.push(
            json!({"destination": "/mnt/ro", "type": "bind", "source": shared,
                      "options": ["rbind", "rro", "nosuid", "nodev"]}),
        );
        m.push(
            json!({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                      "options": ["tmpcopyup", "mode=755"]}),
        );
        let p = &mut s["process"];
        p["user"] = json!({"uid": 0, "gid": 0, "umask": 23, "additionalGids": [7, 8]});
        p["oomScoreAdj"] = json!(300);
        p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 322}]);
        s["linux"]["personality"] = json!({"domain": "LINUX32"});
        s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        s["domainname"] = json!("example.org");
        s["root"]["readonly"] = json!(true);
    });
    std::fs::write(b.join("rootfs/etc/seeded"), "").unwrap();
    let r = run(&env, "m1", &b);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "host file\nro-refused\n/etc/seeded\n0027\n300\nGroups:\t7 8 \nNoNewPrivs:\t1\n321\ni686\n1\nexample.org\nroot-ro\n"
    );
}

#[test]
fn resources_reach_the_cgroup_and_unknown_ones_are_refused() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "1000"], |s| {
        s["linux"]["resources"] = json!({
            "memory": {"limit": 64 * 1024 * 1024, "reservation": 32 * 1024 * 1024},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 40},
        });
    });
    env.create("l1", &b, &[]).ok();
    let read = |file: &str| {
        env.cgroup_dirs()
            .iter()
            .map(|d| d.join("b").join(file))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
    };
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
        assert_eq!(
            read("memory.soft_limit_in_bytes").as_deref(),
            Some("33554432")
        );
        assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("50000"));
        assert_eq!(read("cpu.shares").as_deref(), Some("512"));
    } else {
        assert_eq!(read("memory.max").as_deref(), Some("67108864"));
    }
    assert_eq!(read("pids.max").as_deref(), Some("40"));
    env.rt(&["delete", "l1"]).ok();

    let b = env.bundle("b2", &["true"], |s| {
        s["linux"]["resources"] = json!({"rdma": {"mlx5_0": {"hcaHandles": 3}}});
    });
    env.create("l2", &b, &[])
        .fails_with(&["linux.resources.rdma"]);
    assert!(!env.root().join("l2").exists());
}
