//! Test harness: a private `--root`, bundles with a busybox rootfs, a
//! private cgroup parent, and a leak check (containers, mounts, cgroups) on
//! drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const RT: &str = env!("CARGO_BIN_EXE_berth-runtime");

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// A failure with exactly one line on stderr containing every needle.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Run {
        assert_ne!(self.code, 0, "expected failure, got stdout {}", self.stdout);
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "not one line: {:?}",
            self.stderr
        );
        for n in needles {
            assert!(self.stderr.contains(n), "{:?} lacks {n:?}", self.stderr);
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    /// Parent of every container cgroup of this test.
    pub cgroup_parent: String,
}

/// Every v1 hierarchy's mount point, or the v2 root.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter(|l| l.contains(" - cgroup ") && !l.contains("name=systemd"))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect();
    if v.is_empty() {
        v.push("/sys/fs/cgroup".into());
    }
    v
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        Env {
            dir,
            cgroup_parent: format!("/berth-rt-tests/{name}"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(RT);
        c.arg("--root").arg(self.root()).stdin(Stdio::null());
        c
    }

    /// podman with its storage and state in this test's directory,
    /// cgroupfs, no event log, and berth-runtime as its runtime.
    pub fn podman(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("proot"))
            .arg("--runroot")
            .arg(d.join("prun"))
            .arg("--tmpdir")
            .arg(d.join("ptmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--events-backend", "none", "--runtime", RT]);
        c
    }

    pub fn rt(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    /// A bundle named `name` whose process runs `args`; `edit` changes the
    /// config (runc's default spec, terminal off, our cgroup parent).
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.dir.path().join(name);
        let rootfs = b.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "data"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh",
            "ls",
            "cat",
            "echo",
            "true",
            "false",
            "sleep",
            "ps",
            "id",
            "hostname",
            "uname",
            "grep",
            "touch",
            "mkdir",
            "stat",
            "umask",
            "head",
            "wc",
            "dnsdomainname",
            "readlink",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        let out = Command::new(RT)
            .args(["spec", "--bundle"])
            .arg(&b)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut spec: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into();
        spec["root"]["readonly"] = false.into();
        spec["linux"]["cgroupsPath"] = format!("{}/{name}", self.cgroup_parent).into();
        edit(&mut spec);
        std::fs::write(
            b.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        b
    }

    /// `create` with the container's output in `<bundle>/out`.
    pub fn create(&self, id: &str, bundle: &Path, extra: &[&str]) -> Run {
        let out = std::fs::File::create(bundle.join("out")).unwrap();
        let o = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(bundle)
            .args(extra)
            .arg(id)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .output()
            .unwrap();
        let mut r = Run::from(o);
        r.stderr = std::fs::read_to_string(bundle.join("out")).unwrap_or_default();
        r
    }

    pub fn state(&self, id: &str) -> Value {
        let r = self.rt(&["state", id]).ok();
        serde_json::from_str(&r.stdout).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Waits until `id` reaches `status`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status(id);
            if s == status {
                return;
            }
            assert!(Instant::now() < deadline, "{id} stuck in {s}, not {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `path` to hold something.
    #[track_caller]
    pub fn wait_file(&self, path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = std::fs::read_to_string(path).unwrap_or_default();
            if !s.is_empty() {
                return s;
            }
            assert!(Instant::now() < deadline, "{} stayed empty", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let rel = self.cgroup_parent.trim_start_matches('/');
        cgroup_roots()
            .into_iter()
            .map(|r| r.join(rel))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.rt(&["list", "-q"]).stdout;
        for id in ids.lines() {
            let _ = self.rt(&["delete", "--force", id]);
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.path().display().to_string();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&prefix)).collect();
        // Our private cgroup parent must hold no container groups any more.
        let mut leaked_cgroups = Vec::new();
        for d in self.cgroup_dirs() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    leaked_cgroups.push(e.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
        if !std::thread::panicking() {
            assert!(ids.trim().is_empty(), "containers left behind: {ids}");
            assert!(leaked.is_empty(), "leaked mounts: {leaked:?}");
            assert!(
                leaked_cgroups.is_empty(),
                "leaked cgroups: {leaked_cgroups:?}"
            );
        }
    }
}
