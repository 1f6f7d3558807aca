//! A non-blocking framed connection for single-threaded poll loops: frames
//! queue up in memory and go out as the descriptor accepts them.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::proto::{Decoder, Frame, ProtoError};

/// Stop reading what feeds a connection once this much waits to go out.
pub const HIGH_WATER: usize = 4 << 20;

pub struct Conn {
    fd: OwnedFd,
    dec: Decoder,
    out: Vec<u8>,
    sent: usize,
    /// The peer hung up or the connection broke.
    pub closed: bool,
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

impl Conn {
    pub fn new(fd: OwnedFd) -> io::Result<Conn> {
        set_nonblocking(fd.as_fd())?;
        Ok(Conn {
            fd,
            dec: Decoder::default(),
            out: Vec::new(),
            sent: 0,
            closed: false,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Queues a frame and writes what the descriptor takes now.
    pub fn send(&mut self, f: &Frame) {
        if self.closed {
            return;
        }
        f.encode_into(&mut self.out);
        self.flush();
    }

    /// Writes queued bytes until the descriptor would block.
    pub fn flush(&mut self) {
        while self.sent < self.out.len() && !self.closed {
            match nix::unistd::write(&self.fd, &self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => self.closed = true,
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > (1 << 20) {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Reads what is available and returns the whole frames in it. End of
    /// file sets `closed`.
    pub fn read_frames(&mut self) -> Result<Vec<Frame>, ProtoError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.dec.push(&buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut frames = Vec::new();
        while let Some(f) = self.dec.next_frame()? {
            frames.push(f);
        }
        Ok(frames)
    }
}

/// Reads what is available from a non-blocking stream: `Ok(None)` at end
/// of file, an empty vector when nothing is there now.
pub fn read_some(fd: BorrowedFd<'_>, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; max];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(Some(Vec::new())),
            // A pty whose other side closed reads EIO: end of file.
            Err(Errno::EIO) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `data` to a (possibly non-blocking) descriptor, waiting
/// for it to drain when it is full.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
