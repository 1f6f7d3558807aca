//! `berth info`.

use std::path::Path;

use anyhow::Result;

pub fn info(root: &Path, run_root: &Path) -> Result<u8> {
    let layout = berth_sandbox::Layout::detect()?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("berth version: {}", env!("CARGO_PKG_VERSION"));
    println!("Root: {}", root.display());
    println!("Run root: {}", run_root.display());
    println!("Storage driver: overlay");
    println!("Cgroup version: {}", layout.name());
    println!("Kernel version: {}", kernel.trim());
    let default = berth_engine::vm::Settings::load()?
        .default_isolation
        .unwrap_or_else(|| "container".into());
    println!("Isolation: container, vm (default: {default})");
    for line in berth_engine::vm::info_lines() {
        println!("{line}");
    }
    Ok(0)
}
