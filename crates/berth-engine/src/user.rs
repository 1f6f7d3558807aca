//! Resolving `USER` / `-u` against the container's /etc/passwd and
//! /etc/group, as Docker does (names or numbers, `user[:group]`), plus the
//! supplementary groups the user is a member of.

use std::io::Read;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

fn read_in_root(rootfs: &Path, path: &str) -> String {
    let Ok(root) = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return String::new();
    };
    let Ok(fd) = berth_sandbox::safepath::open_in_root(&root, Path::new(path), OFlag::O_RDONLY)
    else {
        return String::new();
    };
    let mut s = String::new();
    let _ = std::fs::File::from(fd).take(4 << 20).read_to_string(&mut s);
    s
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 6 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn groups(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` ("", "uid", "name", "uid:gid", "name:group") in `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, EngineError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd_text = read_in_root(rootfs, "/etc/passwd");
    let numeric = user.parse::<u32>().ok();
    let entry = passwd(&passwd_text).find(|e| e.name == user || Some(e.uid) == numeric);
    let (uid, mut gid, home, name) = match (&entry, numeric) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Some(n)) => (n, 0, "/".to_string(), None),
        (None, None) => {
            return Err(EngineError::Invalid(format!(
                "unable to find user {user}: no matching entries in passwd file"
            )))
        }
    };
    let group_text = read_in_root(rootfs, "/etc/group");
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups(&group_text)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut additional = Vec::new();
    if group.is_none() {
        if let Some(name) = &name {
            for (_, id, members) in groups(&group_text) {
                if members.contains(&name.as_str()) && id != gid && !additional.contains(&id) {
                    additional.push(id);
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}
