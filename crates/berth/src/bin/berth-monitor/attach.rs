//! `berth attach`: a unix socket on which clients receive the container's
//! output as it is logged (framed as Docker's attach stream: a header of
//! stream byte, three zero bytes and a big-endian u32 length, then the
//! bytes; raw bytes for a tty) and send input to its stdin.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::log::Stream;
use crate::sys;

pub struct Attach {
    listener: OwnedFd,
    clients: Vec<OwnedFd>,
    /// Write end of the container's stdin (with -i), or the pty master.
    stdin: Option<OwnedFd>,
    tty: bool,
}

impl Attach {
    pub fn open(path: &std::ffi::OsStr, tty: bool) -> Option<Attach> {
        let listener = sys::listen_unix(path).ok()?;
        Some(Attach {
            listener,
            clients: Vec::new(),
            stdin: None,
            tty,
        })
    }

    pub fn from_listener(listener: OwnedFd, tty: bool) -> Attach {
        Attach {
            listener,
            clients: Vec::new(),
            stdin: None,
            tty,
        }
    }

    /// Where client input goes from now on (None: discarded).
    pub fn set_stdin(&mut self, fd: Option<OwnedFd>) {
        self.stdin = fd;
    }

    /// Descriptors to poll: the listener, then each client.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.listener.as_raw_fd()];
        v.extend(self.clients.iter().map(|c| c.as_raw_fd()));
        v
    }

    /// Handles readiness of the `i`-th descriptor of [`fds`](Self::fds).
    pub fn ready(&mut self, i: usize, buf: &mut [u8]) {
        if i == 0 {
            if let Some(c) = sys::accept(&self.listener) {
                self.clients.push(c);
            }
            return;
        }
        let idx = i - 1;
        let Some(client) = self.clients.get(idx) else {
            return;
        };
        match sys::read(client.as_raw_fd(), buf) {
            Some(0) | None => {
                self.clients.remove(idx);
            }
            Some(n) => {
                if let Some(s) = &self.stdin {
                    sys::write_all(s.as_raw_fd(), &buf[..n]);
                }
            }
        }
    }

    /// Sends output to every client; a client that cannot keep up is dropped.
    pub fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(data.len() + 8);
        if !self.tty {
            frame.push(match stream {
                Stream::Stdout => 1,
                Stream::Stderr => 2,
            });
            frame.extend_from_slice(&[0, 0, 0]);
            frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        }
        frame.extend_from_slice(data);
        self.clients
            .retain(|c| sys::send_all(c.as_raw_fd(), &frame));
    }

    /// Ends every client's stream (the container stopped).
    pub fn close_clients(&mut self) {
        self.clients.clear();
    }
}
