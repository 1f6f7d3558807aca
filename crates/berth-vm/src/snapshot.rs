//! Snapshots of a booted, idle guest: the kernel has booted, the agent has
//! loaded its modules and waits for `Start`. Restoring one (`-incoming
//! fd:N`) skips the kernel's boot, which is most of a VM's start under
//! emulation.
//!
//! One snapshot per machine shape (kernel, initramfs, kernel arguments,
//! RAM, vCPUs, accelerator, QEMU), built on first use in
//! `<vm_dir>/snapshots/` and kept. It is taken with placeholder disks as
//! large as any real one (so the sizes the guest saw stay valid) and with
//! the VM running (so the restored VM starts running by itself). Every
//! restored guest gets its own clock and fresh randomness in `Start`: they
//! all share the snapshot's RNG state until then.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cache::InUse;
use crate::conn::Conn;
use crate::proto::Kind;
use crate::qemu::{Drive, Machine};
use crate::qmp::Qmp;
use crate::{io_err, VmError};

/// The image disk's placeholder: the guest sees this capacity for every
/// image (reads stay within the real, smaller filesystem).
const IMAGE_PLACEHOLDER_BYTES: u64 = 1 << 40;
/// How many snapshots to keep (one per machine shape in use).
const KEEP: usize = 4;

/// `BERTH_VM_SNAPSHOT=0` turns restoring off.
pub fn enabled() -> bool {
    std::env::var("BERTH_VM_SNAPSHOT").map_or(true, |v| v != "0")
}

/// What identifies a machine's snapshot: everything the guest can see.
pub fn key(m: &Machine<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"berth-snapshot-v2\0");
    for p in [m.kernel, m.initrd] {
        // The files themselves, however the paths to them are spelled.
        h.update(format!("{:?}\0", crate::cache::identity(p)).as_bytes());
    }
    h.update(m.kernel_cmdline().as_bytes());
    h.update(format!("\0{}\0{}\0{}\0", m.memory_mib, m.vcpus, m.accel.name()).as_bytes());
    for d in &m.drives {
        h.update(format!("{}:{}\0", d.serial, d.read_only).as_bytes());
    }
    h.update(
        format!(
            "{}\0{}\0{}\0",
            m.control.is_some(),
            m.nics.len(),
            m.shares.len()
        )
        .as_bytes(),
    );
    let qemu = crate::qemu::binary();
    let qemu_meta = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(&qemu))
            .chain(std::iter::once(qemu.clone()))
            .find_map(|c| std::fs::metadata(c).ok().filter(|m| m.is_file()))
    });
    h.update(format!("{:?}", qemu_meta.map(|m| (m.len(), m.modified().ok()))).as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The snapshot for machine `m` in the cache `cache`, built now if there
/// is none, and locked as in use (never pruned while the lock lives).
pub fn ensure(cache: &Path, m: &Machine<'_>) -> Result<(PathBuf, InUse), VmError> {
    let dir = cache.join("snapshots");
    let k = key(m);
    let path = dir.join(format!("{k}.snap"));
    if let Some(held) = crate::cache::use_file(&path) {
        return Ok((path, held));
    }
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let _lock = crate::disk::lock(&dir.join(format!(".{k}.lock")))?;
    if let Some(held) = crate::cache::use_file(&path) {
        return Ok((path, held));
    }
    let work = dir.join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_err(format!("creating {}", work.display())))?;
    let built = build(m, &work, &path);
    let _ = std::fs::remove_dir_all(&work);
    built?;
    let held = crate::cache::use_file(&path)
        .ok_or_else(|| VmError::Invalid(format!("{} vanished once built", path.display())))?;
    // One per machine shape in use; the others go once nobody uses them.
    crate::cache::prune(&dir, "snap", KEEP, &path);
    Ok((path, held))
}

/// Forgets a snapshot that failed to restore.
pub fn discard(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn sparse(path: &Path, len: u64) -> Result<(), VmError> {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .map_err(io_err(format!("creating {}", path.display())))
}

fn build(m: &Machine<'_>, work: &Path, out: &Path) -> Result<(), VmError> {
    let image = work.join("image.img");
    let rw = work.join("rw.img");
    sparse(&image, IMAGE_PLACEHOLDER_BYTES)?;
    sparse(&rw, crate::disk::RW_DISK_BYTES)?;
    let ctl = work.join("ctl.sock");
    let qmp_path = work.join("qmp.sock");
    let drives = m
        .drives
        .iter()
        .map(|d| Drive {
            path: if d.read_only { &image } else { &rw },
            read_only: d.read_only,
            serial: d.serial,
            fds: Vec::new(),
        })
        .collect();
    let template = Machine {
        name: "berth-snapshot".into(),
        accel: m.accel,
        tsc_khz: m.tsc_khz,
        memory_mib: m.memory_mib,
        vcpus: m.vcpus,
        kernel: m.kernel,
        initrd: m.initrd,
        append: m.append.clone(),
        drives,
        control: Some(&ctl),
        confine: None,
        qmp: Some(&qmp_path),
        incoming_fd: None,
        // Cards without a backend: a restored guest's cards get their TAP
        // devices from the restoring command line.
        nics: vec![None; m.nics.len()],
        shares: Vec::new(),
    };
    let mut child = template
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("starting QEMU for a snapshot"))?;
    let result = take(&mut child, &ctl, &qmp_path, work, out);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn take(
    child: &mut std::process::Child,
    ctl: &Path,
    qmp_path: &Path,
    work: &Path,
    out: &Path,
) -> Result<(), VmError> {
    let fail = |msg: &str| VmError::Command {
        what: "taking a snapshot of a booted guest".into(),
        detail: msg.to_string(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // The agent's greeting says it is up and idle.
    let mut conn = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(ctl) {
            break Conn::new(s.into()).map_err(io_err("the control socket"))?;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            return Err(fail("QEMU did not start"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    loop {
        let frames = conn.read_frames()?;
        if frames.iter().any(|f| f.kind == Kind::Hello) {
            break;
        }
        if conn.closed || Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            return Err(fail("the guest's agent did not come up"));
        }
        let mut fds = [nix::poll::PollFd::new(
            conn.fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
    }
    let mut qmp = Qmp::connect(qmp_path, Duration::from_secs(5))?;
    qmp.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": 100u64 << 30}),
    )?;
    let tmp = work.join("snapshot.tmp");
    // The path is ours (no quotes in it): `exec:` runs it through sh.
    let uri = format!("exec:cat > '{}'", tmp.display());
    qmp.execute("migrate", json!({ "uri": uri }))?;
    loop {
        let st = qmp.execute("query-migrate", json!({}))?;
        match st["status"].as_str().unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => {
                let why = st["error-desc"].as_str().unwrap_or("migration failed");
                return Err(fail(why));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(fail("saving the snapshot took too long"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::rename(&tmp, out).map_err(io_err(format!("writing {}", out.display())))
}
