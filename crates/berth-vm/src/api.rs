//! The VM host process's socket for `berth exec` and `berth stats`: each
//! client gets its own channel to the agent; frames are passed through with
//! the channel rewritten.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::conn::Conn;
use crate::proto::{Frame, Kind};
use crate::{io_err, VmError};

pub struct Api {
    listener: UnixListener,
    /// Guest channel → client.
    clients: BTreeMap<u32, Conn>,
    next_chan: u32,
}

impl Api {
    pub fn listen(path: &Path) -> Result<Api, VmError> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).map_err(io_err(format!("listening on {}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("setting the API socket non-blocking"))?;
        Ok(Api {
            listener,
            clients: BTreeMap::new(),
            next_chan: 1,
        })
    }

    pub fn listener_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// (channel, descriptor, wants to write) of every client, for poll.
    pub fn client_fds(&self) -> Vec<(u32, std::os::fd::BorrowedFd<'_>, bool)> {
        self.clients
            .iter()
            .map(|(c, conn)| (*c, conn.fd(), conn.pending() > 0))
            .collect()
    }

    /// Takes new connections; each gets a channel.
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let fd: OwnedFd = stream.into();
            if let Ok(conn) = Conn::new(fd) {
                let chan = self.next_chan;
                self.next_chan = self.next_chan.wrapping_add(1).max(1);
                self.clients.insert(chan, conn);
            }
        }
    }

    /// Reads a client's frames and returns them for the agent, on the
    /// client's channel. Only what a client may ask is passed on.
    pub fn read_client(&mut self, chan: u32) -> Vec<Frame> {
        let Some(conn) = self.clients.get_mut(&chan) else {
            return Vec::new();
        };
        let frames = match conn.read_frames() {
            Ok(f) => f,
            Err(_) => {
                conn.closed = true;
                Vec::new()
            }
        };
        frames
            .into_iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    Kind::Exec
                        | Kind::Stdin
                        | Kind::StdinEof
                        | Kind::Signal
                        | Kind::Resize
                        | Kind::StatsRequest
                        | Kind::TopRequest
                )
            })
            .map(|mut f| {
                f.chan = chan;
                f
            })
            .collect()
    }

    pub fn flush(&mut self, chan: u32) {
        if let Some(c) = self.clients.get_mut(&chan) {
            c.flush();
        }
    }

    /// A frame from the agent for the client on its channel.
    pub fn deliver(&mut self, f: &Frame) {
        if let Some(c) = self.clients.get_mut(&f.chan) {
            let mut f = f.clone();
            f.chan = 0;
            c.send(&f);
        }
    }

    /// Drops clients that hung up.
    pub fn reap(&mut self) {
        self.clients.retain(|_, c| !c.closed);
    }

    /// Tells every client the VM is gone (they see end of file).
    pub fn close_all(&mut self) {
        for c in self.clients.values_mut() {
            c.flush();
        }
        self.clients.clear();
    }
}
