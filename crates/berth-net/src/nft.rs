//! berth's nftables rules, all in one table of its own, `ip berth`, so that
//! rules berth did not write are never read, changed or flushed:
//!
//! - `subnets` and `bridges` sets: one element per network. Traffic from a
//!   berth subnet leaving through anything but a berth bridge is
//!   masqueraded (egress NAT).
//! - `pub_tcp`/`pub_udp` (host port → container address . port) and
//!   `pub_tcp_ip`/`pub_udp_ip` (host address . port → ...) maps: one
//!   element per published port, DNAT'ed in prerouting (other hosts) and
//!   output (this host, 127.0.0.1 included) for local destinations.
//! - `isolate`: nothing is forwarded from one berth bridge to another
//!   except connections DNAT'ed to a published port (Docker's isolation
//!   between networks).
//! - Loopback: a connection to 127.0.0.1:PORT is DNAT'ed to the container
//!   and leaves through the bridge, which has `route_localnet` set; it is
//!   masqueraded to the bridge's address so the container can answer. A
//!   raw-priority rule drops packets arriving on a bridge for 127.0.0.0/8,
//!   so a container cannot reach the host's loopback services that way
//!   (CVE-2020-8558).
//!
//! Per-network and per-port changes are set elements: adding one that
//! exists is a no-op, a conflicting one fails atomically, and removing
//! needs no rule handle. The `nft` binary applies each batch atomically.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ipam::Subnet;
use crate::ports::{Binding, Proto};
use crate::{NetError, Result};

pub const TABLE: &str = "berth";

const DEFINITION: &str = r#"table ip berth {
	set bridges { type ifname; }
	set subnets { type ipv4_addr; flags interval; }
	map pub_tcp { type inet_service : ipv4_addr . inet_service; }
	map pub_udp { type inet_service : ipv4_addr . inet_service; }
	map pub_tcp_ip { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
	map pub_udp_ip { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
	chain publish {
		dnat ip to tcp dport map @pub_tcp
		dnat ip to udp dport map @pub_udp
		dnat ip to ip daddr . tcp dport map @pub_tcp_ip
		dnat ip to ip daddr . udp dport map @pub_udp_ip
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		fib daddr type local jump publish
	}
	chain output {
		type nat hook output priority -100; policy accept;
		fib daddr type local jump publish
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		ip saddr @subnets oifname != @bridges masquerade
		oifname @bridges ip saddr 127.0.0.0/8 masquerade
		iifname @bridges oifname @bridges ct status dnat masquerade
	}
	chain guard {
		type filter hook prerouting priority -300; policy accept;
		iifname @bridges ip daddr 127.0.0.0/8 drop
	}
"#;

/// Networks are isolated from each other: nothing is routed from one
/// berth bridge to another but connections to published ports (DNAT'ed).
/// With br_netfilter, traffic bridged within one network passes this hook
/// too, in and out on the same bridge: `same_bridge` holds each bridge's
/// (name . name) pair, which nft cannot compare otherwise. Its own chain,
/// so that a table made by an older berth gets it too.
const ISOLATE: &str = r#"	set same_bridge { type ifname . ifname; }
	chain isolate {
		type filter hook forward priority 0; policy accept;
		iifname @bridges oifname @bridges iifname . oifname != @same_bridge ct status & dnat != dnat drop
	}
}
"#;

/// The `nft` binary: on `PATH`, else in the usual sbin directories (the
/// monitor runs berth with an empty environment).
fn nft() -> &'static std::path::Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        let found = path
            .split(':')
            .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"])
            .map(|d| std::path::Path::new(d).join("nft"))
            .find(|p| p.is_file());
        found.unwrap_or_else(|| "nft".into())
    })
}

