//! A small synchronous rtnetlink client: just the messages berth needs
//! (links, veth pairs, bridges, IPv4 addresses, the default route). A
//! socket talks to the network namespace it was opened in, so one opened
//! inside a container's namespace configures that namespace from outside.
//!
//! Requests are pipelined: several messages go out in one `send`, each
//! asks for an acknowledgement, and the first error is reported.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use crate::{NetError, Result};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const NLA_F_NESTED: u16 = 0x8000;

const IFF_UP: u32 = 1;
const AF_INET: u8 = libc::AF_INET as u8;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    /// Index of the bridge this link is enslaved to (0: none).
    pub master: i32,
    pub up: bool,
    /// The hardware address, for Ethernet links.
    pub mac: Option<[u8; 6]>,
}

/// What [`Netlink::configure_links`] makes of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    pub index: i32,
    pub name: String,
    /// Whether the link must be renamed to `name` (it must be down then;
    /// a MAC can change on a running card that allows it, as virtio-net).
    pub rename: bool,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// One netlink message under construction.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(typ: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&typ.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set when sent
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// `struct ifinfomsg`.
    fn ifinfo(mut self, index: i32, flags: u32, change: u32) -> Msg {
        self.ifinfo_raw(index, flags, change);
        self
    }

    fn ifinfo_raw(&mut self, index: i32, flags: u32, change: u32) {
        self.buf.extend_from_slice(&[0, 0]); // family, pad
        self.buf.extend_from_slice(&0u16.to_ne_bytes()); // type
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
    }

    fn attr(mut self, typ: u16, data: &[u8]) -> Msg {
        self.put(typ, data);
        self
    }

    fn put(&mut self, typ: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&typ.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    fn begin(&mut self, typ: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(typ | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("nested attribute begun");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn cstr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Attributes (type, payload) of a message body starting at `at`.
fn attrs(b: &[u8], mut at: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while at + 4 <= b.len() {
        let len = u16_at(b, at) as usize;
        if len < 4 || at + len > b.len() {
            break;
        }
        out.push((u16_at(b, at + 2) & 0x3fff, &b[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}

/// An rtnetlink socket bound to the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        let err = |source: nix::errno::Errno| NetError::Netlink {
            what: "opening a socket".into(),
            source: source.into(),
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(err)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(err)?;
        Ok(Netlink {
            fd,
            seq: 1,
            buf: vec![0u8; 64 * 1024],
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }

    /// Sends `msgs` in one write and waits for every acknowledgement.
    /// Errors named in `ignore` (e.g. ENODEV when deleting) count as done.
    fn transact(&mut self, what: &str, msgs: Vec<Msg>, ignore: &[i32]) -> Result<()> {
        let first = self.seq;
        let mut out = Vec::new();
        for m in msgs {
            out.extend(m.finish(self.seq));
            self.seq = self.seq.wrapping_add(1);
        }
        let last = self.seq.wrapping_sub(1);
        let fail = |source: std::io::Error| NetError::Netlink {
            what: what.to_string(),
            source,
        };
        send(self.raw(), &out, MsgFlags::empty()).map_err(|e| fail(e.into()))?;
        let mut pending = last.wrapping_sub(first) + 1;
        let mut first_err: Option<i32> = None;
        while pending > 0 {
            let n =
                recv(self.raw(), &mut self.buf, MsgFlags::empty()).map_err(|e| fail(e.into()))?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32_at(&self.buf, at) as usize;
                let typ = u16_at(&self.buf, at + 4);
                let seq = u32_at(&self.buf, at + 8);
                if len < 16 || at + len > n {
                    break;
                }
                if typ == NLMSG_ERROR && seq.wrapping_sub(first) <= last.wrapping_sub(first) {
                    let code = -(u32_at(&self.buf, at + 16) as i32);
                    if code != 0 && !ignore.contains(&code) && first_err.is_none() {
                        first_err = Some(code);
                    }
                    pending -= 1;
                }
                at += (len + 3) & !3;
            }
        }
        match first_err {
            None => Ok(()),
            Some(code) => Err(fail(std::io::Error::from_raw_os_error(code))),
        }
    }

    /// Sends a dump request and returns each reply message's body.
    fn dump(&mut self, what: &str, msg: Msg) -> Result<Vec<Vec<u8>>> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let fail = |source: std::io::Error| NetError::Netlink {
            what: what.to_string(),
            source,
        };
        send(self.raw(), &msg.finish(seq), MsgFlags::empty()).map_err(|e| fail(e.into()))?;
        let mut out = Vec::new();
        loop {
            let n =
                recv(self.raw(), &mut self.buf, MsgFlags::empty()).map_err(|e| fail(e.into()))?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32_at(&self.buf, at) as usize;
                let typ = u16_at(&self.buf, at + 4);
                if len < 16 || at + len > n {
                    break;
                }
                if u32_at(&self.buf, at + 8) == seq {
                    match typ {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            // An error, or the acknowledgement that ends
                            // the reply to a single (non-dump) request.
                            let code = -(u32_at(&self.buf, at + 16) as i32);
                            if code != 0 {
                                return Err(fail(std::io::Error::from_raw_os_error(code)));
                            }
                            return Ok(out);
                        }
                        _ => out.push(self.buf[at + 16..at + len].to_vec()),
                    }
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// The link called `name`, if any.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_ACK)
            .ifinfo(0, 0, 0)
            .attr(IFLA_IFNAME, &cstr(name));
        // The reply is the link, then the acknowledgement.
        match self.dump(&format!("looking up link {name}"), msg) {
            Ok(bodies) => Ok(bodies.first().and_then(|b| parse_link(b))),
            Err(NetError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every link of this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_DUMP).ifinfo(0, 0, 0);
        Ok(self
            .dump("listing links", msg)?
            .iter()
            .filter_map(|b| parse_link(b))
            .collect())
    }

    /// Every IPv4 address of this namespace: (link index, address, prefix).
    pub fn addresses(&mut self) -> Result<Vec<(i32, Ipv4Addr, u8)>> {
        let mut msg = Msg::new(RTM_GETADDR, NLM_F_DUMP);
        msg.buf.extend_from_slice(&[AF_INET, 0, 0, 0]);
        msg.buf.extend_from_slice(&0u32.to_ne_bytes());
        let mut out = Vec::new();
        for b in self.dump("listing addresses", msg)? {
            if b.len() < 8 || b[0] != AF_INET {
                continue;
            }
            let prefix = b[1];
            let index = u32_at(&b, 4) as i32;
            for (t, v) in attrs(&b, 8) {
                if t == IFA_LOCAL && v.len() == 4 {
                    out.push((index, Ipv4Addr::new(v[0], v[1], v[2], v[3]), prefix));
                }
            }
        }
        Ok(out)
    }

    /// Creates an up bridge with `addr/prefix`.
    pub fn create_bridge(&mut self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<i32> {
        let index = self.create_plain_bridge(name)?;
        self.add_address(index, addr, prefix)?;
        Ok(index)
    }

    /// Creates an up bridge without an address: a switch between ports.
    pub fn create_plain_bridge(&mut self, name: &str) -> Result<i32> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifinfo(0, IFF_UP, IFF_UP)
            .attr(IFLA_IFNAME, &cstr(name));
        m.begin(IFLA_LINKINFO);
        m.put(IFLA_INFO_KIND, b"bridge");
        m.end();
        self.transact(&format!("creating bridge {name}"), vec![m], &[])?;
        let link = self.link(name)?.ok_or_else(|| NetError::Netlink {
            what: format!("bridge {name} vanished after creation"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        Ok(link.index)
    }

    /// Enslaves link `index` to the bridge `master` and sets it up.
    pub fn set_master(&mut self, index: i32, master: i32) -> Result<()> {
        let m = Msg::new(RTM_NEWLINK, NLM_F_ACK)
            .ifinfo(index, IFF_UP, IFF_UP)
            .attr(IFLA_MASTER, &(master as u32).to_ne_bytes());
        self.transact("adding a port to a bridge", vec![m], &[])
    }

    /// Renames link `index` and sets its hardware address (it must be
    /// down, as a new link is).
    pub fn rename(&mut self, index: i32, name: &str, mac: [u8; 6]) -> Result<()> {
        let m = Msg::new(RTM_NEWLINK, NLM_F_ACK)
            .ifinfo(index, 0, 0)
            .attr(IFLA_IFNAME, &cstr(name))
            .attr(IFLA_ADDRESS, &mac);
        self.transact(&format!("naming link {index} {name}"), vec![m], &[])
    }

    /// Creates a veth pair: `host` (up, enslaved to `master`) here and
    /// `peer` (with `mac`, still down) in the namespace `peer_ns`.
    pub fn create_veth(
        &mut self,
        host: &str,
        master: i32,
        peer: &str,
        peer_ns: &OwnedFd,
        mac: [u8; 6],
    ) -> Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifinfo(0, IFF_UP, IFF_UP)
            .attr(IFLA_IFNAME, &cstr(host))
            .attr(IFLA_MASTER, &(master as u32).to_ne_bytes());
        m.begin(IFLA_LINKINFO);
        m.put(IFLA_INFO_KIND, b"veth");
        m.begin(IFLA_INFO_DATA);
        m.begin(VETH_INFO_PEER);
        // Not up yet: a veth end cannot be opened before its pair is
        // complete (ENOTCONN); `configure` brings it up.
        m.ifinfo_raw(0, 0, 0);
        m.put(IFLA_IFNAME, &cstr(peer));
        m.put(IFLA_ADDRESS, &mac);
        m.put(IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes());
        m.end();
        m.end();
        m.end();
        self.transact(&format!("creating veth pair {host}/{peer}"), vec![m], &[])
    }

    /// Sets a link down.
    pub fn set_down(&mut self, index: i32) -> Result<()> {
        let m = Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(index, 0, IFF_UP);
        self.transact("setting a link down", vec![m], &[])
    }

    /// Removes `addr/prefix` from a link (with the routes through it).
    pub fn delete_address(&mut self, index: i32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = Msg::new(RTM_DELADDR, NLM_F_ACK);
        m.buf.extend_from_slice(&[AF_INET, prefix, 0, 0]);
        m.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        let m = m
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.transact(
            &format!("removing address {addr}/{prefix}"),
            vec![m],
            &[libc::EADDRNOTAVAIL],
        )
    }

    /// The IPv4 default route of the main table: (gateway, link index).
    pub fn default_route(&mut self) -> Result<Option<(Ipv4Addr, i32)>> {
        let mut msg = Msg::new(RTM_GETROUTE, NLM_F_DUMP);
        msg.buf.extend_from_slice(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
        msg.buf.extend_from_slice(&0u32.to_ne_bytes());
        for b in self.dump("listing routes", msg)? {
            // struct rtmsg: family, dst_len, src_len, tos, table, ...
            if b.len() < 12 || b[0] != AF_INET || b[1] != 0 {
                continue;
            }
            let mut table = u32::from(b[4]);
            let (mut gw, mut oif) = (None, None);
            for (t, v) in attrs(&b, 12) {
                match t {
                    RTA_GATEWAY if v.len() == 4 => gw = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
                    RTA_OIF if v.len() == 4 => oif = Some(u32_at(v, 0) as i32),
                    RTA_TABLE if v.len() == 4 => table = u32_at(v, 0),
                    _ => {}
                }
            }
            if let (Some(gw), Some(oif), true) = (gw, oif, table == u32::from(RT_TABLE_MAIN)) {
                return Ok(Some((gw, oif)));
            }
        }
        Ok(None)
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: i32) -> Result<()> {
        let m = Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(index, IFF_UP, IFF_UP);
        self.transact("setting a link up", vec![m], &[])
    }

    fn addr_msg(index: i32, addr: Ipv4Addr, prefix: u8) -> Msg {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        m.buf.extend_from_slice(&[AF_INET, prefix, 0, 0]);
        m.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        m.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets())
    }

    /// Adds `addr/prefix` to a link.
    pub fn add_address(&mut self, index: i32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.transact(
            &format!("adding address {addr}/{prefix}"),
            vec![Self::addr_msg(index, addr, prefix)],
            &[libc::EEXIST],
        )
    }

    /// In one round trip: `lo` up (when `lo` is set), the link `index` up
    /// with its address, and the default route through `gateway` (when set).
    pub fn configure(
        &mut self,
        lo: bool,
        index: i32,
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    ) -> Result<()> {
        let mut msgs = Vec::new();
        if lo {
            msgs.push(Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(1, IFF_UP, IFF_UP));
        }
        msgs.extend(Self::address_msgs(index, addr, prefix, gateway));
        self.transact(&format!("configuring {addr}/{prefix}"), msgs, &[])
    }

    /// The link up, its address, and the default route through `gateway`.
    fn address_msgs(index: i32, addr: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> Vec<Msg> {
        let mut msgs = vec![Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(index, IFF_UP, IFF_UP)];
        msgs.push(Self::addr_msg(index, addr, prefix));
        if let Some(gw) = gateway {
            let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
            // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
            // scope (universe), type, flags.
            m.buf.extend_from_slice(&[
                AF_INET,
                0,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_BOOT,
                0,
                RTN_UNICAST,
            ]);
            m.buf.extend_from_slice(&0u32.to_ne_bytes());
            msgs.push(
                m.attr(RTA_GATEWAY, &gw.octets())
                    .attr(RTA_OIF, &(index as u32).to_ne_bytes()),
            );
        }
        msgs
    }

    /// A guest's interfaces in one round trip: loopback up, then each link
    /// renamed where asked, given its MAC, brought up with its address, and
    /// the default route where it has a gateway.
    pub fn configure_links(&mut self, links: &[LinkConfig]) -> Result<()> {
        let mut msgs = vec![Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(1, IFF_UP, IFF_UP)];
        for l in links {
            let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(l.index, 0, 0);
            if l.rename {
                m = m.attr(IFLA_IFNAME, &cstr(&l.name));
            }
            msgs.push(m.attr(IFLA_ADDRESS, &l.mac));
            msgs.extend(Self::address_msgs(l.index, l.addr, l.prefix, l.gateway));
        }
        self.transact("configuring the interfaces", msgs, &[])
    }

    /// Deletes the link called `name`; a missing link is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        let m = Msg::new(RTM_DELLINK, NLM_F_ACK)
            .ifinfo(0, 0, 0)
            .attr(IFLA_IFNAME, &cstr(name));
        self.transact(&format!("deleting link {name}"), vec![m], &[libc::ENODEV])
    }
}

fn parse_link(b: &[u8]) -> Option<Link> {
    if b.len() < 16 {
        return None;
    }
    let index = u32_at(b, 4) as i32;
    let flags = u32_at(b, 8);
    let mut link = Link {
        index,
        name: String::new(),
        master: 0,
        up: flags & IFF_UP != 0,
        mac: None,
    };
    for (t, v) in attrs(b, 16) {
        match t {
            IFLA_IFNAME => {
                link.name =
                    String::from_utf8_lossy(v.split(|c| *c == 0).next().unwrap_or(v)).into_owned()
            }
            IFLA_MASTER if v.len() == 4 => link.master = u32_at(v, 0) as i32,
            IFLA_ADDRESS if v.len() == 6 => {
                link.mac = Some([v[0], v[1], v[2], v[3], v[4], v[5]]);
            }
            _ => {}
        }
    }
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_lengths() {
        let mut m = Msg::new(RTM_NEWLINK, 0).ifinfo(0, 0, 0);
        m.begin(IFLA_LINKINFO);
        m.put(IFLA_INFO_KIND, b"veth");
        m.end();
        let b = m.finish(7);
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(u32_at(&b, 8), 7);
        let a = attrs(&b, 32);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, IFLA_LINKINFO);
        let inner = attrs(a[0].1, 0);
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth"[..])]);
    }
}
