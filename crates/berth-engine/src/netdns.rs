//! Name resolution on user networks, without a daemon: one small
//! `berth-dns` process per network, started when its first container
//! starts and stopped when its last one stops. berth rewrites the
//! network's hosts file (running containers' names, aliases and short IDs)
//! and the responder rereads it when it changes. Also the network part of
//! `berth system reconcile`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use berth_net::netlink::Netlink;
use berth_net::netns;

use crate::containers::alive;
use crate::netdb::{self, NetworkRow};
use crate::network::DEFAULT_NETWORK;
use crate::reconcile::Report;
use crate::{io_err, Engine, EngineError};

fn read_pid(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some((pid, start))
}

impl Engine {
    /// Rewrites a user network's hosts file from its running containers,
    /// and starts or stops its responder to match.
    pub(crate) fn refresh_dns(&mut self, net: &NetworkRow) -> Result<(), EngineError> {
        if net.name == DEFAULT_NETWORK {
            return Ok(());
        }
        let dir = self.network_run_dir(net);
        let mut hosts = String::new();
        for ep in netdb::endpoints_on(self.db().conn(), &net.name)? {
            if !netns::is_mounted(&self.netns_path(&ep.container_id)) {
                continue;
            }
            let Some(row) = self.db().container(&ep.container_id)? else {
                continue;
            };
            let cfg = Self::config_of(&row);
            let mut names = vec![row.name.clone(), row.id[..12].to_string()];
            names.extend(cfg.hostname.clone());
            names.extend(ep.aliases.iter().cloned());
            hosts.push_str(&format!("{} {}\n", ep.ip, names.join(" ")));
        }
        let file = dir.join("hosts");
        if hosts.is_empty() {
            self.stop_dns(net);
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let tmp = dir.join(".hosts.tmp");
        std::fs::write(&tmp, hosts).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &file).map_err(io_err(format!("writing {}", file.display())))?;
        self.ensure_dns(net)
    }

    fn ensure_dns(&mut self, net: &NetworkRow) -> Result<(), EngineError> {
        let dir = self.network_run_dir(net);
        let pid_file = dir.join("dns.pid");
        if read_pid(&pid_file).is_some_and(|(p, s)| alive(p, s)) {
            return Ok(());
        }
        let _lock = self.network_lock()?;
        if read_pid(&pid_file).is_some_and(|(p, s)| alive(p, s)) {
            return Ok(());
        }
        let exe = berth_sandbox::seal::current_exe().map_err(io_err("finding the berth binary"))?;
        let bin = exe.with_file_name("berth-dns");
        let log = std::fs::File::create(dir.join("dns.log")).map_err(io_err(format!(
            "creating {}",
            dir.join("dns.log").display()
        )))?;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&bin)
            .arg("--listen")
            .arg(net.gateway.to_string())
            .arg("--hosts")
            .arg(dir.join("hosts"))
            .arg("--pid-file")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("starting {}", bin.display())))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            let why = std::fs::read_to_string(dir.join("dns.log")).unwrap_or_default();
            return Err(EngineError::Invalid(format!(
                "the name responder of network {} did not start: {}",
                net.name,
                why.lines().last().unwrap_or("no reason given")
            )));
        }
        // It runs on its own; whoever outlives it reaps it (init, or our
        // own wait loop).
        drop(child);
        Ok(())
    }

    /// Stops a network's responder and removes its hosts file.
    pub(crate) fn stop_dns(&mut self, net: &NetworkRow) {
        let dir = self.network_run_dir(net);
        let _ = std::fs::remove_file(dir.join("hosts"));
        if let Some((pid, start)) = read_pid(&dir.join("dns.pid")) {
            if alive(pid, start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGTERM,
                );
            }
        }
        let _ = std::fs::remove_file(dir.join("dns.pid"));
    }

    /// The network part of reconcile: namespaces, ports and veths of
    /// containers that do not run, leases of containers that are gone,
    /// berth's nft elements, and the responders.
    pub(crate) fn reconcile_network(&mut self, report: &mut Report) -> Result<(), EngineError> {
        let rows = self.db().containers()?;
        let live = |state: &str| matches!(state, "running" | "paused" | "restarting");
        for r in &rows {
            if !live(&r.state) && self.netns_path(&r.id).exists() {
                self.network_down(&r.id)?;
                report
                    .cleaned
                    .push(format!("network namespace of {}", &r.id[..12]));
            }
        }
        for p in netdb::all_ports(self.db().conn())? {
            if !rows
                .iter()
                .any(|r| r.id == p.container_id && live(&r.state))
            {
                self.network_down(&p.container_id)?;
                report.cleaned.push(format!("published port {}", p.binding));
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.run_root.join("netns")) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !rows.iter().any(|r| r.id == id) {
                    netns::remove(&e.path())?;
                    report
                        .cleaned
                        .push(format!("network namespace {}", e.path().display()));
                }
            }
        }
        for ep in netdb::all_endpoints(self.db().conn())? {
            if !rows.iter().any(|r| r.id == ep.container_id) {
                netdb::delete_endpoints_of(self.db().conn(), &ep.container_id)?;
                report
                    .cleaned
                    .push(format!("lease {} on {}", ep.ip, ep.network));
            }
        }
        let mut nl = Netlink::open()?;
        let links = nl.links()?;
        for net in netdb::networks(self.db().conn())? {
            let Some(bridge) = links.iter().find(|l| l.name == net.bridge) else {
                continue;
            };
            berth_net::attach::repair_bridge(&net.bridge())?;
            // veths on our bridges whose container does not run (their
            // namespace lives on in a leftover process).
            for l in links
                .iter()
                .filter(|l| l.master == bridge.index && l.name.starts_with("vb"))
            {
                let running = rows.iter().any(|r| {
                    live(&r.state) && l.name.len() == 13 && r.id.starts_with(&l.name[2..12])
                });
                if !running {
                    berth_net::attach::detach(&mut nl, &l.name)?;
                    report.cleaned.push(format!("veth {}", l.name));
                }
            }
            self.refresh_dns(&net)?;
        }
        Ok(())
    }
}
