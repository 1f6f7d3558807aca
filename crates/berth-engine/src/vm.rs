//! Microvm isolation, the engine's side: choosing the isolation, checking
//! a VM can run, shaping the bundle, and starting the VM's host process
//! (`berth __vm ID`, see [`crate::vmhost`]) where a container's process
//! would start. `exec` and `stats` talk to that process's socket.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::ContainerConfig;
use crate::db::{ContainerRow, ImageRow};
use crate::{io_err, Engine, EngineError};

/// Image label naming the isolation its containers get by default.
pub const ISOLATION_LABEL: &str = "run.berth.isolation";

/// How a container is isolated.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, cgroups, seccomp and capabilities on the host kernel.
    #[default]
    Container,
    /// A microVM with its own guest kernel.
    Vm,
}

impl Isolation {
    /// `container` (or `process`), `vm` (or `microvm`).
    pub fn parse(s: &str) -> Result<Isolation, String> {
        match s.to_ascii_lowercase().as_str() {
            "container" | "process" => Ok(Isolation::Container),
            "vm" | "microvm" => Ok(Isolation::Vm),
            _ => Err(format!("invalid isolation {s:?}: expected container or vm")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }
}

/// berth's config file (`BERTH_CONFIG`, else /etc/berth/config.json).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// Isolation of containers whose image and command line name none.
    pub default_isolation: Option<String>,
}

impl Settings {
    pub fn path() -> PathBuf {
        std::env::var_os("BERTH_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/berth/config.json"))
    }

    pub fn load() -> Result<Settings, EngineError> {
        let p = Self::path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(io_err(format!("reading {}", p.display()))(e)),
        }
    }
}

/// The isolation a container record asked for.
pub fn isolation_of(cfg: &ContainerConfig) -> Isolation {
    cfg.isolation.unwrap_or_default()
}

pub fn is_vm(cfg: &ContainerConfig) -> bool {
    isolation_of(cfg) == Isolation::Vm
}

/// Guest RAM (MiB) and vCPUs for `cfg`.
pub fn guest_size(cfg: &ContainerConfig) -> (u64, u32) {
    let mem = cfg
        .memory
        .map(|b| (b as u64).div_ceil(1 << 20))
        .unwrap_or(berth_vm::DEFAULT_MEMORY_MIB);
    let cpus = cfg.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1);
    (mem, cpus)
}

/// Settles `cfg.isolation` (flag, else the image's label, else the config
/// file, else container) and, for a VM, checks it can run: a kernel, the
/// agent, QEMU, enough memory, no host directories.
pub(crate) fn resolve(cfg: &mut ContainerConfig, img: &ImageRow) -> Result<(), EngineError> {
    if cfg.isolation.is_none() {
        let label = crate::images::image_config(&img.config)
            .ok()
            .and_then(|c| c.config().as_ref().and_then(|c| c.labels().clone()))
            .and_then(|l| l.get(ISOLATION_LABEL).cloned());
        let from = match label {
            Some(l) => Some((l, format!("the image's label {ISOLATION_LABEL}"))),
            None => Settings::load()?
                .default_isolation
                .map(|d| (d, Settings::path().display().to_string())),
        };
        cfg.isolation = Some(match from {
            Some((v, whence)) => {
                Isolation::parse(&v).map_err(|e| EngineError::Invalid(format!("{whence}: {e}")))?
            }
            None => Isolation::Container,
        });
    }
    if is_vm(cfg) {
        preflight(cfg)?;
    }
    Ok(())
}

fn preflight(cfg: &ContainerConfig) -> Result<(), EngineError> {
    let vm_err = |e: berth_vm::VmError| EngineError::Invalid(e.to_string());
    let (mem, _) = guest_size(cfg);
    if mem < berth_vm::MIN_MEMORY_MIB {
        return Err(EngineError::Invalid(format!(
            "--memory {mem}MiB is below the {}MiB a VM's guest needs (with --isolation vm, --memory is the guest's RAM)",
            berth_vm::MIN_MEMORY_MIB
        )));
    }
    if cfg.volumes.iter().any(|v| Path::new(&v.source).is_dir()) {
        berth_vm::virtiofs::binary().map_err(vm_err)?;
    }
    match cfg.network.mode() {
        crate::network::Mode::Host => {
            return Err(EngineError::Invalid(
                "--network host is not possible with --isolation vm: a VM has its own kernel and network stack".into(),
            ))
        }
        crate::network::Mode::None | crate::network::Mode::Network(_) => {}
    }
    berth_vm::assets::check_host().map_err(vm_err)
}

