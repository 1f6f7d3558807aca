//! Progress reports of pulls and pushes, per blob. The library never
//! prints: a front end implements [`Progress`] (a display per layer on a
//! terminal, one line per finished layer otherwise).

/// What is happening to one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Queued behind other transfers.
    Waiting,
    /// Already in the store (pull) or in the registry (push).
    Exists,
    /// `done` of the blob's bytes transferred so far.
    Transferring { done: u64 },
    /// The connection failed; the transfer goes on after a pause.
    Retrying { attempt: u32, error: String },
    /// Pull: downloaded, verified and unpacked.
    Pulled,
    /// Push: uploaded.
    Pushed,
    /// Push: mounted from another repository of the same registry.
    Mounted { from: String },
    /// The transfer failed (the error ends the pull or push).
    Failed,
}

/// Receives progress; called from several threads at once.
pub trait Progress: Sync {
    /// Blob `digest` (of `size` bytes) is now in `state`.
    fn blob(&self, digest: &str, size: u64, state: BlobState);
}

/// Discards all progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn blob(&self, _: &str, _: u64, _: BlobState) {}
}
