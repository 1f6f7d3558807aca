//! Published ports: Docker's `-p [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|/udp]`
//! with ranges (`8000-8009:80-89`), and what they become once host ports
//! are chosen.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{NetError, Result};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `-p` argument, as the user wrote it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSpec {
    /// Where the port answers on the host; `None`: every address.
    pub host_ip: Option<Ipv4Addr>,
    /// Inclusive host port range; `None`: a free port chosen at start.
    pub host_ports: Option<(u16, u16)>,
    /// Inclusive container port range.
    pub container_ports: (u16, u16),
    pub proto: Proto,
}

/// A published port once its host port is known.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub proto: Proto,
    /// 0.0.0.0: every address of the host.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
}

impl fmt::Display for Binding {
    /// `80/tcp -> 0.0.0.0:8080`, as `docker port` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.proto, self.host_ip, self.host_port
        )
    }
}

fn port_range(s: &str, what: &str, spec: &str) -> Result<(u16, u16)> {
    let bad =
        |why: String| NetError::Invalid(format!("invalid port specification {spec:?}: {why}"));
    let one = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(format!("{what} {p:?} is not a port number (1-65535)"))),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(bad(format!("{what} range {s:?} ends before it starts")));
            }
            Ok((a, b))
        }
        None => one(s).map(|p| (p, p)),
    }
}

impl PortSpec {
    /// Parses one `-p` argument.
    pub fn parse(spec: &str) -> Result<PortSpec> {
        let bad =
            |why: &str| NetError::Invalid(format!("invalid port specification {spec:?}: {why}"));
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, p)) => (
                r,
                Proto::parse(p).ok_or_else(|| bad("the protocol must be tcp or udp"))?,
            ),
            None => (spec, Proto::Tcp),
        };
        if rest.starts_with('[') || rest.matches(':').count() > 2 {
            return Err(bad("IPv6 host addresses are not supported yet"));
        }
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [i, h, c] => (Some(*i), Some(*h), *c),
            _ => return Err(bad("expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]")),
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(i) => {
                let a: Ipv4Addr = i
                    .parse()
                    .map_err(|_| bad(&format!("{i:?} is not an IPv4 address")))?;
                (!a.is_unspecified()).then_some(a)
            }
        };
        if ctr.is_empty() {
            return Err(bad("no container port"));
        }
        let container_ports = port_range(ctr, "container port", spec)?;
        let host_ports = match host {
            None | Some("") => None,
            Some(h) => Some(port_range(h, "host port", spec)?),
        };
        if let Some((a, b)) = host_ports {
            let (ca, cb) = container_ports;
            if b - a != cb - ca && ca != cb {
                return Err(bad(
                    "the host and container port ranges must be the same length",
                ));
            }
        }
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }

    /// The bindings, with `pick` choosing a host port where the spec left
    /// the choice open (`None`: any port; `Some(range)`: one of those).
    pub fn bindings(
        &self,
        mut pick: impl FnMut(Proto, Ipv4Addr, Option<(u16, u16)>) -> Result<u16>,
    ) -> Result<Vec<Binding>> {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let (ca, cb) = self.container_ports;
        let mut out = Vec::new();
        for (i, cp) in (ca..=cb).enumerate() {
            let host_port = match self.host_ports {
                None => pick(self.proto, ip, None)?,
                // A host range for one container port: any free one of them.
                Some((a, b)) if ca == cb && a != b => pick(self.proto, ip, Some((a, b)))?,
                Some((a, _)) => a + i as u16,
            };
            out.push(Binding {
                proto: self.proto,
                host_ip: ip,
                host_port,
                container_port: cp,
            });
        }
        Ok(out)
    }
}

/// Parses an image's `ExposedPorts` key (`80/tcp`, `53/udp`, `80`).
pub fn parse_exposed(key: &str) -> Option<(u16, u16, Proto)> {
    let (p, proto) = match key.split_once('/') {
        Some((p, pr)) => (p, Proto::parse(pr)?),
        None => (key, Proto::Tcp),
    };
    let (a, b) = port_range(p, "port", key).ok()?;
    Some((a, b, proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(spec: &str) -> Vec<String> {
        PortSpec::parse(spec)
            .unwrap()
            .bindings(|_, _, r| Ok(r.map(|r| r.0).unwrap_or(49152)))
            .unwrap()
            .iter()
            .map(|b| b.to_string())
            .collect()
    }

    #[test]
    fn parses_docker_port_specs() {
        assert_eq!(fixed("8080:80"), ["80/tcp -> 0.0.0.0:8080"]);
        assert_eq!(fixed("127.0.0.1:8080:80/udp"), ["80/udp -> 127.0.0.1:8080"]);
        assert_eq!(fixed("80"), ["80/tcp -> 0.0.0.0:49152"]);
        assert_eq!(fixed("127.0.0.1::80"), ["80/tcp -> 127.0.0.1:49152"]);
        assert_eq!(
            fixed("8000-8001:80-81"),
            ["80/tcp -> 0.0.0.0:8000", "81/tcp -> 0.0.0.0:8001"]
        );
        assert_eq!(fixed("9000-9005:80"), ["80/tcp -> 0.0.0.0:9000"]);
        assert_eq!(fixed("0.0.0.0:8080:80/TCP"), ["80/tcp -> 0.0.0.0:8080"]);
    }

    #[test]
    fn refuses_malformed_specs() {
        for bad in [
            "",
            "abc",
            "80:abc",
            "0:80",
            "70000:80",
            "8080:80/sctp",
            "1.2.3:80:80",
            "8000-8002:80-81",
            "90-80:80",
            "[::1]:80:80",
            "a:b:c:d",
            "8080:",
        ] {
            let e = PortSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid port specification"), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn exposed_ports() {
        assert_eq!(parse_exposed("80/tcp"), Some((80, 80, Proto::Tcp)));
        assert_eq!(parse_exposed("53/udp"), Some((53, 53, Proto::Udp)));
        assert_eq!(parse_exposed("8080"), Some((8080, 8080, Proto::Tcp)));
        assert_eq!(parse_exposed("x/tcp"), None);
    }
}
