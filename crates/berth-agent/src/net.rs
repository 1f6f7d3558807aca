//! The guest's network cards: QEMU gave the `i`-th card a placeholder MAC
//! (the same when booting and when restoring a snapshot); each becomes
//! the container's interface with its own name, MAC, address and route.

use berth_net::netlink::Netlink;
use berth_vm::proto::Interface;

use crate::AgentError;

fn fail(e: berth_net::NetError) -> AgentError {
    AgentError::Setup(format!("configuring the guest's network: {e}"))
}

/// Configures `interfaces`; loopback comes up with the first.
pub fn configure(interfaces: &[Interface]) -> Result<(), AgentError> {
    if interfaces.is_empty() {
        return Ok(());
    }
    let mut nl = Netlink::open().map_err(fail)?;
    let links = nl.links().map_err(fail)?;
    let mut found = Vec::with_capacity(interfaces.len());
    for ifc in interfaces {
        let want = berth_vm::nic_placeholder_mac(ifc.card);
        let link = links.iter().find(|l| l.mac == Some(want)).ok_or_else(|| {
            AgentError::Setup(format!(
                "the guest has no network card {} (placeholder MAC {want:02x?})",
                ifc.card
            ))
        })?;
        found.push(link.index);
    }
    // Temporary names first: the kernel's names may be the ones wanted,
    // in another order.
    for (i, (index, ifc)) in found.iter().zip(interfaces).enumerate() {
        nl.rename(*index, &format!("berthnic{i}"), ifc.mac)
            .map_err(fail)?;
    }
    for (i, (index, ifc)) in found.iter().zip(interfaces).enumerate() {
        nl.rename(*index, &ifc.name, ifc.mac).map_err(fail)?;
        nl.configure(i == 0, *index, ifc.address, ifc.prefix, ifc.gateway)
            .map_err(fail)?;
    }
    Ok(())
}
