//! The host process of one VM (`berth __vm ID`). To the rest of berth it
//! looks like a container's main process: the workload's stdout and stderr
//! are its own, its stdin (or terminal) goes to the workload, the signals it
//! gets are forwarded, and it exits with the workload's exit code.
//!
//! It starts QEMU, connects to the agent's port, waits for the agent's
//! greeting (with a deadline), sends the container's spec, relays, and on
//! the workload's exit asks the agent to power off. `exec` and `stats`
//! clients connect to `api.sock` in the run directory. If QEMU dies first
//! (killed, or the guest kernel panicked) the reason is returned and the
//! console's tail printed on stderr, which is the container's log.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::api::Api;
use crate::conn::{read_some, write_all, Conn, HIGH_WATER};
use crate::console::Console;
use crate::proto::{self, Frame, Kind};
use crate::qemu::Machine;
use crate::{io_err, VmError};

/// Everything needed to boot one VM and run its container.
pub struct Launch {
    pub machine: MachineSpec,
    /// Sockets live here (`ctl.sock`, `api.sock`); removed at the end.
    pub run_dir: PathBuf,
    pub console_log: PathBuf,
    pub start: proto::Start,
    pub tty: bool,
    /// How long the guest may take to greet us.
    pub boot_timeout: Duration,
    /// Gets "ok" once the workload runs, or "err CODE MESSAGE".
    pub ready: Option<OwnedFd>,
}

/// The owned parts of a [`Machine`].
pub struct MachineSpec {
    pub name: String,
    pub accel: crate::qemu::Accel,
    pub tsc_khz: u64,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: Vec<String>,
    pub image_disk: PathBuf,
    pub rw_disk: PathBuf,
    pub confine: bool,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    /// Why, when the VM ended abnormally (for the container's record).
    pub reason: Option<String>,
}

const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

#[derive(PartialEq, Eq)]
enum Phase {
    /// Waiting for the agent's greeting until the deadline.
    Booting(Instant),
    /// Spec sent, waiting for Started.
    Starting(Instant),
    Running,
    /// The workload ended (or failed); waiting for QEMU to exit.
    Stopping(Instant),
}

struct Vm {
    qemu: Child,
    console_r: OwnedFd,
    qemu_err_r: OwnedFd,
    qemu_err: Vec<u8>,
    console: Console,
    ctl: Conn,
    api: Api,
    sfd: SignalFd,
    phase: Phase,
    started: bool,
    interactive: bool,
    tty: bool,
    stdin_open: bool,
    ready: Option<OwnedFd>,
    /// The workload's result, final once QEMU has exited.
    pending: Option<Outcome>,
    outcome: Option<Outcome>,
    start: Option<proto::Start>,
    boot_timeout: Duration,
    /// `BERTH_VM_TRACE`: phase times on stderr.
    trace: Option<Instant>,
}

/// Boots the VM, runs the container, and returns how it ended. Never
/// leaves QEMU or the sockets behind.
pub fn run(mut l: Launch) -> Outcome {
    let run_dir = l.run_dir.clone();
    let ready = l.ready.take();
    let outcome = match boot(l) {
        Ok(mut vm) => {
            vm.ready = ready;
            vm.run()
        }
        Err(e) => {
            let o = Outcome {
                code: 125,
                reason: Some(e.to_string()),
            };
            report_failure(ready, &o);
            o
        }
    };
    let _ = std::fs::remove_dir_all(&run_dir);
    outcome
}

/// A failure before the workload ran goes to whoever waits for readiness,
/// else to our stderr.
fn report_failure(ready: Option<OwnedFd>, o: &Outcome) {
    let Some(reason) = &o.reason else { return };
    match ready {
        Some(r) => {
            let _ = write_all(r.as_fd(), format!("err {} {reason}\n", o.code).as_bytes());
        }
        None => {
            let _ = write_all(
                berth_sandbox::sys::std_fd(2),
                format!("berth: {reason}\n").as_bytes(),
            );
        }
    }
}

fn block_signals() -> Result<SignalFd, VmError> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGWINCH);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| io_err("blocking signals")(e.into()))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| io_err("creating a signalfd")(e.into()))
}

