//! Bundles annotated `run.berth.isolation=vm`: the container's process is a
//! microVM, as Kata Containers does behind the same OCI runtime interface.
//!
//! `create` starts `berth-runtime __vm ID` (this binary) where a
//! container's init would be: in the container's cgroup (sized for the
//! VMM), with the container's stdio or terminal, blocked on the exec fifo
//! like any init. `start` releases it; it then boots the guest (the bundle's
//! rootfs shared with virtiofs, so writes land where the caller's storage
//! expects them; the network namespace's interfaces moved into the guest)
//! and runs the process there with `berth-vm`'s host loop; it exits with
//! the workload's code. `exec` talks to the VM's API socket; `kill` signals
//! the host process (which forwards), SIGKILL the whole cgroup.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use berth_net::netlink::Netlink;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{io_err, Result, RuntimeError};
use crate::state::{Record, Store};

/// Whether the bundle asks for a microVM.
pub fn is_vm(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(crate::bundle::ISOLATION_ANNOTATION))
        .is_some_and(|v| v == "vm" || v == "microvm")
}

fn vm_err(e: berth_vm::VmError) -> RuntimeError {
    RuntimeError::Unsupported(e.to_string())
}

/// What a VM needs on this host: the guest kernel, the agent, QEMU and
/// virtiofsd (the rootfs is shared with it). Checked at `create`.
pub fn preflight(spec: &Spec) -> Result<()> {
    berth_vm::assets::check_host().map_err(vm_err)?;
    berth_vm::virtiofs::binary().map_err(vm_err)?;
    let ns = spec.linux().as_ref().and_then(|l| l.namespaces().clone());
    if !ns
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network)
    {
        return Err(RuntimeError::Unsupported(
            "a microVM cannot share the host's network namespace: give the bundle a network namespace".into(),
        ));
    }
    let (mem, _) = guest_size(spec);
    if mem < berth_vm::MIN_MEMORY_MIB {
        return Err(RuntimeError::Unsupported(format!(
            "linux.resources.memory.limit is {mem} MiB, below the {} MiB a guest needs",
            berth_vm::MIN_MEMORY_MIB
        )));
    }
    Ok(())
}

/// Guest RAM (MiB: the memory limit, else the default) and vCPUs (the
/// CPU quota rounded up, else 1).
pub fn guest_size(spec: &Spec) -> (u64, u32) {
    let res = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let mem = res
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| (l as u64).div_ceil(1 << 20))
        .unwrap_or(berth_vm::DEFAULT_MEMORY_MIB);
    let cpus = res
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| match (c.quota(), c.period()) {
            (Some(q), Some(p)) if q > 0 && p > 0 => Some((q as u64).div_ceil(p) as u32),
            _ => None,
        })
        .unwrap_or(1);
    (mem, cpus.max(1))
}

/// The VMM's cgroup limits: guest RAM plus the VMM's overhead, the CPU
/// quota as asked; no device or pids rules (QEMU's threads and devices are
/// not the workload's).
pub fn host_resources(spec: &Spec) -> oci_spec::runtime::LinuxResources {
    let (mem, _) = guest_size(spec);
    let limit = ((mem + berth_vm::VMM_OVERHEAD_MIB) << 20) as i64;
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().clone());
    serde_json::from_value(serde_json::json!({
        "memory": {"limit": limit, "swap": limit},
        "cpu": cpu,
    }))
    .unwrap_or_default()
}

/// The VM's run directory (sockets: unix socket paths are short).
pub fn run_dir(store: &Store, id: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    store.root.join(".vm").join(format!("{h:016x}"))
}

