//! Container records and their files: create, list, inspect, remove, and
//! writing a standalone OCI bundle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::config::ContainerConfig;
use crate::db::{ContainerRow, ImageRow};
use crate::images::image_config;
use crate::spec::SpecContext;
use crate::{files, io_err, names, now, rootfs, spec, user, Engine, EngineError};

/// A created container, ready to start.
pub struct Created {
    pub row: ContainerRow,
    pub config: ContainerConfig,
    pub spec: oci_spec::runtime::Spec,
    pub bundle: PathBuf,
}

/// The cgroup (relative to each hierarchy) of a container.
pub fn cgroups_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// Start time of a process in clock ticks since boot, to tell a PID from a
/// later process that reused it.
pub fn pid_start_time(pid: i32) -> Option<u64> {
    berth_sandbox::procfs::stat(pid).map(|(start, _)| start)
}

pub use berth_sandbox::procfs::alive;

/// Waits up to `limit` for process `pid` (started at `start`) to be gone;
/// whether it is.
pub(crate) fn wait_dead(pid: i32, start: u64, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid, start) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

pub use berth_sandbox::time::rfc3339;

/// The user to run as: `-u`, else the image's USER, resolved in `rootfs`.
fn image_user(
    cfg: &ContainerConfig,
    img: &oci_spec::image::ImageConfiguration,
    rootfs: &Path,
) -> Result<user::ResolvedUser, EngineError> {
    let spec = cfg
        .user
        .clone()
        .or_else(|| img.config().as_ref().and_then(|c| c.user().clone()))
        .unwrap_or_default();
    user::resolve_user(rootfs, &spec)
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Some(Ok(b))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    a.dev() != b.dev()
}

impl Engine {
    /// The image's unpacked layers, bottom first. A layer listed twice is
    /// kept at its topmost place only (overlayfs refuses a repeated lowerdir;
    /// the merged view is the same).
    pub(crate) fn layer_dirs(&mut self, img: &ImageRow) -> Result<Vec<PathBuf>, EngineError> {
        let store = self.store()?;
        let mut ids: Vec<&String> = Vec::new();
        for (i, d) in img.diff_ids.iter().enumerate() {
            if !img.diff_ids[i + 1..].contains(d) {
                ids.push(d);
            }
        }
        ids.into_iter()
            .map(|d| {
                if store.has_layer(d) {
                    Ok(store.layer_path(d))
                } else {
                    Err(EngineError::Invalid(format!(
                        "layer {d} of image {} is missing from the store",
                        img.id
                    )))
                }
            })
            .collect()
    }

    /// Creates a container: record, overlay rootfs, generated files and the
    /// OCI bundle. All-or-nothing.
    pub fn create(
        &mut self,
        mut cfg: ContainerConfig,
        console_size: Option<(u16, u16)>,
    ) -> Result<Created, EngineError> {
        cfg.validate().map_err(EngineError::Invalid)?;
        if let Some(n) = &cfg.name {
            if !names::valid_name(n) {
                return Err(EngineError::BadName(n.clone()));
            }
        }
        let img = self.resolve_image(&cfg.image)?;
        let layers = self.layer_dirs(&img)?;
        crate::vm::resolve(&mut cfg, &img)?;
        let id = names::new_id();
        let row = ContainerRow {
            id: id.clone(),
            name: cfg.name.clone().unwrap_or_else(names::new_name),
            image_id: img.id.clone(),
            image_ref: cfg.image.clone(),
            created: now(),
            state: "created".into(),
            pid: 0,
            pid_start: 0,
            exit_code: 0,
            oom_killed: false,
            error: String::new(),
            started_at: 0,
            finished_at: 0,
            config: serde_json::to_string(&cfg).unwrap_or_default(),
            restart_count: 0,
            monitor_pid: 0,
            monitor_start: 0,
            stop_requested: false,
        };
        self.db().insert_container(&row)?;
        let dir = self.container_dir(&id);
        match self.prepare(&dir, &row, &img, &layers, &cfg, console_size) {
            Ok(spec) => Ok({
                crate::events::emit(&self.root, &row, "create", &[]);
                Created {
                    row,
                    config: cfg,
                    spec,
                    bundle: dir,
                }
            }),
            Err(e) => {
                let _ = rootfs::unmount(&dir.join("rootfs"));
                let _ = rootfs::remove_tree(&dir);
                let _ = self.network_release(&id);
                let _ = self.db().delete_container(&id);
                Err(e)
            }
        }
    }

