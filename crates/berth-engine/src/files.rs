//! Files the engine generates for a container: /etc/hostname, /etc/hosts,
//! /etc/resolv.conf.

use std::path::Path;

use crate::{io_err, EngineError};

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The host's resolv.conf without loopback name servers (unreachable from
/// the container's network namespace), falling back to public resolvers as
/// Docker does.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            if ns.starts_with("127.") || ns == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Writes hostname, hosts and resolv.conf into `dir`.
pub fn write_etc_files(dir: &Path, hostname: &str) -> Result<(), EngineError> {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (name, content) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", HOSTS.to_string()),
        ("resolv.conf", resolv_conf(&host_resolv)),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content).map_err(io_err(format!("writing {}", p.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn drops_loopback_nameservers() {
        let r = super::resolv_conf("nameserver 127.0.0.53\nsearch x\n");
        assert!(r.contains("search x"));
        assert!(!r.contains("127.0.0.53"));
        assert!(r.contains("8.8.8.8"));
        let r = super::resolv_conf("nameserver 10.0.0.2\n");
        assert!(r.contains("10.0.0.2") && !r.contains("8.8.8.8"));
    }
}
