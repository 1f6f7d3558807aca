//! A container's network: its lease and generated files (at create), its
//! namespace, interfaces and published ports (at every start, removed at
//! every stop), `connect`/`disconnect`, and what `inspect` and `port` show.
//!
//! The namespace is made before the container's process exists, as CNI
//! does: `<run-root>/netns/<id>` is a bind mount, the spec's network
//! namespace has it as `path`, and the sandbox joins it. It exists while
//! the container runs (restart policies keep it between runs); removing it
//! makes the kernel delete the veth pair in the background.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use berth_net::attach::{self, Endpoint};
use berth_net::ipam;
use berth_net::netlink::Netlink;
use berth_net::netns;
use berth_net::ports::{Binding, PortSpec, Proto};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde_json::json;

use crate::config::ContainerConfig;
use crate::db::ContainerRow;
use crate::netdb::{self, EndpointRow, NetworkRow};
use crate::network::{parse_add_host, Mode, DEFAULT_NETWORK};
use crate::{io_err, Engine, EngineError};

const HOSTS_HEAD: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The host end of a container's veth pair on its `position`-th network.
pub fn host_ifname(id: &str, position: u32) -> String {
    format!("vb{}{position}", &id[..10])
}

/// `BERTH_NET_TIMING=FILE`: append how long network setup and teardown
/// took (microseconds) to FILE, for `make bench`.
fn record_timing(what: &str, since: std::time::Instant) {
    if let Some(file) = std::env::var_os("BERTH_NET_TIMING") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(f, "{what} {}", since.elapsed().as_micros());
        }
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), EngineError> {
    std::fs::write(path, content).map_err(io_err(format!("writing {}", path.display())))
}

fn host_resolv() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// resolv.conf: `servers` (or the host's, loopback ones dropped when
/// `filter_loopback`), the host's search/options, then the user's.
fn resolv_conf(
    c: &crate::network::NetworkConfig,
    servers: &[String],
    filter_loopback: bool,
) -> String {
    let host = host_resolv();
    let mut out = String::new();
    let mut ns: Vec<String> = servers.to_vec();
    if ns.is_empty() {
        ns = berth_net::dns::upstreams(&host)
            .iter()
            .map(|a| a.ip().to_string())
            .filter(|ip| !filter_loopback || !(ip.starts_with("127.") || ip == "::1"))
            .collect();
        if ns.is_empty() && filter_loopback {
            ns = vec!["8.8.8.8".into(), "8.8.4.4".into()];
        }
    }
    for s in ns {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let keep = |prefix: &str, user: &[String]| -> Option<String> {
        if !user.is_empty() {
            return Some(format!("{prefix} {}\n", user.join(" ")));
        }
        host.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| format!("{}\n", l.trim()))
    };
    out.extend(keep("search", &c.dns_search));
    out.extend(keep("options", &c.dns_options));
    out
}

impl Engine {
    pub(crate) fn netns_path(&self, id: &str) -> PathBuf {
        self.run_root.join("netns").join(id)
    }

