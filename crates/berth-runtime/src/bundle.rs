//! Reading and checking a bundle's `config.json`. Errors name the bundle
//! and the field; fields berth cannot honour are refused here or by the
//! sandbox, never ignored.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Result, RuntimeError};

/// The annotation that picks the isolation backend.
pub const ISOLATION_ANNOTATION: &str = "run.berth.isolation";

/// A loaded bundle.
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
}

fn config_err(bundle: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Config {
        bundle: bundle.to_path_buf(),
        msg: msg.into(),
    }
}

/// Loads `<dir>/config.json` (`dir` defaults to the working directory).
pub fn load(dir: Option<&Path>) -> Result<Bundle> {
    let given = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = std::fs::canonicalize(&given)
        .map_err(|e| config_err(&given, format!("cannot open the bundle directory: {e}")))?;
    let path = dir.join("config.json");
    let text = std::fs::read(&path)
        .map_err(|e| config_err(&dir, format!("cannot read config.json: {e}")))?;
    let spec: Spec = serde_json::from_slice(&text)
        .map_err(|e| config_err(&dir, format!("invalid config.json: {e}")))?;
    check(&dir, &spec)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| config_err(&dir, "config.json: root.path is required"))?;
    let rootfs = dir.join(root.path());
    let rootfs = std::fs::canonicalize(&rootfs).map_err(|e| {
        config_err(
            &dir,
            format!("config.json: root.path {}: {e}", root.path().display()),
        )
    })?;
    if !rootfs.is_dir() {
        return Err(config_err(
            &dir,
            format!(
                "config.json: root.path {} is not a directory",
                rootfs.display()
            ),
        ));
    }
    Ok(Bundle { dir, spec, rootfs })
}

/// Checks what serde cannot: versions, required fields, berth's limits.
pub fn check(dir: &Path, spec: &Spec) -> Result<()> {
    let v = spec.version();
    if v.is_empty() {
        return Err(config_err(dir, "config.json: ociVersion is required"));
    }
    if !v.starts_with("1.") {
        return Err(config_err(
            dir,
            format!("config.json: ociVersion {v:?} is not supported (1.0 to 1.2 are)"),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| config_err(dir, "config.json: process is required"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(config_err(
            dir,
            "config.json: process.args must not be empty",
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(config_err(
            dir,
            format!(
                "config.json: process.cwd {:?} must be an absolute path",
                process.cwd()
            ),
        ));
    }
    berth_sandbox::check_process(process)
        .map_err(|e| config_err(dir, format!("config.json: {e}")))?;
    if spec.linux().is_none() {
        return Err(config_err(dir, "config.json: linux is required"));
    }
    if let Some(iso) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ISOLATION_ANNOTATION))
    {
        match iso.as_str() {
            "container" | "" => {}
            "vm" | "microvm" => crate::vm::preflight(spec).map_err(|e| {
                config_err(dir, format!("annotation {ISOLATION_ANNOTATION}={iso}: {e}"))
            })?,
            other => {
                return Err(config_err(
                    dir,
                    format!(
                        "annotation {ISOLATION_ANNOTATION}={other:?}: expected container or vm"
                    ),
                ))
            }
        }
    }
    if let Some(path) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        if path.to_string_lossy().contains(':') {
            return Err(config_err(
                dir,
                format!(
                    "config.json: linux.cgroupsPath {:?} is a systemd slice path; the systemd cgroup driver is not supported",
                    path
                ),
            ));
        }
    }
    Ok(())
}

/// The cgroup path of a container (relative to each hierarchy's root).
pub fn cgroup_path(spec: &Spec, id: &str) -> String {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        Some(p) => p.to_string_lossy().trim_start_matches('/').to_string(),
        None => format!("berth-runtime/{id}"),
    }
}
