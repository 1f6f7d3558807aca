//! The VM host process's event loop: the agent's frames, our stdio, the
//! signals we get, the API clients, QEMU's console and exit.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::{last_line, own_winsize, report_failure, Outcome, Phase, Raw, Vm};
use crate::conn::{read_some, write_all, HIGH_WATER};
use crate::proto::{self, Frame, Kind};

impl Vm {
    pub(super) fn run(&mut self) -> Outcome {
        let _raw = Raw::enter(self.tty);
        while self.outcome.is_none() {
            self.step();
        }
        self.api.close_all();
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        self.drain_console();
        let o = self.outcome.take().unwrap_or(Outcome {
            code: 255,
            reason: None,
        });
        if !self.retry_boot {
            if let Some(r) = self.ready.take() {
                report_failure(Some(r), &o);
            }
        }
        o
    }

    /// Sends the container's spec, with our terminal's size, the time and
    /// fresh randomness.
    pub(super) fn send_start(&mut self) {
        let Some(mut start) = self.start.take() else {
            return;
        };
        if self.tty {
            if let (Some(p), Some(ws)) = (start.spec.process_mut(), own_winsize()) {
                let size = oci_spec::runtime::BoxBuilder::default()
                    .height(u64::from(ws.rows))
                    .width(u64::from(ws.cols))
                    .build()
                    .ok();
                p.set_console_size(size);
            }
        }
        start.realtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        start.trace |= self.trace.is_some();
        let mut seed = vec![0u8; 64];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok()
        {
            start.seed = seed;
        }
        self.ctl.send(&Frame::json(Kind::Start, 0, &start));
        let wait = if self.restored { 20 } else { 60 };
        self.phase = Phase::Starting(Instant::now() + Duration::from_secs(wait));
    }

    fn drain_console(&mut self) {
        while let Ok(Some(d)) = read_some(self.console_r.as_fd(), 64 * 1024) {
            if d.is_empty() {
                break;
            }
            self.console.push(&d);
        }
        while let Ok(Some(d)) = read_some(self.qemu_err_r.as_fd(), 8192) {
            if d.is_empty() {
                break;
            }
            self.qemu_err.extend_from_slice(&d);
        }
    }

    fn step(&mut self) {
        let stdin = berth_sandbox::sys::std_fd(0);
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let ctl_flags = if self.ctl.pending() > 0 {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        fds.push(PollFd::new(self.ctl.fd(), ctl_flags));
        fds.push(PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.console_r.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.qemu_err_r.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.api.listener_fd(), PollFlags::POLLIN));
        let read_stdin = self.stdin_open && self.ctl.pending() < HIGH_WATER;
        fds.push(PollFd::new(
            stdin,
            if read_stdin {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            },
        ));
        let clients = self.api.client_fds();
        for (_, fd, wants_out) in &clients {
            let mut f = PollFlags::POLLIN;
            if *wants_out {
                f |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(*fd, f));
        }
        let chans: Vec<u32> = clients.iter().map(|(c, _, _)| *c).collect();
        drop(clients);
        let waking = matches!(self.phase, Phase::Waking(_));
        let _ = poll(
            &mut fds,
            PollTimeout::from(if waking { 10u16 } else { 100u16 }),
        );
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        if ready[2] {
            if let Ok(Some(d)) = read_some(self.console_r.as_fd(), 64 * 1024) {
                self.console.push(&d);
            }
        }
        if ready[3] {
            if let Ok(Some(d)) = read_some(self.qemu_err_r.as_fd(), 8192) {
                self.qemu_err.extend_from_slice(&d);
            }
        }
        if ready[0] {
            match self.ctl.read_frames() {
                Ok(frames) => {
                    for f in frames {
                        self.on_agent_frame(f);
                    }
                }
                Err(e) => self.end(
                    125,
                    Some(format!("the guest agent broke the protocol: {e}")),
                ),
            }
            self.ctl.flush();
        }
        if ready[4] {
            self.api.accept();
        }
        if ready[5] && read_stdin {
            self.relay_stdin();
        }
        for (k, chan) in chans.iter().enumerate() {
            if ready[6 + k] {
                for f in self.api.read_client(*chan) {
                    self.ctl.send(&f);
                }
                self.api.flush(*chan);
            }
        }
        self.api.reap();
        if ready[1] {
            self.signals();
        }
        self.check_qemu();
        self.check_deadlines();
        self.ctl.flush();
    }

