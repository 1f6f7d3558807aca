//! The guest's view of a bundle: the OCI spec the agent runs, the files it
//! writes first, and the host directories it mounts. Shared by the engine
//! (`berth run --isolation vm`) and `berth-runtime`.

use std::path::Path;

use serde_json::json;

use crate::proto::GuestFile;
use crate::{io_err, VmError};

/// What the guest gets for a container: its spec, files to write, and
/// host directories to mount.
pub struct GuestSpec {
    pub spec: oci_spec::runtime::Spec,
    pub files: Vec<GuestFile>,
    pub volumes: Vec<(crate::virtiofs::Share, crate::proto::GuestVolume)>,
}

/// The guest's spec: the bundle's, with the root at the guest's overlay,
/// bind-mounted host files (hosts, hostname, resolv.conf) shipped as file
/// contents, bind-mounted host directories served by virtiofs and mounted
/// by the agent under /run/berth/volumes, the guest's own resources, and
/// nothing that names host paths.
pub fn guest_spec(
    host: &oci_spec::runtime::Spec,
    pids_limit: Option<i64>,
    networked: bool,
) -> Result<GuestSpec, VmError> {
    let bad = |e: serde_json::Error| VmError::Invalid(format!("the guest's spec: {e}"));
    let mut v = serde_json::to_value(host).map_err(bad)?;
    v["root"]["path"] = json!(crate::GUEST_ROOTFS);
    let mut files = Vec::new();
    let mut volumes = Vec::new();
    if let Some(mounts) = v["mounts"].as_array_mut() {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m["type"] != "bind" {
                continue;
            }
            let src = m["source"].as_str().unwrap_or("").to_string();
            let md = std::fs::metadata(&src).map_err(io_err(format!("bind mount source {src}")))?;
            if md.is_dir() {
                let n = volumes.len();
                let read_only = m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "ro"));
                let guest = format!("/run/berth/volumes/{n}");
                let tag = format!("berthvol{n}");
                volumes.push((
                    crate::virtiofs::Share {
                        tag: tag.clone(),
                        source: src.into(),
                        read_only,
                    },
                    crate::proto::GuestVolume {
                        tag,
                        path: guest.clone(),
                        read_only,
                    },
                ));
                m["source"] = json!(guest);
                continue;
            }
            if !md.is_file() {
                return Err(VmError::Invalid(format!(
                    "bind-mounting {src} (neither a file nor a directory) is not supported with --isolation vm"
                )));
            }
            let bytes = std::fs::read(&src).map_err(io_err(format!("reading {src}")))?;
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
        match pids_limit {
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

/// The spec's seccomp program compiled here for the guest kernel
/// `release`, as the sandbox's cache entry (name, bytes): libseccomp in an
/// emulated guest takes 100-200 ms. Cached under `<vm_dir>/seccomp`.
pub fn seccomp_program(
    spec: &oci_spec::runtime::Spec,
    release: &str,
    vm_dir: &Path,
) -> Result<Option<(String, Vec<u8>)>, VmError> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => berth_sandbox::seccomp::cache_entry_for(s, release, &vm_dir.join("seccomp"))
            .map_err(|e| VmError::Invalid(e.to_string())),
        None => Ok(None),
    }
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
        let GuestSpec {
            spec: g,
            files,
            volumes,
        } = guest_spec(&host, Some(50), false).unwrap();
        let text = serde_json::to_string(&g).unwrap();
        assert!(!text.contains(d.path().to_str().unwrap()), "{text}");
        assert!(
            !text.contains("/run/netns") && !text.contains("prestart"),
            "{text}"
        );
        assert_eq!(
            g.root().as_ref().unwrap().path().to_str(),
            Some(crate::GUEST_ROOTFS)
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
        let g = guest_spec(&host, Some(50), true).unwrap().spec;
        assert_eq!(kinds(&g), ["Pid"], "the guest's cards are the workload's");
    }
}
