//! `berth network ...`, `berth port`, and the network options of
//! `run`/`create`.

use anyhow::{bail, Result};
use berth_engine::network::NetworkConfig;
use berth_engine::Engine;
use berth_net::ports::PortSpec;

use crate::cli_net::{NetOpts, NetworkCommand, PortArgs};
use crate::format::Table;

/// The engine's network options from the flags.
pub fn config(o: &NetOpts) -> Result<NetworkConfig> {
    let publish = o
        .publish
        .iter()
        .map(|p| PortSpec::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let c = NetworkConfig {
        mode: o.network.clone().unwrap_or_default(),
        publish,
        publish_all: o.publish_all,
        dns: o.dns.clone(),
        dns_search: o.dns_search.clone(),
        dns_options: o.dns_option.clone(),
        add_hosts: o.add_host.clone(),
        aliases: o.network_alias.clone(),
    };
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

pub fn network(engine: &mut Engine, cmd: NetworkCommand) -> Result<u8> {
    match cmd {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                bail!(
                    "network driver {:?} is not supported: berth has bridge networks",
                    a.driver
                );
            }
            let n = engine.network_create(&a.name, a.subnet.as_deref(), a.gateway.as_deref())?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls(a) => {
            let nets = engine.network_list()?;
            if a.quiet {
                for n in &nets {
                    println!("{}", n["ID"].as_str().unwrap_or_default());
                }
            } else if let Some(f) = &a.format {
                for n in &nets {
                    if f == "json" {
                        println!("{n}");
                    } else {
                        println!("{}", crate::format::render(f, n));
                    }
                }
            } else {
                let mut t = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
                for n in &nets {
                    t.row(
                        ["ID", "Name", "Driver", "Scope"]
                            .iter()
                            .map(|k| n[k].as_str().unwrap_or_default().to_string())
                            .collect(),
                    );
                }
                t.print();
            }
        }
        NetworkCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.names {
                out.push(engine.network_inspect(n)?);
            }
            match &a.format {
                Some(f) => {
                    for v in &out {
                        println!("{}", crate::format::render(f, v));
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&out)?),
            }
        }
        NetworkCommand::Rm(a) => {
            let mut failed = None;
            for n in &a.names {
                match engine.network_remove(n) {
                    Ok(name) => println!("{name}"),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        NetworkCommand::Prune(_) => {
            let removed = engine.network_prune()?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
        NetworkCommand::Connect(a) => engine.network_connect(&a.network, &a.container, &a.alias)?,
        NetworkCommand::Disconnect(a) => engine.network_disconnect(&a.network, &a.container)?,
    }
    Ok(0)
}

/// `berth port CTR [PORT[/PROTO]]`.
pub fn port(engine: &mut Engine, a: &PortArgs) -> Result<u8> {
    let bindings = engine.container_ports(&a.container)?;
    let want = a.port.as_deref().map(|p| match p.split_once('/') {
        Some((n, proto)) => (n.to_string(), proto.to_ascii_lowercase()),
        None => (p.to_string(), "tcp".to_string()),
    });
    let mut shown = 0;
    for b in &bindings {
        match &want {
            Some((n, proto)) => {
                if b.container_port.to_string() == *n && b.proto.as_str() == proto {
                    println!("{}:{}", b.host_ip, b.host_port);
                    shown += 1;
                }
            }
            None => {
                println!("{b}");
                shown += 1;
            }
        }
    }
    if shown == 0 {
        if let Some(p) = &a.port {
            bail!("no public port {p:?} published for {}", a.container);
        }
    }
    Ok(0)
}
