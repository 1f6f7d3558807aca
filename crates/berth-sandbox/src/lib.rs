//! berth-sandbox: run an OCI process spec in a rootfs on the host kernel.
//!
//! Used twice: by the engine on the host for containers, and by the guest
//! agent inside microVMs. Every `unsafe` block lives in [`sys`] (and the
//! seccomp loader's single syscall).

pub mod cgroup;
mod child;
pub mod exec;
pub mod fault;
pub mod fds;
pub mod foreground;
mod guards;
pub mod hooks;
pub mod mount_extra;
pub mod mounts;
pub mod process;
pub mod procfs;
pub mod safepath;
pub mod seal;
pub mod seccomp;
pub mod spawn;
pub mod sys;
pub mod time;
pub mod tty;

pub use cgroup::{Cgroup, CgroupError, Layout};
pub use child::check_process;
pub use exec::{exec, ExecOptions};
pub use spawn::{spawn, spawn_with, SpawnError, SpawnExtras, SpawnOptions, Started, Stdio};

/// A failed step of container setup in the child, reported to the parent.
#[derive(Debug)]
pub struct SetupError {
    pub step: String,
    pub source: std::io::Error,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

impl std::error::Error for SetupError {}
