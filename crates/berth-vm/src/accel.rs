//! KVM or TCG. `/dev/kvm` existing is not enough: under nested "PVM"
//! virtualization a stock kernel takes minutes and then dies. So berth boots
//! a tiny guest (the guest kernel with an initramfs whose init only powers
//! off) under KVM with a deadline, once per host boot, and caches the answer
//! in `<vm_dir>/accel.json`. `BERTH_VM_ACCEL=kvm|tcg` skips the probe.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::assets::Kernel;
use crate::qemu::{Accel, Machine};
use crate::VmError;

/// The answer, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub accel: String,
    pub reason: String,
    /// Host TSC frequency handed to TCG guests.
    pub tsc_khz: u64,
    /// What the answer holds for: host boot, QEMU binary, guest kernel.
    pub key: String,
}

impl Choice {
    pub fn accel(&self) -> Accel {
        if self.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// How long the tiny guest may take under KVM (TCG boots it in ~2 s; real
/// KVM in well under one).
pub fn probe_deadline() -> Duration {
    let secs = std::env::var("BERTH_VM_KVM_PROBE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

fn cache_key(kernel: &Kernel) -> String {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let qemu = crate::qemu::binary();
    let qemu_path = if qemu.components().count() > 1 {
        Some(qemu.clone())
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(&qemu))
                .find(|c| c.is_file())
        })
    };
    let qemu_id = qemu_path
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| format!("{}:{}", m.size(), m.mtime()))
        .unwrap_or_default();
    format!("{}|{qemu_id}|{}", boot.trim(), kernel.release)
}

/// The cached answer, or a fresh probe. `floor_initrd` is an initramfs
/// whose init powers off at once.
pub fn choose(vm_dir: &Path, kernel: &Kernel, floor_initrd: &Path) -> Result<Choice, VmError> {
    let key = cache_key(kernel);
    if let Ok(forced) = std::env::var("BERTH_VM_ACCEL") {
        let accel = if forced == "kvm" { "kvm" } else { "tcg" };
        return Ok(Choice {
            accel: accel.into(),
            reason: "set by BERTH_VM_ACCEL".into(),
            tsc_khz: cached(vm_dir, &key).map_or_else(crate::qemu::tsc_khz, |c| c.tsc_khz),
            key,
        });
    }
    if let Some(c) = cached(vm_dir, &key) {
        return Ok(c);
    }
    std::fs::create_dir_all(vm_dir)
        .map_err(crate::io_err(format!("creating {}", vm_dir.display())))?;
    // One probe at a time; the others wait and read its answer.
    let _lock = crate::disk::lock(&vm_dir.join(".accel.lock"))?;
    if let Some(c) = cached(vm_dir, &key) {
        return Ok(c);
    }
    let tsc_khz = crate::qemu::tsc_khz();
    let (accel, reason) = probe(kernel, floor_initrd, tsc_khz);
    let choice = Choice {
        accel: accel.name().into(),
        reason,
        tsc_khz,
        key,
    };
    let bytes = serde_json::to_vec_pretty(&choice).unwrap_or_default();
    crate::assets::write_atomic(vm_dir, &vm_dir.join("accel.json"), &bytes)?;
    Ok(choice)
}

/// The cached answer for `key`, if any.
pub fn cached(vm_dir: &Path, key: &str) -> Option<Choice> {
    let bytes = std::fs::read(vm_dir.join("accel.json")).ok()?;
    let c: Choice = serde_json::from_slice(&bytes).ok()?;
    (c.key == key).then_some(c)
}

/// What `berth info` shows without probing: the cached answer if there is one.
pub fn describe(vm_dir: &Path, kernel: &Kernel) -> Option<Choice> {
    cached(vm_dir, &cache_key(kernel))
}

fn probe(kernel: &Kernel, floor_initrd: &Path, tsc_khz: u64) -> (Accel, String) {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return (Accel::Tcg, format!("/dev/kvm cannot be used ({e})"));
    }
    let m = Machine {
        name: "berth-kvm-probe".into(),
        accel: Accel::Kvm,
        tsc_khz,
        memory_mib: 128,
        vcpus: 1,
        kernel: &kernel.vmlinux,
        initrd: floor_initrd,
        append: vec!["berth.poweroff=1".into()],
        drives: Vec::new(),
        control: None,
        confine: None,
        qmp: None,
        incoming_fd: None,
        nics: Vec::new(),
        shares: Vec::new(),
    };
    let deadline = probe_deadline();
    let start = Instant::now();
    let child = m
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return (
                Accel::Tcg,
                format!("starting QEMU for the KVM probe failed: {e}"),
            )
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let ms = start.elapsed().as_millis();
                if st.success() {
                    return (
                        Accel::Kvm,
                        format!("a test guest booted and powered off under KVM in {ms} ms"),
                    );
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let line = err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                return (
                    Accel::Tcg,
                    format!("QEMU could not run a guest under KVM ({st}: {line})"),
                );
            }
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return (
                    Accel::Tcg,
                    format!(
                        "a test guest did not boot under KVM within {} s (nested or emulated virtualization); TCG is faster here",
                        deadline.as_secs()
                    ),
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return (Accel::Tcg, format!("waiting for the KVM probe failed: {e}")),
        }
    }
}
