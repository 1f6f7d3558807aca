//! The runtime's errors. Messages follow runc's where clients match on
//! them (containerd looks for "does not exist" and "not running").

use std::io;
use std::path::PathBuf;

#[derive(thiserror::Error, Debug)]
pub enum RuntimeError {
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.'")]
    BadId(String),
    #[error("bundle {bundle}: {msg}")]
    Config { bundle: PathBuf, msg: String },
    /// The container is in the wrong state for the command.
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Spawn(#[from] berth_sandbox::SpawnError),
    #[error("{0}")]
    Cgroup(#[from] berth_sandbox::CgroupError),
    #[error("{0}")]
    Hook(#[from] berth_sandbox::hooks::HookError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

impl RuntimeError {
    /// Exit status for this failure: 127/126 when the command could not be
    /// run (as `berth run` and Docker), 1 otherwise (as runc).
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Spawn(e) if e.exit_code() != 125 => e.exit_code(),
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

pub fn nix_err(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Io {
        what,
        source: e.into(),
    }
}
