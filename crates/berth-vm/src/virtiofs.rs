//! Host directories in a guest (`-v /src:/dst` of a VM): one virtiofsd
//! per directory, serving it over a vhost-user socket that QEMU connects
//! a `vhost-user-fs-device` to; the agent mounts the tag with `virtiofs`.
//!
//! Debian 12 ships QEMU's C virtiofsd as `/usr/lib/qemu/virtiofsd`
//! (package qemu-system-common); later releases ship the Rust one
//! (package virtiofsd, `/usr/libexec/virtiofsd`). Both run as root in
//! namespaces of their own, chrooted into the shared directory. A
//! read-only volume is shared through a read-only bind mount made in a
//! mount namespace private to that virtiofsd, so the guest kernel cannot
//! write to it whatever it sends. Each virtiofsd dies with the VM's host
//! process (parent-death signal) and exits by itself when QEMU goes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{io_err, VmError};

/// One shared directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The mount tag the guest knows it by.
    pub tag: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// The virtiofsd to run: `BERTH_VIRTIOFSD`, else Debian's locations.
pub fn binary() -> Result<PathBuf, VmError> {
    if let Some(p) = std::env::var_os("BERTH_VIRTIOFSD") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(VmError::Invalid(format!(
                "BERTH_VIRTIOFSD names {}, which is not a file",
                p.display()
            )));
        }
        return Ok(p);
    }
    ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(VmError::MissingTool {
            tool: "virtiofsd (for -v with --isolation vm)",
            hint: "apt-get install qemu-system-common (Debian 12) or virtiofsd (later releases)",
        })
}

/// Whether `bin` is the Rust virtiofsd (`--shared-dir`) rather than
/// QEMU's C one (`-o source=`).
/// Asked once per process (a VM may have several volumes).
fn is_rust_virtiofsd(bin: &Path) -> bool {
    static RUST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RUST.get_or_init(|| {
        Command::new(bin)
            .arg("--help")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("--shared-dir"))
            .unwrap_or(false)
    })
}

/// A running virtiofsd; killed (and reaped) when dropped.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts a virtiofsd for `share` listening on `socket`; returns once the
/// socket exists.
pub fn start(share: &Share, socket: &Path) -> Result<Daemon, VmError> {
    let bin = binary()?;
    let _ = std::fs::remove_file(socket);
    let src = share.source.display().to_string();
    let mut c = Command::new(&bin);
    if is_rust_virtiofsd(&bin) {
        c.arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={src}"))
            .args(["--cache=auto", "--log-level=error"]);
    } else {
        if src.contains(',') {
            return Err(VmError::Invalid(format!(
                "volume source {src} has a comma, which QEMU's virtiofsd cannot take"
            )));
        }
        c.arg(format!("--socket-path={}", socket.display()))
            .args(["-o", &format!("source={src}")])
            .args(["-o", "cache=auto", "-o", "log_level=err"]);
    }
    // Its messages (a disconnect at power-off is "unexpected" to it) are
    // not the workload's output.
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fail = |what: &str| io_err(format!("{what} virtiofsd for {src}"));
    let path = CString::new(share.source.as_os_str().as_bytes())
        .map_err(|_| VmError::Invalid(format!("volume source {src} has a NUL byte")))?;
    let read_only = share.read_only;
    // SAFETY: between fork and exec the closure makes only system calls
    // (prctl, unshare, mount) on memory allocated before the fork.
    unsafe {
        c.pre_exec(move || child_setup(&path, read_only));
    }
    let mut child = c.spawn().map_err(fail("starting"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(VmError::Command {
                what: format!("starting virtiofsd for {src}"),
                detail: format!("it exited with {st}"),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VmError::Invalid(format!(
                "virtiofsd for {src} did not create its socket within 10 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Daemon {
        child,
        socket: socket.to_path_buf(),
    })
}

/// In the forked child: die with the parent; for a read-only share, make
/// the directory a read-only bind mount in a mount namespace of its own.
fn child_setup(path: &CString, read_only: bool) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on valid, NUL-terminated strings that
    // live until exec.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        if !read_only {
            return Ok(());
        }
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            path.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        ))
    }
}
