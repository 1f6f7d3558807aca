//! `berth __vm ID`: the host process of a VM container, started where a
//! container's process would be (foreground run, `run -d`, the monitor's
//! restarts). It joins the container's cgroup (sized for the VMM), prepares
//! the boot assets and disks, turns the bundle into the guest's spec, and
//! runs [`berth_vm::vmm`]; it exits with the workload's exit code.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use berth_vm::disk::ImageFs;
use berth_vm::guest::GuestSpec;

use crate::containers::cgroups_path;
use crate::vm::{guest_size, is_vm, run_dir, write_exit_reason};
use crate::{Engine, EngineError};

fn vm_err(e: berth_vm::VmError) -> EngineError {
    EngineError::Invalid(e.to_string())
}

/// How long the guest may take to greet the host: `BERTH_VM_BOOT_TIMEOUT`
/// seconds, else 30 s under TCG (a boot takes 2-3 s, more on a loaded
/// host) and 15 s under KVM.
fn boot_timeout(accel: berth_vm::qemu::Accel) -> Duration {
    let default = match accel {
        berth_vm::qemu::Accel::Kvm => 15,
        berth_vm::qemu::Accel::Tcg => 30,
    };
    let secs = std::env::var("BERTH_VM_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(default);
    Duration::from_secs(secs.max(1))
}

impl Engine {
    /// Runs the VM of container `id` to its end; returns the exit code.
    /// `ready` gets "ok" once the workload runs, or "err CODE MESSAGE".
    pub fn run_vmm(&mut self, id: &str, ready: Option<OwnedFd>) -> i32 {
        // Our own session: terminal signals are the workload's to get (we
        // forward what we are sent), and a pty on our stdin is ours.
        let _ = nix::unistd::setsid();
        // QEMU and the mkfs tools are found through PATH, which a monitor
        // started by an older berth did not pass on.
        if std::env::var_os("PATH").is_none() {
            std::env::set_var(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        }
        if nix::unistd::isatty(berth_sandbox::sys::std_fd(0)).unwrap_or(false) {
            let _ = berth_sandbox::sys::set_controlling_tty(berth_sandbox::sys::std_fd(0));
        }
        let dir = self.container_dir(id);
        let _ = std::fs::remove_file(dir.join("vm-exit-reason"));
        let t0 = std::time::Instant::now();
        match self.prepare_launch(id) {
            Ok(mut launch) => {
                berth_sandbox::fault::point("vm:prepared");
                if std::env::var_os("BERTH_VM_TRACE").is_some() {
                    eprintln!("berth-vm: prepared in {} ms", t0.elapsed().as_millis());
                }
                launch.ready = ready;
                let o = berth_vm::vmm::run(launch);
                if let Some(r) = &o.reason {
                    write_exit_reason(&dir, r);
                }
                o.code
            }
            Err(e) => {
                let msg = e.to_string();
                write_exit_reason(&dir, &msg);
                match ready {
                    Some(r) => {
                        let _ = berth_vm::conn::write_all(
                            std::os::fd::AsFd::as_fd(&r),
                            format!("err 125 {msg}\n").as_bytes(),
                        );
                    }
                    None => eprintln!("berth: {msg}"),
                }
                let _ = std::fs::remove_dir_all(run_dir(&self.run_root, id));
                125
            }
        }
    }

    fn prepare_launch(&mut self, id: &str) -> Result<berth_vm::vmm::Launch, EngineError> {
        let row = self
            .db()
            .container(id)?
            .ok_or_else(|| EngineError::NoSuchContainer(id.into()))?;
        let cfg = Self::config_of(&row);
        if !is_vm(&cfg) {
            return Err(EngineError::Invalid(format!(
                "container {} is not a VM",
                row.name
            )));
        }
        // QEMU runs in the container's cgroup, which has the VMM's limits.
        let layout = berth_sandbox::Layout::detect()?;
        berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(id)))
            .join_self_single_threaded()?;

        let vm_dir = berth_vm::assets::vm_dir();
        let fs = ImageFs::choose();
        let mods: Vec<&str> = berth_vm::assets::GUEST_MODULES
            .iter()
            .copied()
            .filter(|m| *m != "erofs" || fs == ImageFs::Erofs)
            .collect();
        let berth_vm::assets::Boot {
            kernel,
            initrd,
            accel,
            held,
        } = berth_vm::assets::boot(&vm_dir, &mods).map_err(vm_err)?;

        let rdir = run_dir(&self.run_root, id);
        let img = self
            .db()
            .image(&row.image_id)?
            .ok_or_else(|| EngineError::NoSuchImage(row.image_id.clone()))?;
        let layers = self.layer_dirs(&img)?;
        let image_disk = berth_vm::disk::image_disk(
            &self.root.join("vm/images"),
            &img.id,
            &layers,
            fs,
            &rdir.join("merge"),
        )
        .map_err(vm_err)?;
        let dir = self.container_dir(id);
        let rw_disk = dir.join("vm-rw.ext4");
        berth_vm::disk::rw_disk(&self.root.join("vm"), &rw_disk).map_err(vm_err)?;
        // QEMU drops to a uid of its own (Firecracker's jailer does the
        // same): only it may open this VM's writable disk.
        let vmm_id = vmm_uid(id);
        set_owner(&rw_disk, vmm_id)?;

        let (nics, interfaces) = self.guest_network(id)?;
        let host_spec = self.load_spec(id)?;
        let GuestSpec {
            spec,
            files,
            volumes,
        } = berth_vm::guest::guest_spec(&host_spec, cfg.pids_limit, !interfaces.is_empty())
            .map_err(vm_err)?;
        let shares = volumes
            .iter()
            .enumerate()
            .map(|(i, (share, _))| (share.clone(), rdir.join(format!("fs{i}.sock"))))
            .collect();
        // Compiled here: libseccomp in an emulated guest takes 100-200 ms.
        let seccomp_cache =
            berth_vm::guest::seccomp_program(&spec, &kernel.release, &berth_vm::cache::dir())
                .map_err(vm_err)?;
        let (memory_mib, vcpus) = guest_size(&cfg);
        let append: Vec<String> = std::env::var("BERTH_VM_KERNEL_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        let restore = berth_vm::snapshot::enabled() && append.is_empty();
        Ok(berth_vm::vmm::Launch {
            machine: berth_vm::vmm::MachineSpec {
                name: format!("berth-{}", &id[..12.min(id.len())]),
                accel: accel.accel(),
                tsc_khz: accel.tsc_khz,
                memory_mib,
                vcpus,
                kernel: kernel.vmlinux.clone(),
                initrd,
                append,
                disks: Some((image_disk, rw_disk)),
                confine: Some((vmm_id, vmm_id)),
                nics,
                shares,
            },
            run_dir: rdir,
            console_log: dir.join("console.log"),
            start: berth_vm::proto::Start {
                spec,
                files,
                interactive: cfg.interactive,
                image_fs: fs.name().into(),
                seccomp_cache,
                realtime_ns: 0,
                seed: Vec::new(),
                interfaces,
                volumes: volumes.into_iter().map(|(_, v)| v).collect(),
                root_share: None,
                trace: false,
            },
            tty: cfg.tty,
            boot_timeout: boot_timeout(accel.accel()),
            ready: None,
            // Extra kernel arguments (debugging, tests) mean a fresh boot.
            snapshots: restore.then(berth_vm::cache::dir),
            held: vec![held],
            start_note: Some(dir.join("vm-start")),
        })
    }
}

impl Engine {
    /// The VM's network cards: a TAP device on each network's bridge in
    /// the namespace `network_up` wired, and what the guest configures on
    /// the card. None for `--network none`.
    fn guest_network(
        &mut self,
        id: &str,
    ) -> Result<(Vec<OwnedFd>, Vec<berth_vm::proto::Interface>), EngineError> {
        let path = self.netns_path(id);
        if !berth_net::netns::is_mounted(&path) {
            return Ok((Vec::new(), Vec::new()));
        }
        let eps = crate::netdb::endpoints_of(self.db().conn(), id)?;
        let mut interfaces = Vec::with_capacity(eps.len());
        for (card, ep) in eps.iter().enumerate() {
            let net = crate::netdb::network(self.db().conn(), &ep.network)?.ok_or_else(|| {
                EngineError::Invalid(format!("network {} of the container is gone", ep.network))
            })?;
            interfaces.push(berth_vm::proto::Interface {
                card,
                name: format!("eth{}", ep.position),
                mac: berth_net::ipam::mac_for(ep.ip),
                address: ep.ip,
                prefix: net.subnet.prefix,
                gateway: (card == 0).then_some(net.gateway),
            });
        }
        let positions: Vec<u32> = eps.iter().map(|e| e.position).collect();
        let nics = berth_net::netns::run_in(&path, || {
            positions
                .iter()
                .map(|p| berth_net::attach::guest_tap(*p))
                .collect::<Result<Vec<_>, _>>()
        })??;
        Ok((nics, interfaces))
    }
}

/// The unprivileged uid (and gid) a VM's QEMU runs as: one per container,
/// from a range no host account uses.
pub(crate) fn vmm_uid(id: &str) -> u32 {
    let n = u32::from_str_radix(id.get(..7).unwrap_or("0"), 16).unwrap_or(0);
    VMM_UID_BASE + n % VMM_UID_RANGE
}

const VMM_UID_BASE: u32 = 1_600_000_000;
const VMM_UID_RANGE: u32 = 100_000_000;

fn set_owner(path: &Path, id: u32) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(id)),
        Some(nix::unistd::Gid::from_raw(id)),
    )
    .map_err(|e| crate::io_err(format!("handing {} to the VMM", path.display()))(e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(crate::io_err(
        format!("handing {} to the VMM", path.display()),
    ))
}
