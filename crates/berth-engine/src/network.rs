//! Networks: the container's network options, and `berth network
//! create|ls|inspect|rm|prune|connect|disconnect`. The default network,
//! `bridge` (device `berth0`), is made on first use. Containers' own
//! network setup is in netsetup.rs.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use berth_net::ipam::{self, Subnet};
use berth_net::netlink::Netlink;
use berth_net::ports::PortSpec;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::netdb::{self, NetworkRow};
use crate::{names, now, Engine, EngineError};

/// The default network's name and bridge, as Docker's `bridge`/`docker0`.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The root whose default network is on [`DEFAULT_BRIDGE`].
const DEFAULT_ROOT: &str = "/var/lib/berth";

/// The bridge of a root's default network. Roots share the host's network
/// state (berth's nft table holds every root's bridges, subnets and
/// ports, so a host port is published once, whichever root asks), and
/// each root has bridges of its own: `berth0` for the default root,
/// `berth-<6 hex of the root's path>` for any other.
pub fn default_bridge(root: &std::path::Path) -> String {
    use sha2::Digest;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if root == std::path::Path::new(DEFAULT_ROOT) {
        return DEFAULT_BRIDGE.into();
    }
    let h = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("berth-{}", hex::encode(&h[..3]))
}

/// What a container asks of the network (`--network`, `-p`, `-P`,
/// `--dns`, `--add-host`, `--network-alias`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct NetworkConfig {
    /// `bridge` (the default when empty), `none`, `host`, or a network name.
    pub mode: String,
    pub publish: Vec<PortSpec>,
    /// `-P`: publish the image's exposed ports on free host ports.
    pub publish_all: bool,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `NAME:IP` entries for /etc/hosts.
    pub add_hosts: Vec<String>,
    /// More names for the container on user networks.
    pub aliases: Vec<String>,
}

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    None,
    Host,
    /// The default network or a user network, by name.
    Network(String),
}

impl NetworkConfig {
    pub fn mode(&self) -> Mode {
        match self.mode.as_str() {
            "none" => Mode::None,
            "host" => Mode::Host,
            "" | "default" | DEFAULT_NETWORK => Mode::Network(DEFAULT_NETWORK.into()),
            n => Mode::Network(n.to_string()),
        }
    }

    /// Checks what can be checked before anything is created.
    pub fn validate(&self) -> Result<(), String> {
        let m = self.mode();
        if matches!(m, Mode::None | Mode::Host) && (!self.publish.is_empty() || self.publish_all) {
            return Err(format!(
                "conflicting options: port publishing and --network {}",
                self.mode
            ));
        }
        if m == Mode::Network(DEFAULT_NETWORK.into()) && !self.aliases.is_empty() {
            return Err(
                "network-scoped aliases are only supported for user-defined networks".into(),
            );
        }
        for d in &self.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("invalid --dns {d:?}: not an IP address"));
            }
        }
        for h in &self.add_hosts {
            parse_add_host(h, None)?;
        }
        Ok(())
    }
}

