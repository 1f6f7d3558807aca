//! OCI lifecycle hooks: run a hook binary with the container's state on its
//! standard input, within its timeout.
//!
//! Where each kind runs (runtime spec, "POSIX-platform Hooks"):
//! - `prestart` (deprecated) and `createRuntime`: by the runtime, in its own
//!   namespaces, after the container's namespaces exist and before
//!   `pivot_root` ([`crate::spawn_with`] does this in the parent);
//! - `createContainer`: in the container's namespaces, before `pivot_root`
//!   (the container's child process runs it);
//! - `startContainer`: in the container, right before the user process is
//!   exec'd (after `start`);
//! - `poststart` and `poststop`: by the runtime, after `start` and in
//!   `delete` (the caller runs them with [`run_hooks`]).
//!
//! Used in a freshly forked, single-threaded child too: [`run_hook`] only
//! forks, execs and polls, and feeds the state through a pipe filled before
//! the hook starts, so it never blocks on a hook that does not read.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// Why a hook failed.
#[derive(thiserror::Error, Debug)]
pub enum HookError {
    #[error("{kind} hook {path}: {source}")]
    Spawn {
        kind: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook {path} exited with {status}{output}")]
    Failed {
        kind: &'static str,
        path: String,
        status: String,
        output: String,
    },
    #[error("{kind} hook {path} timed out after {secs} s")]
    Timeout {
        kind: &'static str,
        path: String,
        secs: i64,
    },
    #[error("{kind} hook {path}: timeout {secs} must be positive")]
    BadTimeout {
        kind: &'static str,
        path: String,
        secs: i64,
    },
}

/// Most bytes of a failed hook's output quoted in the error.
const OUTPUT_LIMIT: usize = 2048;

/// Runs `hooks` in order, stopping at the first failure. `kind` names the
/// hook list in errors (`createRuntime`, `poststop`, ...); `state` is the
/// OCI state JSON written to each hook's standard input.
pub fn run_hooks(kind: &'static str, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for h in hooks {
        run_hook(kind, h, state)?;
    }
    Ok(())
}

/// A pipe whose read end carries `data` and then end-of-file.
fn state_pipe(data: &[u8]) -> std::io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    if data.len() > 60 * 1024 {
        // Grow the pipe so the whole state fits without a reader.
        let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(data.len() as i32));
    }
    // Never block: a state larger than the pipe (over 1 MiB) is cut short.
    nix::fcntl::fcntl(
        &w,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut rest = data;
    while !rest.is_empty() {
        match nix::unistd::write(&w, rest) {
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(r)
}

/// Runs one hook: `path` with `args` (whose first element is argv[0]) and
/// exactly `env`, the state on stdin, stdout and stderr captured for the
/// error message. A hook still running after `timeout` seconds is killed.
pub fn run_hook(kind: &'static str, hook: &Hook, state: &str) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    if let Some(secs) = hook.timeout().filter(|s| *s <= 0) {
        return Err(HookError::BadTimeout { kind, path, secs });
    }
    let spawn_err = |source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    };
    let stdin = state_pipe(state.as_bytes()).map_err(spawn_err)?;
    let (out_r, out_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let out_w2 = out_w.try_clone().map_err(spawn_err)?;
    let mut cmd = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(kv, ""),
        };
    }
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(cmd);
    let deadline = hook
        .timeout()
        .map(|s| Instant::now() + Duration::from_secs(s as u64));
    let mut output = Vec::new();
    let mut out = std::fs::File::from(out_r);
    nix::fcntl::fcntl(
        out.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| spawn_err(e.into()))?;
    let mut buf = [0u8; 4096];
    let status = loop {
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if output.len() < OUTPUT_LIMIT {
                        output.extend_from_slice(&buf[..n]);
                    }
                }
                Err(_) => break,
            }
        }
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(spawn_err(e)),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                kind,
                path,
                secs: hook.timeout().unwrap_or(0),
            });
        }
        let mut fds = [nix::poll::PollFd::new(
            out.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2u8));
    };
    if status.success() {
        return Ok(());
    }
    let _ = out.read_to_end(&mut output);
    output.truncate(OUTPUT_LIMIT);
    let text = String::from_utf8_lossy(&output).trim().replace('\n', " ");
    Err(HookError::Failed {
        kind,
        path,
        status: status.to_string(),
        output: if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn state_reaches_stdin_and_env_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}; echo \"$FOO\" >> {}", out.display(), out.display())],
            "env": ["FOO=bar"],
        }));
        run_hooks("poststop", &[h], "{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "{\"id\":\"x\"}bar\n");
    }

    #[test]
    fn failure_names_the_hook_and_quotes_output() {
        let h = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"],
        }));
        let e = run_hook("createRuntime", &h, "{}").unwrap_err().to_string();
        assert!(e.contains("createRuntime hook /bin/sh exited with"), "{e}");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn timeout_kills_the_hook() {
        let h = hook(serde_json::json!({
            "path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1,
        }));
        let start = Instant::now();
        let e = run_hook("poststart", &h, "{}").unwrap_err().to_string();
        assert!(e.contains("timed out after 1 s"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_hook_that_does_not_read_stdin_is_fine() {
        let big = "x".repeat(200_000);
        let h = hook(serde_json::json!({"path": "/bin/true"}));
        run_hook("poststop", &h, &big).unwrap();
    }
}
