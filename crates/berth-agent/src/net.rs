//! The guest's network cards: QEMU gave the `i`-th card a placeholder MAC
//! (the same when booting and when restoring a snapshot); each becomes
//! the container's interface with its own name, MAC, address and route.

use berth_net::netlink::{LinkConfig, Netlink};
use berth_vm::proto::Interface;

use crate::AgentError;

fn fail(e: berth_net::NetError) -> AgentError {
    AgentError::Setup(format!("configuring the guest's network: {e}"))
}

/// Configures `interfaces` (and loopback) in one netlink round trip.
pub fn configure(interfaces: &[Interface]) -> Result<(), AgentError> {
    if interfaces.is_empty() {
        return Ok(());
    }
    let mut nl = Netlink::open().map_err(fail)?;
    let links = nl.links().map_err(fail)?;
    // (link index, its current name) of each interface's card.
    let mut found: Vec<(i32, &str)> = Vec::with_capacity(interfaces.len());
    for ifc in interfaces {
        let want = berth_vm::nic_placeholder_mac(ifc.card);
        let link = links.iter().find(|l| l.mac == Some(want)).ok_or_else(|| {
            AgentError::Setup(format!(
                "the guest has no network card {} (placeholder MAC {want:02x?})",
                ifc.card
            ))
        })?;
        found.push((link.index, link.name.as_str()));
    }
    // Usually the kernel's names are the wanted ones; where one is another
    // card's now, every card goes through a temporary name first.
    let clash = found.iter().zip(interfaces).any(|((index, _), ifc)| {
        links
            .iter()
            .any(|l| l.name == ifc.name && l.index != *index)
    });
    let mut configs = Vec::with_capacity(interfaces.len());
    for (i, ((index, name), ifc)) in found.iter().zip(interfaces).enumerate() {
        let rename = clash || *name != ifc.name;
        if rename {
            // A card cannot be renamed while up (they come up at boot).
            nl.set_down(*index).map_err(fail)?;
        }
        if clash {
            nl.rename(*index, &format!("berthnic{i}"), ifc.mac)
                .map_err(fail)?;
        }
        configs.push(LinkConfig {
            index: *index,
            name: ifc.name.clone(),
            rename,
            mac: ifc.mac,
            addr: ifc.address,
            prefix: ifc.prefix,
            gateway: ifc.gateway,
        });
    }
    nl.configure_links(&configs).map_err(fail)
}

/// At boot, before a snapshot is taken: every card up (its placeholder
/// MAC, no address, IPv6 off so it sends nothing), so that a restored
/// guest only sets MAC, address and route. Bringing a virtio-net card up
/// is most of its cost under emulation.
pub fn wake_cards() {
    let Ok(mut nl) = Netlink::open() else { return };
    let Ok(links) = nl.links() else { return };
    for l in links.iter().filter(|l| l.name != "lo" && l.mac.is_some()) {
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", l.name),
            "1",
        );
        let _ = nl.set_up(l.index);
    }
}
