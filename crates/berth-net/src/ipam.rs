//! IPv4 subnets and address allocation. Leases themselves are records of
//! the engine; this module only does the arithmetic.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::{NetError, Result};

/// An IPv4 subnet, stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = Self::mask_of(prefix);
        Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }

    pub fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    pub fn last(&self) -> u32 {
        self.first() | !self.mask()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.first()
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// The conventional gateway: the first host address.
    pub fn default_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first() + 1)
    }

    /// The lowest address of the subnet that is not the network or
    /// broadcast address, the gateway, or in `used`.
    pub fn allocate(&self, gateway: Ipv4Addr, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let (lo, hi) = (self.first() + 1, self.last().saturating_sub(1));
        (lo..=hi)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != gateway && !used.contains(ip))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetError;

    /// `A.B.C.D/N`, N from 8 to 30; host bits must be zero.
    fn from_str(s: &str) -> Result<Subnet> {
        let bad = |why: &str| NetError::Invalid(format!("invalid subnet {s:?}: {why}"));
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.D/PREFIX"))?;
        if a.contains(':') {
            return Err(bad("IPv6 networks are not supported yet"));
        }
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix must be between 8 and 30"));
        }
        let net = Subnet::new(addr, prefix);
        if net.addr != addr {
            return Err(bad(&format!("host bits are set (did you mean {net}?)")));
        }
        Ok(net)
    }
}

/// Subnets tried, in order, for the default network and for networks
/// created without `--subnet` (Docker's default pools).
pub fn pool() -> impl Iterator<Item = Subnet> {
    let b172 = (17..=31).map(|b| Subnet::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let b192 = (0..=240)
        .step_by(16)
        .map(|c| Subnet::new(Ipv4Addr::new(192, 168, c, 0), 20));
    b172.chain(b192)
}

/// A locally administered MAC derived from the address, as Docker does
/// (02:42 then the four octets): stable with the lease.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The MAC of a microVM's veth end in its plumbing namespace: not the
/// guest's ([`mac_for`]), which a bridge would otherwise take for its own.
pub fn plumbing_mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x43, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_subnets() {
        let n: Subnet = "10.1.0.0/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/24");
        assert!(n.contains("10.1.0.77".parse().unwrap()));
        assert!(!n.contains("10.1.1.1".parse().unwrap()));
        for bad in [
            "10.1.0.1/24",
            "10.1.0.0",
            "10.1.0.0/33",
            "x/24",
            "fd00::/64",
            "10.0.0.0/31",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let big: Subnet = "10.0.0.0/8".parse().unwrap();
        assert!(big.overlaps(&n) && n.overlaps(&big));
        assert!(!n.overlaps(&"10.1.1.0/24".parse().unwrap()));
    }

    #[test]
    fn allocates_the_lowest_free_address() {
        let n: Subnet = "10.1.0.0/29".parse().unwrap();
        let gw = n.default_gateway();
        assert_eq!(gw, Ipv4Addr::new(10, 1, 0, 1));
        let mut used = Vec::new();
        for want in 2..=6 {
            let ip = n.allocate(gw, &used).unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 1, 0, want));
            used.push(ip);
        }
        assert_eq!(n.allocate(gw, &used), None, "broadcast is never handed out");
        used.remove(1);
        assert_eq!(n.allocate(gw, &used), Some(Ipv4Addr::new(10, 1, 0, 3)));
        assert_eq!(
            mac_string(mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }
}
