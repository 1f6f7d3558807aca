//! Container records under `--root/<id>/`: `state.json` (written
//! atomically), `exec.fifo` while the container waits for `start`, and a
//! lock file. The status is derived, as runc does: `stopped` once the init
//! process is gone (or a zombie), `paused` while its cgroup is frozen,
//! `created` until `start`, `running` after.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_sandbox::{Cgroup, Layout};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, RuntimeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What `create` records about a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub pid: i32,
    /// Start time of the init process (clock ticks since boot), to tell it
    /// from a later process that reuses the PID.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    /// `created` until `start` succeeded, then `running`.
    pub status: Status,
    /// The cgroup, relative to each hierarchy's root.
    pub cgroup: String,
    pub annotations: BTreeMap<String, String>,
    /// The container's config, as `create` read it.
    pub config: Spec,
}

/// Container IDs as runc accepts them.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadId(id.to_string()))
    }
}

/// Start time (clock ticks since boot) and state letter of a process.
pub use berth_sandbox::procfs::stat as proc_stat;

pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// Makes the container's directory; fails if the ID is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        fs::create_dir_all(&self.root)
            .map_err(io_err(format!("creating {}", self.root.display())))?;
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::Exists(id.to_string()))
            }
            Err(e) => Err(io_err(format!("creating {}", dir.display()))(e)),
        }
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        check_id(id)?;
        let path = self.dir(id).join("state.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotExist(id.to_string()))
            }
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&text).map_err(|e| RuntimeError::Io {
            what: format!("reading {}", path.display()),
            source: e.into(),
        })
    }

    /// Writes `state.json` atomically (temporary file, fsync, rename).
    pub fn save(&self, rec: &Record) -> Result<()> {
        let dir = self.dir(&rec.id);
        let tmp = dir.join(".state.json.tmp");
        let path = dir.join("state.json");
        let data = serde_json::to_vec(rec).map_err(|e| RuntimeError::Io {
            what: "encoding state".into(),
            source: e.into(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(io_err(format!("writing {}", tmp.display())))?;
        f.write_all(&data)
            .and_then(|()| f.sync_data())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    /// An exclusive lock on the container for commands that change it.
    pub fn lock(&self, id: &str) -> Result<nix::fcntl::Flock<fs::File>> {
        let path = self.dir(id).join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => RuntimeError::NotExist(id.to_string()),
                _ => io_err(format!("locking {}", path.display()))(e),
            })?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(format!("locking {}", path.display()))(e.into()))
    }

    /// IDs of every container in the store.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }
}

impl Record {
    pub fn cgroup(&self) -> Result<Cgroup> {
        let layout = Layout::detect()?;
        Ok(Cgroup::at(&layout, Path::new(&self.cgroup)))
    }

    /// Whether the init process still lives (and is not a zombie).
    pub fn alive(&self) -> bool {
        berth_sandbox::procfs::alive(self.pid, self.pid_start)
    }

    pub fn status(&self) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if self.cgroup().is_ok_and(|c| c.is_frozen()) {
            return Status::Paused;
        }
        self.status
    }

    /// The OCI state, with runc's extra fields (containerd reads them).
    pub fn oci_state(&self) -> serde_json::Value {
        let status = self.status();
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        let mut v = serde_json::json!({
            "ociVersion": self.config.version(),
            "id": self.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&self.annotations).unwrap_or_default();
        }
        v
    }

    /// State for hooks: the OCI fields only, with `status` as given.
    pub fn hook_state(&self, status: Status) -> String {
        serde_json::json!({
            "ociVersion": self.config.version(),
            "id": self.id,
            "pid": self.pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "annotations": self.annotations,
        })
        .to_string()
    }
}