    /// At create: leases an address on the container's network, writes
    /// /etc/hosts and /etc/resolv.conf, and points the spec's network
    /// namespace at the one [`Engine::network_up`] will make.
    pub(crate) fn net_prepare(
        &mut self,
        row: &ContainerRow,
        cfg: &ContainerConfig,
        spec: &mut Spec,
        dir: &Path,
        hostname: &str,
    ) -> Result<(), EngineError> {
        let nc = &cfg.network;
        nc.validate().map_err(EngineError::Invalid)?;
        let mut extra = String::new();
        let gw = match nc.mode() {
            Mode::Network(name) => Some(self.resolve_network(&name)?.gateway),
            _ => None,
        };
        for h in &nc.add_hosts {
            let (name, ip) = parse_add_host(h, gw).map_err(EngineError::Invalid)?;
            extra.push_str(&format!("{ip}\t{name}\n"));
        }
        match nc.mode() {
            Mode::None => {
                if !extra.is_empty() {
                    write_file(&dir.join("hosts"), &format!("{HOSTS_HEAD}{extra}"))?;
                }
                if !nc.dns.is_empty() || !nc.dns_search.is_empty() || !nc.dns_options.is_empty() {
                    write_file(&dir.join("resolv.conf"), &resolv_conf(nc, &nc.dns, true))?;
                }
            }
            Mode::Host => {
                if let Some(l) = spec.linux_mut().as_mut() {
                    if let Some(n) = l.namespaces_mut().as_mut() {
                        n.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
                    }
                }
                let mut name = hostname.to_string();
                if cfg.hostname.is_none() {
                    name = std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_string())
                        .unwrap_or(name);
                    spec.set_hostname(Some(name.clone()));
                    if let Some(env) = spec
                        .process_mut()
                        .as_mut()
                        .and_then(|p| p.env_mut().as_mut())
                    {
                        for e in env.iter_mut().filter(|e| e.starts_with("HOSTNAME=")) {
                            *e = format!("HOSTNAME={name}");
                        }
                    }
                    write_file(&dir.join("hostname"), &format!("{name}\n"))?;
                }
                let hosts =
                    std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| HOSTS_HEAD.into());
                write_file(&dir.join("hosts"), &format!("{hosts}{extra}"))?;
                write_file(&dir.join("resolv.conf"), &resolv_conf(nc, &nc.dns, false))?;
            }
            Mode::Network(name) => {
                let net = self.resolve_network(&name)?;
                let ep = netdb::lease(self.db().conn(), &net, &row.id, &nc.aliases)?;
                let path = self.netns_path(&row.id);
                if let Some(l) = spec.linux_mut().as_mut() {
                    if let Some(n) = l.namespaces_mut().as_mut() {
                        for ns in n
                            .iter_mut()
                            .filter(|ns| ns.typ() == LinuxNamespaceType::Network)
                        {
                            ns.set_path(Some(path.clone()));
                        }
                    }
                }
                write_file(
                    &dir.join("hosts"),
                    &format!("{HOSTS_HEAD}{}\t{hostname}\n{extra}", ep.ip),
                )?;
                let servers: Vec<String> = if net.name == DEFAULT_NETWORK {
                    nc.dns.clone()
                } else {
                    // The network's name responder first; it relays the rest.
                    std::iter::once(net.gateway.to_string())
                        .chain(nc.dns.iter().cloned())
                        .collect()
                };
                write_file(&dir.join("resolv.conf"), &resolv_conf(nc, &servers, true))?;
            }
        }
        Ok(())
    }

    /// The container's endpoints with their networks.
    fn endpoints_with_networks(
        &mut self,
        id: &str,
    ) -> Result<Vec<(EndpointRow, NetworkRow)>, EngineError> {
        let eps = netdb::endpoints_of(self.db().conn(), id)?;
        let mut out = Vec::with_capacity(eps.len());
        for ep in eps {
            let net = netdb::network(self.db().conn(), &ep.network)?.ok_or_else(|| {
                EngineError::Invalid(format!("network {} of the container is gone", ep.network))
            })?;
            out.push((ep, net));
        }
        Ok(out)
    }

    /// Before the container's process starts: its namespace, interfaces
    /// and published ports. Nothing is left behind when it fails.
    pub(crate) fn network_up(
        &mut self,
        row: &ContainerRow,
        cfg: &ContainerConfig,
    ) -> Result<(), EngineError> {
        if matches!(cfg.network.mode(), Mode::None | Mode::Host) {
            return Ok(());
        }
        let path = self.netns_path(&row.id);
        if netns::is_mounted(&path) {
            // Restarted by its policy: the namespace was kept.
            return Ok(());
        }
        let t = std::time::Instant::now();
        let eps = self.endpoints_with_networks(&row.id)?;
        if eps.is_empty() {
            return Ok(());
        }
        let result = self.network_up_inner(row, cfg, &path, &eps);
        if result.is_err() {
            let _ = self.network_down(&row.id);
        }
        record_timing("up", t);
        result
    }

    fn network_up_inner(
        &mut self,
        row: &ContainerRow,
        cfg: &ContainerConfig,
        path: &Path,
        eps: &[(EndpointRow, NetworkRow)],
    ) -> Result<(), EngineError> {
        let mut bridges = Vec::with_capacity(eps.len());
        for (_, net) in eps {
            bridges.push(self.bridge_up(net)?);
        }
        let mut host = Netlink::open()?;
        let mut ns = netns::create(path)?;
        let vm = crate::vm::is_vm(cfg);
        for (i, ((ep, net), bridge)) in eps.iter().zip(bridges).enumerate() {
            let mut e = endpoint(&row.id, ep, net, i == 0);
            if vm {
                // The guest holds the address; the namespace only carries
                // its frames between the bridge and the VMM's TAP device.
                e.mac = ipam::plumbing_mac_for(ep.ip);
                attach::attach_guest(&mut host, &mut ns, bridge, &e, ep.position)?;
            } else {
                attach::attach(&mut host, &mut ns, bridge, &e, i == 0)?;
            }
        }
        self.publish(row, cfg, eps[0].0.ip)?;
        for (_, net) in eps {
            self.refresh_dns(net)?;
        }
        Ok(())
    }

    /// Chooses host ports, checks them, records and DNATs them.
    fn publish(
        &mut self,
        row: &ContainerRow,
        cfg: &ContainerConfig,
        ip: Ipv4Addr,
    ) -> Result<(), EngineError> {
        let mut specs = cfg.network.publish.clone();
        if cfg.network.publish_all {
            specs.extend(self.exposed_ports(row)?);
        }
        if specs.is_empty() {
            return Ok(());
        }
        let taken: Vec<Binding> = netdb::all_ports(self.db().conn())?
            .into_iter()
            .map(|p| p.binding)
            .collect();
        let mut bindings: Vec<Binding> = Vec::new();
        for s in &specs {
            let chosen = s.bindings(|proto, host_ip, range| {
                pick_port(proto, host_ip, range, &taken, &bindings)
            })?;
            for b in chosen {
                if s.host_ports.is_some() {
                    check_free(&b)?;
                }
                bindings.push(b);
            }
        }
        bindings.sort();
        bindings.dedup();
        netdb::claim_ports(self.db().conn(), &row.id, ip, &bindings)?;
        if let Err(e) = berth_net::nft::add_ports(&bindings, ip) {
            let _ = netdb::take_ports(self.db().conn(), &row.id);
            return Err(e.into());
        }
        Ok(())
    }

    /// `-P`: the image's ExposedPorts, each on a free host port.
    fn exposed_ports(&mut self, row: &ContainerRow) -> Result<Vec<PortSpec>, EngineError> {
        let Some(img) = self.db().image(&row.image_id)? else {
            return Ok(Vec::new());
        };
        let cfg = crate::images::image_config(&img.config)?;
        let keys = cfg
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        Ok(keys
            .iter()
            .filter_map(|k| berth_net::ports::parse_exposed(k))
            .map(|(a, b, proto)| PortSpec {
                host_ip: None,
                host_ports: None,
                container_ports: (a, b),
                proto,
            })
            .collect())
    }

    /// After the container stopped: its published ports and namespace.
    /// Idempotent; the lease stays.
    pub(crate) fn network_down(&mut self, id: &str) -> Result<(), EngineError> {
        let t = std::time::Instant::now();
        let ports = netdb::take_ports(self.db().conn(), id)?;
        let mut by_ip: Vec<(Ipv4Addr, Vec<Binding>)> = Vec::new();
        for p in ports {
            match by_ip.iter_mut().find(|(ip, _)| *ip == p.container_ip) {
                Some((_, v)) => v.push(p.binding),
                None => by_ip.push((p.container_ip, vec![p.binding])),
            }
        }
        for (ip, b) in by_ip {
            berth_net::nft::remove_ports(&b, ip)?;
        }
        let path = self.netns_path(id);
        if !path.exists() {
            return Ok(());
        }
        netns::remove(&path)?;
        for (_, net) in self.endpoints_with_networks(id)? {
            self.refresh_dns(&net)?;
        }
        record_timing("down", t);
        Ok(())
    }

    /// At rm: everything, the leases included.
    pub(crate) fn network_release(&mut self, id: &str) -> Result<(), EngineError> {
        self.network_down(id)?;
        let nets = self.endpoints_with_networks(id).unwrap_or_default();
        netdb::delete_endpoints_of(self.db().conn(), id)?;
        for (_, net) in nets {
            self.refresh_dns(&net)?;
        }
        Ok(())
    }

    /// `berth network connect NET CTR`: a lease now, an interface now if
    /// the container runs (else at its next start).
    pub fn network_connect(
        &mut self,
        net: &str,
        key: &str,
        aliases: &[String],
    ) -> Result<(), EngineError> {
        let row = self.find(key)?;
        let cfg = Self::config_of(&row);
        if matches!(cfg.network.mode(), Mode::None | Mode::Host) {
            return Err(EngineError::Invalid(format!(
                "container {} uses --network {}: it cannot be connected to a network",
                row.name, cfg.network.mode
            )));
        }
        let net = self.resolve_network(net)?;
        if net.name == DEFAULT_NETWORK && !aliases.is_empty() {
            return Err(EngineError::Invalid(
                "network-scoped aliases are only supported for user-defined networks".into(),
            ));
        }
        let path = self.netns_path(&row.id);
        if crate::vm::is_vm(&cfg) && netns::is_mounted(&path) {
            return Err(EngineError::Invalid(format!(
                "container {} is a running VM: connect it to {} while it is stopped (its guest gets the interface at the next start)",
                row.name, net.name
            )));
        }
        let ep = netdb::lease(self.db().conn(), &net, &row.id, aliases)?;
        if netns::is_mounted(&path) {
            let attached = (|| -> Result<(), EngineError> {
                let bridge = self.bridge_up(&net)?;
                let mut host = Netlink::open()?;
                let mut ns = netns::open(&path)?;
                attach::attach(
                    &mut host,
                    &mut ns,
                    bridge,
                    &endpoint(&row.id, &ep, &net, false),
                    false,
                )?;
                Ok(())
            })();
            if let Err(e) = attached {
                netdb::delete_endpoint(self.db().conn(), &row.id, &net.name)?;
                return Err(e);
            }
        }
        self.refresh_dns(&net)
    }

    /// `berth network disconnect NET CTR`.
    pub fn network_disconnect(&mut self, net: &str, key: &str) -> Result<(), EngineError> {
        let row = self.find(key)?;
        let net = self.resolve_network(net)?;
        let ep = netdb::endpoints_of(self.db().conn(), &row.id)?
            .into_iter()
            .find(|e| e.network == net.name)
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "container {} is not connected to network {}",
                    row.name, net.name
                ))
            })?;
        if netns::is_mounted(&self.netns_path(&row.id)) {
            if crate::vm::is_vm(&Self::config_of(&row)) {
                return Err(EngineError::Invalid(format!(
                    "container {} is a running VM: disconnect it from {} while it is stopped",
                    row.name, net.name
                )));
            }
            attach::detach(&mut Netlink::open()?, &host_ifname(&row.id, ep.position))?;
        }
        netdb::delete_endpoint(self.db().conn(), &row.id, &net.name)?;
        self.refresh_dns(&net)
    }

    /// `berth port CTR`: its published ports while it runs.
    pub fn container_ports(&mut self, key: &str) -> Result<Vec<Binding>, EngineError> {
        let row = self.find(key)?;
        Ok(netdb::ports_of(self.db().conn(), &row.id)?
            .into_iter()
            .map(|p| p.binding)
            .collect())
    }

    /// The PORTS column of `berth ps`: `0.0.0.0:8080->80/tcp, ...`.
    pub fn port_summary(&mut self, id: &str) -> String {
        netdb::ports_of(self.db().conn(), id)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let b = p.binding;
                format!(
                    "{}:{}->{}/{}",
                    b.host_ip, b.host_port, b.container_port, b.proto
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `NetworkSettings` (and `HostConfig.NetworkMode`/`PortBindings`) of
    /// `berth inspect`, Docker's shape.
    pub(crate) fn net_inspect(
        &mut self,
        id: &str,
        cfg: &ContainerConfig,
        v: &mut serde_json::Value,
    ) {
        let eps = self.endpoints_with_networks(id).unwrap_or_default();
        let ports = netdb::ports_of(self.db().conn(), id).unwrap_or_default();
        let mut port_map = serde_json::Map::new();
        for p in &ports {
            let key = format!("{}/{}", p.binding.container_port, p.binding.proto);
            let entry = port_map.entry(key).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(json!({"HostIp": p.binding.host_ip.to_string(), "HostPort": p.binding.host_port.to_string()}));
            }
        }
        let mut networks = serde_json::Map::new();
        for (ep, net) in &eps {
            networks.insert(
                net.name.clone(),
                json!({
                    "NetworkID": net.id,
                    "IPAddress": ep.ip.to_string(),
                    "IPPrefixLen": net.subnet.prefix,
                    "Gateway": net.gateway.to_string(),
                    "MacAddress": ipam::mac_string(ipam::mac_for(ep.ip)),
                    "Aliases": ep.aliases,
                }),
            );
        }
        let first = eps.first();
        let running = netns::is_mounted(&self.netns_path(id));
        v["NetworkSettings"] = json!({
            "IPAddress": first.map(|(e, _)| e.ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": first.map(|(_, n)| n.subnet.prefix).unwrap_or(0),
            "Gateway": first.map(|(_, n)| n.gateway.to_string()).unwrap_or_default(),
            "MacAddress": first.map(|(e, _)| ipam::mac_string(ipam::mac_for(e.ip))).unwrap_or_default(),
            "Ports": port_map,
            "SandboxKey": if running { self.netns_path(id).display().to_string() } else { String::new() },
            "Networks": networks,
        });
        if v.get("HostConfig").is_some() {
            let mode = if cfg.network.mode.is_empty() {
                DEFAULT_NETWORK
            } else {
                cfg.network.mode.as_str()
            };
            v["HostConfig"]["NetworkMode"] = json!(mode);
            v["HostConfig"]["PublishAllPorts"] = json!(cfg.network.publish_all);
            v["HostConfig"]["Dns"] = json!(cfg.network.dns);
            v["HostConfig"]["ExtraHosts"] = json!(cfg.network.add_hosts);
        }
    }
}

fn endpoint(id: &str, ep: &EndpointRow, net: &NetworkRow, first: bool) -> Endpoint {
    Endpoint {
        host_if: host_ifname(id, ep.position),
        ifname: format!("eth{}", ep.position),
        ip: ep.ip,
        prefix: net.subnet.prefix,
        mac: ipam::mac_for(ep.ip),
        gateway: first.then_some(net.gateway),
    }
}

/// Whether a program on the host holds `b`'s port (berth's own DNAT'ed
/// ports hold no socket; the records catch those).
fn check_free(b: &Binding) -> Result<(), EngineError> {
    let addr = (b.host_ip, b.host_port);
    let res = match b.proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(EngineError::Invalid(format!(
            "host port {}:{}/{} is already in use by another program",
            b.host_ip, b.host_port, b.proto
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Err(EngineError::Invalid(format!(
                "cannot publish on {}: it is not an address of this host",
                b.host_ip
            )))
        }
        Err(e) => Err(io_err(format!(
            "checking host port {}:{}/{}",
            b.host_ip, b.host_port, b.proto
        ))(e)),
    }
}

/// A free host port: any (the kernel's choice) or one of `range`.
fn pick_port(
    proto: Proto,
    ip: Ipv4Addr,
    range: Option<(u16, u16)>,
    taken: &[Binding],
    chosen: &[Binding],
) -> berth_net::Result<u16> {
    let used = |port: u16| {
        taken.iter().chain(chosen).any(|b| {
            b.proto == proto
                && b.host_port == port
                && (b.host_ip == ip || b.host_ip.is_unspecified() || ip.is_unspecified())
        })
    };
    let probe = |port: u16| -> Option<u16> {
        match proto {
            Proto::Tcp => std::net::TcpListener::bind((ip, port))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .ok(),
            Proto::Udp => std::net::UdpSocket::bind((ip, port))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .ok(),
        }
    };
    let found = match range {
        Some((a, b)) => (a..=b).find(|p| !used(*p) && probe(*p).is_some()),
        None => (0..32).filter_map(|_| probe(0)).find(|p| !used(*p)),
    };
    found.ok_or_else(|| {
        berth_net::NetError::Invalid(match range {
            Some((a, b)) => format!("no free host port in {a}-{b}/{proto}"),
            None => format!("no free host port for {proto} on {ip}"),
        })
    })
}
