//! MicroVMs: `berth run --rm --isolation vm busybox true` end to end,
//! interleaved with its floor (bare QEMU booting the same kernel, with the
//! same arguments, and an initramfs whose init only powers off) and with
//! the same run as a container. Then the VMM's memory: QEMU's resident set
//! minus the guest RAM the guest touched, next to the guest's size, for a
//! VM restored from a snapshot and for a freshly booted one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{berth, timed};
use anyhow::{bail, Context, Result};
use berth_vm::qemu::Machine;

fn min_median(t: &mut [Duration]) -> (f64, f64) {
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(t[0]), ms(t[t.len() / 2]))
}

/// The floor's pieces: the guest kernel, an initramfs with only the agent
/// (run with `berth.poweroff`), and the accelerator berth would use.
struct Floor {
    kernel: berth_vm::assets::Kernel,
    initrd: PathBuf,
    accel: berth_vm::accel::Choice,
}

fn floor() -> Result<Floor> {
    let vm_dir = berth_vm::assets::vm_dir();
    let kernel = berth_vm::assets::Kernel::find(&vm_dir)?;
    let agent = berth_vm::assets::find_agent()?;
    berth_vm::qemu::check()?;
    let floor = berth_vm::assets::initramfs(&agent, &[])?;
    let initrd = floor.path.clone();
    let accel = berth_vm::accel::choose(&berth_vm::cache::dir(), &kernel, &initrd)?;
    Ok(Floor {
        kernel,
        initrd,
        accel,
    })
}

impl Floor {
    fn command(&self) -> Command {
        let m = Machine {
            name: "berth-bench-floor".into(),
            accel: self.accel.accel(),
            tsc_khz: self.accel.tsc_khz,
            memory_mib: berth_vm::DEFAULT_MEMORY_MIB,
            vcpus: 1,
            kernel: &self.kernel.vmlinux,
            initrd: &self.initrd,
            append: vec!["berth.poweroff=1".into()],
            drives: Vec::new(),
            control: None,
            confine: None,
            qmp: None,
            incoming_fd: None,
            nics: Vec::new(),
            shares: Vec::new(),
        };
        m.command()
    }
}

