//! Bridges and container interfaces, from netlink, sysctls and nft.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use crate::ipam::Subnet;
use crate::netlink::Netlink;
use crate::netns::Handle;
use crate::{io_err, nft, Result};

/// A network's bridge on the host.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(io_err(format!("setting {path}")))
}

/// Makes sure the bridge exists and is up, returning its link index. When
/// it has to be made (first use, or after a reboot), also sets
/// forwarding, `route_localnet` on it, and berth's nft elements for it.
pub fn ensure_bridge(nl: &mut Netlink, b: &Bridge) -> Result<i32> {
    if let Some(link) = nl.link(&b.name)? {
        if !link.up {
            nl.set_up(link.index)?;
        }
        return Ok(link.index);
    }
    let index = nl.create_bridge(&b.name, b.gateway, b.subnet.prefix)?;
    let rest = (|| {
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", b.name),
            "1",
        )?;
        nft::ensure_table()?;
        nft::add_network(&b.name, &b.subnet)
    })();
    if let Err(e) = rest {
        let _ = nl.delete_link(&b.name);
        return Err(e);
    }
    Ok(index)
}

/// Checks the nft side of an existing bridge (after someone flushed the
/// ruleset, for instance) and puts it back.
pub fn repair_bridge(b: &Bridge) -> Result<()> {
    nft::ensure_table()?;
    nft::add_network(&b.name, &b.subnet)
}

/// Deletes a bridge and its nft elements.
pub fn remove_bridge(nl: &mut Netlink, b: &Bridge) -> Result<()> {
    nl.delete_link(&b.name)?;
    nft::remove_network(&b.name, &b.subnet)
}

/// One interface of a container on one network.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host end of the veth pair (enslaved to the bridge).
    pub host_if: String,
    /// The name inside the container (`eth0`, `eth1`...).
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    /// The default route's gateway, for the container's first network.
    pub gateway: Option<Ipv4Addr>,
}

fn create_pair(host: &mut Netlink, ns: &Handle, bridge_index: i32, ep: &Endpoint) -> Result<()> {
    let created = host.create_veth(&ep.host_if, bridge_index, &ep.ifname, &ns.fd, ep.mac);
    match created {
        // The pair of this container's previous run, whose namespace the
        // kernel has not finished destroying: remove it now.
        Err(crate::NetError::Netlink { source, .. })
            if source.raw_os_error() == Some(libc::EEXIST) =>
        {
            host.delete_link(&ep.host_if)?;
            host.create_veth(&ep.host_if, bridge_index, &ep.ifname, &ns.fd, ep.mac)
        }
        r => r,
    }
}

/// The pair's inner end, in the container's namespace.
fn inner_link(ns: &mut Handle, ep: &Endpoint) -> Result<crate::netlink::Link> {
    ns.nl
        .link(&ep.ifname)?
        .ok_or_else(|| crate::NetError::Netlink {
            what: format!("{} vanished from the container's namespace", ep.ifname),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })
}

/// Creates the veth pair, moves its inner end into the container's
/// namespace and gives it its address (and the default route). `fresh`:
/// the namespace is new, so bring its loopback up too.
pub fn attach(
    host: &mut Netlink,
    ns: &mut Handle,
    bridge_index: i32,
    ep: &Endpoint,
    fresh: bool,
) -> Result<()> {
    create_pair(host, ns, bridge_index, ep)?;
    let configured = (|| {
        let link = inner_link(ns, ep)?;
        ns.nl
            .configure(fresh, link.index, ep.ip, ep.prefix, ep.gateway)
    })();
    if configured.is_err() {
        let _ = host.delete_link(&ep.host_if);
    }
    configured
}

/// A microVM's interface: the guest holds the address, so the namespace
/// is only plumbing. The veth pair's inner end (`ep.ifname`, with `ep.mac`,
/// which must differ from the guest's) goes onto a bridge of its own in
/// the namespace, where [`guest_tap`] later adds the VMM's TAP device; the
/// namespace gets no address, so it never answers for the guest.
pub fn attach_guest(
    host: &mut Netlink,
    ns: &mut Handle,
    bridge_index: i32,
    ep: &Endpoint,
    position: u32,
) -> Result<()> {
    create_pair(host, ns, bridge_index, ep)?;
    let wired = (|| {
        let link = inner_link(ns, ep)?;
        guest_port(&mut ns.nl, link.index, position)
    })();
    if wired.is_err() {
        let _ = host.delete_link(&ep.host_if);
    }
    wired
}

/// In a microVM's plumbing namespace (`nl`'s): the link `index` becomes
/// the port of the `position`-th network's bridge, where [`guest_tap`]
/// adds the VMM's TAP device.
pub fn guest_port(nl: &mut Netlink, index: i32, position: u32) -> Result<()> {
    let br = nl.create_plain_bridge(&guest_bridge(position))?;
    nl.set_master(index, br)
}

/// The bridge in a microVM's namespace for its `position`-th network.
pub fn guest_bridge(position: u32) -> String {
    format!("br{position}")
}

/// In the calling thread's namespace (a microVM's, wired by
/// [`attach_guest`]): a TAP device on the `position`-th network's bridge.
/// The device goes away when the returned descriptor (and every copy of
/// it, QEMU's included) is closed.
pub fn guest_tap(position: u32) -> Result<OwnedFd> {
    let name = format!("tap{position}");
    let fd = crate::tap::open(&name)?;
    let mut nl = Netlink::open()?;
    let missing = |what: String| crate::NetError::Netlink {
        what,
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    };
    let tap = nl
        .link(&name)?
        .ok_or_else(|| missing(format!("{name} vanished after creation")))?;
    let br = nl.link(&guest_bridge(position))?.ok_or_else(|| {
        missing(format!(
            "no bridge for network {position} in the VM's namespace"
        ))
    })?;
    nl.set_master(tap.index, br.index)?;
    Ok(fd)
}

/// Removes a container's interface (both ends of the pair) now. Usually
/// not needed: removing the namespace makes the kernel delete the pair in
/// the background, which keeps the 15-40 ms a synchronous veth deletion
/// costs out of `berth rm` and `run --rm`.
pub fn detach(host: &mut Netlink, host_if: &str) -> Result<()> {
    host.delete_link(host_if)
}
