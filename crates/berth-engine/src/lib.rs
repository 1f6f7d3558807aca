//! berth-engine: records, image names, container lifecycle and the OCI
//! bundles handed to isolation backends. The CLI (and later the API server
//! and the OCI runtime front end) drive it; it never prints.

pub mod attach;
pub mod config;
pub mod containers;
pub mod db;
pub mod detach;
pub mod events;
pub mod exec;
pub mod files;
pub mod flags;
pub mod images;
pub mod lifecycle;
pub mod logs;
pub mod names;
mod netdb;
mod netdns;
mod netsetup;
pub mod network;
pub mod profiles;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod run;
pub mod spec;
pub mod stats;
pub mod user;
pub mod vm;
mod vmhost;

use std::path::{Path, PathBuf};

pub use config::{ContainerConfig, TmpfsMount, VolumeMount};
pub use reference::Reference;

/// Errors are one line each and name what was wrong.
#[derive(thiserror::Error, Debug)]
pub enum EngineError {
    #[error("{0}")]
    Image(#[from] berth_image::ImageError),
    #[error("{0}")]
    Reference(#[from] reference::ReferenceError),
    #[error("{0}")]
    Registry(#[from] berth_registry::RegistryError),
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("{0:?} matches more than one container; use more of the ID")]
    Ambiguous(String),
    #[error("the container name \"/{name}\" is already in use by container \"{id}\"")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("unable to remove image {image}: image is being used by container {container} (use -f to force)")]
    ImageInUse { image: String, container: String },
    #[error(
        "unable to remove image {0}: it is tagged in more than one repository (use -f to force)"
    )]
    ImageMultiTagged(String),
    #[error("cannot remove running container {0}: stop it first or use -f")]
    ContainerRunning(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{msg}")]
    StartFailed { code: i32, msg: String },
    #[error("{0}")]
    Spawn(#[from] berth_sandbox::SpawnError),
    #[error("{0}")]
    Cgroup(#[from] berth_sandbox::CgroupError),
    #[error("{0}")]
    Net(#[from] berth_net::NetError),
    #[error("database: {0}")]
    Db(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for EngineError {
    fn from(e: rusqlite::Error) -> Self {
        EngineError::Db(e.to_string())
    }
}

impl EngineError {
    /// The exit code Docker's CLI uses for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Spawn(e) => e.exit_code(),
            EngineError::StartFailed { code, .. } => *code,
            _ => 125,
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

/// The engine over one state root (`--root`) and runtime root (`--run-root`).
pub struct Engine {
    pub root: PathBuf,
    pub run_root: PathBuf,
    db: db::Db,
    store: Option<berth_image::Store>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    pub fn open(root: &Path, run_root: &Path) -> Result<Engine, EngineError> {
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers)
            .map_err(io_err(format!("creating {}", containers.display())))?;
        std::fs::create_dir_all(run_root)
            .map_err(io_err(format!("creating {}", run_root.display())))?;
        let db = db::Db::open(&root.join("berth.db"))?;
        Ok(Engine {
            root: root.to_path_buf(),
            run_root: run_root.to_path_buf(),
            db,
            store: None,
        })
    }

    pub(crate) fn store(&mut self) -> Result<&berth_image::Store, EngineError> {
        if self.store.is_none() {
            self.store = Some(berth_image::Store::open(&self.root.join("image"))?);
        }
        Ok(self.store.as_ref().expect("store was just opened"))
    }

    pub(crate) fn db(&mut self) -> &mut db::Db {
        &mut self.db
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}
