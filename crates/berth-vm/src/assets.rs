//! Boot assets: the guest kernel (installed by
//! `scripts/install-guest-kernel.sh`), the static `berth-agent`, and the
//! initramfs berth builds from them (cached by content).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{io_err, VmError};

/// Modules the agent loads, dependencies first (resolved from modules.dep).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "virtiofs",
    "erofs",
    "overlay",
];

/// Where berth keeps what all VMs share: the guest kernel, initramfs
/// images, the KVM probe's answer. `BERTH_VM_DIR`, else /var/lib/berth/vm.
pub fn vm_dir() -> PathBuf {
    std::env::var_os("BERTH_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/berth/vm"))
}

/// An unpacked guest kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub dir: PathBuf,
    /// The uncompressed ELF with its PVH entry point.
    pub vmlinux: PathBuf,
    pub release: String,
    /// `lib/modules/RELEASE`.
    pub modules: PathBuf,
}

impl Kernel {
    /// The kernel in `<vm_dir>/kernel`.
    pub fn find(vm_dir: &Path) -> Result<Kernel, VmError> {
        let dir = vm_dir.join("kernel");
        let vmlinux = dir.join("vmlinux");
        let release = std::fs::read_to_string(dir.join("release"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if release.is_empty() || !vmlinux.is_file() {
            return Err(VmError::NoKernel(dir));
        }
        let modules = dir.join("lib/modules").join(&release);
        if !modules.join("modules.dep").is_file() {
            return Err(VmError::BadKernel {
                dir,
                why: format!("{}/modules.dep is missing", modules.display()),
            });
        }
        Ok(Kernel {
            dir,
            vmlinux,
            release,
            modules,
        })
    }

    /// Module files for `names` with their dependencies, in load order.
    pub fn module_files(&self, names: &[&str]) -> Result<Vec<PathBuf>, VmError> {
        let dep_path = self.modules.join("modules.dep");
        let text = std::fs::read_to_string(&dep_path)
            .map_err(io_err(format!("reading {}", dep_path.display())))?;
        let deps = parse_modules_dep(&text);
        let mut order: Vec<String> = Vec::new();
        for name in names {
            let key = deps
                .iter()
                .find(|(path, _)| module_name(path) == name.replace('-', "_"))
                .map(|(p, _)| p.clone())
                .ok_or_else(|| VmError::BadKernel {
                    dir: self.dir.clone(),
                    why: format!(
                        "module {name} is not in modules.dep (built in modules need no file)"
                    ),
                })?;
            add_with_deps(&key, &deps, &mut order, 0);
        }
        Ok(order.into_iter().map(|p| self.modules.join(p)).collect())
    }
}

/// `kernel/fs/erofs/erofs.ko` → `erofs`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn parse_modules_dep(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((
                m.trim().to_string(),
                d.split_whitespace().map(String::from).collect(),
            ))
        })
        .collect()
}

fn add_with_deps(m: &str, deps: &[(String, Vec<String>)], order: &mut Vec<String>, depth: u32) {
    if order.iter().any(|o| o == m) || depth > 32 {
        return;
    }
    if let Some((_, ds)) = deps.iter().find(|(p, _)| p == m) {
        // modules.dep lists the whole closure; load each one's own first.
        for d in ds.iter().rev() {
            add_with_deps(d, deps, order, depth + 1);
        }
    }
    if !order.iter().any(|o| o == m) {
        order.push(m.to_string());
    }
}