/// `NAME:IP` (or `NAME=IP`); `host-gateway` is the network's gateway.
pub fn parse_add_host(s: &str, gateway: Option<Ipv4Addr>) -> Result<(String, String), String> {
    let bad = || format!("invalid --add-host {s:?}: expected NAME:IP");
    let (name, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(bad)?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    let ip = if ip == "host-gateway" {
        gateway
            .map(|g| g.to_string())
            .unwrap_or_else(|| "127.0.0.1".into())
    } else {
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<std::net::IpAddr>().map_err(|_| bad())?;
        ip.to_string()
    };
    Ok((name.to_string(), ip))
}

fn pseudo(name: &str) -> bool {
    matches!(name, DEFAULT_NETWORK | "host" | "none")
}

impl Engine {
    /// Where the run-time files of a network live (DNS hosts file, pid).
    pub(crate) fn network_run_dir(&self, net: &NetworkRow) -> PathBuf {
        self.run_root.join("networks").join(&net.id[..12])
    }

    /// Subnets in use on the host (addresses of its interfaces).
    fn host_subnets() -> Result<Vec<(Subnet, String)>, EngineError> {
        let mut nl = Netlink::open()?;
        let links = nl.links()?;
        Ok(nl
            .addresses()?
            .into_iter()
            .map(|(idx, ip, prefix)| {
                let name = links
                    .iter()
                    .find(|l| l.index == idx)
                    .map(|l| l.name.clone())
                    .unwrap_or_default();
                (Subnet::new(ip, prefix), name)
            })
            .collect())
    }

    /// Refuses a subnet that overlaps a berth network or a host interface.
    fn check_overlap(
        &mut self,
        subnet: &Subnet,
        skip_bridge: Option<&str>,
    ) -> Result<(), EngineError> {
        for n in netdb::networks(self.db().conn())? {
            if n.subnet.overlaps(subnet) {
                return Err(EngineError::Invalid(format!(
                    "subnet {subnet} overlaps with network {} ({})",
                    n.name, n.subnet
                )));
            }
        }
        for (s, dev) in Self::host_subnets()? {
            if s.prefix > 0
                && s.overlaps(subnet)
                && Some(dev.as_str()) != skip_bridge
                && dev != "lo"
            {
                return Err(EngineError::Invalid(format!(
                    "subnet {subnet} overlaps with {s} on the host's interface {dev}"
                )));
            }
        }
        Ok(())
    }

    fn free_subnet(&mut self) -> Result<Subnet, EngineError> {
        for s in ipam::pool() {
            if self.check_overlap(&s, None).is_ok() {
                return Ok(s);
            }
        }
        Err(EngineError::Invalid(
            "no free subnet left in the default pools: pass --subnet".into(),
        ))
    }

    /// The network called `name`; the default network is made on first use.
    pub(crate) fn resolve_network(&mut self, name: &str) -> Result<NetworkRow, EngineError> {
        if let Some(n) = netdb::network(self.db().conn(), name)? {
            return Ok(n);
        }
        if name != DEFAULT_NETWORK {
            return Err(EngineError::Invalid(format!("network {name} not found")));
        }
        let subnet = self.free_subnet()?;
        let row = NetworkRow {
            name: DEFAULT_NETWORK.into(),
            id: names::new_id(),
            bridge: default_bridge(&self.root),
            subnet,
            gateway: subnet.default_gateway(),
            created: now(),
        };
        match netdb::insert_network(self.db().conn(), &row) {
            Ok(()) => Ok(row),
            // Another berth command made it at the same time.
            Err(_) => netdb::network(self.db().conn(), name)?
                .ok_or_else(|| EngineError::Invalid(format!("network {name} not found"))),
        }
    }

    /// `berth network create [--subnet] [--gateway] NAME`.
    pub fn network_create(
        &mut self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
    ) -> Result<NetworkRow, EngineError> {
        if !names::valid_name(name) || name.len() > 64 {
            return Err(EngineError::Invalid(format!(
                "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if pseudo(name) || netdb::network(self.db().conn(), name)?.is_some_and(|n| n.name == name) {
            return Err(EngineError::Invalid(format!(
                "network with name {name} already exists"
            )));
        }
        let subnet = match subnet {
            Some(s) => {
                let s: Subnet = s.parse()?;
                self.check_overlap(&s, None)?;
                s
            }
            None if gateway.is_some() => {
                return Err(EngineError::Invalid("--gateway needs --subnet".into()))
            }
            None => self.free_subnet()?,
        };
        let gateway = match gateway {
            Some(g) => {
                let ip: Ipv4Addr = g.parse().map_err(|_| {
                    EngineError::Invalid(format!("invalid --gateway {g:?}: not an IPv4 address"))
                })?;
                let u = u32::from(ip);
                if !subnet.contains(ip) || u == subnet.first() || u == subnet.last() {
                    return Err(EngineError::Invalid(format!(
                        "gateway {ip} is not a host address of subnet {subnet}"
                    )));
                }
                ip
            }
            None => subnet.default_gateway(),
        };
        let id = names::new_id();
        let row = NetworkRow {
            name: name.to_string(),
            bridge: format!("br-{}", &id[..12]),
            id,
            subnet,
            gateway,
            created: now(),
        };
        netdb::insert_network(self.db().conn(), &row)?;
        if let Err(e) = self.bridge_up(&row) {
            let _ = netdb::delete_network(self.db().conn(), &row.name);
            return Err(e);
        }
        Ok(row)
    }

    /// Makes a network's bridge (and its nft elements) unless it exists.
    pub(crate) fn bridge_up(&mut self, net: &NetworkRow) -> Result<i32, EngineError> {
        let mut nl = Netlink::open()?;
        if let Some(l) = nl.link(&net.bridge)? {
            if l.up {
                return Ok(l.index);
            }
        }
        // Serialise the first setup between concurrent berth commands.
        let _lock = self.network_lock()?;
        Ok(berth_net::attach::ensure_bridge(&mut nl, &net.bridge())?)
    }

    pub(crate) fn network_lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, EngineError> {
        let path = self.run_root.join("network.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(crate::io_err(format!("opening {}", path.display())))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| crate::io_err("locking the network setup")(e.into()))
    }

    /// `berth network ls`: the pseudo networks, then the real ones.
    pub fn network_list(&mut self) -> Result<Vec<serde_json::Value>, EngineError> {
        let default = self.resolve_network(DEFAULT_NETWORK)?;
        let mut out = vec![
            json!({"ID": &default.id[..12], "Name": DEFAULT_NETWORK, "Driver": "bridge", "Scope": "local"}),
            json!({"ID": "host", "Name": "host", "Driver": "host", "Scope": "local"}),
            json!({"ID": "none", "Name": "none", "Driver": "null", "Scope": "local"}),
        ];
        for n in netdb::networks(self.db().conn())? {
            if n.name != DEFAULT_NETWORK {
                out.push(json!({"ID": &n.id[..12], "Name": n.name, "Driver": "bridge", "Scope": "local"}));
            }
        }
        Ok(out)
    }

    /// `berth network inspect NAME`: Docker's shape.
    pub fn network_inspect(&mut self, key: &str) -> Result<serde_json::Value, EngineError> {
        let n = self.resolve_network(key)?;
        let mut containers = serde_json::Map::new();
        for ep in netdb::endpoints_on(self.db().conn(), &n.name)? {
            let name = self
                .db()
                .container(&ep.container_id)?
                .map(|r| r.name)
                .unwrap_or_default();
            containers.insert(
                ep.container_id.clone(),
                json!({
                    "Name": name,
                    "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix),
                    "MacAddress": ipam::mac_string(ipam::mac_for(ep.ip)),
                    "Aliases": ep.aliases,
                }),
            );
        }
        Ok(json!({
            "Name": n.name,
            "Id": n.id,
            "Created": crate::containers::rfc3339(n.created),
            "Scope": "local",
            "Driver": "bridge",
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
            "Internal": false,
            "Containers": containers,
            "Options": {"com.docker.network.bridge.name": n.bridge},
        }))
    }

    /// `berth network rm NAME`: refused while containers use it.
    pub fn network_remove(&mut self, key: &str) -> Result<String, EngineError> {
        if pseudo(key) {
            return Err(EngineError::Invalid(format!(
                "{key} is a pre-defined network and cannot be removed"
            )));
        }
        let n = netdb::network(self.db().conn(), key)?
            .ok_or_else(|| EngineError::Invalid(format!("network {key} not found")))?;
        let users = netdb::endpoints_on(self.db().conn(), &n.name)?;
        if !users.is_empty() {
            let mut names = Vec::new();
            for ep in &users {
                names.push(
                    self.db()
                        .container(&ep.container_id)?
                        .map(|r| r.name)
                        .unwrap_or_else(|| ep.container_id[..12].to_string()),
                );
            }
            return Err(EngineError::Invalid(format!(
                "network {} is in use by container(s) {}: remove or disconnect them first",
                n.name,
                names.join(", ")
            )));
        }
        self.network_teardown(&n)?;
        netdb::delete_network(self.db().conn(), &n.name)?;
        Ok(n.name)
    }

    /// Removes a network's bridge, nft elements, name responder and files.
    pub(crate) fn network_teardown(&mut self, n: &NetworkRow) -> Result<(), EngineError> {
        self.stop_dns(n);
        let mut nl = Netlink::open()?;
        berth_net::attach::remove_bridge(&mut nl, &n.bridge())?;
        let _ = std::fs::remove_dir_all(self.network_run_dir(n));
        Ok(())
    }

    /// `berth network prune`: removes user networks no container uses.
    pub fn network_prune(&mut self) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for n in netdb::networks(self.db().conn())? {
            if n.name == DEFAULT_NETWORK
                || !netdb::endpoints_on(self.db().conn(), &n.name)?.is_empty()
            {
                continue;
            }
            removed.push(self.network_remove(&n.name)?);
        }
        Ok(removed)
    }
}
