//! The QEMU command line: `-M microvm` booting the PVH vmlinux directly,
//! virtio-mmio disks and a virtio-serial port, the serial console on
//! QEMU's stdout. Under TCG the guest gets `tsc_early_khz` (microvm has no
//! PIT gate, HPET or PM timer to calibrate against; without it the kernel
//! hangs at "Marking TSC unstable"); RTC and ACPI stay on (ACPI is how
//! Debian's kernel finds the virtio-mmio devices).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{in_path, VmError};

/// How the guest's CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// One virtio-blk disk; `serial` tells the guest which one it is.
pub struct Drive<'a> {
    pub path: &'a Path,
    pub read_only: bool,
    pub serial: &'a str,
    /// The file, opened by berth and inherited by QEMU (`-add-fd`), once
    /// read-only and, for a writable disk, once read-write (QEMU picks the
    /// descriptor by access mode): QEMU then never opens `path` itself. It
    /// reopens a disk when an incoming migration activates it, after
    /// `-runas` dropped root: by path that fails wherever a parent
    /// directory is closed to the VM's uid.
    pub fds: Vec<i32>,
}

/// Everything that goes into one QEMU command line.
pub struct Machine<'a> {
    pub name: String,
    pub accel: Accel,
    pub tsc_khz: u64,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Kernel arguments after berth's own.
    pub append: Vec<String>,
    pub drives: Vec<Drive<'a>>,
    /// The agent's virtio-serial port, as a unix socket QEMU listens on.
    pub control: Option<&'a Path>,
    /// QEMU's seccomp sandbox, and dropping to this unprivileged uid:gid
    /// once its devices are open.
    pub confine: Option<(u32, u32)>,
    /// A QMP socket (only for building snapshots).
    pub qmp: Option<&'a Path>,
    /// Restore the machine from a snapshot read from this inherited
    /// descriptor instead of booting it.
    pub incoming_fd: Option<i32>,
    /// Network cards, each on an inherited TAP descriptor (`None`: a card
    /// with no backend, as in a snapshot's template). The guest tells them
    /// apart by [`crate::nic_placeholder_mac`].
    pub nics: Vec<Option<i32>>,
    /// Host directories served by virtiofsd: (tag, its vhost-user socket).
    /// Guest RAM is then a shared memfd, which vhost-user needs.
    pub shares: Vec<(String, &'a Path)>,
}

/// The QEMU binary: `BERTH_QEMU`, else `qemu-system-x86_64` from PATH.
pub fn binary() -> PathBuf {
    std::env::var_os("BERTH_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// Fails with an install hint when QEMU is missing.
pub fn check() -> Result<(), VmError> {
    let b = binary();
    if b.components().count() > 1 && b.is_file() || in_path(&b.to_string_lossy()) {
        return Ok(());
    }
    Err(VmError::MissingTool {
        tool: "qemu-system-x86_64",
        hint: "apt-get install qemu-system-x86",
    })
}

/// Kernel arguments that make Debian's cloud kernel boot fast (measured
/// under TCG: crypto self-tests, kprobes and trace-event setup are the
/// slowest initcalls).
const FAST_BOOT: &[&str] = &[
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "cryptomgr.notests",
    "tsc=reliable",
    "no_timer_check",
    "mitigations=off",
    "nokaslr",
    "initcall_blacklist=init_kprobe_trace,trace_eval_init,crypto_kdf108_init",
    "rdinit=/init",
];

impl Machine<'_> {
    pub fn kernel_cmdline(&self) -> String {
        let mut args: Vec<String> = FAST_BOOT.iter().map(|s| s.to_string()).collect();
        if self.accel == Accel::Tcg && self.tsc_khz > 0 {
            args.push(format!("tsc_early_khz={}", self.tsc_khz));
        }
        args.extend(self.append.iter().cloned());
        args.join(" ")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(binary());
        c.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        c.args(["-name", &self.name]);
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => c.args(["-accel", "tcg", "-cpu", "max"]),
        };
        if self.shares.is_empty() {
            c.args(["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on"]);
        } else {
            c.args([
                "-object",
                &format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    self.memory_mib
                ),
            ]);
            c.args([
                "-M",
                "microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=mem",
            ]);
            // vhost-user back ends speak virtio 1.0 only; microvm's
            // virtio-mmio transports are legacy unless told otherwise.
            c.args(["-global", "virtio-mmio.force-legacy=false"]);
        }
        c.args(["-m", &format!("{}M", self.memory_mib)]);
        c.args(["-smp", &self.vcpus.max(1).to_string()]);
        c.arg("-kernel").arg(self.kernel);
        c.arg("-initrd").arg(self.initrd);
        c.args(["-append", &self.kernel_cmdline()]);
        for (i, d) in self.drives.iter().enumerate() {
            let file = if d.fds.is_empty() {
                qemu_escape(d.path)
            } else {
                let set = i + 1;
                for fd in &d.fds {
                    c.args(["-add-fd", &format!("fd={fd},set={set}")]);
                }
                format!("/dev/fdset/{set}")
            };
            let mut drive = format!("if=none,id=d{i},format=raw,file={file}");
            if d.read_only {
                drive.push_str(",readonly=on");
            } else {
                drive.push_str(",discard=unmap");
            }
            c.args(["-drive", &drive]);
            c.args([
                "-device",
                &format!("virtio-blk-device,drive=d{i},serial={}", d.serial),
            ]);
        }
        if let Some(sock) = self.control {
            c.args(["-device", "virtio-serial-device"]);
            c.args([
                "-chardev",
                &format!(
                    "socket,id=ctl,path={},server=on,wait=off",
                    qemu_escape(sock)
                ),
            ]);
            c.args([
                "-device",
                &format!("virtserialport,chardev=ctl,name={}", crate::PORT_NAME),
            ]);
        }
        for (i, fd) in self.nics.iter().enumerate() {
            let mac = crate::nic_placeholder_mac(i)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            let mut dev = format!("virtio-net-device,id=nic{i},mac={mac}");
            if let Some(fd) = fd {
                c.args(["-netdev", &format!("tap,id=net{i},fd={fd}")]);
                dev.push_str(&format!(",netdev=net{i}"));
            }
            c.args(["-device", &dev]);
        }
        for (i, (tag, sock)) in self.shares.iter().enumerate() {
            c.args([
                "-chardev",
                &format!("socket,id=fs{i},path={}", qemu_escape(sock)),
            ]);
            c.args([
                "-device",
                &format!("vhost-user-fs-device,chardev=fs{i},tag={tag}"),
            ]);
        }
        c.args(["-serial", "stdio"]);
        if let Some(q) = self.qmp {
            c.args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", qemu_escape(q)),
            ]);
        }
        if let Some(fd) = self.incoming_fd {
            c.args(["-incoming", &format!("fd:{fd}")]);
        }
        if let Some((uid, gid)) = self.confine {
            // QEMU's own seccomp filter. `elevateprivileges=deny` would also
            // forbid the setuid of `-runas`, which drops root for good.
            c.args([
                "-sandbox",
                "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
            ]);
            c.args(["-runas", &format!("{uid}:{gid}")]);
        }
        c
    }
}

