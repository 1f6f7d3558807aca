//! The escape-regression suite against berth-runtime: leaked descriptors
//! (CVE-2024-21626), the host binary (CVE-2019-5736), mounts redirected
//! into /proc (CVE-2019-16884, CVE-2019-19921, CVE-2023-27561), a mount
//! target swapped for a symlink (CVE-2021-30465), and `/dev/null` swapped
//! for a symlink while masking (CVE-2025-31133). Each is blocked with one
//! line and leaves the host unchanged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use berth_fixtures::attack::{binary_of, with_open_fds};

use crate::common::*;

const LIST_FDS: &str = "cd /proc/self/fd && echo *";

#[test]
fn cve_2024_21626_only_preserved_fds_reach_the_container() {
    let env = Env::new();
    let secret = env.dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("f"), "host-secret\n").unwrap();
    let run = |args: &[&str]| {
        let mut c = env.cmd();
        c.args(args);
        Run::from(with_open_fds(c, &secret).output().unwrap())
    };
    let b = env.bundle("b", &["sh", "-c", LIST_FDS], |_| {});
    let r = run(&["run", "--bundle", b.to_str().unwrap(), "r1"]).ok();
    assert_eq!(r.stdout.trim(), "0 1 2 3", "descriptors leaked");
    // --preserve-fds passes exactly 3 and 4 on purpose.
    let r = run(&[
        "run",
        "--preserve-fds",
        "2",
        "--bundle",
        b.to_str().unwrap(),
        "r2",
    ])
    .ok();
    assert_eq!(r.stdout.trim(), "0 1 2 3 4 5");
    // process.cwd through a leaked descriptor: refused, one line.
    let w = env.bundle("w", &["cat", "f"], |s| {
        s["process"]["cwd"] = json!("/proc/self/fd/7");
    });
    let r = run(&["run", "--bundle", w.to_str().unwrap(), "r3"]);
    assert!(!r.stdout.contains("host-secret"), "cwd escaped");
    r.fails_with(&["working directory"]);
    // exec: the same.
    let s = env.bundle("s", &["sleep", "300"], |_| {});
    env.create("s1", &s, &[]).ok();
    env.rt(&["start", "s1"]).ok();
    let r = run(&["exec", "s1", "sh", "-c", LIST_FDS]).ok();
    assert_eq!(r.stdout.trim(), "0 1 2 3");
    let r = run(&["exec", "--cwd", "/proc/self/fd/9", "s1", "cat", "f"]);
    assert!(!r.stdout.contains("host-secret"), "exec --cwd escaped");
    r.fails_with(&["working directory"]);
    env.rt(&["delete", "--force", "s1"]).ok();
}

#[test]
fn cve_2019_5736_runtime_exec_runs_from_a_sealed_binary() {
    let env = Env::new();
    let s = env.bundle("s", &["sleep", "300"], |_| {});
    env.create("s1", &s, &[]).ok();
    env.rt(&["start", "s1"]).ok();
    let mut slow = env
        .cmd()
        .args(["exec", "s1", "sleep", "2"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_, read_only) = binary_of(slow.id()).unwrap();
    assert!(read_only, "berth-runtime exec runs from a writable binary");
    slow.wait().unwrap();
    // The init, a copy of the runtime until `start`, runs from the sealed
    // view too.
    env.create("s2", &s, &[]).ok();
    let init = env.state("s2")["pid"].as_i64().unwrap();
    assert!(
        binary_of(init as u32).unwrap().1,
        "the created init's binary is writable"
    );
    env.rt(&["delete", "--force", "s2"]).ok();
    env.rt(&["delete", "--force", "s1"]).ok();
}

#[test]
fn proc_cannot_be_redirected() {
    let env = Env::new();
    // CVE-2019-16884 / CVE-2023-27561: the rootfs's /proc is a symlink.
    let b = env.bundle("link", &["true"], |_| {});
    let proc_dir = b.join("rootfs/proc");
    std::fs::remove_dir(&proc_dir).unwrap();
    std::os::unix::fs::symlink("/", &proc_dir).unwrap();
    env.rt(&["run", "--bundle", b.to_str().unwrap(), "p1"])
        .fails_with(&["proc must be mounted on an ordinary directory"]);
    // Something other than procfs on /proc.
    let host_dir = env.dir.path().join("fake-proc");
    std::fs::create_dir_all(&host_dir).unwrap();
    let b = env.bundle("over", &["true"], |s| {
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/proc", "type": "bind",
            "source": host_dir, "options": ["rbind"]}));
    });
    env.rt(&["run", "--bundle", b.to_str().unwrap(), "p2"])
        .fails_with(&["only a proc filesystem may be mounted on /proc"]);
    // CVE-2019-19921: a volume's path is a symlink into /proc.
    let file = env.dir.path().join("evil-attr");
    std::fs::write(&file, "unconfined").unwrap();
    let b = env.bundle("vol", &["true"], |s| {
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/data/attr", "type": "bind",
            "source": file, "options": ["bind"]}));
    });
    let data = b.join("rootfs/data");
    std::fs::remove_dir(&data).unwrap();
    std::os::unix::fs::symlink("/proc/self", &data).unwrap();
    env.rt(&["run", "--bundle", b.to_str().unwrap(), "p3"])
        .fails_with(&["resolves into a proc filesystem"]);
    assert_eq!(env.rt(&["list", "-q"]).stdout.trim(), "");
}