pub fn bench(exe: &Path, w: &Path) -> Result<()> {
    println!();
    println!("microVMs (--isolation vm):");
    let f = match floor() {
        Ok(f) => f,
        Err(e) => {
            println!("(skipped: {e})");
            return Ok(());
        }
    };
    println!(
        "guest kernel {}, accelerator {} ({}), guest {} MiB, 1 vCPU",
        f.kernel.release,
        f.accel.accel.to_uppercase(),
        f.accel.reason,
        berth_vm::DEFAULT_MEMORY_MIB
    );
    let iterations: usize = std::env::var("BENCH_VM_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let vm_run = || {
        let mut c = berth(exe, w);
        c.args(["run", "--rm", "--isolation", "vm", "busybox", "true"]);
        c
    };
    let cold_run = || {
        let mut c = vm_run();
        c.env("BERTH_VM_SNAPSHOT", "0");
        c
    };
    // network.rs moved this process into a namespace of its own: the
    // bridge here is not the host's.
    let net_run = || {
        let mut c = berth(exe, w);
        c.args([
            "run",
            "--rm",
            "--isolation",
            "vm",
            "--network",
            "bridge",
            "busybox",
            "true",
        ]);
        c
    };
    let share = w.join("vm-share");
    std::fs::create_dir_all(&share)?;
    let vol_arg = format!("{}:/data", share.display());
    let vol_run = || {
        let mut c = berth(exe, w);
        c.args([
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-v",
            &vol_arg,
            "busybox",
            "true",
        ]);
        c
    };
    let ctr_run = || {
        let mut c = berth(exe, w);
        c.args(["run", "--rm", "busybox", "true"]);
        c
    };
    // Warm-up: the image's disk, the snapshot of a booted guest, caches.
    timed(vm_run(), "berth run --isolation vm")?;
    timed(net_run(), "berth run --isolation vm --network bridge")?;
    timed(f.command(), "the floor (bare QEMU)")?;
    let (mut vm, mut fl, mut ct, mut cold) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut net, mut vol) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        vm.push(timed(vm_run(), "berth run --isolation vm")?);
        fl.push(timed(f.command(), "the floor (bare QEMU)")?);
        ct.push(timed(ctr_run(), "berth run (container)")?);
        cold.push(timed(cold_run(), "berth run --isolation vm, booting")?);
        net.push(timed(
            net_run(),
            "berth run --isolation vm --network bridge",
        )?);
        vol.push(timed(vol_run(), "berth run --isolation vm -v")?);
    }
    let (vmin, vmed) = min_median(&mut vm);
    let (fmin, fmed) = min_median(&mut fl);
    let (cmin, cmed) = min_median(&mut ct);
    let (bmin, bmed) = min_median(&mut cold);
    let (nmin, nmed) = min_median(&mut net);
    let (omin, omed) = min_median(&mut vol);
    println!("{iterations} iterations each, interleaved");
    println!("{:<56} {:>9} {:>10}", "contender", "min ms", "median ms");
    for (name, min, med) in [
        (
            "berth run --rm --isolation vm busybox true (e2e)",
            vmin,
            vmed,
        ),
        (
            "floor: bare QEMU, same kernel, init only powers off",
            fmin,
            fmed,
        ),
        ("berth run --rm busybox true (container)", cmin, cmed),
        ("the same VM run, booting (BERTH_VM_SNAPSHOT=0)", bmin, bmed),
        ("the same VM on the bridge (--network bridge)", nmin, nmed),
        (
            "the same VM with a volume (-v: virtiofsd, boots)",
            omin,
            omed,
        ),
    ] {
        println!("{name:<56} {min:>9.1} {med:>10.1}");
    }
    println!(
        "ratio vm / floor: min {:.2}x, median {:.2}x (target: within 1.25x)",
        vmin / fmin,
        vmed / fmed
    );
    println!(
        "ratio booting vm / floor: min {:.2}x, median {:.2}x (without the snapshot)",
        bmin / fmin,
        bmed / fmed
    );
    println!(
        "ratio bridge vm / floor: min {:.2}x, median {:.2}x (a NIC on the bridge: {:+.0} ms median)",
        nmin / fmin,
        nmed / fmed,
        nmed - vmed
    );
    println!(
        "ratio vm / container: min {:.1}x, median {:.1}x",
        vmin / cmin,
        vmed / cmed
    );
    for (label, snapshot) in [("restored from a snapshot", "1"), ("booted", "0")] {
        match memory(exe, w, snapshot) {
            Ok(m) => println!(
                "VMM memory, {label}: guest {} MiB (touched {:.1} MiB); QEMU RSS {:.1} MiB = touched guest RAM + {:.1} MiB VMM overhead ({:.1} MiB of it the kernel image, shared page cache); stated overhead {} MiB",
                berth_vm::DEFAULT_MEMORY_MIB,
                m.guest_touched,
                m.rss,
                m.rss - m.guest_touched,
                m.kernel_file,
                berth_vm::VMM_OVERHEAD_MIB
            ),
            Err(e) => println!("VMM memory, {label}: not measured: {e}"),
        }
    }
    Ok(())
}

struct Memory {
    rss: f64,
    guest_touched: f64,
    kernel_file: f64,
}

/// Starts a detached VM, lets it settle, and reads QEMU's smaps.
fn memory(exe: &Path, w: &Path, snapshot: &str) -> Result<Memory> {
    let mut c = berth(exe, w);
    c.env("BERTH_VM_SNAPSHOT", snapshot).args([
        "run",
        "-d",
        "--isolation",
        "vm",
        "busybox",
        "sleep",
        "60",
    ]);
    let out = c.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::thread::sleep(Duration::from_secs(2));
    let result = read_memory(&id);
    let mut rm = berth(exe, w);
    let _ = rm.args(["rm", "-f", &id]).output();
    result
}

fn read_memory(id: &str) -> Result<Memory> {
    let name = format!("berth-{}", &id[..12.min(id.len())]);
    let pid = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&name))
                .unwrap_or(false)
        })
        .context("the VM's QEMU process was not found")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let guest_kb = berth_vm::DEFAULT_MEMORY_MIB * 1024;
    let (mut rss, mut guest, mut kernel) = (0u64, 0u64, 0u64);
    let mut size = 0u64;
    let mut is_kernel = false;
    for line in smaps.lines() {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        if !k.ends_with(':') {
            // A mapping's header: address range, perms, offset, dev, inode, path.
            is_kernel = line.ends_with("/vmlinux");
            continue;
        }
        let kb: u64 = v.parse().unwrap_or(0);
        match k {
            "Size:" => size = kb,
            "Rss:" => {
                rss += kb;
                if size == guest_kb {
                    guest += kb;
                }
                if is_kernel {
                    kernel += kb;
                }
            }
            _ => {}
        }
    }
    Ok(Memory {
        rss: rss as f64 / 1024.0,
        guest_touched: guest as f64 / 1024.0,
        kernel_file: kernel as f64 / 1024.0,
    })
}