    fn prepare(
        &mut self,
        dir: &Path,
        row: &ContainerRow,
        img: &ImageRow,
        layers: &[PathBuf],
        cfg: &ContainerConfig,
        console_size: Option<(u16, u16)>,
    ) -> Result<oci_spec::runtime::Spec, EngineError> {
        let rootfs_dir = dir.join("rootfs");
        for d in ["upper", "work", "rootfs"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        rootfs::mount_overlay(
            layers,
            &dir.join("upper"),
            &dir.join("work"),
            &rootfs_dir,
            cfg.auto_remove,
        )?;
        let img_cfg = image_config(&img.config)?;
        let hostname = cfg
            .hostname
            .clone()
            .unwrap_or_else(|| row.id[..12].to_string());
        files::write_etc_files(dir, &hostname)?;
        let user = image_user(cfg, &img_cfg, &rootfs_dir)?;
        let rootfs_str = rootfs_dir.display().to_string();
        let mut spec = spec::build(
            &img_cfg,
            cfg,
            &SpecContext {
                id: &row.id,
                hostname: &hostname,
                rootfs: &rootfs_str,
                etc_dir: dir,
                user: &user,
                cgroups_path: Some(cgroups_path(&row.id)),
                console_size,
            },
        )?;
        self.net_prepare(row, cfg, &mut spec, dir, &hostname)?;
        crate::vm::adapt_host_spec(cfg, &mut spec)?;
        write_spec(dir, &spec)?;
        Ok(spec)
    }

    /// `berth create --bundle-only DIR`: a self-contained OCI bundle
    /// (config.json and a flattened rootfs directory) that any OCI runtime
    /// can run. No container record is made.
    pub fn write_bundle(&mut self, dir: &Path, cfg: &ContainerConfig) -> Result<(), EngineError> {
        cfg.validate().map_err(EngineError::Invalid)?;
        let img = self.resolve_image(&cfg.image)?;
        let layers = self.layer_dirs(&img)?;
        if dir.exists()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(EngineError::Invalid(format!(
                "bundle directory {} exists and is not empty",
                dir.display()
            )));
        }
        let created_dir = !dir.exists();
        let result = self.fill_bundle(dir, &img, &layers, cfg);
        if result.is_err() {
            if created_dir {
                let _ = rootfs::remove_tree(dir);
            } else if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let _ = rootfs::remove_tree(&e.path());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        result
    }

    fn fill_bundle(
        &mut self,
        dir: &Path,
        img: &ImageRow,
        layers: &[PathBuf],
        cfg: &ContainerConfig,
    ) -> Result<(), EngineError> {
        let rootfs_dir = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs_dir)
            .map_err(io_err(format!("creating {}", rootfs_dir.display())))?;
        let id = names::new_id();
        // Flatten the layers: mount them read-only somewhere private and copy.
        let mnt = self.run_root.join(format!("flatten-{}", &id[..12]));
        std::fs::create_dir_all(&mnt).map_err(io_err(format!("creating {}", mnt.display())))?;
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let data = if lower.len() == 1 {
            // overlayfs needs two lower layers without an upper; bind the one.
            None
        } else {
            Some(format!("lowerdir={}", lower.join(":")))
        };
        let mount_res = match &data {
            None => nix::mount::mount(
                Some(&layers[0]),
                &mnt,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            ),
            Some(d) => nix::mount::mount(
                Some("overlay"),
                &mnt,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(d.as_str()),
            ),
        };
        mount_res.map_err(|e| io_err("mounting the image layers")(e.into()))?;
        let copy = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", mnt.display()))
            .arg(&rootfs_dir)
            .status();
        let _ = rootfs::unmount(&mnt);
        let _ = std::fs::remove_dir(&mnt);
        match copy {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(EngineError::Invalid(format!(
                    "copying the image into {} failed ({s})",
                    rootfs_dir.display()
                )))
            }
            Err(e) => return Err(io_err("running cp")(e)),
        }
        if data.is_none() {
            remove_whiteouts(&rootfs_dir);
        }
        let img_cfg = image_config(&img.config)?;
        let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
        files::write_etc_files(dir, &hostname)?;
        let user = image_user(cfg, &img_cfg, &rootfs_dir)?;
        let abs_dir =
            std::fs::canonicalize(dir).map_err(io_err(format!("resolving {}", dir.display())))?;
        let spec = spec::build(
            &img_cfg,
            cfg,
            &SpecContext {
                id: &id,
                hostname: &hostname,
                rootfs: "rootfs",
                etc_dir: &abs_dir,
                user: &user,
                cgroups_path: None,
                console_size: None,
            },
        )?;
        write_spec(dir, &spec)
    }

    /// All containers; a "running" record whose process is gone is shown
    /// (and stored) as exited, never as up.
    pub fn containers(&mut self) -> Result<Vec<ContainerRow>, EngineError> {
        let mut rows = self.db().containers()?;
        for r in rows.iter_mut() {
            self.reconcile_row(r)?;
        }
        Ok(rows)
    }

    pub fn find(&mut self, key: &str) -> Result<ContainerRow, EngineError> {
        let mut row = self
            .db()
            .find_container(key)?
            .ok_or_else(|| EngineError::NoSuchContainer(key.to_string()))?;
        self.reconcile_row(&mut row)?;
        Ok(row)
    }

    /// `berth rm [-f]`.
    pub fn remove(&mut self, key: &str, force: bool) -> Result<String, EngineError> {
        let row = self.find(key)?;
        if matches!(row.state.as_str(), "running" | "paused" | "restarting") {
            if !force {
                return Err(EngineError::ContainerRunning(row.name));
            }
            // Its monitor must not restart it.
            self.db().set_stop_requested(&row.id, true)?;
            if let Ok(layout) = berth_sandbox::Layout::detect() {
                // Thaw a paused container so it can die; kill everything in it.
                let cg = berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(&row.id)));
                let _ = cg.freeze(false);
                cg.kill_all();
            }
            if row.pid > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(row.pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            wait_dead(row.pid, row.pid_start, Duration::from_secs(10));
            // Its monitor writes the last output and records the exit: wait
            // for it (then end it) before its directory goes, or it would
            // write (or rotate) logs into a directory being removed.
            if !wait_dead(row.monitor_pid, row.monitor_start, Duration::from_secs(2)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(row.monitor_pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            berth_sandbox::fault::point("rm:killed");
        }
        self.cleanup_files(&row.id)?;
        berth_sandbox::fault::point("rm:cleaned");
        self.db().delete_container(&row.id)?;
        crate::events::emit(&self.root, &row, "destroy", &[]);
        Ok(row.id)
    }

    /// Removes a container's cgroup, mount and directory.
    pub(crate) fn cleanup_files(&mut self, id: &str) -> Result<(), EngineError> {
        self.network_release(id)?;
        if let Ok(layout) = berth_sandbox::Layout::detect() {
            berth_sandbox::Cgroup::at(&layout, Path::new(&cgroups_path(id))).destroy()?;
        }
        crate::vm::cleanup_run_dir(&self.run_root, id);
        let dir = self.container_dir(id);
        let rootfs_dir = dir.join("rootfs");
        rootfs::unmount(&rootfs_dir)?;
        if is_mountpoint(&rootfs_dir) {
            return Err(EngineError::Invalid(format!(
                "{} is still mounted; not removing it",
                rootfs_dir.display()
            )));
        }
        rootfs::remove_tree(&dir)
    }

    /// `berth inspect`: Docker's shape, plus the host PID and the rootfs
    /// path on the host.
    pub fn inspect_container(&mut self, key: &str) -> Result<serde_json::Value, EngineError> {
        let r = self.find(key)?;
        let cfg: ContainerConfig = serde_json::from_str(&r.config).unwrap_or_default();
        let dir = self.container_dir(&r.id);
        let spec: Option<oci_spec::runtime::Spec> = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let process = spec.as_ref().and_then(|s| s.process().clone());
        let args = process
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let layers = self
            .db()
            .image(&r.image_id)?
            .map(|i| i.diff_ids)
            .unwrap_or_default();
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|d| {
                self.root
                    .join("image/layers")
                    .join(d.trim_start_matches("sha256:"))
                    .display()
                    .to_string()
            })
            .collect();
        let status = r.state.clone();
        let mut v = json!({
            "Id": r.id,
            "Name": format!("/{}", r.name),
            "Created": rfc3339(r.created),
            "Path": args.first(),
            "Args": args.get(1..).unwrap_or(&[]),
            "State": {
                "Status": status,
                "Running": r.state == "running",
                "Pid": r.pid,
                "MonitorPid": r.monitor_pid,
                "ExitCode": r.exit_code,
                "OOMKilled": r.oom_killed,
                "Error": r.error,
                "StartedAt": if r.started_at > 0 { rfc3339(r.started_at) } else { "0001-01-01T00:00:00Z".into() },
                "FinishedAt": if r.finished_at > 0 { rfc3339(r.finished_at) } else { "0001-01-01T00:00:00Z".into() },
            },
            "Image": r.image_id,
            "ImageName": r.image_ref,
            "RestartCount": r.restart_count,
            "LogPath": crate::lifecycle::log_path(&dir),
            "Isolation": crate::vm::isolation_of(&cfg).name(),
            "BundlePath": dir,
            "Rootfs": dir.join("rootfs"),
            "Config": {
                "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()),
                "User": cfg.user,
                "Env": process.as_ref().and_then(|p| p.env().clone()),
                "Cmd": cfg.cmd,
                "Entrypoint": cfg.entrypoint,
                "WorkingDir": process.as_ref().map(|p| p.cwd().clone()),
                "Tty": cfg.tty,
                "OpenStdin": cfg.interactive,
                "Image": r.image_ref,
            },
            "HostConfig": {
                "Memory": cfg.memory.unwrap_or(0),
                "NanoCpus": cfg.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
                "PidsLimit": cfg.pids_limit,
                "ReadonlyRootfs": cfg.read_only,
                "AutoRemove": cfg.auto_remove,
                "Binds": cfg.volumes.iter().map(|v| format!("{}:{}{}", v.source, v.target, if v.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
                "CgroupParent": "/berth",
                "RestartPolicy": {"Name": cfg.restart.to_string(), "MaximumRetryCount": cfg.restart.max_retries},
                "LogConfig": {"Type": "json-file", "Config": {"max-size": cfg.log_max_size.to_string(), "max-file": cfg.log_max_file.to_string()}},
            },
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": lower.join(":"),
                    "UpperDir": dir.join("upper"),
                    "WorkDir": dir.join("work"),
                    "MergedDir": dir.join("rootfs"),
                },
            },
        });
        self.net_inspect(&r.id, &cfg, &mut v);
        crate::vm::inspect(&self.run_root, &dir, &r, &cfg, &mut v);
        Ok(v)
    }
}

fn write_spec(dir: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), EngineError> {
    let tmp = dir.join(".config.json.tmp");
    let bytes = serde_json::to_vec_pretty(spec)
        .map_err(|e| EngineError::Invalid(format!("serialising config.json: {e}")))?;
    std::fs::write(&tmp, bytes).map_err(io_err(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join("config.json")).map_err(io_err("writing config.json"))
}

/// After copying a single layer, its overlay whiteouts (0:0 char devices)
/// are meaningless: drop them.
fn remove_whiteouts(dir: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if md.file_type().is_char_device() && md.rdev() == 0 {
            let _ = std::fs::remove_file(e.path());
        } else if md.is_dir() {
            remove_whiteouts(&e.path());
        }
    }
}
