//! Blob download as a [`Read`] stream that survives dropped connections:
//! after a failure it asks again from the byte it got to (`Range`), or
//! from the start, skipping what it already gave out, when the registry
//! ignores ranges. Consecutive failures without progress are retried with
//! back-off up to the client's retry limit. It never yields more bytes
//! than the descriptor's size; verifying the digest is the reader's
//! consumer's job (the store does it as it writes).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::client::{backoff, check, header, Body, Client};
use crate::progress::{BlobState, Progress};
use crate::RegistryError;

/// A resumable download of one blob.
pub struct BlobReader<'c> {
    client: &'c Client,
    url: String,
    what: String,
    /// `registry/repo`, for messages.
    source: String,
    digest: String,
    size: u64,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
    failures: u32,
    progress: &'c dyn Progress,
    cancel: Option<&'c AtomicBool>,
    reported: u64,
}

/// An io::Error carrying a registry error's one-line message.
fn io_error(e: RegistryError) -> io::Error {
    io::Error::other(e.to_string())
}

impl<'c> BlobReader<'c> {
    /// A reader of blob `digest` (`size` bytes) of repository `repo`.
    pub fn new(
        client: &'c Client,
        repo: &str,
        digest: &str,
        size: u64,
        progress: &'c dyn Progress,
    ) -> BlobReader<'c> {
        BlobReader {
            client,
            url: format!("{}/v2/{repo}/blobs/{digest}", client.base_url()),
            what: format!("blob {digest} of {}/{repo}", client.registry()),
            source: format!("{}/{repo}", client.registry()),
            digest: digest.to_owned(),
            size,
            pos: 0,
            body: None,
            failures: 0,
            progress,
            cancel: None,
            reported: 0,
        }
    }

    /// Makes reads fail soon after `flag` is set (another transfer failed).
    pub fn cancel_on(mut self, flag: &'c AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Opens the body at `self.pos`.
    fn open(&mut self) -> Result<(), RegistryError> {
        let range = format!("bytes={}-", self.pos);
        let mut headers = vec![];
        if self.pos > 0 {
            headers.push(("Range", range.as_str()));
        }
        let resp = self
            .client
            .request("GET", &self.url, &headers, Body::Empty, &self.what)?;
        let resp = check(resp, &self.what)?;
        let partial = resp.status().as_u16() == 206;
        if partial {
            let start = header(&resp, "content-range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(self.pos) {
                return Err(RegistryError::Protocol {
                    what: self.what.clone(),
                    detail: format!("asked for bytes from {}, got a different range", self.pos),
                });
            }
        }
        let mut body = resp
            .into_body()
            .into_with_config()
            .limit(self.size + 1)
            .reader();
        if !partial && self.pos > 0 {
            // The registry ignored the range: skip what was already read.
            let skipped =
                io::copy(&mut (&mut body).take(self.pos), &mut io::sink()).map_err(|e| {
                    RegistryError::Transport {
                        what: self.what.clone(),
                        detail: e.to_string(),
                    }
                })?;
            if skipped != self.pos {
                return Err(RegistryError::Transport {
                    what: self.what.clone(),
                    detail: "connection closed early".into(),
                });
            }
        }
        self.body = Some(body);
        Ok(())
    }

    /// A download cut short.
    fn cut(&self, how: &str, cause: String) -> RegistryError {
        RegistryError::Transport {
            what: format!("download from {}", self.source),
            detail: format!("{how} after {} of {} bytes{cause}", self.pos, self.size),
        }
    }

    /// Counts a failure; `Err` when out of retries or when `e` is final.
    fn failed(&mut self, e: RegistryError) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if !e.is_transient() || self.failures > self.client.retries() {
            return Err(io_error(e));
        }
        self.progress.blob(
            &self.digest,
            self.size,
            BlobState::Retrying {
                attempt: self.failures,
                error: e.to_string(),
            },
        );
        std::thread::sleep(backoff(self.failures));
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(io::Error::other("cancelled: another transfer failed"));
            }
            if self.body.is_none() {
                if self.pos == self.size && self.size > 0 {
                    return Ok(0);
                }
                if let Err(e) = self.open() {
                    self.failed(e)?;
                    continue;
                }
            }
            let body = self.body.as_mut().expect("opened above");
            match body.read(buf) {
                Ok(0) if self.pos < self.size => {
                    let e = self.cut("the connection closed", String::new());
                    self.failed(e)?;
                }
                Ok(0) => return Ok(0),
                Ok(n) => {
                    if self.pos + n as u64 > self.size {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{} is larger than the {} bytes its descriptor says",
                                self.what, self.size
                            ),
                        ));
                    }
                    self.pos += n as u64;
                    self.failures = 0;
                    if self.pos - self.reported >= 512 * 1024 || self.pos == self.size {
                        self.reported = self.pos;
                        self.progress.blob(
                            &self.digest,
                            self.size,
                            BlobState::Transferring { done: self.pos },
                        );
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = self.cut("the connection failed", format!(" ({e})"));
                    self.failed(e)?;
                }
            }
        }
    }
}
