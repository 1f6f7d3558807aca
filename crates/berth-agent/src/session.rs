//! One process of the container with its streams: the main process
//! (channel 0) or an exec session.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use berth_vm::conn::{read_some, set_nonblocking};
use berth_vm::proto::{Frame, Kind};
use nix::errno::Errno;

/// After the process exits, how long its output may still trickle in
/// (from children that outlive it) before the exit is reported.
const DRAIN: Duration = Duration::from_secs(1);

pub struct Session {
    pub chan: u32,
    pub pid: i32,
    /// Where stdin goes: a pipe, or the pty master.
    pub stdin: Option<OwnedFd>,
    /// What the process writes: stdout and stderr pipes, or the pty master.
    pub outputs: Vec<(OwnedFd, Kind)>,
    pub pty: bool,
    pending_in: Vec<u8>,
    stdin_eof: bool,
    pub code: Option<i32>,
    exited_at: Option<Instant>,
    /// Whether the host wants output and the exit (`exec -d` does not).
    pub report: bool,
}

impl Session {
    pub fn new(chan: u32, pid: i32, report: bool) -> Session {
        Session {
            chan,
            pid,
            stdin: None,
            outputs: Vec::new(),
            pty: false,
            pending_in: Vec::new(),
            stdin_eof: false,
            code: None,
            exited_at: None,
            report,
        }
    }

    /// Takes the pty master (read and write ends are the same file).
    pub fn with_pty(mut self, master: OwnedFd) -> std::io::Result<Session> {
        set_nonblocking(master.as_fd())?;
        let dup = master.try_clone()?;
        self.outputs.push((master, Kind::Stdout));
        self.stdin = Some(dup);
        self.pty = true;
        Ok(self)
    }

    pub fn add_output(&mut self, fd: OwnedFd, kind: Kind) -> std::io::Result<()> {
        set_nonblocking(fd.as_fd())?;
        self.outputs.push((fd, kind));
        Ok(())
    }

    pub fn set_stdin(&mut self, fd: OwnedFd) -> std::io::Result<()> {
        set_nonblocking(fd.as_fd())?;
        self.stdin = Some(fd);
        Ok(())
    }

    pub fn wants_stdin_write(&self) -> bool {
        self.stdin.is_some() && !self.pending_in.is_empty()
    }

    pub fn push_stdin(&mut self, data: &[u8]) {
        if self.stdin.is_some() && !self.stdin_eof {
            self.pending_in.extend_from_slice(data);
            self.write_stdin();
        }
    }

    /// End of input: close the pipe, or send ^D to a terminal.
    pub fn close_stdin(&mut self) {
        if self.pty {
            self.push_stdin(b"\x04");
        } else {
            self.stdin_eof = true;
            self.write_stdin();
        }
    }

    pub fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while !self.pending_in.is_empty() {
            match nix::unistd::write(fd, &self.pending_in) {
                Ok(n) => {
                    self.pending_in.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    // The reader is gone: drop what it would have read.
                    self.pending_in.clear();
                    if !self.pty {
                        self.stdin = None;
                    }
                    return;
                }
            }
        }
        if self.stdin_eof && !self.pty {
            self.stdin = None;
        }
    }

    /// Reads the output stream at `idx`; frames for the host go to `out`.
    /// Returns false when the stream ended.
    pub fn read_output(&mut self, idx: usize, out: &mut Vec<Frame>) -> bool {
        let (fd, kind) = &self.outputs[idx];
        match read_some(fd.as_fd(), berth_vm::proto::CHUNK) {
            Ok(Some(data)) => {
                if !data.is_empty() && self.report {
                    out.push(Frame::new(*kind, self.chan, data));
                }
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    pub fn close_output(&mut self, idx: usize) {
        self.outputs.remove(idx);
        if self.pty && self.outputs.is_empty() {
            self.stdin = None;
        }
    }

    pub fn set_exited(&mut self, code: i32) {
        self.code.get_or_insert(code);
        self.exited_at.get_or_insert_with(Instant::now);
    }

    /// Exited, and its output is drained (or has had its time).
    pub fn finished(&self) -> bool {
        match self.exited_at {
            Some(t) => self.outputs.is_empty() || t.elapsed() > DRAIN,
            None => false,
        }
    }

    pub fn resize(&self, rows: u16, cols: u16) {
        if let (true, Some(fd)) = (self.pty, &self.stdin) {
            let _ = berth_sandbox::sys::set_winsize(
                fd.as_fd(),
                berth_sandbox::sys::WinSize { rows, cols },
            );
        }
    }

    pub fn signal(&self, signo: i32) {
        if self.code.is_some() || self.pid <= 0 {
            return;
        }
        if let Ok(sig) = nix::sys::signal::Signal::try_from(signo) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig);
        }
    }
}
