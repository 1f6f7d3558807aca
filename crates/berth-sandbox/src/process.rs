//! Child side: the container process's identity and limits (user, groups,
//! capabilities, rlimits, no_new_privs), the executable lookup and exec.
//! Everything is computed by the parent in [`ProcessPlan::from_spec`] so the
//! child only applies it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, Process};

use crate::SetupError;

/// Why the container's command could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecFailure {
    /// The command was not found (Docker and the shell exit with 127).
    NotFound(String),
    /// Found but not executable (exit 126).
    NotExecutable(String, String),
}

/// What the child applies right before exec.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// `PATH` from the process environment, for the executable lookup.
    pub path_env: String,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: Option<CapPlan>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct CapPlan {
    pub bounding: Vec<caps::Capability>,
    pub effective: Vec<caps::Capability>,
    pub permitted: Vec<caps::Capability>,
    pub inheritable: Vec<caps::Capability>,
    pub ambient: Vec<caps::Capability>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(what: &str, s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

fn cap_list(set: &Option<Capabilities>) -> Result<Vec<caps::Capability>, String> {
    let mut out = Vec::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap =
            caps::Capability::from_str(&name).map_err(|_| format!("unknown capability {name}"))?;
        out.push(cap);
    }
    out.sort_by_key(|c| c.index());
    Ok(out)
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

impl ProcessPlan {
    /// Validates and converts the OCI process; errors name the field.
    pub fn from_spec(p: &Process) -> Result<ProcessPlan, String> {
        let args = p
            .args()
            .as_ref()
            .filter(|a| !a.is_empty())
            .ok_or("process.args must not be empty")?;
        let args = args
            .iter()
            .map(|a| cstring("process.args", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env_strs = p.env().clone().unwrap_or_default();
        let path_env = env_strs
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let env = env_strs
            .iter()
            .map(|e| cstring("process.env", e.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = p.cwd().clone();
        if !cwd.is_absolute() {
            return Err(format!("process.cwd {:?} is not an absolute path", cwd));
        }
        let caps = match p.capabilities() {
            None => None,
            Some(c) => Some(CapPlan {
                bounding: cap_list(c.bounding())?,
                effective: cap_list(c.effective())?,
                permitted: cap_list(c.permitted())?,
                inheritable: cap_list(c.inheritable())?,
                ambient: cap_list(c.ambient())?,
            }),
        };
        let mut rlimits = Vec::new();
        for r in p.rlimits().iter().flatten() {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let res = rlimit_resource(&name)
                .ok_or_else(|| format!("process.rlimits: unknown type {name}"))?;
            if r.soft() > r.hard() {
                return Err(format!(
                    "process.rlimits: {name} soft limit {} is above its hard limit {}",
                    r.soft(),
                    r.hard()
                ));
            }
            rlimits.push((res, r.soft(), r.hard()));
        }
        let user = p.user();
        Ok(ProcessPlan {
            args,
            env,
            path_env,
            cwd,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            caps,
            rlimits,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            oom_score_adj: p.oom_score_adj(),
        })
    }

    /// Applies limits, working directory and identity. Runs in the child,
    /// inside the container's root, before seccomp and exec.
    pub fn apply(&self) -> Result<(), SetupError> {
        let fail = |step: &str| {
            let step = step.to_string();
            move |source: io::Error| SetupError { step, source }
        };
        let nfail = |step: &str| {
            let step = step.to_string();
            move |e: nix::errno::Errno| SetupError {
                step,
                source: e.into(),
            }
        };
        for (res, soft, hard) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: *soft,
                rlim_max: *hard,
            };
            crate::sys::setrlimit(*res, &lim).map_err(fail("setting rlimits"))?;
        }
        if let Some(adj) = self.oom_score_adj {
            std::fs::write("/proc/self/oom_score_adj", adj.to_string())
                .map_err(fail("setting oom_score_adj"))?;
        }
        if !self.cwd.exists() {
            std::fs::create_dir_all(&self.cwd).map_err(|source| SetupError {
                step: format!("creating the working directory {}", self.cwd.display()),
                source,
            })?;
        }
        if let Some(caps) = &self.caps {
            for c in caps::all() {
                if !caps.bounding.contains(&c) {
                    // Ignore caps the running kernel does not know.
                    let _ = caps::drop(None, caps::CapSet::Bounding, c);
                }
            }
        }
        nix::sys::prctl::set_keepcaps(true).map_err(nfail("keeping capabilities"))?;
        let groups: Vec<Gid> = self
            .additional_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(nfail("setting additional groups"))?;
        let gid = Gid::from_raw(self.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(nfail("setting the group id"))?;
        let uid = Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(nfail("setting the user id"))?;
        nix::sys::prctl::set_keepcaps(false).map_err(nfail("keeping capabilities"))?;
        // chdir as the user, so a directory it may not enter is refused as on Docker.
        nix::unistd::chdir(&self.cwd).map_err(nfail("entering the working directory"))?;
        // A directory outside the container's root (reached through a
        // descriptor or a mount it should not have) has no path from it.
        if !nix::unistd::getcwd().is_ok_and(|p| p.is_absolute()) {
            return Err(SetupError {
                step: format!(
                    "the working directory {} is outside the container",
                    self.cwd.display()
                ),
                source: io::Error::from_raw_os_error(libc::EPERM),
            });
        }
        if let Some(mask) = self.umask {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        }
        if let Some(caps) = &self.caps {
            let set = |which, list: &Vec<caps::Capability>| {
                let set: caps::CapsHashSet = list.iter().copied().collect();
                caps::set(None, which, &set).map_err(|e| SetupError {
                    step: format!("setting capabilities: {e}"),
                    source: io::Error::from_raw_os_error(libc::EPERM),
                })
            };
            set(caps::CapSet::Effective, &caps.effective)?;
            set(caps::CapSet::Permitted, &caps.permitted)?;
            set(caps::CapSet::Inheritable, &caps.inheritable)?;
            if !caps.ambient.is_empty() {
                set(caps::CapSet::Ambient, &caps.ambient)?;
            }
        }
        if self.no_new_privs {
            nix::sys::prctl::set_no_new_privs().map_err(nfail("setting no_new_privs"))?;
        }
        Ok(())
    }

    /// Finds the executable as execvp would, with the container's PATH.
    pub fn resolve(&self) -> Result<CString, ExecFailure> {
        let arg0 = self.args[0].as_bytes();
        let name = String::from_utf8_lossy(arg0).into_owned();
        if arg0.contains(&b'/') {
            let p = Path::new(std::ffi::OsStr::from_bytes(arg0));
            return match std::fs::metadata(p) {
                Ok(md) if md.is_dir() => {
                    Err(ExecFailure::NotExecutable(name, "is a directory".into()))
                }
                Ok(_) => Ok(self.args[0].clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ExecFailure::NotFound(
                    format!("exec: \"{name}\": stat {name}: no such file or directory"),
                )),
                Err(e) => Err(ExecFailure::NotExecutable(name, e.to_string())),
            };
        }
        for dir in self.path_env.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            let cand = Path::new(dir).join(std::ffi::OsStr::from_bytes(arg0));
            if let Ok(md) = std::fs::metadata(&cand) {
                use std::os::unix::fs::PermissionsExt;
                if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                    if let Ok(c) = CString::new(cand.as_os_str().as_bytes()) {
                        return Ok(c);
                    }
                }
            }
        }
        Err(ExecFailure::NotFound(format!(
            "exec: \"{name}\": executable file not found in $PATH"
        )))
    }
}