fn boot(l: Launch) -> Result<Vm, VmError> {
    crate::qemu::check()?;
    std::fs::create_dir_all(&l.run_dir)
        .map_err(io_err(format!("creating {}", l.run_dir.display())))?;
    let ctl_path = l.run_dir.join("ctl.sock");
    let api_path = l.run_dir.join("api.sock");
    let _ = std::fs::remove_file(&ctl_path);
    let sfd = block_signals()?;
    let m = &l.machine;
    let machine = Machine {
        name: m.name.clone(),
        accel: m.accel,
        tsc_khz: m.tsc_khz,
        memory_mib: m.memory_mib,
        vcpus: m.vcpus,
        kernel: &m.kernel,
        initrd: &m.initrd,
        append: m.append.clone(),
        drives: vec![
            crate::qemu::Drive {
                path: &m.image_disk,
                read_only: true,
                serial: crate::IMAGE_DISK_SERIAL,
            },
            crate::qemu::Drive {
                path: &m.rw_disk,
                read_only: false,
                serial: crate::RW_DISK_SERIAL,
            },
        ],
        control: Some(&ctl_path),
        confine: m.confine,
    };
    let (console_r, console_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("creating a pipe")(e.into()))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("creating a pipe")(e.into()))?;
    let mut cmd = machine.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(console_w))
        .stderr(Stdio::from(err_w));
    let mut qemu = cmd.spawn().map_err(io_err("starting qemu-system-x86_64"))?;
    drop(cmd);
    crate::conn::set_nonblocking(console_r.as_fd()).map_err(io_err("console pipe"))?;
    crate::conn::set_nonblocking(err_r.as_fd()).map_err(io_err("qemu stderr pipe"))?;
    // QEMU creates the control socket while it sets up its devices.
    let t0 = Instant::now();
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&ctl_path) {
            break s;
        }
        if let Ok(Some(st)) = qemu.try_wait() {
            let mut err = Vec::new();
            while let Ok(Some(d)) = read_some(err_r.as_fd(), 8192) {
                if d.is_empty() {
                    break;
                }
                err.extend_from_slice(&d);
            }
            return Err(VmError::Command {
                what: "starting the VM".into(),
                detail: last_line(&err).unwrap_or_else(|| st.to_string()),
            });
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = qemu.kill();
            let _ = qemu.wait();
            return Err(VmError::Invalid(
                "QEMU did not create its control socket within 10 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let ctl = Conn::new(stream.into()).map_err(io_err("the control socket"))?;
    let api = match Api::listen(&api_path) {
        Ok(a) => a,
        Err(e) => {
            let _ = qemu.kill();
            let _ = qemu.wait();
            return Err(e);
        }
    };
    Ok(Vm {
        qemu,
        console_r,
        qemu_err_r: err_r,
        qemu_err: Vec::new(),
        console: Console::new(&l.console_log),
        ctl,
        api,
        sfd,
        phase: Phase::Booting(Instant::now() + l.boot_timeout),
        started: false,
        interactive: l.start.interactive,
        tty: l.tty,
        stdin_open: false,
        ready: l.ready,
        pending: None,
        outcome: None,
        start: Some(l.start),
        boot_timeout: l.boot_timeout,
        trace: std::env::var_os("BERTH_VM_TRACE").map(|_| t0),
    })
}

fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| {
        l.trim()
            .trim_start_matches("qemu-system-x86_64: ")
            .to_string()
    })
}

/// The terminal size on our stdin, if it is a terminal.
fn own_winsize() -> Option<proto::Resize> {
    let ws = berth_sandbox::sys::get_winsize(berth_sandbox::sys::std_fd(0))?;
    (ws.rows > 0 && ws.cols > 0).then_some(proto::Resize {
        rows: ws.rows,
        cols: ws.cols,
    })
}

/// Raw mode on our stdin terminal (the host pty the engine gave us) while
/// relaying, so bytes pass untouched both ways.
struct Raw(Option<nix::sys::termios::Termios>);

impl Raw {
    fn enter(tty: bool) -> Raw {
        use nix::sys::termios;
        if !tty {
            return Raw(None);
        }
        let fd = berth_sandbox::sys::std_fd(0);
        let Ok(saved) = termios::tcgetattr(fd) else {
            return Raw(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(fd, termios::SetArg::TCSANOW, &raw);
        Raw(Some(saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let fd = berth_sandbox::sys::std_fd(0);
            let _ = nix::sys::termios::tcsetattr(fd, nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

impl Vm {
    fn run(&mut self) -> Outcome {
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
        if let Some(r) = self.ready.take() {
            report_failure(Some(r), &o);
        }
        o
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
        let _ = poll(&mut fds, PollTimeout::from(100u16));
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
        match f.kind {
            Kind::Hello => match proto::check_hello(&f) {
                Ok(h) => {
                    self.trace(&format!("agent hello (guest uptime {} ms)", h.uptime_ms));
                    if let Some(mut start) = self.start.take() {
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
                        self.ctl.send(&Frame::json(Kind::Start, 0, &start));
                        self.phase = Phase::Starting(Instant::now() + Duration::from_secs(60));
                    }
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
                Phase::Booting(_) | Phase::Starting(_) => self.end(
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
        if let Some(o) = self.pending.take() {
            self.outcome = Some(o);
            return;
        }
        use std::os::unix::process::ExitStatusExt;
        let (code, reason) = if let Some(p) = self.console.panic_line() {
            if self.started {
                // The console is the container's log: keep the panic there.
                let tail = self.console.last_lines(30).join("\n");
                let _ = write_all(
                    berth_sandbox::sys::std_fd(2),
                    format!("{tail}\n").as_bytes(),
                );
                (255, format!("the guest kernel panicked: {p}"))
            } else {
                (125, format!("the guest kernel panicked while booting: {p}"))
            }
        } else if let Some(sig) = status.signal() {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            (
                128 + sig,
                format!("the VM's QEMU process was killed by signal {sig} ({name})"),
            )
        } else {
            let why = last_line(&self.qemu_err).unwrap_or_else(|| status.to_string());
            let code = if self.started { 255 } else { 125 };
            (code, format!("QEMU exited before the container did: {why}"))
        };
        self.end(code, Some(reason));
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Booting(t) if now > t => {
                let last = self
                    .console
                    .last_lines(1)
                    .pop()
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
            Phase::Starting(t) if now > t => {
                self.end(
                    125,
                    Some("the guest's agent did not start the container within 60 s".into()),
                );
            }
            Phase::Stopping(t) if now > t => {
                let o = self.pending.take().unwrap_or(Outcome {
                    code: 255,
                    reason: None,
                });
                self.outcome = Some(o);
            }
            _ => {}
        }
    }
}
