//! `berth attach`: connects to the monitor's attach socket, shows the
//! container's output from now on and sends it our input.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::{io_err, Engine, EngineError};

impl Engine {
    /// The monitor's attach socket of container `id` (short, to stay under
    /// the 108-byte limit of socket paths).
    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.run_root
            .join("attach")
            .join(format!("{}.sock", &id[..12.min(id.len())]))
    }

    /// Streams output (and input, unless `no_stdin`) until the container
    /// stops; returns its exit code.
    pub fn attach(&mut self, key: &str, no_stdin: bool) -> Result<i32, EngineError> {
        let row = self.find(key)?;
        if row.state != "running" && row.state != "paused" {
            return Err(EngineError::Invalid(
                "you cannot attach to a stopped container, start it first".into(),
            ));
        }
        let tty = Self::config_of(&row).tty;
        let path = self.attach_socket(&row.id);
        let mut sock = UnixStream::connect(&path).map_err(io_err(format!(
            "connecting to the monitor of {} at {}",
            row.name,
            path.display()
        )))?;
        let _raw = if tty && !no_stdin {
            crate::run::RawMode::enter()
        } else {
            None
        };
        let mut stdin_open = !no_stdin;
        let stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err("poll")(e.into())),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let (sock_ready, in_ready) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
            drop(fds);
            if sock_ready {
                let n = sock.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                if tty {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                } else {
                    pending.extend_from_slice(&buf[..n]);
                    demux(&mut pending);
                }
            }
            if in_ready {
                match stdin.lock().read(&mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let _ = sock.write_all(&buf[..n]);
                    }
                }
            }
        }
        drop(_raw);
        self.wait(&row.id)
    }
}

/// Writes out the complete frames of Docker's attach stream in `pending`.
fn demux(pending: &mut Vec<u8>) {
    let mut used = 0;
    while pending.len() - used >= 8 {
        let h = &pending[used..used + 8];
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if pending.len() - used - 8 < len {
            break;
        }
        let data = &pending[used + 8..used + 8 + len];
        if h[0] == 2 {
            let _ = std::io::stderr().lock().write_all(data);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        used += 8 + len;
    }
    pending.drain(..used);
}
