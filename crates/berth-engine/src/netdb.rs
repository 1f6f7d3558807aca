//! Network records: networks, endpoints (a container's lease on a
//! network, kept from create to rm so its address survives restarts) and
//! published ports (while the container runs). Tables are made by the
//! migration in db.rs.

use std::net::Ipv4Addr;

use berth_net::ipam::Subnet;
use berth_net::ports::{Binding, Proto};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::EngineError;

/// The schema, appended to db.rs's migrations.
pub const MIGRATION: &str = "
CREATE TABLE networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL UNIQUE,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE endpoints (
    container_id TEXT NOT NULL,
    network TEXT NOT NULL,
    ip TEXT NOT NULL,
    position INTEGER NOT NULL,
    aliases TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (container_id, network),
    UNIQUE (network, ip)
);
CREATE TABLE published_ports (
    proto TEXT NOT NULL,
    host_ip TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    container_id TEXT NOT NULL,
    container_ip TEXT NOT NULL,
    container_port INTEGER NOT NULL,
    PRIMARY KEY (proto, host_ip, host_port)
);
";

#[derive(Debug, Clone)]
pub struct NetworkRow {
    pub name: String,
    pub id: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub created: i64,
}

impl NetworkRow {
    pub fn bridge(&self) -> berth_net::attach::Bridge {
        berth_net::attach::Bridge {
            name: self.bridge.clone(),
            subnet: self.subnet,
            gateway: self.gateway,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub container_id: String,
    pub network: String,
    pub ip: Ipv4Addr,
    /// 0 for eth0, 1 for eth1...
    pub position: u32,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PortRow {
    pub binding: Binding,
    pub container_id: String,
    pub container_ip: Ipv4Addr,
}

fn bad_record(what: &str) -> EngineError {
    EngineError::Db(format!("malformed network record: {what}"))
}

fn network_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, String, String, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_network(t: (String, String, String, String, String, i64)) -> Result<NetworkRow, EngineError> {
    Ok(NetworkRow {
        subnet: t.3.parse().map_err(|_| bad_record(&t.3))?,
        gateway: t.4.parse().map_err(|_| bad_record(&t.4))?,
        name: t.0,
        id: t.1,
        bridge: t.2,
        created: t.5,
    })
}

const NETWORK_SELECT: &str = "SELECT name, id, bridge, subnet, gateway, created FROM networks";

pub fn networks(c: &Connection) -> Result<Vec<NetworkRow>, EngineError> {
    let mut st = c.prepare(&format!("{NETWORK_SELECT} ORDER BY created, name"))?;
    let rows = st
        .query_map([], network_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_network).collect()
}

/// A network by name, full ID or unique ID prefix.
pub fn network(c: &Connection, key: &str) -> Result<Option<NetworkRow>, EngineError> {
    let row = c
        .query_row(
            &format!("{NETWORK_SELECT} WHERE name = ?1 OR id = ?1"),
            params![key],
            network_row,
        )
        .optional()?;
    if let Some(t) = row {
        return to_network(t).map(Some);
    }
    if key.len() < 3 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut st = c.prepare(&format!(
        "{NETWORK_SELECT} WHERE id >= ?1 AND id < ?2 LIMIT 2"
    ))?;
    let mut rows = st
        .query_map(params![key, format!("{key}\u{7f}")], network_row)?
        .collect::<Result<Vec<_>, _>>()?;
    if rows.len() == 1 {
        return to_network(rows.remove(0)).map(Some);
    }
    Ok(None)
}

pub fn insert_network(c: &Connection, n: &NetworkRow) -> Result<(), EngineError> {
    c.execute(
        "INSERT INTO networks (name, id, bridge, subnet, gateway, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![n.name, n.id, n.bridge, n.subnet.to_string(), n.gateway.to_string(), n.created],
    )?;
    Ok(())
}

pub fn delete_network(c: &Connection, name: &str) -> Result<(), EngineError> {
    c.execute("DELETE FROM networks WHERE name = ?1", params![name])?;
    Ok(())
}

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, u32, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_endpoint(t: (String, String, String, u32, String)) -> Result<EndpointRow, EngineError> {
    Ok(EndpointRow {
        ip: t.2.parse().map_err(|_| bad_record(&t.2))?,
        container_id: t.0,
        network: t.1,
        position: t.3,
        aliases: serde_json::from_str(&t.4).unwrap_or_default(),
    })
}

const ENDPOINT_SELECT: &str = "SELECT container_id, network, ip, position, aliases FROM endpoints";

fn endpoints_where(
    c: &Connection,
    clause: &str,
    key: &str,
) -> Result<Vec<EndpointRow>, EngineError> {
    let mut st = c.prepare(&format!(
        "{ENDPOINT_SELECT} {clause} ORDER BY position, container_id"
    ))?;
    let rows = st
        .query_map(params![key], endpoint_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_endpoint).collect()
}

/// A container's endpoints, eth0 first.
pub fn endpoints_of(c: &Connection, container_id: &str) -> Result<Vec<EndpointRow>, EngineError> {
    endpoints_where(c, "WHERE container_id = ?1", container_id)
}

/// The endpoints on a network.
pub fn endpoints_on(c: &Connection, network: &str) -> Result<Vec<EndpointRow>, EngineError> {
    endpoints_where(c, "WHERE network = ?1", network)
}

pub fn all_endpoints(c: &Connection) -> Result<Vec<EndpointRow>, EngineError> {
    endpoints_where(c, "WHERE ?1 = ?1", "")
}

/// Leases the lowest free address of `net` to a container (atomically:
/// concurrent berth commands never get the same address).
pub fn lease(
    c: &mut Connection,
    net: &NetworkRow,
    container_id: &str,
    aliases: &[String],
) -> Result<EndpointRow, EngineError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: Option<String> = tx
        .query_row(
            "SELECT ip FROM endpoints WHERE container_id = ?1 AND network = ?2",
            params![container_id, net.name],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(EngineError::Invalid(format!(
            "container {} is already connected to network {}",
            &container_id[..12.min(container_id.len())],
            net.name
        )));
    }
    let used: Vec<Ipv4Addr> = {
        let mut st = tx.prepare("SELECT ip FROM endpoints WHERE network = ?1")?;
        let ips = st
            .query_map(params![net.name], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ips.iter().filter_map(|s| s.parse().ok()).collect()
    };
    let positions: Vec<u32> = {
        let mut st = tx.prepare("SELECT position FROM endpoints WHERE container_id = ?1")?;
        let p = st
            .query_map(params![container_id], |r| r.get::<_, u32>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        p
    };
    let position = (0..10)
        .find(|p| !positions.contains(p))
        .ok_or_else(|| EngineError::Invalid("a container can be on at most 10 networks".into()))?;
    let ip = net.subnet.allocate(net.gateway, &used).ok_or_else(|| {
        EngineError::Invalid(format!(
            "network {} has no free address left in {}",
            net.name, net.subnet
        ))
    })?;
    let aliases_json = serde_json::to_string(aliases).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO endpoints (container_id, network, ip, position, aliases) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![container_id, net.name, ip.to_string(), position, aliases_json],
    )?;
    tx.commit()?;
    Ok(EndpointRow {
        container_id: container_id.to_string(),
        network: net.name.clone(),
        ip,
        position,
        aliases: aliases.to_vec(),
    })
}

pub fn delete_endpoint(
    c: &Connection,
    container_id: &str,
    network: &str,
) -> Result<(), EngineError> {
    c.execute(
        "DELETE FROM endpoints WHERE container_id = ?1 AND network = ?2",
        params![container_id, network],
    )?;
    Ok(())
}

pub fn delete_endpoints_of(c: &Connection, container_id: &str) -> Result<(), EngineError> {
    c.execute(
        "DELETE FROM endpoints WHERE container_id = ?1",
        params![container_id],
    )?;
    Ok(())
}

fn port_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, u16, String, String, u16)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_port(t: (String, String, u16, String, String, u16)) -> Result<PortRow, EngineError> {
    Ok(PortRow {
        binding: Binding {
            proto: Proto::parse(&t.0).ok_or_else(|| bad_record(&t.0))?,
            host_ip: t.1.parse().map_err(|_| bad_record(&t.1))?,
            host_port: t.2,
            container_port: t.5,
        },
        container_id: t.3,
        container_ip: t.4.parse().map_err(|_| bad_record(&t.4))?,
    })
}

const PORT_SELECT: &str =
    "SELECT proto, host_ip, host_port, container_id, container_ip, container_port FROM published_ports";

pub fn ports_of(c: &Connection, container_id: &str) -> Result<Vec<PortRow>, EngineError> {
    let mut st = c.prepare(&format!(
        "{PORT_SELECT} WHERE container_id = ?1 ORDER BY container_port, proto, host_ip"
    ))?;
    let rows = st
        .query_map(params![container_id], port_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_port).collect()
}

pub fn all_ports(c: &Connection) -> Result<Vec<PortRow>, EngineError> {
    let mut st = c.prepare(PORT_SELECT)?;
    let rows = st.query_map([], port_row)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_port).collect()
}

/// Records bindings for a container, refusing (with the owner's name)
/// any host port another container already publishes.
pub fn claim_ports(
    c: &mut Connection,
    container_id: &str,
    container_ip: Ipv4Addr,
    bindings: &[Binding],
) -> Result<(), EngineError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for b in bindings {
        let owner: Option<String> = tx
            .query_row(
                "SELECT c.name FROM published_ports p LEFT JOIN containers c ON c.id = p.container_id \
                 WHERE p.proto = ?1 AND p.host_port = ?2 AND (p.host_ip = ?3 OR p.host_ip = '0.0.0.0' OR ?3 = '0.0.0.0')",
                params![b.proto.as_str(), b.host_port, b.host_ip.to_string()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .map(|n| n.unwrap_or_else(|| "(removed)".into()));
        if let Some(owner) = owner {
            return Err(EngineError::Invalid(format!(
                "host port {}:{}/{} is already published by container {owner}",
                b.host_ip, b.host_port, b.proto
            )));
        }
        tx.execute(
            "INSERT INTO published_ports (proto, host_ip, host_port, container_id, container_ip, container_port) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![b.proto.as_str(), b.host_ip.to_string(), b.host_port, container_id, container_ip.to_string(), b.container_port],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Removes and returns a container's published ports: whoever gets them
/// removes their nft elements, so concurrent cleanups do it once.
pub fn take_ports(c: &mut Connection, container_id: &str) -> Result<Vec<PortRow>, EngineError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows = {
        let mut st = tx.prepare(&format!("{PORT_SELECT} WHERE container_id = ?1"))?;
        let rows = st
            .query_map(params![container_id], port_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows
    };
    if !rows.is_empty() {
        tx.execute(
            "DELETE FROM published_ports WHERE container_id = ?1",
            params![container_id],
        )?;
    }
    tx.commit()?;
    rows.into_iter().map(to_port).collect()
}
