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
    /// `--restart`: applied by the monitor of a detached container.
    pub restart: RestartPolicy,
    /// `--log-opt max-size=…`: rotate the log past this many bytes (0: never).
    pub log_max_size: u64,
    /// `--log-opt max-file=…`: how many log files to keep (current included).
    pub log_max_file: u32,
    /// `--stop-signal`; default: the image's StopSignal, else SIGTERM.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` in seconds; default 10.
    pub stop_timeout: Option<i64>,
    /// `--network`, `-p`, `-P`, `--dns`, `--add-host`, `--network-alias`.
    pub network: crate::network::NetworkConfig,
    /// `--isolation`; settled at create (flag, image label, config file).
    pub isolation: Option<crate::vm::Isolation>,
}

/// Docker's restart policies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestartPolicy {
    /// "no", "on-failure", "always" or "unless-stopped"; empty means "no".
    pub name: String,
    /// For on-failure: give up after this many restarts (0: never give up).
    pub max_retries: u32,
}

impl RestartPolicy {
    /// Parses `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let max_retries = match (name, count) {
            ("on-failure", Some(c)) => c
                .parse::<u32>()
                .map_err(|_| format!("invalid restart policy {s:?}: the retry count must be a number"))?,
            ("no" | "always" | "unless-stopped", Some(_)) => {
                return Err(format!("invalid restart policy {s:?}: only on-failure takes a retry count"))
            }
            ("no" | "always" | "unless-stopped" | "on-failure", None) => 0,
            _ => {
                return Err(format!(
                    "invalid restart policy {s:?}: expected no, always, unless-stopped or on-failure[:N]"
                ))
            }
        };
        Ok(RestartPolicy {
            name: name.to_string(),
            max_retries,
        })
    }

    pub fn is_none(&self) -> bool {
        self.name.is_empty() || self.name == "no"
    }

    /// Whether a container that exited with `code` after `restarts`
    /// restarts is started again (never after a user's stop).
    pub fn should_restart(&self, code: i32, restarts: i64, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0 && (self.max_retries == 0 || restarts < i64::from(self.max_retries))
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.name.as_str(), self.max_retries) {
            ("", _) => write!(f, "no"),
            ("on-failure", n) if n > 0 => write!(f, "on-failure:{n}"),
            (n, _) => write!(f, "{n}"),
        }
    }
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
        if self.auto_remove && !self.restart.is_none() {
            return Err("conflicting options: --restart and --rm".into());
        }
        for e in &self.env {
            if e.starts_with('=') || e.is_empty() {
                return Err(format!("invalid environment variable {e:?}"));
            }
        }
        self.network.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RestartPolicy;

    #[test]
    fn restart_policies() {
        let p = RestartPolicy::parse("on-failure:2").unwrap();
        assert!(p.should_restart(1, 0, false) && p.should_restart(1, 1, false));
        assert!(!p.should_restart(1, 2, false) && !p.should_restart(0, 0, false));
        assert!(RestartPolicy::parse("always")
            .unwrap()
            .should_restart(0, 99, false));
        assert!(!RestartPolicy::parse("always")
            .unwrap()
            .should_restart(0, 0, true));
        assert!(!RestartPolicy::parse("no")
            .unwrap()
            .should_restart(1, 0, false));
        for bad in ["sometimes", "always:3", "on-failure:x", ""] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap().to_string(),
            "on-failure:3"
        );
    }
}