/// QEMU option values escape a comma by doubling it.
fn qemu_escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The host's TSC frequency in kHz, measured against the monotonic clock
/// (under TCG the guest's TSC is the host's).
pub fn tsc_khz() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let t0 = std::time::Instant::now();
        // SAFETY: RDTSC has no memory effects; every x86_64 CPU has it.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let us = t0.elapsed().as_micros() as u64;
        if us == 0 {
            return 0;
        }
        let khz = (c1.wrapping_sub(c0)) * 1000 / us;
        // Round to a MHz: the measurement is not better than that.
        (khz + 500) / 1000 * 1000
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_what_the_guest_needs() {
        let m = Machine {
            name: "berth-test".into(),
            accel: Accel::Tcg,
            tsc_khz: 2_596_000,
            memory_mib: 256,
            vcpus: 1,
            kernel: Path::new("/k/vmlinux"),
            initrd: Path::new("/k/initrd"),
            append: vec!["berth.x=1".into()],
            drives: vec![Drive {
                path: Path::new("/d/i,mg"),
                read_only: true,
                serial: "berth-image",
                fds: Vec::new(),
            }],
            control: Some(Path::new("/run/ctl.sock")),
            confine: Some((1234, 1234)),
            qmp: None,
            incoming_fd: Some(7),
            nics: vec![Some(9)],
            shares: vec![("berthvol0".into(), Path::new("/run/v0.sock"))],
        };
        let c = m.command();
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into()).collect();
        let line = args.join(" ");
        assert!(line.contains("tsc_early_khz=2596000"), "{line}");
        assert!(line.contains("/d/i,,mg"), "{line}");
        assert!(line.contains("readonly=on"), "{line}");
        assert!(line.contains("name=berth.ctl"), "{line}");
        assert!(line.contains("-runas 1234:1234"), "{line}");
        assert!(line.contains("-incoming fd:7"), "{line}");
        assert!(line.contains("-netdev tap,id=net0,fd=9"), "{line}");
        assert!(line.contains("memory-backend=mem"), "{line}");
        assert!(
            line.contains("vhost-user-fs-device,chardev=fs0,tag=berthvol0"),
            "{line}"
        );
        assert!(
            line.contains("virtio-net-device,id=nic0,mac=52:54:00:be:00:00,netdev=net0"),
            "{line}"
        );
        assert!(m.kernel_cmdline().ends_with("berth.x=1"));
    }

    #[test]
    fn tsc_is_measured() {
        let k = tsc_khz();
        assert!(k > 100_000, "{k}");
    }
}
