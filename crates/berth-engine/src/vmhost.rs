//! `berth __vm ID`: the host process of a VM container, started where a
//! container's process would be (foreground run, `run -d`, the monitor's
//! restarts). It joins the container's cgroup (sized for the VMM), prepares
//! the boot assets and disks, turns the bundle into the guest's spec, and
//! runs [`berth_vm::vmm`]; it exits with the workload's exit code.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use berth_vm::disk::ImageFs;
use berth_vm::proto::GuestFile;

use crate::config::ContainerConfig;
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
        let kernel = berth_vm::assets::Kernel::find(&vm_dir).map_err(vm_err)?;
        let agent = berth_vm::assets::find_agent().map_err(vm_err)?;
        let fs = ImageFs::choose();
        let mods: Vec<&str> = berth_vm::assets::GUEST_MODULES
            .iter()
            .copied()
            .filter(|m| *m != "erofs" || fs == ImageFs::Erofs)
            .collect();
        let modules = kernel.module_files(&mods).map_err(vm_err)?;
        let initrd = berth_vm::assets::initramfs(&vm_dir, &agent, &modules).map_err(vm_err)?;
        let floor = berth_vm::assets::initramfs(&vm_dir, &agent, &[]).map_err(vm_err)?;
        let accel = berth_vm::accel::choose(&vm_dir, &kernel, &floor).map_err(vm_err)?;

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
        } = guest_spec(&host_spec, &cfg, !interfaces.is_empty())?;
        if !volumes.is_empty() {
            berth_vm::virtiofs::binary().map_err(vm_err)?;
        }
        let shares = volumes
            .iter()
            .enumerate()
            .map(|(i, (share, _))| (share.clone(), rdir.join(format!("fs{i}.sock"))))
            .collect();
        // Compiled here: libseccomp in an emulated guest takes 100-200 ms.
        let seccomp_cache = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(s) => {
                berth_sandbox::seccomp::cache_entry_for(s, &kernel.release, &vm_dir.join("seccomp"))
                    .map_err(|e| EngineError::Invalid(e.to_string()))?
            }
            None => None,
        };
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
                image_disk,
                rw_disk,
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
            },
            tty: cfg.tty,
            boot_timeout: boot_timeout(accel.accel()),
            ready: None,
            // Extra kernel arguments (debugging, tests) mean a fresh boot.
            snapshots: restore.then(|| vm_dir.clone()),
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

/// What the guest gets for a container: its spec, files to write, and
/// host directories to mount.
pub(crate) struct GuestSpec {
    pub spec: oci_spec::runtime::Spec,
    pub files: Vec<GuestFile>,
    pub volumes: Vec<(berth_vm::virtiofs::Share, berth_vm::proto::GuestVolume)>,
}