/// `berth-runtime __vm ID --gate FD`: waits for `start` on the exec fifo,
/// then runs the VM to its end; returns the workload's exit code.
pub fn host(store: &Store, id: &str, gate: i32) -> i32 {
    // Our own session: terminal signals are the workload's (we forward
    // what we are sent), and a pty on our stdin is ours.
    let _ = nix::unistd::setsid();
    if nix::unistd::isatty(berth_sandbox::sys::std_fd(0)).unwrap_or(false) {
        let _ = berth_sandbox::sys::set_controlling_tty(berth_sandbox::sys::std_fd(0));
    }
    // SAFETY: `create` passed us this descriptor (the exec fifo, opened
    // read-write) and nothing else owns it.
    let gate = unsafe { OwnedFd::from_raw_fd(gate) };
    // QEMU and virtiofsd must not hold it: `start` waits for its writers.
    let _ = berth_sandbox::sys::set_cloexec(std::os::fd::AsRawFd::as_raw_fd(&gate), true);
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&gate, &mut byte) {
            Ok(0) => return 125,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 125,
        }
    }
    // `start` waits for "ok" once the workload runs in the guest, or for
    // "err CODE MESSAGE"; its poll sees our end close right after.
    match launch(store, id) {
        Ok(mut l) => {
            l.ready = Some(gate);
            let o = berth_vm::vmm::run(l);
            if let Some(r) = &o.reason {
                eprintln!("berth-runtime: {r}");
            }
            o.code
        }
        Err(e) => {
            let _ = nix::unistd::write(&gate, format!("err 125 {e}\n").as_bytes());
            eprintln!("berth-runtime: {e}");
            125
        }
    }
}

fn launch(store: &Store, id: &str) -> Result<berth_vm::vmm::Launch> {
    let rec = store.load(id)?;
    let spec = &rec.config;
    let vm_dir = berth_vm::assets::vm_dir();
    let berth_vm::assets::Boot {
        kernel,
        initrd,
        accel,
        held,
    } = berth_vm::assets::boot(&vm_dir, berth_vm::assets::GUEST_MODULES).map_err(vm_err)?;
    let (nics, interfaces) = guest_network(spec)?;
    let pids = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.pids().as_ref())
        .map(|p| p.limit());
    let g = berth_vm::guest::guest_spec(spec, pids, !interfaces.is_empty()).map_err(vm_err)?;
    let rdir = run_dir(store, id);
    std::fs::create_dir_all(&rdir).map_err(io_err(format!("creating {}", rdir.display())))?;
    let read_only_root = spec.root().as_ref().and_then(|r| r.readonly()) == Some(true);
    let mut shares = vec![(
        berth_vm::virtiofs::Share {
            tag: "berthroot".into(),
            source: rec.rootfs.clone(),
            read_only: read_only_root,
        },
        rdir.join("root.sock"),
    )];
    for (i, (share, _)) in g.volumes.iter().enumerate() {
        shares.push((share.clone(), rdir.join(format!("fs{i}.sock"))));
    }
    let seccomp_cache =
        berth_vm::guest::seccomp_program(&g.spec, &kernel.release, &berth_vm::cache::dir())
            .map_err(vm_err)?;
    let (memory_mib, vcpus) = guest_size(spec);
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    Ok(berth_vm::vmm::Launch {
        machine: berth_vm::vmm::MachineSpec {
            name: format!("berth-rt-{}", &id[..id.len().min(24)]),
            accel: accel.accel(),
            tsc_khz: accel.tsc_khz,
            memory_mib,
            vcpus,
            kernel: kernel.vmlinux.clone(),
            initrd,
            append: Vec::new(),
            disks: None,
            confine: None,
            nics,
            shares,
        },
        run_dir: rdir,
        console_log: store.dir(id).join("console.log"),
        start: berth_vm::proto::Start {
            spec: g.spec,
            files: g.files,
            interactive: true,
            image_fs: String::new(),
            seccomp_cache,
            realtime_ns: 0,
            seed: Vec::new(),
            interfaces,
            volumes: g.volumes.into_iter().map(|(_, v)| v).collect(),
            root_share: Some("berthroot".into()),
            trace: false,
        },
        tty,
        boot_timeout: Duration::from_secs(30),
        ready: None,
        // The root is a vhost-user device: a snapshot cannot carry it.
        snapshots: None,
        held: vec![held],
        start_note: None,
    })
}

