//! berth-net: container networking without a daemon.
//!
//! - [`netlink`]: a small synchronous rtnetlink client (links, veth pairs,
//!   bridges, addresses, routes). No `ip` process per container.
//! - [`netns`]: network namespaces made before the container starts and
//!   kept as bind mounts, as CNI does; the sandbox joins them by path.
//! - [`ipam`]: IPv4 subnets, address allocation, MAC addresses.
//! - [`ports`]: `-p` parsing and port ranges.
//! - [`nft`]: berth's own nftables table (`ip berth`): masquerade for its
//!   subnets, DNAT maps for published ports; never touches other tables.
//! - [`tap`]: TAP devices whose descriptors QEMU gets.
//! - [`attach`]: bridges and container interfaces, built from the above.
//! - [`dns`]: the per-network name responder (`berth-dns`).

pub mod attach;
pub mod dns;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ports;
pub mod tap;

/// Errors are one line each and name what failed.
#[derive(thiserror::Error, Debug)]
pub enum NetError {
    #[error("{0}")]
    Invalid(String),
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        source: std::io::Error,
    },
    #[error("nft: {0}")]
    Nft(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, NetError>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

pub(crate) fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> NetError {
    let what = what.into();
    move |e| NetError::Io {
        what,
        source: e.into(),
    }
}
