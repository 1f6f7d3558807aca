//! The name responder of a user network (`berth-dns`, one small process
//! per network, as podman's aardvark-dns): it listens on the bridge's
//! gateway address, answers A queries for the names of the containers on
//! the network from a hosts file berth rewrites, and relays other queries
//! to the host's resolvers. It exits when its hosts file is removed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{io_err, Result};

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
/// Seconds a name may be cached; containers come and go.
const TTL: u32 = 60;
const MAX_RELAYS: usize = 64;

/// A parsed question: the lowercase name without the final dot, its type
/// and class, and where the question section ends.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub end: usize,
}

/// Parses a standard query with one question.
pub fn parse_query(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || q[2] & 0x80 != 0 || (q[2] >> 3) & 0x0f != 0 {
        return None;
    }
    if u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let rest = q.get(at..at + 4)?;
    Some(Question {
        name: labels.join("."),
        qtype: u16::from_be_bytes([rest[0], rest[1]]),
        qclass: u16::from_be_bytes([rest[2], rest[3]]),
        end: at + 4,
    })
}

/// A response to `query` with `answer` (if any) and `rcode`.
pub fn response(query: &[u8], q: &Question, answer: Option<Ipv4Addr>, rcode: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(q.end + 16);
    r.extend_from_slice(&query[0..2]);
    // QR, the query's opcode and RD; AA and RA; the rcode.
    r.push(0x80 | 0x04 | (query[2] & 0x01));
    r.push(0x80 | (rcode & 0x0f));
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&u16::from(answer.is_some()).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&query[12..q.end]);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 0x0c]);
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    r
}

/// Names to addresses, from a hosts file (`IP NAME [NAME...]`).
#[derive(Default)]
pub struct Names {
    map: HashMap<String, Ipv4Addr>,
    stamp: Option<(SystemTime, u64)>,
}

impl Names {
    pub fn parse(text: &str) -> HashMap<String, Ipv4Addr> {
        let mut map = HashMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words.next().map(str::parse::<Ipv4Addr>) else {
                continue;
            };
            for w in words {
                map.entry(w.to_ascii_lowercase()).or_insert(ip);
            }
        }
        map
    }

    /// Re-reads `path` when it changed. False when it is gone.
    pub fn refresh(&mut self, path: &Path) -> bool {
        let Ok(md) = std::fs::metadata(path) else {
            return false;
        };
        let stamp = (md.modified().unwrap_or(SystemTime::UNIX_EPOCH), md.len());
        if self.stamp != Some(stamp) {
            self.map = Self::parse(&std::fs::read_to_string(path).unwrap_or_default());
            self.stamp = Some(stamp);
        }
        true
    }

    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        self.map.get(name).copied()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

/// The host's resolvers from a resolv.conf text.
pub fn upstreams(resolv: &str) -> Vec<SocketAddr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Binds the responder's socket (before the process reports ready).
pub fn bind(listen: Ipv4Addr) -> Result<UdpSocket> {
    UdpSocket::bind((listen, 53)).map_err(io_err(format!("binding {listen}:53/udp")))
}

fn relay(sock: &UdpSocket, to: SocketAddr, query: &[u8], q: &Question, upstreams: &[SocketAddr]) {
    let mut buf = [0u8; 4096];
    for up in upstreams {
        let bind_addr: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = UdpSocket::bind(bind_addr) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.connect(up).is_err() || s.send(query).is_err() {
            continue;
        }
        if let Ok(n) = s.recv(&mut buf) {
            if n >= 2 && buf[0..2] == query[0..2] {
                let _ = sock.send_to(&buf[..n], to);
                return;
            }
        }
    }
    let _ = sock.send_to(&response(query, q, None, RCODE_SERVFAIL), to);
}

/// Serves until the hosts file disappears.
pub fn serve(sock: UdpSocket, hosts: PathBuf, upstreams: Vec<SocketAddr>) -> Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(io_err("setting a socket timeout"))?;
    let mut names = Names::default();
    let upstreams = Arc::new(upstreams);
    let relays = Arc::new(AtomicUsize::new(0));
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !hosts.exists() {
                    return Ok(());
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("receiving a query")(e)),
        };
        if !names.refresh(&hosts) {
            return Ok(());
        }
        let query = &buf[..n];
        let Some(q) = parse_query(query) else {
            continue;
        };
        if names.contains(&q.name) {
            let answer = (q.qtype == TYPE_A && q.qclass == CLASS_IN)
                .then(|| names.get(&q.name))
                .flatten();
            let _ = sock.send_to(&response(query, &q, answer, 0), from);
            continue;
        }
        if upstreams.is_empty() || relays.load(Ordering::Relaxed) >= MAX_RELAYS {
            let rcode = if upstreams.is_empty() {
                RCODE_NXDOMAIN
            } else {
                RCODE_SERVFAIL
            };
            let _ = sock.send_to(&response(query, &q, None, rcode), from);
            continue;
        }
        let (Ok(reply), query) = (sock.try_clone(), query.to_vec()) else {
            continue;
        };
        let (ups, count) = (Arc::clone(&upstreams), Arc::clone(&relays));
        count.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || {
            relay(&reply, from, &query, &q, &ups);
            count.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn answers_a_queries() {
        let raw = query("Web", TYPE_A);
        let q = parse_query(&raw).unwrap();
        assert_eq!(q.name, "web");
        let r = response(&raw, &q, Some(Ipv4Addr::new(10, 0, 0, 2)), 0);
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 2]);
        let r = response(&raw, &q, None, RCODE_NXDOMAIN);
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(r.len(), q.end);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_query(&[0; 5]).is_none());
        let mut raw = query("web", TYPE_A);
        raw[2] |= 0x80; // a response, not a query
        assert!(parse_query(&raw).is_none());
        let raw = query("web", TYPE_A);
        assert!(parse_query(&raw[..raw.len() - 2]).is_none());
    }

    #[test]
    fn hosts_and_upstreams() {
        let m = Names::parse("10.0.0.2 web Web.alias abc123\n# x\nbad line\n10.0.0.3 db\n");
        assert_eq!(m.get("web.alias"), Some(&Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(m.get("db"), Some(&Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(m.len(), 4);
        let u = upstreams("search x\nnameserver 10.255.255.53\nnameserver ::1\n");
        assert_eq!(u.len(), 2);
    }
}