/// The container's view of its masked paths: each must be the null device
/// (or an empty directory).
const MASKS: &str = "for p in /proc/keys /proc/timer_list /proc/sched_debug /proc/kcore; do \
    [ -e $p ] && stat -c '%n %F %t:%T' $p; done; true";

#[test]
fn cve_2025_31133_masking_never_binds_a_swapped_dev_null() {
    let env = Env::new();
    // /dev comes from a host directory that a racer keeps swapping: the
    // real null device one moment, a symlink to a procfs file the next.
    let shared = env.dir.path().join("shared-dev");
    std::fs::create_dir_all(&shared).unwrap();
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let b = env.bundle("m", &["sh", "-c", MASKS], |s| {
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["destination"] != "/dev");
        mounts.insert(
            0,
            json!({"destination": "/dev", "type": "bind",
            "source": shared, "options": ["rbind"]}),
        );
    });
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, shared) = (stop.clone(), shared.clone());
        std::thread::spawn(move || {
            let link = shared.join("null.link");
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&link);
                let _ = std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", &link);
                let _ = std::fs::rename(&link, shared.join("null"));
                std::thread::yield_now();
            }
        })
    };
    for i in 0..30 {
        let id = format!("m{i}");
        let r = env.rt(&["run", "--bundle", b.to_str().unwrap(), &id]);
        let _ = env.rt(&["delete", "--force", &id]);
        if r.code != 0 {
            // Refused: one line, no panic.
            assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
            continue;
        }
        for line in r.stdout.lines() {
            assert!(
                line.ends_with("character special file 1:3"),
                "a masked path is not the null device: {line}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    // Without the racer, the same bundle runs with every path masked.
    let _ = std::fs::remove_file(shared.join("null"));
    let r = env
        .rt(&["run", "--bundle", b.to_str().unwrap(), "calm"])
        .ok();
    assert!(r.stdout.lines().count() >= 2, "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .all(|l| l.ends_with("character special file 1:3")),
        "{}",
        r.stdout
    );
    env.rt(&["delete", "--force", "calm"]).ok();
    let after = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    assert_eq!(before, after, "the host's core_pattern changed");
    let md = std::fs::metadata("/proc/sys/kernel/core_pattern").unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o644
    );
}

#[test]
fn cve_2021_30465_swapped_mount_targets_stay_in_the_rootfs() {
    let env = Env::new();
    let src = env.dir.path().join("volume");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("marker"), "volume").unwrap();
    let b = env.bundle(
        "x",
        &["sh", "-c", "cat /data/vol/marker 2>/dev/null; true"],
        |s| {
            let mounts = s["mounts"].as_array_mut().unwrap();
            mounts.push(json!({"destination": "/data/vol", "type": "bind",
            "source": src, "options": ["rbind"]}));
        },
    );
    // A racer swaps the target's directory for a symlink to / and back.
    let data = b.join("rootfs/data");
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, data) = (stop.clone(), data.clone());
        std::thread::spawn(move || {
            let (dir, link) = (data.join("vol.dir"), data.join("vol.link"));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::os::unix::fs::symlink("/", &link);
            while !stop.load(Ordering::Relaxed) {
                // renameat2(RENAME_EXCHANGE) keeps one of the two in place.
                let _ = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &data.join("vol"),
                    nix::fcntl::AT_FDCWD,
                    &link,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
                if !data.join("vol").exists() {
                    let _ = std::fs::rename(&dir, data.join("vol"));
                }
            }
        })
    };
    for i in 0..20 {
        let id = format!("x{i}");
        let _ = env.rt(&["run", "--bundle", b.to_str().unwrap(), &id]);
        let _ = env.rt(&["delete", "--force", &id]);
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    // Nothing was mounted outside the rootfs: the host's / has no marker
    // and no mount of the volume.
    assert!(
        !Path::new("/marker").exists(),
        "the volume landed on the host's /"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(src.to_str().unwrap())),
        "a mount of the volume is left"
    );
}
