//! Image config + user options → an OCI runtime spec (`config.json`),
//! following Docker's defaults: mounts, masked and read-only paths, device
//! rules, capabilities, seccomp, namespaces.

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::config::ContainerConfig;
use crate::user::ResolvedUser;
use crate::EngineError;

/// ociVersion written into bundles; crun 1.8 rejects 1.2.0 and later.
pub const OCI_VERSION: &str = "1.0.2";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything besides the image and the options that goes into a spec.
pub struct SpecContext<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    /// Where the bundle's rootfs is (absolute, or relative to the bundle).
    pub rootfs: &'a str,
    /// Directory holding hostname, hosts and resolv.conf.
    pub etc_dir: &'a std::path::Path,
    pub user: &'a ResolvedUser,
    pub cgroups_path: Option<String>,
    /// Terminal size for `-t`, (rows, cols).
    pub console_size: Option<(u16, u16)>,
}

/// The command Docker would run: entrypoint + cmd with the user's overrides.
pub fn command(img: &ImageConfiguration, cfg: &ContainerConfig) -> Vec<String> {
    let ic = img.config().as_ref();
    let (entry, cmd) = match &cfg.entrypoint {
        Some(e) => (e.clone(), cfg.cmd.clone()),
        None => {
            let entry = ic.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
            let cmd = if cfg.cmd.is_empty() {
                ic.and_then(|c| c.cmd().clone()).unwrap_or_default()
            } else {
                cfg.cmd.clone()
            };
            (entry, cmd)
        }
    };
    entry.into_iter().chain(cmd).collect()
}

/// Image Env, then the user's, later keys replacing earlier ones in place.
pub fn environment(
    img: &ImageConfiguration,
    cfg: &ContainerConfig,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or(kv);
        match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
            Some(slot) => *slot = kv.to_string(),
            None => env.push(kv.to_string()),
        }
    };
    set(DEFAULT_PATH);
    set(&format!("HOSTNAME={hostname}"));
    if cfg.tty {
        set("TERM=xterm");
    }
    for e in img
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
    {
        set(&e);
    }
    for e in &cfg.env {
        set(e);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

fn host_rlimits() -> Value {
    // Docker inherits the daemon's limits; never ask for more than the host's hard limit.
    let mut out = Vec::new();
    for (name, res, want) in [
        ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE, 1_048_576u64),
        ("RLIMIT_NPROC", libc::RLIMIT_NPROC, u64::MAX),
    ] {
        if let Ok(l) = berth_sandbox::sys::getrlimit(res) {
            let hard = l.rlim_max.min(want);
            out.push(json!({"type": name, "hard": hard, "soft": hard}));
        }
    }
    Value::Array(out)
}

fn default_device_rules() -> Value {
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    for (typ, major, minor) in [
        ("c", Some(1), Some(3)),
        ("c", Some(1), Some(5)),
        ("c", Some(1), Some(7)),
        ("c", Some(1), Some(8)),
        ("c", Some(1), Some(9)),
        ("c", Some(5), Some(0)),
        ("c", Some(5), Some(1)),
        ("c", Some(5), Some(2)),
        ("c", Some(136), None),
        ("c", Some(10), Some(200)),
    ] {
        rules.push(
            json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": "rwm"}),
        );
    }
    rules.push(json!({"allow": true, "type": "c", "access": "m"}));
    rules.push(json!({"allow": true, "type": "b", "access": "m"}));
    rules
        .into_iter()
        .map(|mut r| {
            // null major/minor means "any": omit them.
            if let Some(o) = r.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            r
        })
        .collect()
}

/// Builds the runtime spec.
pub fn build(
    img: &ImageConfiguration,
    cfg: &ContainerConfig,
    ctx: &SpecContext<'_>,
) -> Result<Spec, EngineError> {
    let args = command(img, cfg);
    if args.is_empty() {
        return Err(EngineError::Invalid(
            "no command specified: the image has no Cmd or Entrypoint and none was given".into(),
        ));
    }
    let env = environment(img, cfg, ctx.hostname, &ctx.user.home);
    let cwd = cfg
        .workdir
        .clone()
        .or_else(|| img.config().as_ref().and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let caps = crate::profiles::default_capabilities();
    let cap_names: Vec<Value> = caps.iter().map(|c| json!(format!("CAP_{c}"))).collect();
    let seccomp = crate::profiles::default_seccomp(&caps);

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for f in ["resolv.conf", "hostname", "hosts"] {
        mounts.push(json!({
            "destination": format!("/etc/{f}"), "type": "bind",
            "source": ctx.etc_dir.join(f), "options": ["rbind", "rprivate"]
        }));
    }
    for v in &cfg.volumes {
        let mut opts = vec!["rbind", "rprivate"];
        if v.read_only {
            opts.push("ro");
        }
        mounts.push(
            json!({"destination": v.target, "type": "bind", "source": v.source, "options": opts}),
        );
    }
    for t in &cfg.tmpfs {
        let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
        opts.extend(t.options.iter().cloned());
        mounts.push(
            json!({"destination": t.target, "type": "tmpfs", "source": "tmpfs", "options": opts}),
        );
    }

    let mut resources = json!({"devices": default_device_rules()});
    if let Some(m) = cfg.memory {
        // Docker: without --memory-swap, swap is allowed up to the same amount again.
        resources["memory"] = json!({"limit": m, "swap": m.saturating_mul(2)});
    }
    if let Some(c) = cfg.cpus {
        resources["cpu"] = json!({"quota": (c * 100_000.0).round() as i64, "period": 100_000u64});
    }
    if let Some(p) = cfg.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": ctx.user.uid, "gid": ctx.user.gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": cap_names, "effective": cap_names, "permitted": cap_names,
        },
        "rlimits": host_rlimits(),
        "noNewPrivileges": true,
    });
    if !ctx.user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(ctx.user.additional_gids);
    }
    if let (true, Some((rows, cols))) = (cfg.tty, ctx.console_size) {
        process["consoleSize"] = json!({"height": rows, "width": cols});
    }

    let mut linux = json!({
        "resources": resources,
        "namespaces": [
            {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
            {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
        ],
        "seccomp": seccomp,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    });
    if let Some(p) = &ctx.cgroups_path {
        linux["cgroupsPath"] = json!(p);
    }

    let spec = json!({
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": ctx.rootfs, "readonly": cfg.read_only},
        "hostname": ctx.hostname,
        "mounts": mounts,
        "annotations": {"run.berth.id": ctx.id},
        "linux": linux,
    });
    serde_json::from_value(spec)
        .map_err(|e| EngineError::Invalid(format!("building the runtime spec: {e}")))
}