/// For a VM, the bundle's resources are the VMM's cgroup on the host (guest
/// RAM plus the VMM's overhead; CPU quota as asked; no pids limit: QEMU's
/// threads are not the workload's processes). The guest gets its own
/// resources from the container's config.
pub(crate) fn adapt_host_spec(
    cfg: &ContainerConfig,
    spec: &mut oci_spec::runtime::Spec,
) -> Result<(), EngineError> {
    if !is_vm(cfg) {
        return Ok(());
    }
    let (mem, cpus) = guest_size(cfg);
    let mut v = serde_json::to_value(&*spec)
        .map_err(|e| EngineError::Invalid(format!("the runtime spec: {e}")))?;
    let limit = (mem + berth_vm::VMM_OVERHEAD_MIB) << 20;
    let res = &mut v["linux"]["resources"];
    res["memory"] = json!({"limit": limit, "swap": limit});
    if let Some(o) = res.as_object_mut() {
        o.remove("pids");
    }
    if let Some(devs) = res["devices"].as_array_mut() {
        // QEMU's accelerator.
        devs.push(json!({"allow": true, "type": "c", "major": 10, "minor": 232, "access": "rwm"}));
    }
    let ann = &mut v["annotations"];
    ann["run.berth.isolation"] = json!("vm");
    ann["run.berth.vm.memory-mib"] = json!(mem.to_string());
    ann["run.berth.vm.vcpus"] = json!(cpus.to_string());
    *spec = serde_json::from_value(v)
        .map_err(|e| EngineError::Invalid(format!("the runtime spec: {e}")))?;
    Ok(())
}

/// The VM's run directory: sockets (short: unix socket paths are limited).
pub fn run_dir(run_root: &Path, id: &str) -> PathBuf {
    run_root.join("vm").join(&id[..12.min(id.len())])
}

/// Where `berth __vm` leaves why a VM ended abnormally.
fn reason_file(container_dir: &Path) -> PathBuf {
    container_dir.join("vm-exit-reason")
}

pub(crate) fn write_exit_reason(container_dir: &Path, reason: &str) {
    let _ = std::fs::write(reason_file(container_dir), reason);
}

/// Why the VM ended abnormally (empty when it did not, or for containers);
/// read once.
pub(crate) fn take_exit_reason(container_dir: &Path) -> String {
    let p = reason_file(container_dir);
    let r = std::fs::read_to_string(&p).unwrap_or_default();
    let _ = std::fs::remove_file(p);
    r
}

/// Removes a dead VM's sockets.
pub(crate) fn cleanup_run_dir(run_root: &Path, id: &str) {
    let _ = std::fs::remove_dir_all(run_dir(run_root, id));
}

