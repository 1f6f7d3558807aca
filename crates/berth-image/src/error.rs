//! The one error type of this crate.
//!
//! Every message is a single lower-case line that names what was wrong and is
//! complete on its own: underlying `io::Error`s are part of the message (and
//! kept in a field for callers that want to match on them), not a `source()`,
//! so printing the cause chain never repeats a line.

use std::io;
use std::path::PathBuf;

/// Errors of the content store, image import and layer unpack.
#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    /// A file-system operation on a store or staging path failed.
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    /// The archive (or a layer stream) ended early or could not be parsed.
    #[error("archive is truncated or corrupt: {0}")]
    Corrupt(String),

    /// The archive is neither an OCI image layout nor a `docker save` tarball.
    #[error("archive has neither index.json nor manifest.json")]
    UnknownFormat,

    /// The archive names no image at all.
    #[error("archive contains no image")]
    NoImages,

    /// A blob that the archive refers to is not in the archive.
    #[error("{what} is missing from the archive (expected {path:?})")]
    MissingBlob { what: String, path: String },

    /// A blob's content does not hash to the digest it is referred to by.
    #[error("{what} digest mismatch: archive says {expected}, content is {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A blob's size differs from the size in its descriptor.
    #[error("{what} size mismatch: archive says {expected} bytes, content is {actual} bytes")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// Content fetched from a source other than an archive (a registry)
    /// does not hash to the digest its descriptor names.
    #[error("{what} does not match its digest: expected {expected}, got content with {actual}")]
    ContentMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// Content fetched from a source other than an archive is not the size
    /// its descriptor names.
    #[error("{what} is not the size its descriptor says: expected {expected} bytes, got {actual}")]
    ContentSize {
        what: String,
        expected: u64,
        actual: u64,
    },

    /// Reading content from its source (a registry connection) failed.
    #[error("cannot read {what}: {error}")]
    Source { what: String, error: io::Error },

    /// A layer's uncompressed content does not match the config's diff id.
    #[error(
        "layer {layer} does not match the image config: config says diff id {expected}, \
         uncompressed content is {actual}"
    )]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },

    /// The image config lists a different number of layers than the manifest.
    #[error("{what} has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCountMismatch {
        what: String,
        layers: usize,
        diff_ids: usize,
    },

    /// A JSON document is larger than we are willing to parse.
    #[error("{what} is too large ({size} bytes, limit {limit} bytes)")]
    TooLarge { what: String, size: u64, limit: u64 },

    /// A JSON document could not be parsed.
    #[error("{what} is not valid: {error}")]
    InvalidJson {
        what: String,
        error: serde_json::Error,
    },

    /// A descriptor has a media type this crate does not handle.
    #[error("{what} has unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },

    /// A digest is malformed or uses an algorithm other than sha256.
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    InvalidDigest(String),

    /// No manifest of an image index fits this host.
    #[error("{what} has no manifest for {platform} in the archive")]
    NoMatchingPlatform { what: String, platform: String },

    /// A layer entry name contains `..` (or otherwise leaves the layer).
    #[error("layer entry {entry:?} escapes the layer directory")]
    EntryEscapes { entry: String },

    /// A layer entry's parent path goes through a symlink.
    #[error("layer entry {entry:?} goes through a symlink")]
    EntryThroughSymlink { entry: String },

    /// A hardlink's target leaves the layer directory.
    #[error(
        "layer entry {entry:?} is a hardlink to {target:?}, which escapes the layer directory"
    )]
    HardlinkEscapes { entry: String, target: String },

    /// A hardlink's target path goes through a symlink.
    #[error("layer entry {entry:?} is a hardlink to {target:?}, which goes through a symlink")]
    HardlinkThroughSymlink { entry: String, target: String },

    /// A layer entry cannot be applied for a reason given in `reason`.
    #[error("layer entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },

    /// A system call on a layer entry failed.
    #[error("cannot {op} layer entry {entry:?}: {error}")]
    EntryIo {
        op: &'static str,
        entry: String,
        error: io::Error,
    },

    /// Unpacking or verifying one layer failed; `error` says how.
    #[error("layer {layer}: {error}")]
    Layer {
        layer: String,
        error: Box<ImageError>,
    },
}

impl ImageError {
    /// The innermost error: unwraps [`ImageError::Layer`] context.
    pub fn innermost(&self) -> &ImageError {
        match self {
            ImageError::Layer { error, .. } => error.innermost(),
            other => other,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            error,
        }
    }

    pub(crate) fn entry_io(op: &'static str, entry: &[u8], error: impl Into<io::Error>) -> Self {
        ImageError::EntryIo {
            op,
            entry: lossy(entry),
            error: error.into(),
        }
    }

    pub(crate) fn bad_entry(entry: &[u8], reason: impl Into<String>) -> Self {
        ImageError::BadEntry {
            entry: lossy(entry),
            reason: reason.into(),
        }
    }

    pub(crate) fn in_layer(self, layer: &str) -> Self {
        ImageError::Layer {
            layer: layer.to_owned(),
            error: Box::new(self),
        }
    }
}

/// A byte path as text for messages.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
