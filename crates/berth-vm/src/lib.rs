//! berth-vm: the microVM backend. It turns a container's OCI bundle into a
//! QEMU microVM with its own guest kernel, where `berth-agent` (PID 1 of the
//! guest) runs the bundle with the same sandbox crate the host uses.
//!
//! - [`assets`]: the guest kernel, the agent, the initramfs built from them.
//! - [`cache`]: what every VM reuses (initramfs, snapshots), shared safely.
//! - [`disk`]: the image as a read-only disk (erofs, cached per image) and
//!   each container's writable disk.
//! - [`guest`]: the bundle's spec as the guest runs it.
//! - [`accel`]: KVM or TCG, probed once by booting a tiny guest.
//! - [`qemu`]: the QEMU command line.
//! - [`vmm`]: the host process of one VM (`berth __vm`): QEMU, the agent
//!   channel, stdio, signals, and the socket `exec`/`stats` use.
//! - [`virtiofs`]: host directories (`-v`) served to the guest.
//! - [`proto`], [`conn`]: the framed protocol and its non-blocking transport.

pub mod accel;
pub mod assets;
pub mod cache;
pub mod client;
pub mod conn;
pub mod disk;
pub mod guest;
pub mod proto;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod virtiofs;
pub mod vmm;

mod api;
mod console;

use std::path::PathBuf;

/// Guest RAM when `--memory` is not given, MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// The least guest RAM the guest kernel and agent boot with, MiB.
pub const MIN_MEMORY_MIB: u64 = 128;
/// What the VMM (QEMU under TCG: translated code, its own heap, the kernel
/// image it maps) may use beyond guest RAM; its cgroup gets guest RAM plus
/// this.
pub const VMM_OVERHEAD_MIB: u64 = 192;
/// Name of the virtio-serial port the agent listens on.
pub const PORT_NAME: &str = "berth.ctl";
/// Serial numbers that tell the guest which disk is which.
pub const IMAGE_DISK_SERIAL: &str = "berth-image";
pub const RW_DISK_SERIAL: &str = "berth-rw";
/// Where the agent mounts the container's root (image + writable layer).
pub const GUEST_ROOTFS: &str = "/run/berth/rootfs";

/// The MAC the `index`-th network card has on QEMU's command line, the
/// same when booting and when restoring a snapshot: the agent finds the
/// card by it and gives it the container's own address.
pub fn nic_placeholder_mac(index: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0xbe, (index >> 8) as u8, index as u8]
}

/// Errors are one line each and say what to do where there is something.
#[derive(thiserror::Error, Debug)]
pub enum VmError {
    #[error("no guest kernel is installed in {0}: install it with scripts/install-guest-kernel.sh (as root)")]
    NoKernel(PathBuf),
    #[error("the guest kernel in {dir} is unusable: {why}")]
    BadKernel { dir: PathBuf, why: String },
    #[error("berth-agent, the guest's init, was not found (looked at {0}); build it with `make agent` or set BERTH_AGENT")]
    NoAgent(String),
    #[error(
        "{0} is dynamically linked; the guest needs a static berth-agent (`make agent` builds one)"
    )]
    AgentNotStatic(PathBuf),
    #[error("{tool} is not installed: {hint}")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Proto(#[from] proto::ProtoError),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// Runs a command to completion; its stderr's last line becomes the error.
pub(crate) fn run_tool(cmd: &mut std::process::Command, what: &str) -> Result<(), VmError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io_err(format!("running {what}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let detail = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    Err(VmError::Command {
        what: what.to_string(),
        detail: if detail.is_empty() {
            out.status.to_string()
        } else {
            detail
        },
    })
}

/// Whether `name` is an executable in `PATH`.
pub(crate) fn in_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p).any(|d| {
                std::fs::metadata(d.join(name))
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}