/// Drops cached image disks of images that are gone.
pub(crate) fn collect_image_disks(root: &Path, images: &[ImageRow]) {
    let Ok(rd) = std::fs::read_dir(root.join("vm/images")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let hex = name.split('.').next().unwrap_or("");
        if hex.len() == 64 && !images.iter().any(|i| i.id.ends_with(hex)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// How to start `berth __vm ID`: computed before a fork, so the child
/// needs nothing from the engine.
#[derive(Clone, Debug)]
pub(crate) struct VmmCommand {
    exe: PathBuf,
    root: PathBuf,
    run_root: PathBuf,
    id: String,
}

impl Engine {
    pub(crate) fn vmm_command(&self, id: &str) -> Result<VmmCommand, EngineError> {
        Ok(VmmCommand {
            exe: berth_sandbox::seal::current_exe().map_err(io_err("finding the berth binary"))?,
            root: self.root.clone(),
            run_root: self.run_root.clone(),
            id: id.to_string(),
        })
    }
}

impl VmmCommand {
    /// Starts the VM's host process with `stdio` (a host pty with `tty`).
    /// With `wait_ready`, returns once the workload runs in the guest, or
    /// with its start failure (127 for a missing command).
    pub(crate) fn spawn(
        &self,
        stdio: berth_sandbox::Stdio,
        tty: bool,
        wait_ready: bool,
    ) -> Result<berth_sandbox::Started, EngineError> {
        let mut c = Command::new(&self.exe);
        c.arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .arg("__vm")
            .arg(&self.id);
        let mut master = None;
        if tty {
            let (m, slave) = berth_sandbox::tty::open_pty()
                .map_err(|e| EngineError::Invalid(format!("opening a pty: {e}")))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(io_err("duplicating the pty"));
            c.stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            master = Some(m);
        } else {
            if let Some(fd) = stdio.stdin {
                c.stdin(Stdio::from(fd));
            }
            if let Some(fd) = stdio.stdout {
                c.stdout(Stdio::from(fd));
            }
            if let Some(fd) = stdio.stderr {
                c.stderr(Stdio::from(fd));
            }
        }
        let ready = if wait_ready {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| io_err("creating a pipe")(e.into()))?;
            // Only this child inherits it: the caller is single-threaded.
            berth_sandbox::sys::set_cloexec(w.as_raw_fd(), false)
                .map_err(io_err("preparing the ready pipe"))?;
            c.arg("--ready-fd").arg(w.as_raw_fd().to_string());
            Some((r, w))
        } else {
            None
        };
        let child = c.spawn().map_err(io_err("starting the VM's host process"));
        let (ready_r, ready_w) = match ready {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        drop(ready_w);
        drop(c);
        let child = child?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if let Some(r) = ready_r {
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut answer);
            let line = answer.lines().next().unwrap_or("");
            if line != "ok" {
                let _ = nix::sys::wait::waitpid(pid, None);
                let (code, msg) = match line.strip_prefix("err ") {
                    Some(rest) => {
                        let (c, m) = rest.split_once(' ').unwrap_or((rest, ""));
                        (c.parse().unwrap_or(125), m.to_string())
                    }
                    None => (
                        125,
                        "the VM's host process ended before the container started".to_string(),
                    ),
                };
                return Err(EngineError::StartFailed { code, msg });
            }
        }
        // Dropping the handle neither kills nor waits: whoever waits for
        // the container's process reaps it.
        drop(child);
        Ok(berth_sandbox::Started {
            pid,
            pty_master: master,
        })
    }
}

/// The socket `exec`, `stats` and `top` reach a VM's host process on;
/// `None` for containers.
fn api_socket(run_root: &Path, row: &ContainerRow) -> Option<PathBuf> {
    let cfg: ContainerConfig = serde_json::from_str(&row.config).ok()?;
    is_vm(&cfg).then(|| run_dir(run_root, &row.id).join("api.sock"))
}

/// A VM's usage from inside its guest; `None` for containers.
pub(crate) fn usage(run_root: &Path, row: &ContainerRow) -> Option<berth_sandbox::cgroup::Usage> {
    let sock = api_socket(run_root, row)?;
    if row.state == "paused" {
        // A frozen VM cannot answer; it uses nothing meanwhile.
        return Some(Default::default());
    }
    let s = berth_vm::client::stats(&sock).ok();
    Some(
        s.map_or_else(Default::default, |s| berth_sandbox::cgroup::Usage {
            cpu_ns: s.cpu_ns,
            memory: s.memory,
            memory_limit: Some(s.memory_limit),
            pids: s.pids,
        }),
    )
}

/// A VM's processes from inside its guest; `None` for containers.
pub(crate) fn top(
    run_root: &Path,
    row: &ContainerRow,
) -> Option<Result<Vec<berth_sandbox::procfs::ProcInfo>, EngineError>> {
    let sock = api_socket(run_root, row)?;
    if row.state == "paused" {
        return Some(Err(EngineError::Invalid(format!(
            "container {} is a paused VM: its guest cannot answer until it is unpaused",
            row.name
        ))));
    }
    Some(
        berth_vm::client::top(&sock)
            .map(|t| t.processes)
            .map_err(|e| EngineError::Invalid(e.to_string())),
    )
}

impl Engine {
    /// `berth exec` into a VM: the guest's agent runs `process`.
    pub(crate) fn vm_exec(
        &mut self,
        row: &ContainerRow,
        process: oci_spec::runtime::Process,
        cfg: &crate::exec::ExecConfig,
    ) -> Result<i32, EngineError> {
        let sock = run_dir(&self.run_root, &row.id).join("api.sock");
        let mut process = process;
        process.set_terminal(Some(cfg.tty));
        let req = berth_vm::proto::Exec {
            process,
            interactive: cfg.interactive,
            detach: cfg.detach,
        };
        crate::events::emit(&self.root, row, "exec_start", &[]);
        let end = berth_vm::client::exec(&sock, &req, cfg.tty)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        match end {
            berth_vm::client::ExecEnd::Exited(code) => {
                crate::events::emit(
                    &self.root,
                    row,
                    "exec_die",
                    &[("exitCode", code.to_string())],
                );
                Ok(code)
            }
            berth_vm::client::ExecEnd::Failed { code, message } => {
                Err(EngineError::StartFailed { code, msg: message })
            }
        }
    }
}

/// What `berth inspect` adds for a VM.
pub(crate) fn inspect(
    run_root: &Path,
    dir: &Path,
    row: &ContainerRow,
    cfg: &ContainerConfig,
    v: &mut serde_json::Value,
) {
    v["Isolation"] = json!(isolation_of(cfg).name());
    if !is_vm(cfg) {
        return;
    }
    let (mem, cpus) = guest_size(cfg);
    let vm_dir = berth_vm::assets::vm_dir();
    let kernel = berth_vm::assets::Kernel::find(&vm_dir).ok();
    let accel = kernel
        .as_ref()
        .and_then(|k| berth_vm::accel::describe(&berth_vm::cache::dir(), k));
    let start = std::fs::read_to_string(dir.join("vm-start")).ok();
    v["VM"] = json!({
        "Start": start,
        "MemoryMiB": mem,
        "VMMOverheadMiB": berth_vm::VMM_OVERHEAD_MIB,
        "VCPUs": cpus,
        "Kernel": kernel.as_ref().map(|k| k.release.clone()),
        "Accelerator": accel.map(|a| a.accel),
        "ConsoleLog": dir.join("console.log"),
        "RunDir": run_dir(run_root, &row.id),
        "Disk": dir.join("vm-rw.ext4"),
    });
}

/// Lines for `berth info`: the guest kernel and KVM or TCG, and why. Runs
/// the KVM probe if no answer is cached for this boot.
pub fn info_lines() -> Vec<String> {
    let vm_dir = berth_vm::assets::vm_dir();
    let mut out = Vec::new();
    let kernel = match berth_vm::assets::Kernel::find(&vm_dir) {
        Ok(k) => k,
        Err(e) => {
            out.push(format!("MicroVM: unavailable: {e}"));
            return out;
        }
    };
    out.push(format!(
        "MicroVM guest kernel: {} ({})",
        kernel.release,
        kernel.dir.display()
    ));
    let agent = match berth_vm::assets::find_agent() {
        Ok(a) => a,
        Err(e) => {
            out.push(format!("MicroVM: unavailable: {e}"));
            return out;
        }
    };
    out.push(format!("MicroVM agent: {}", agent.display()));
    if let Err(e) = berth_vm::qemu::check() {
        out.push(format!("MicroVM: unavailable: {e}"));
        return out;
    }
    let floor = berth_vm::assets::initramfs(&agent, &[]);
    match floor.and_then(|f| berth_vm::accel::choose(&berth_vm::cache::dir(), &kernel, &f.path)) {
        Ok(c) => {
            out.push(format!(
                "MicroVM accelerator: {} ({})",
                c.accel.to_uppercase(),
                c.reason
            ));
            if c.accel == "tcg" {
                out.push(format!(
                    "MicroVM guest TSC: {} kHz (tsc_early_khz)",
                    c.tsc_khz
                ));
            }
        }
        Err(e) => out.push(format!("MicroVM accelerator: unknown: {e}")),
    }
    out.push(format!(
        "MicroVM sizes: {} MiB guest RAM by default (--memory), {} MiB VMM overhead on top, 1 vCPU (--cpus rounds up)",
        berth_vm::DEFAULT_MEMORY_MIB,
        berth_vm::VMM_OVERHEAD_MIB
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_names() {
        assert_eq!(Isolation::parse("vm"), Ok(Isolation::Vm));
        assert_eq!(Isolation::parse("MicroVM"), Ok(Isolation::Vm));
        assert_eq!(Isolation::parse("container"), Ok(Isolation::Container));
        assert!(Isolation::parse("hyperv").is_err());
        assert_eq!(
            isolation_of(&ContainerConfig::default()),
            Isolation::Container
        );
    }

    #[test]
    fn guest_size_follows_memory_and_cpus() {
        let mut cfg = ContainerConfig::default();
        assert_eq!(guest_size(&cfg), (berth_vm::DEFAULT_MEMORY_MIB, 1));
        cfg.memory = Some(300 << 20);
        cfg.cpus = Some(1.5);
        assert_eq!(guest_size(&cfg), (300, 2));
    }

    #[test]
    fn host_spec_sizes_the_vmm() {
        let mut spec: oci_spec::runtime::Spec = serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"resources": {"memory": {"limit": 268435456}, "pids": {"limit": 10}, "devices": []}}
        }))
        .unwrap();
        let cfg = ContainerConfig {
            memory: Some(256 << 20),
            isolation: Some(Isolation::Vm),
            ..Default::default()
        };
        adapt_host_spec(&cfg, &mut spec).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let want = (256 + berth_vm::VMM_OVERHEAD_MIB) << 20;
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(want as i64));
        assert!(r.pids().is_none(), "QEMU's threads are not the workload's");
        let ann = spec.annotations().as_ref().unwrap();
        assert_eq!(
            ann.get("run.berth.isolation").map(String::as_str),
            Some("vm")
        );
    }
}