/// Whether an ELF file needs a dynamic loader or shared libraries: a
/// `PT_INTERP` segment, or `DT_NEEDED` entries in its dynamic section.
pub fn is_dynamic_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    for i in 0..phnum as usize {
        let ph = phoff as usize + i * phentsize as usize;
        match u32_at(ph) {
            Some(3) => return true,
            Some(2) => {
                // PT_DYNAMIC: its file offset and size.
                let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
                    return true;
                };
                let mut e = off as usize;
                while e + 16 <= (off + size) as usize {
                    match u64_at(e) {
                        Some(0) | None => break,
                        Some(1) => return true,
                        _ => e += 16,
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// The static agent: `BERTH_AGENT`, else the first static one of: next to
/// this executable, the static builds of this source tree in the running
/// binary's profile first (a release berth takes `make agent`'s release
/// build in `target/x86_64-unknown-linux-gnu/release`; a debug one the
/// debug builds, `make test`'s in `target/agent/` first), then
/// `/usr/local/lib/berth/berth-agent`. (Cargo's own `target/<profile>/
/// berth-agent` is dynamically linked, so it never qualifies.)
pub fn find_agent() -> Result<PathBuf, VmError> {
    let mut tried: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("BERTH_AGENT") {
        tried.push(PathBuf::from(p));
    } else if let Ok(exe) = berth_sandbox::seal::current_exe() {
        if let Some(dir) = exe.parent() {
            tried.push(dir.join("berth-agent"));
            if let Some(target) = dir.parent() {
                let static_build = |base: &Path, profile: &str| {
                    base.join("x86_64-unknown-linux-gnu")
                        .join(profile)
                        .join("berth-agent")
                };
                let release = static_build(target, "release");
                let debug = [
                    static_build(&target.join("agent"), "debug"),
                    static_build(target, "debug"),
                ];
                if dir.file_name().is_some_and(|n| n == "release") {
                    tried.push(release);
                    tried.extend(debug);
                } else {
                    tried.extend(debug);
                    tried.push(release);
                }
            }
        }
        tried.push(PathBuf::from("/usr/local/lib/berth/berth-agent"));
    }
    let mut dynamic = None;
    for p in &tried {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        if is_dynamic_elf(&bytes) {
            dynamic.get_or_insert_with(|| p.clone());
            continue;
        }
        return Ok(p.clone());
    }
    match dynamic {
        Some(p) => Err(VmError::AgentNotStatic(p)),
        None => Err(VmError::NoAgent(
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Whether this host can run VMs at all: the guest kernel, the agent and
/// QEMU (the error names what is missing and how to get it).
pub fn check_host() -> Result<(), VmError> {
    Kernel::find(&vm_dir())?;
    find_agent()?;
    crate::qemu::check()
}

/// What a VM boots with: the guest kernel, an initramfs holding the agent
/// and `modules` (with their dependencies), and the accelerator (probed
/// once, booting the agent-only initramfs).
pub struct Boot {
    pub kernel: Kernel,
    pub initrd: PathBuf,
    pub accel: crate::accel::Choice,
    /// The initramfs is in use (not pruned) while this lives: keep it until
    /// QEMU has started.
    pub held: crate::cache::InUse,
}

/// What a VM boots with: the kernel of `vm_dir`, an initramfs with the
/// agent and `modules` from the cache, and the accelerator.
pub fn boot(vm_dir: &Path, modules: &[&str]) -> Result<Boot, VmError> {
    let kernel = Kernel::find(vm_dir)?;
    let agent = find_agent()?;
    let files = kernel.module_files(modules)?;
    let initrd = initramfs(&agent, &files)?;
    let floor = initramfs(&agent, &[])?;
    let accel = crate::accel::choose(&crate::cache::dir(), &kernel, &floor.path)?;
    Ok(Boot {
        kernel,
        initrd: initrd.path,
        accel,
        held: initrd.held,
    })
}

/// A newc ("070701") cpio archive, as the kernel unpacks into its rootfs.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }

    pub fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | mode, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads initramfs in 512-byte blocks; pad like cpio does.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// A cached file and the lock that keeps it while it is used.
pub struct Held {
    pub path: PathBuf,
    pub held: crate::cache::InUse,
}

/// An initramfs: the agent as /init, and `modules` as /modules/NN-name.ko,
/// which the agent loads in name order. Built once per content and kept in
/// the cache's `initramfs/`.
pub fn initramfs(agent: &Path, modules: &[PathBuf]) -> Result<Held, VmError> {
    // Keyed by the inputs' identities (not the paths that name them): no
    // need to read them when the image exists.
    let mut h = Sha256::new();
    h.update(b"berth-initramfs-v3\0");
    for p in std::iter::once(agent).chain(modules.iter().map(PathBuf::as_path)) {
        let id = crate::cache::identity(p)
            .ok_or_else(|| VmError::Invalid(format!("{} is missing", p.display())))?;
        h.update(format!("{id}\0").as_bytes());
    }
    let key: String = h
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::cache::subdir("initramfs")?;
    let path = dir.join(format!("{key}.cpio"));
    for _ in 0..3 {
        if let Some(held) = crate::cache::use_file(&path) {
            return Ok(Held { path, held });
        }
        build_initramfs(&dir, &path, agent, modules)?;
    }
    Err(VmError::Invalid(format!(
        "{} keeps disappearing (another berth prunes the VM cache?)",
        path.display()
    )))
}

fn build_initramfs(
    dir: &Path,
    path: &Path,
    agent: &Path,
    modules: &[PathBuf],
) -> Result<(), VmError> {
    let agent_bytes =
        std::fs::read(agent).map_err(io_err(format!("reading {}", agent.display())))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let data = std::fs::read(m).map_err(io_err(format!("reading {}", m.display())))?;
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("module.ko");
        files.push((format!("modules/{i:02}-{name}"), strip_signature(data)));
    }
    let mut c = Cpio::default();
    for d in ["dev", "proc", "sys", "run", "tmp", "modules"] {
        c.dir(d);
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.char_dev("dev/null", 0o666, 1, 3);
    c.file("init", 0o755, &agent_bytes);
    for (name, data) in &files {
        c.file(name, 0o644, data);
    }
    write_atomic(dir, path, &c.finish())?;
    // Old images of other agent builds are garbage once nobody uses them.
    crate::cache::prune(dir, "cpio", 8, path);
    Ok(())
}

/// Drops a module's appended signature: checking it (RSA under emulation)
/// is a measurable part of the guest's boot, and the kernel does not
/// require it (`CONFIG_MODULE_SIG_FORCE` is off in Debian's kernel). The
/// modules come from the package apt verified.
fn strip_signature(mut data: Vec<u8>) -> Vec<u8> {
    const MAGIC: &[u8] = b"~Module signature appended~\n";
    if !data.ends_with(MAGIC) {
        return data;
    }
    let end = data.len() - MAGIC.len();
    if end < 12 {
        return data;
    }
    // struct module_signature: 8 bytes, then the signature's length (BE).
    let info = &data[end - 12..end];
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    if end >= 12 + sig_len {
        data.truncate(end - 12 - sig_len);
    }
    data
}

/// Writes `data` to `path` through a temporary file in `dir` (readers never
/// see half a file).
pub(crate) fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> Result<(), VmError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let res = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io_err(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first() {
        let dep = "kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\n\
                   kernel/lib/libcrc32c.ko:\n\
                   kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n\
                   kernel/drivers/virtio/virtio.ko:\n";
        let deps = parse_modules_dep(dep);
        let mut order = Vec::new();
        add_with_deps("kernel/drivers/virtio/virtio_mmio.ko", &deps, &mut order, 0);
        add_with_deps("kernel/fs/erofs/erofs.ko", &deps, &mut order, 0);
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            ["virtio", "virtio_ring", "virtio_mmio", "libcrc32c", "erofs"]
        );
    }

    #[test]
    fn signatures_are_stripped() {
        let mut m = b"\x7fELFbody".to_vec();
        m.extend_from_slice(b"SIGNATURE");
        m.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        m.extend_from_slice(b"~Module signature appended~\n");
        assert_eq!(strip_signature(m), b"\x7fELFbody");
        assert_eq!(strip_signature(b"plain".to_vec()), b"plain");
    }

    #[test]
    fn cpio_is_newc_and_aligned() {
        let mut c = Cpio::default();
        c.dir("dev");
        c.file("init", 0o755, b"abc");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 512, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("init\0") && text.contains("TRAILER!!!"));
    }

    #[test]
    fn static_and_dynamic_elves() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are linked dynamically here.
        assert!(is_dynamic_elf(&me));
        assert!(is_dynamic_elf(b"#!/bin/sh\n"));
        let agent = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/x86_64-unknown-linux-gnu/release/berth-agent");
        if let Ok(bytes) = std::fs::read(agent) {
            assert!(!is_dynamic_elf(&bytes), "the static agent reads as dynamic");
        }
    }
}
