//! Test harness: a private berth root per test, the real binary, fixture
//! images built once, and a leak check on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_fixtures::{busybox_image, cached, layered_image, Compression, Format, ImageSpec};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// The VM cache of the tests (initramfs, snapshots): their own, so that a
/// berth in use beside them never shares (or prunes) what they boot; the
/// read-only guest kernel is the host's.
pub fn vm_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-vm-cache")
}

/// Where fixtures are cached between test runs.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-fixtures")
}

pub fn busybox_tar() -> PathBuf {
    cached(&fixture_dir(), "busybox-oci-gzip.tar", |p| {
        busybox_image(&ImageSpec::default(), p)
    })
    .unwrap()
}

pub fn image_tar(name: &str, spec: ImageSpec) -> PathBuf {
    cached(&fixture_dir(), name, |p| busybox_image(&spec, p)).unwrap()
}

pub fn layered_tar() -> PathBuf {
    let spec = ImageSpec {
        name: "layered:latest".into(),
        ..ImageSpec::default()
    };
    cached(&fixture_dir(), "layered-oci-gzip.tar", |p| {
        layered_image(&spec, p)
    })
    .unwrap()
}

pub fn spec(name: &str, format: Format, compression: Compression) -> ImageSpec {
    ImageSpec {
        name: name.into(),
        format,
        compression,
        ..ImageSpec::default()
    }
}

/// A private berth store; removes containers and checks for leaks on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
}

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

    /// A failure with exactly one line on stderr.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Run {
        assert_ne!(self.code, 0, "expected failure, got stdout {}", self.stdout);
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "error is not one line: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "{:?} does not contain {needle:?}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir_in("/tmp")
            .unwrap();
        // berth runs in a network namespace of this test's own (bridges,
        // nft rules and sysctls never touch the host's).
        crate::nethelp::private_netns(&dir.path().join("netns"));
        Env { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns().display()))
            .arg(BERTH);
        c.env("BERTH_ROOT", self.root())
            .env("BERTH_RUN_ROOT", self.dir.path().join("run"))
            .env("BERTH_VM_CACHE", vm_cache_dir())
            .stdin(Stdio::null());
        c
    }

    pub fn berth(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    pub fn with_busybox() -> Env {
        let env = Env::new();
        env.berth(&["image", "import", busybox_tar().to_str().unwrap()])
            .ok();
        env
    }

    /// Every file below the root with its size, to compare the store before
    /// and after a failed command.
    /// The records are compared through the CLI (the database file itself
    /// may grow and shrink).
    pub fn snapshot(&self) -> Snapshot {
        let mut out = Vec::new();
        walk(&self.root(), &mut out);
        // The database is compared through the CLI below; the event log is
        // history (Docker also records the events of a failed run).
        out.retain(|p| !p.contains("/berth.db") && !p.contains("/events.log"));
        out.push(self.berth(&["images", "--no-trunc"]).stdout);
        out.push(self.berth(&["ps", "-a", "--no-trunc", "-q"]).stdout);
        out.sort();
        Snapshot(out)
    }

    pub fn container_ids(&self) -> Vec<String> {
        self.berth(&["ps", "-aq", "--no-trunc"])
            .stdout
            .lines()
            .map(String::from)
            .collect()
    }
}

/// A listing of the store; `==` failures print only the differences.
#[derive(PartialEq, Eq)]
pub struct Snapshot(Vec<String>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} entries", self.0.len())
    }
}

impl Snapshot {
    /// Entries only in `self`, then entries only in `other`.
    pub fn diff<'a>(&'a self, other: &'a Snapshot) -> (Vec<&'a String>, Vec<&'a String>) {
        let a: Vec<&String> = self.0.iter().filter(|x| !other.0.contains(x)).collect();
        let b: Vec<&String> = other.0.iter().filter(|x| !self.0.contains(x)).collect();
        (a, b)
    }

    #[track_caller]
    pub fn assert_same(&self, after: &Snapshot, what: &str) {
        let (gone, added) = self.diff(after);
        assert!(
            gone.is_empty() && added.is_empty(),
            "{what} changed the store: gone {gone:?}, added {added:?}"
        );
    }
}

fn walk(p: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let path = e.path();
        let md = std::fs::symlink_metadata(&path).unwrap();
        out.push(format!(
            "{} {}",
            path.display(),
            if md.is_file() { md.len() } else { 0 }
        ));
        if md.is_dir() {
            walk(&path, out);
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.container_ids();
        for id in &ids {
            let _ = self.berth(&["rm", "-f", id]);
        }
        crate::nethelp::check_network_and_clean(self);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.path().display().to_string();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&prefix)).collect();
        for id in &ids {
            assert!(
                !Path::new("/sys/fs/cgroup/memory/berth").join(id).exists(),
                "cgroup of {id} leaked"
            );
        }
        if !std::thread::panicking() {
            assert!(leaked.is_empty(), "leaked mounts: {leaked:?}");
        }
    }
}

/// A small filesystem (tmpfs of `size`, e.g. "1600k") at `<dir>/small`
/// while it lives: a store on it runs out of space.
pub struct SmallFs {
    pub path: PathBuf,
}

impl SmallFs {
    pub fn new(env: &Env, size: &str) -> SmallFs {
        let path = env.dir.path().join("small");
        std::fs::create_dir_all(&path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        SmallFs { path }
    }

    /// Its regular files, sorted, but berth's database and event log
    /// (compared through the CLI instead).
    pub fn files(&self) -> Vec<String> {
        fn walk(p: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() && !path.is_symlink() {
                    walk(&path, out);
                } else {
                    out.push(path.display().to_string());
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.path, &mut v);
        v.retain(|f| !f.contains("berth.db") && !f.contains("events.log"));
        v.sort();
        v
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}