/// The interfaces the caller (podman's netavark, a CNI plugin) configured
/// in the bundle's network namespace move into the guest: each keeps its
/// name, MAC, address and the default route; in the namespace it becomes
/// a port of a bridge with the VMM's TAP device. None for a namespace
/// with loopback only.
fn guest_network(spec: &Spec) -> Result<(Vec<OwnedFd>, Vec<berth_vm::proto::Interface>)> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| {
            n.iter()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
                .and_then(|n| n.path().clone())
        });
    let Some(path) = path else {
        return Ok((Vec::new(), Vec::new()));
    };
    let wired = berth_net::netns::run_in(&path, wire_namespace)
        .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
    wired.map_err(|e| {
        RuntimeError::Unsupported(format!(
            "moving {}'s interfaces into the VM: {e}",
            path.display()
        ))
    })
}

type Wired = (Vec<OwnedFd>, Vec<berth_vm::proto::Interface>);

fn wire_namespace() -> berth_net::Result<Wired> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let addrs = nl.addresses()?;
    let gateway = nl.default_route()?;
    let mut nics = Vec::new();
    let mut ifs = Vec::new();
    for link in links.iter().filter(|l| l.name != "lo" && l.master == 0) {
        let Some(mac) = link.mac else { continue };
        let Some(&(_, ip, prefix)) = addrs.iter().find(|(i, _, _)| *i == link.index) else {
            continue;
        };
        let position = ifs.len() as u32;
        // The guest takes the address and the MAC; the namespace keeps a
        // port with another MAC on a bridge with the TAP device.
        nl.delete_address(link.index, ip, prefix)?;
        let mut port_mac = mac;
        port_mac[0] |= 0x02;
        port_mac[5] ^= 0x01;
        nl.set_down(link.index)?;
        nl.rename(link.index, &link.name, port_mac)?;
        berth_net::attach::guest_port(&mut nl, link.index, position)?;
        nics.push(berth_net::attach::guest_tap(position)?);
        ifs.push(berth_vm::proto::Interface {
            card: position as usize,
            name: link.name.clone(),
            mac,
            address: ip,
            prefix,
            gateway: gateway
                .filter(|(_, oif)| *oif == link.index)
                .map(|(gw, _)| gw),
        });
    }
    Ok((nics, ifs))
}

/// `exec` into a VM: the guest's agent runs `process`; we relay its stdio.
pub fn exec(store: &Store, rec: &Record, process: oci_spec::runtime::Process) -> Result<i32> {
    let sock = run_dir(store, &rec.id).join("api.sock");
    let tty = process.terminal().unwrap_or(false);
    let req = berth_vm::proto::Exec {
        process,
        interactive: true,
        detach: false,
    };
    match berth_vm::client::exec(&sock, &req, tty).map_err(vm_err)? {
        berth_vm::client::ExecEnd::Exited(code) => Ok(code),
        berth_vm::client::ExecEnd::Failed { code, message } => {
            eprintln!("berth-runtime: {message}");
            Ok(code)
        }
    }
}

/// Removes the VM's sockets directory.
pub fn cleanup(store: &Store, id: &str) {
    let _ = std::fs::remove_dir_all(run_dir(store, id));
}

/// The host process's command line, for `create`.
pub fn host_command(store: &Store, id: &str, gate: i32) -> Result<std::process::Command> {
    let exe =
        berth_sandbox::seal::current_exe().map_err(io_err("finding the berth-runtime binary"))?;
    let mut c = std::process::Command::new(exe);
    c.arg("--root")
        .arg(&store.root)
        .arg("__vm")
        .arg(id)
        .arg(format!("--gate={gate}"));
    Ok(c)
}
