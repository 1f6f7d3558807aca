//! The one error type of this crate: every message is one line that names
//! the registry or object and what was wrong with it.

use std::io;
use std::path::PathBuf;

/// Errors of registry operations.
#[derive(thiserror::Error, Debug)]
pub enum RegistryError {
    /// No connection could be made (refused, DNS, timeout), on any scheme
    /// the policy allows.
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },

    /// HTTP 401 after authenticating (or with no credentials to offer).
    #[error("unauthorized: {detail}")]
    Unauthorized { detail: String },

    /// HTTP 403.
    #[error("denied: {what}: requested access to the resource is denied{message}")]
    Denied { what: String, message: String },

    /// HTTP 404 for a manifest or blob.
    #[error("{what} not found{message}")]
    NotFound { what: String, message: String },

    /// HTTP 429.
    #[error("{what}: too many requests: the registry asks to retry later (HTTP 429){message}")]
    RateLimited { what: String, message: String },

    /// Any other unexpected HTTP status.
    #[error("{what}: registry answered HTTP {status}{message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },

    /// The connection failed in the middle of a request (after retries).
    #[error("{what}: {detail}")]
    Transport { what: String, detail: String },

    /// A manifest or config exceeds the size limit.
    #[error("{what} is too large ({size} bytes, limit {limit} bytes)")]
    TooLarge { what: String, size: u64, limit: u64 },

    /// A manifest or config is not the JSON it should be.
    #[error("{what} is not valid JSON: {error}")]
    InvalidJson {
        what: String,
        error: serde_json::Error,
    },

    /// A manifest, config or layer of a kind berth does not handle.
    #[error("{what} has unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },

    /// Content does not hash to the digest it was asked for by.
    #[error("{what} does not match its digest: expected {expected}, got content with {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// An index has no manifest for the requested platform.
    #[error("{what} has no image for platform {platform} (it has: {available})")]
    NoMatchingPlatform {
        what: String,
        platform: String,
        available: String,
    },

    /// A single-platform image is not for the platform asked for.
    #[error("{what} is for platform {actual}, not the requested {platform}")]
    PlatformMismatch {
        what: String,
        platform: String,
        actual: String,
    },

    /// A `--platform` value that does not parse.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64")]
    InvalidPlatform(String),

    /// The registry broke the protocol (a missing header, a bad token).
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },

    /// A credentials file cannot be read or written.
    #[error("credentials file {}: {detail}", path.display())]
    AuthFile { path: PathBuf, detail: String },

    /// Interactive input was required but not possible, or input was bad.
    #[error("{0}")]
    Input(String),

    /// A local file (a blob to push) cannot be read.
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    /// The content store refused content.
    #[error("{0}")]
    Store(#[from] berth_image::ImageError),
}

impl RegistryError {
    /// Whether retrying the same request may succeed: connection failures,
    /// 429 and 5xx answers other than 501.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } | RegistryError::RateLimited { .. } => true,
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 && *status != 501,
            _ => false,
        }
    }
}