/// Runs one `nft -f -` batch.
pub fn apply(script: &str) -> Result<()> {
    let mut child = Command::new(nft())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetError::Nft(if e.kind() == std::io::ErrorKind::NotFound {
                "the nft command is missing (install nftables)".into()
            } else {
                format!("running nft: {e}")
            })
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Nft(format!("running nft: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err
        .lines()
        .find(|l| l.contains("Error"))
        .or_else(|| err.lines().next())
        .unwrap_or("failed")
        .trim();
    let first = first.split("Error: ").last().unwrap_or(first);
    Err(NetError::Nft(first.to_string()))
}

/// Whether `nft list <what> ip berth [name]` succeeds: the object exists.
fn listed(what: &str, name: Option<&str>) -> bool {
    Command::new(nft())
        .args(["list", what, "ip", TABLE])
        .args(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether berth's table exists.
pub fn table_exists() -> bool {
    listed("table", None)
}

/// Creates berth's table unless it exists (and adds what a table made by
/// an older berth lacks).
pub fn ensure_table() -> Result<()> {
    if !table_exists() {
        return apply(&format!("{DEFINITION}{ISOLATE}"));
    }
    if listed("chain", Some("isolate")) {
        return Ok(());
    }
    // The bridges the table already has stay reachable within themselves.
    let mut script = format!("table ip {TABLE} {{\n{ISOLATE}");
    for b in set_elements("bridges") {
        script.push_str(&format!(
            "add element ip {TABLE} same_bridge {{ \"{b}\" . \"{b}\" }}\n"
        ));
    }
    apply(&script)
}

/// The elements of one of berth's sets (names without their quotes).
fn set_elements(set: &str) -> Vec<String> {
    let out = Command::new(nft())
        .args(["list", "set", "ip", TABLE, set])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => return Vec::new(),
    };
    parse_elements(&text)
}

fn parse_elements(listing: &str) -> Vec<String> {
    let Some(start) = listing.find("elements = {") else {
        return Vec::new();
    };
    let rest = &listing[start + "elements = {".len()..];
    let body = &rest[..rest.find('}').unwrap_or(rest.len())];
    body.split(',')
        .map(|e| e.trim().trim_matches('"').to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// Deletes berth's table (and with it every berth rule).
pub fn delete_table() -> Result<()> {
    if !table_exists() {
        return Ok(());
    }
    apply(&format!("delete table ip {TABLE}\n"))
}

fn network_elements(bridge: &str, subnet: &Subnet) -> String {
    format!(
        "element ip {TABLE} bridges {{ \"{bridge}\" }}\nelement ip {TABLE} subnets {{ {subnet} }}\n\
         element ip {TABLE} same_bridge {{ \"{bridge}\" . \"{bridge}\" }}\n"
    )
}

/// Masquerade for a network's subnet; its bridge counts as berth's.
pub fn add_network(bridge: &str, subnet: &Subnet) -> Result<()> {
    let e = network_elements(bridge, subnet);
    apply(&e.replace("element", "add element"))
}

/// Removes a network's elements (missing ones are not an error).
pub fn remove_network(bridge: &str, subnet: &Subnet) -> Result<()> {
    if !table_exists() {
        return Ok(());
    }
    let e = network_elements(bridge, subnet);
    // Adding first makes the delete succeed whether or not it was there.
    apply(&format!(
        "{}{}",
        e.replace("element", "add element"),
        e.replace("element", "delete element")
    ))
}

fn port_element(b: &Binding, target: Ipv4Addr) -> String {
    let proto = match b.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    if b.host_ip.is_unspecified() {
        format!(
            "element ip {TABLE} pub_{proto} {{ {} : {target} . {} }}\n",
            b.host_port, b.container_port
        )
    } else {
        format!(
            "element ip {TABLE} pub_{proto}_ip {{ {} . {} : {target} . {} }}\n",
            b.host_ip, b.host_port, b.container_port
        )
    }
}

/// DNATs each binding to `target` (the container's address), all or none.
pub fn add_ports(bindings: &[Binding], target: Ipv4Addr) -> Result<()> {
    if bindings.is_empty() {
        return Ok(());
    }
    let script: String = bindings
        .iter()
        .map(|b| format!("create {}", port_element(b, target)))
        .collect();
    apply(&script).map_err(|e| match e {
        NetError::Nft(m) if m.contains("File exists") => NetError::Invalid(
            "a host port is already published by berth (its nftables map has it)".into(),
        ),
        e => e,
    })
}

/// Removes published ports (missing ones are not an error).
pub fn remove_ports(bindings: &[Binding], target: Ipv4Addr) -> Result<()> {
    if bindings.is_empty() || !table_exists() {
        return Ok(());
    }
    let mut script = String::new();
    for b in bindings {
        script.push_str(&format!("add {}", port_element(b, target)));
    }
    for b in bindings {
        script.push_str(&format!("delete {}", port_element(b, target)));
    }
    match apply(&script) {
        Ok(()) => Ok(()),
        // The host port now points elsewhere: someone else's, leave it.
        Err(_) => {
            for b in bindings {
                let e = port_element(b, target);
                let _ = apply(&format!("add {e}delete {e}"));
            }
            Ok(())
        }
    }
}

/// The host ports berth's maps hold, as `proto host_ip:port` strings (for
/// tests and reconcile).
pub fn published() -> Result<Vec<String>> {
    let out = Command::new(nft())
        .args(["list", "table", "ip", TABLE])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| NetError::Nft(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    let mut map: Option<String> = None;
    let mut inside = false;
    for line in text.lines() {
        let mut t = line.trim();
        if let Some(m) = t.strip_prefix("map ") {
            map = m.split_whitespace().next().map(String::from);
        } else if t.starts_with("set ") || t.starts_with("chain ") {
            map = None;
        }
        if let Some(rest) = t.strip_prefix("elements = {") {
            inside = true;
            t = rest;
        }
        if !inside {
            continue;
        }
        let (els, done) = match t.strip_suffix('}') {
            Some(e) => (e, true),
            None => (t, false),
        };
        if let Some(m) = &map {
            for e in els.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                found.push(format!("{m} {e}"));
            }
        }
        inside = !done;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_listings_are_parsed() {
        let listing = "table ip berth {\n\tset bridges {\n\t\ttype ifname\n\t\telements = { \"berth0\", \"br-0123456789ab\",\n\t\t\t     \"berth-a1b2c3\" }\n\t}\n}\n";
        assert_eq!(
            parse_elements(listing),
            ["berth0", "br-0123456789ab", "berth-a1b2c3"]
        );
        assert!(
            parse_elements("table ip berth {\n\tset bridges {\n\t\ttype ifname\n\t}\n}\n")
                .is_empty()
        );
    }
}
