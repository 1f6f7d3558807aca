//! berth's registry client: the OCI distribution spec (and Docker registry
//! v2) over HTTP(S), blocking, with std threads for parallel transfers.
//!
//! * [`Client`]: one registry; HTTPS with the system's roots, plain HTTP
//!   for loopback and insecure registries; anonymous, basic and bearer
//!   authentication through the `WWW-Authenticate` challenge.
//! * [`pull()`]: manifest (through an index or Docker manifest list, for a
//!   platform), config, then the missing layers in parallel, each verified
//!   and unpacked into the store as it arrives ([`berth_image::Ingest`]),
//!   with resume (HTTP range) and retries on dropped connections.
//! * [`push()`]: blobs (skipping those present, mounting across
//!   repositories, monolithic or chunked uploads), then the manifest.
//! * [`AuthFiles`]: credentials in berth's 0600 file and Docker's
//!   `config.json`.
//!
//! Every thread a pull or push starts is joined before it returns.

mod auth;
mod authfile;
mod blob;
mod client;
mod error;
pub mod manifest;
mod progress;
mod pull;
mod push;
mod transport;
mod workers;

pub use auth::{parse_challenge, parse_token, Challenge, Credentials};
pub use authfile::{normalize_registry, AuthFiles, DOCKER_HUB};
pub use blob::BlobReader;
pub use client::Client;
pub use error::RegistryError;
pub use manifest::Platform;
pub use progress::{BlobState, NoProgress, Progress};
pub use pull::{fetch_manifest, pull, Fetched, PullRequest, Pulled};
pub use push::{push, put_manifest, PushBlob, PushImage, PushRequest, Pushed};
pub use transport::{is_loopback, ClientOptions};
