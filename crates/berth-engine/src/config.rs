//! What a user asks for when creating a container: the engine's own input,
//! stored with the container record.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ContainerConfig {
    /// The image as the user named it.
    pub image: String,
    pub name: Option<String>,
    /// Replaces the image's Cmd when not empty.
    pub cmd: Vec<String>,
    /// Replaces the image's Entrypoint (and clears its Cmd) when set;
    /// `Some(vec![])` is `--entrypoint ""`.
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` entries, applied over the image's Env.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub read_only: bool,
    pub volumes: Vec<VolumeMount>,
    pub tmpfs: Vec<TmpfsMount>,
    /// Bytes.
    pub memory: Option<i64>,
    /// CPUs, fractional.
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub interactive: bool,
    pub tty: bool,
    pub auto_remove: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TmpfsMount {
    pub target: String,
    pub options: Vec<String>,
}

/// The smallest memory limit accepted, as Docker's (6 MiB).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

impl ContainerConfig {
    /// Checks what can be checked before anything is created.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(format!(
                    "memory limit {m} bytes is below the minimum of 6MB that berth accepts"
                ));
            }
        }
        if let Some(c) = self.cpus {
            let ncpu = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1) as f64;
            if c.is_nan() || c <= 0.0 || !c.is_finite() {
                return Err(format!(
                    "invalid --cpus value {c}: must be a positive number"
                ));
            }
            if c > ncpu {
                return Err(format!("range of CPUs is from 0.01 to {ncpu:.2}, as there are only {ncpu} CPUs available"));
            }
        }
        for v in &self.volumes {
            if !v.source.starts_with('/') {
                return Err(format!("volume source {:?} must be an absolute path (named volumes are not supported yet)", v.source));
            }
            if !v.target.starts_with('/') {
                return Err(format!(
                    "volume destination {:?} must be an absolute path",
                    v.target
                ));
            }
            if !std::path::Path::new(&v.source).exists() {
                return Err(format!("volume source {} does not exist", v.source));
            }
        }
        for t in &self.tmpfs {
            if !t.target.starts_with('/') {
                return Err(format!(
                    "tmpfs destination {:?} must be an absolute path",
                    t.target
                ));
            }
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(format!(
                    "the working directory {w:?} is invalid, it needs to be an absolute path"
                ));
            }
        }
        for e in &self.env {
            if e.starts_with('=') || e.is_empty() {
                return Err(format!("invalid environment variable {e:?}"));
            }
        }
        Ok(())
    }
}