/// The guest's spec: the bundle's, with the root at the guest's overlay,
/// bind-mounted host files (hosts, hostname, resolv.conf) shipped as file
/// contents, bind-mounted host directories served by virtiofs and mounted
/// by the agent under /run/berth/volumes, the guest's own resources, and
/// nothing that names host paths.
pub(crate) fn guest_spec(
    host: &oci_spec::runtime::Spec,
    cfg: &ContainerConfig,
    networked: bool,
) -> Result<GuestSpec, EngineError> {
    let bad = |e: serde_json::Error| EngineError::Invalid(format!("the guest's spec: {e}"));
    let mut v = serde_json::to_value(host).map_err(bad)?;
    v["root"]["path"] = json!(berth_vm::GUEST_ROOTFS);
    let mut files = Vec::new();
    let mut volumes = Vec::new();
    if let Some(mounts) = v["mounts"].as_array_mut() {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m["type"] != "bind" {
                continue;
            }
            let src = m["source"].as_str().unwrap_or("").to_string();
            let md = std::fs::metadata(&src)
                .map_err(crate::io_err(format!("bind mount source {src}")))?;
            if md.is_dir() {
                let n = volumes.len();
                let read_only = m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "ro"));
                let guest = format!("/run/berth/volumes/{n}");
                let tag = format!("berthvol{n}");
                volumes.push((
                    berth_vm::virtiofs::Share {
                        tag: tag.clone(),
                        source: src.into(),
                        read_only,
                    },
                    berth_vm::proto::GuestVolume {
                        tag,
                        path: guest.clone(),
                        read_only,
                    },
                ));
                m["source"] = json!(guest);
                continue;
            }
            if !md.is_file() {
                return Err(EngineError::Invalid(format!(
                    "bind-mounting {src} (neither a file nor a directory) is not supported with --isolation vm"
                )));
            }
            let bytes = std::fs::read(&src).map_err(crate::io_err(format!("reading {src}")))?;
            let name = Path::new(&src)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let guest = format!("/run/berth/files/{i}-{name}");
            files.push(GuestFile {
                path: guest.clone(),
                contents: String::from_utf8_lossy(&bytes).into_owned(),
            });
            m["source"] = json!(guest);
        }
    }
    let linux = &mut v["linux"];
    if let Some(res) = linux["resources"].as_object_mut() {
        // Guest RAM and vCPUs are the limits; the VMM's cgroup enforces
        // them on the host.
        res.remove("memory");
        res.remove("cpu");
        match cfg.pids_limit {
            Some(p) => {
                res.insert("pids".into(), json!({"limit": p}));
            }
            None => {
                res.remove("pids");
            }
        }
    }
    // Namespaces the host prepared (by path) do not exist in the guest. A
    // networked workload shares the guest's network namespace, where the
    // agent configured the cards; the VM is its boundary.
    if let Some(nss) = linux["namespaces"].as_array_mut() {
        if networked {
            nss.retain(|ns| ns["type"] != "network");
        }
        for ns in nss.iter_mut() {
            if let Some(o) = ns.as_object_mut() {
                o.remove("path");
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("hooks");
    }
    let spec = serde_json::from_value(v).map_err(bad)?;
    Ok(GuestSpec {
        spec,
        files,
        volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_spec_names_no_host_paths() {
        let d = tempfile::tempdir().unwrap();
        let hosts = d.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let host: oci_spec::runtime::Spec = serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "/var/lib/berth/containers/x/rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind"]},
                {"destination": "/data", "type": "bind", "source": d.path(), "options": ["rbind", "ro"]}
            ],
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "linux": {
                "resources": {"memory": {"limit": 1000}, "cpu": {"quota": 50000}, "devices": []},
                "namespaces": [{"type": "network", "path": "/run/netns/x"}, {"type": "pid"}]
            }
        }))
        .unwrap();
        let cfg = ContainerConfig {
            pids_limit: Some(50),
            ..Default::default()
        };
        let GuestSpec {
            spec: g,
            files,
            volumes,
        } = guest_spec(&host, &cfg, false).unwrap();
        let text = serde_json::to_string(&g).unwrap();
        assert!(!text.contains(d.path().to_str().unwrap()), "{text}");
        assert!(
            !text.contains("/run/netns") && !text.contains("prestart"),
            "{text}"
        );
        assert_eq!(
            g.root().as_ref().unwrap().path().to_str(),
            Some(berth_vm::GUEST_ROOTFS)
        );
        assert_eq!(files.len(), 1);
        assert_eq!(volumes.len(), 1);
        assert_eq!(volumes[0].0.source, d.path());
        assert!(volumes[0].0.read_only && volumes[0].1.read_only);
        assert_eq!(volumes[0].1.path, "/run/berth/volumes/0");
        assert_eq!(volumes[0].0.tag, volumes[0].1.tag);
        assert_eq!(files[0].contents, "127.0.0.1 localhost\n");
        let r = g.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert!(r.memory().is_none() && r.cpu().is_none());
        assert_eq!(r.pids().as_ref().unwrap().limit(), 50);
        let kinds = |g: &oci_spec::runtime::Spec| -> Vec<String> {
            let nss = g.linux().as_ref().unwrap().namespaces().clone().unwrap();
            nss.iter().map(|n| format!("{:?}", n.typ())).collect()
        };
        assert_eq!(kinds(&g), ["Network", "Pid"], "loopback only");
        let g = guest_spec(&host, &cfg, true).unwrap().spec;
        assert_eq!(kinds(&g), ["Pid"], "the guest's cards are the workload's");
    }
}
