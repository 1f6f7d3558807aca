//! Networking arguments: the options of `run`/`create`, `berth network`
//! and `berth port`.

use clap::{Args, Subcommand};

/// Network options of `run` and `create`.
#[derive(Args, Debug, Default)]
pub struct NetOpts {
    /// Network: bridge (the default), none, host, or a network's name.
    #[arg(long = "network", alias = "net", env = "BERTH_NETWORK")]
    pub network: Option<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp] (ranges: 8000-8009:80-89).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// DNS server for the container (replaces the host's).
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// DNS resolver option.
    #[arg(long = "dns-option")]
    pub dns_option: Vec<String>,
    /// Add a line to /etc/hosts (NAME:IP; host-gateway is the bridge's address).
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Another name for the container on its user network.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Show networks' details (JSON).
    Inspect(NetworkInspectArgs),
    /// Remove networks (refused while containers use them).
    #[command(alias = "remove")]
    Rm(NetworkRmArgs),
    /// Remove every network no container uses.
    Prune(NetworkPruneArgs),
    /// Connect a container to a network.
    Connect(NetworkConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(NetworkDisconnectArgs),
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// Subnet in CIDR form, e.g. 10.42.0.0/24 (default: a free one).
    #[arg(long)]
    pub subnet: Option<String>,
    /// The bridge's address (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Driver: only bridge.
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
}

#[derive(Args, Debug)]
pub struct NetworkLsArgs {
    /// Only show network IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// json, or a template like '{{.Name}}'.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetworkInspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// A template like '{{.IPAM}}'.
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetworkRmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NetworkPruneArgs {
    /// Do not ask for confirmation (berth never asks).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct NetworkConnectArgs {
    pub network: String,
    pub container: String,
    /// Another name for the container on this network.
    #[arg(long)]
    pub alias: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NetworkDisconnectArgs {
    pub network: String,
    pub container: String,
    /// Accepted for Docker compatibility.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// Only this port: PORT[/PROTO].
    pub port: Option<String>,
}