    fn relay_stdin(&mut self) {
        let mut buf = vec![0u8; proto::CHUNK];
        match nix::unistd::read(berth_sandbox::sys::std_fd(0), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                self.stdin_open = false;
                self.ctl.send(&Frame::new(Kind::StdinEof, 0, Vec::new()));
            }
            Ok(n) => self
                .ctl
                .send(&Frame::new(Kind::Stdin, 0, buf[..n].to_vec())),
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => {
                self.stdin_open = false;
                self.ctl.send(&Frame::new(Kind::StdinEof, 0, Vec::new()));
            }
        }
    }

    fn on_agent_frame(&mut self, f: Frame) {
        if f.chan != 0 {
            self.api.deliver(&f);
            return;
        }
        if matches!(self.phase, Phase::Waking(_)) {
            // The restored agent answered a ping (or greeted us).
            self.trace("restored agent answered");
            self.send_start();
            return;
        }
        match f.kind {
            Kind::Hello => match proto::check_hello(&f) {
                Ok(h) => {
                    self.trace(&format!("agent hello (guest uptime {} ms)", h.uptime_ms));
                    self.send_start();
                }
                Err(e) => self.end(125, Some(e.to_string())),
            },
            Kind::Started => {
                self.trace("workload started");
                self.started = true;
                self.phase = Phase::Running;
                self.stdin_open = self.interactive;
                if let Some(r) = self.ready.take() {
                    let _ = write_all(r.as_fd(), b"ok\n");
                }
            }
            Kind::Stdout => {
                let _ = write_all(berth_sandbox::sys::std_fd(1), &f.payload);
            }
            Kind::Stderr => {
                let _ = write_all(berth_sandbox::sys::std_fd(2), &f.payload);
            }
            Kind::Exited => {
                self.trace("workload exited");
                let code = f.parse::<proto::Exited>().map(|e| e.code).unwrap_or(255);
                self.stop(code, None);
            }
            Kind::Failed => {
                let failed = f.parse::<proto::Failed>().unwrap_or(proto::Failed {
                    code: 125,
                    message: "the container failed to start".into(),
                });
                if self.ready.is_none() {
                    let _ = write_all(
                        berth_sandbox::sys::std_fd(2),
                        format!("berth: {}\n", failed.message).as_bytes(),
                    );
                }
                self.stop(failed.code, Some(failed.message));
            }
            _ => {}
        }
    }

    fn trace(&self, what: &str) {
        if let Some(t0) = self.trace {
            eprintln!("berth-vm: {:>6} ms {what}", t0.elapsed().as_millis());
        }
    }

    /// The workload is done: ask the agent to power off.
    fn stop(&mut self, code: i32, reason: Option<String>) {
        if matches!(self.phase, Phase::Stopping(_)) {
            return;
        }
        self.ctl.send(&Frame::new(Kind::Shutdown, 0, Vec::new()));
        self.phase = Phase::Stopping(Instant::now() + Duration::from_secs(10));
        self.pending = Some(Outcome { code, reason });
    }

    /// Ends at once: QEMU is killed by `run`.
    fn end(&mut self, code: i32, reason: Option<String>) {
        if self.outcome.is_some() {
            return;
        }
        if let (Some(r), None) = (&reason, &self.ready) {
            let _ = write_all(
                berth_sandbox::sys::std_fd(2),
                format!("berth: {r}\n").as_bytes(),
            );
        }
        self.outcome = Some(Outcome { code, reason });
    }

    fn signals(&mut self) {
        while let Ok(Some(info)) = self.sfd.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == libc::SIGCHLD {
                continue;
            }
            if signo == libc::SIGWINCH {
                if let (true, Some(ws)) = (self.tty, own_winsize()) {
                    self.ctl.send(&Frame::json(Kind::Resize, 0, &ws));
                }
                continue;
            }
            match self.phase {
                Phase::Running => self.ctl.send(&Frame::json(
                    Kind::Signal,
                    0,
                    &proto::Signal { signal: signo },
                )),
                Phase::Booting(_) | Phase::Waking(_) | Phase::Starting(_) => self.end(
                    128 + signo,
                    Some(format!(
                        "stopped by signal {signo} before the container started"
                    )),
                ),
                Phase::Stopping(_) => {}
            }
        }
    }

    fn check_qemu(&mut self) {
        let status = match self.qemu.try_wait() {
            Ok(Some(st)) => st,
            _ => return,
        };
        self.trace("qemu exited");
        self.drain_console();
        if self.restored && !self.started {
            // The snapshot did not come back to life: boot instead.
            self.retry_boot = true;
            self.outcome = Some(Outcome {
                code: 125,
                reason: last_line(&self.qemu_err),
            });
            return;
        }
        if let Some(o) = self.pending.take() {
            self.outcome = Some(o);
            return;
        }
        use std::os::unix::process::ExitStatusExt;
        let (code, reason) = if let Some(p) = self.console.panic_line() {
            if self.started {
                // The console is the container's log: keep the panic there.
                let tail = self.console.panic_report().join("\n");
                let _ = write_all(
                    berth_sandbox::sys::std_fd(2),
                    format!("{tail}\n").as_bytes(),
                );
                (255, format!("the guest kernel crashed (kernel panic): {p}"))
            } else {
                (
                    125,
                    format!("the guest kernel crashed while booting (kernel panic): {p}"),
                )
            }
        } else if let Some(sig) = status.signal() {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            (
                128 + sig,
                format!("the VM's QEMU process was killed by signal {sig} ({name})"),
            )
        } else {
            let why = last_line(&self.qemu_err).unwrap_or_else(|| status.to_string());
            if self.started {
                (255, format!("QEMU exited before the container did: {why}"))
            } else {
                (125, format!("the VM did not boot: {why}"))
            }
        };
        self.end(code, Some(reason));
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let expired = match self.phase {
            Phase::Booting(t) | Phase::Waking(t) | Phase::Starting(t) | Phase::Stopping(t) => {
                now > t
            }
            Phase::Running => false,
        };
        if !expired {
            if matches!(self.phase, Phase::Waking(_)) {
                self.ctl
                    .send(&Frame::new(Kind::StatsRequest, 0, Vec::new()));
            }
            return;
        }
        match self.phase {
            Phase::Waking(_) | Phase::Starting(_) if self.restored => {
                // The snapshot did not come back to life: boot instead.
                self.retry_boot = true;
                self.outcome = Some(Outcome {
                    code: 125,
                    reason: None,
                });
            }
            Phase::Booting(_) | Phase::Waking(_) => {
                // microvm has no PCI; that line is noise, not a clue.
                let last = self
                    .console
                    .last_lines(1)
                    .pop()
                    .filter(|l| !l.contains("PCI: Fatal"))
                    .map(|l| format!(" (its console's last line: {})", l.trim()))
                    .unwrap_or_default();
                let secs = self.boot_timeout.as_secs();
                self.end(
                    125,
                    Some(format!(
                        "the guest's agent did not answer within {secs} s{last}"
                    )),
                );
            }
            Phase::Starting(_) => {
                self.end(
                    125,
                    Some("the guest's agent did not start the container within 60 s".into()),
                );
            }
            Phase::Stopping(_) => {
                let o = self.pending.take().unwrap_or(Outcome {
                    code: 255,
                    reason: None,
                });
                self.outcome = Some(o);
            }
            Phase::Running => {}
        }
    }
}
