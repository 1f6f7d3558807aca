//! The agent's event loop: frames from the host, the container's streams,
//! child exits.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_vm::conn::{Conn, HIGH_WATER};
use berth_vm::proto::{self, Frame, Kind};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::init;
use crate::session::Session;
use crate::AgentError;

const SECCOMP_CACHE: &str = "/run/berth/seccomp";

/// The running container.
struct Container {
    spec: oci_spec::runtime::Spec,
    pid: i32,
    cgroup: Option<berth_sandbox::Cgroup>,
}

pub struct Agent {
    port: Conn,
    sfd: SignalFd,
    sessions: BTreeMap<u32, Session>,
    container: Option<Container>,
    panic_after_start: bool,
    shutdown: bool,
    trace: bool,
}

fn setup_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Setup(e.to_string())
}

impl Agent {
    pub fn new(port: OwnedFd, panic_after_start: bool, trace: bool) -> Result<Agent, AgentError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(setup_err)?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(setup_err)?;
        let mut port = Conn::new(port).map_err(setup_err)?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        port.send(&Frame::json(
            Kind::Hello,
            0,
            &proto::Hello {
                version: proto::VERSION,
                kernel,
                uptime_ms: init::uptime_ms(),
            },
        ));
        Ok(Agent {
            port,
            sfd,
            sessions: BTreeMap::new(),
            container: None,
            panic_after_start,
            shutdown: false,
            trace,
        })
    }

    /// Runs until the host says `Shutdown` or goes away.
    pub fn run(&mut self) -> Result<(), AgentError> {
        loop {
            let host_gone = self.port.closed && self.container.is_some();
            if self.shutdown || host_gone {
                break;
            }
            if self.port.closed {
                // Before Start the host may go and come back: a snapshot
                // of this guest was taken, and this is a restored copy.
                self.port.closed = false;
                std::thread::sleep(Duration::from_millis(5));
            }
            self.step()?;
        }
        self.stop_everything();
        // Let the last frames reach the host before the lights go out.
        let until = Instant::now() + Duration::from_secs(1);
        while self.port.pending() > 0 && !self.port.closed && Instant::now() < until {
            let mut fds = [PollFd::new(self.port.fd(), PollFlags::POLLOUT)];
            let _ = poll(&mut fds, PollTimeout::from(50u16));
            self.port.flush();
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), AgentError> {
        let throttled = self.port.pending() > HIGH_WATER;
        // Index of every polled descriptor: (chan, Some(output idx) | None for stdin).
        let mut who: Vec<(u32, Option<usize>)> = Vec::new();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let mut port_flags = PollFlags::POLLIN;
        if self.port.pending() > 0 {
            port_flags |= PollFlags::POLLOUT;
        }
        fds.push(PollFd::new(self.port.fd(), port_flags));
        fds.push(PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN));
        for (chan, s) in &self.sessions {
            if !throttled {
                for (i, (fd, _)) in s.outputs.iter().enumerate() {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    who.push((*chan, Some(i)));
                }
            }
            if let (true, Some(fd)) = (s.wants_stdin_write(), &s.stdin) {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                who.push((*chan, None));
            }
        }
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(setup_err(format!("poll: {e}"))),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut out = Vec::new();
        // Outputs first, so that output written before an exit is sent first.
        let mut closed: Vec<(u32, usize)> = Vec::new();
        for (k, (chan, idx)) in who.iter().enumerate() {
            if !ready[k + 2] {
                continue;
            }
            let Some(s) = self.sessions.get_mut(chan) else {
                continue;
            };
            match idx {
                Some(i) => {
                    if !s.read_output(*i, &mut out) {
                        closed.push((*chan, *i));
                    }
                }
                None => s.write_stdin(),
            }
        }
        for (chan, i) in closed.into_iter().rev() {
            if let Some(s) = self.sessions.get_mut(&chan) {
                s.close_output(i);
            }
        }
        for f in &out {
            self.port.send(f);
        }
        if ready[1] {
            self.reap();
        }
        if ready[0] {
            for f in self.port.read_frames()? {
                self.handle(f);
            }
        }
        self.finish_sessions();
        self.port.flush();
        Ok(())
    }

    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sfd.read_signal() {}
        loop {
            let st = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => st,
            };
            let (pid, code) = match st {
                WaitStatus::Exited(p, c) => (p, c),
                WaitStatus::Signaled(p, s, _) => (p, 128 + s as i32),
                _ => continue,
            };
            for s in self.sessions.values_mut() {
                if s.pid == pid.as_raw() {
                    s.set_exited(code);
                }
            }
        }
    }

    fn finish_sessions(&mut self) {
        let done: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.finished())
            .map(|(c, _)| *c)
            .collect();
        for chan in done {
            let Some(s) = self.sessions.remove(&chan) else {
                continue;
            };
            if s.report {
                let code = s.code.unwrap_or(255);
                self.port
                    .send(&Frame::json(Kind::Exited, chan, &proto::Exited { code }));
            }
            // The container's init is gone, and its pid namespace with it:
            // nothing is left to run. Power off without waiting for the host.
            if chan == 0 {
                self.shutdown = true;
            }
        }
    }

    fn fail(&mut self, chan: u32, code: i32, message: String) {
        self.port.send(&Frame::json(
            Kind::Failed,
            chan,
            &proto::Failed { code, message },
        ));
    }

    fn handle(&mut self, f: Frame) {
        match f.kind {
            Kind::Start => match f.parse::<proto::Start>() {
                Ok(start) => self.start(start),
                Err(e) => self.fail(0, 125, e.to_string()),
            },
            Kind::Exec => match f.parse::<proto::Exec>() {
                Ok(exec) => self.exec(f.chan, exec),
                Err(e) => self.fail(f.chan, 125, e.to_string()),
            },
            Kind::Stdin => {
                if let Some(s) = self.sessions.get_mut(&f.chan) {
                    s.push_stdin(&f.payload);
                }
            }
            Kind::StdinEof => {
                if let Some(s) = self.sessions.get_mut(&f.chan) {
                    s.close_stdin();
                }
            }
            Kind::Signal => {
                if let (Ok(sig), Some(s)) = (f.parse::<proto::Signal>(), self.sessions.get(&f.chan))
                {
                    s.signal(sig.signal);
                }
            }
            Kind::Resize => {
                if let (Ok(r), Some(s)) = (f.parse::<proto::Resize>(), self.sessions.get(&f.chan)) {
                    s.resize(r.rows, r.cols);
                }
            }
            Kind::StatsRequest => {
                let stats = self.stats();
                self.port.send(&Frame::json(Kind::Stats, f.chan, &stats));
            }
            Kind::TopRequest => {
                let top = self.top();
                self.port.send(&Frame::json(Kind::Top, f.chan, &top));
            }
            Kind::Shutdown => self.shutdown = true,
            // Agent-to-host kinds coming back are a broken host: ignore.
            _ => {}
        }
    }

    fn start(&mut self, start: proto::Start) {
        if self.container.is_some() {
            return self.fail(0, 125, "the container was already started".into());
        }
        match self.start_container(&start) {
            Ok(session) => {
                let pid = session.pid;
                self.sessions.insert(0, session);
                self.port
                    .send(&Frame::json(Kind::Started, 0, &proto::Started { pid }));
                if self.panic_after_start {
                    self.port.flush();
                    std::thread::sleep(Duration::from_millis(200));
                    let _ = std::fs::write("/proc/sysrq-trigger", b"c");
                }
            }
            Err((code, message)) => self.fail(0, code, message),
        }
    }

    fn mark(&self, what: &str) {
        if self.trace {
            eprintln!("berth-agent: {:>5} ms {what}", init::uptime_ms());
        }
    }

    fn start_container(&mut self, start: &proto::Start) -> Result<Session, (i32, String)> {
        self.trace |= start.trace;
        self.mark("start");
        init::set_clock_and_seed(start.realtime_ns, &start.seed);
        self.mark("clock set, RNG reseeded");
        crate::net::configure(&start.interfaces).map_err(|e| (125, e.to_string()))?;
        self.mark("network configured");
        for v in &start.volumes {
            init::mount_volume(v).map_err(|e| (125, e.to_string()))?;
        }
        match &start.root_share {
            Some(tag) => init::mount_shared_root(tag),
            None => init::mount_rootfs(&start.image_fs),
        }
        .map_err(|e| (125, e.to_string()))?;
        self.mark("rootfs mounted");
        for f in &start.files {
            let p = Path::new(&f.path);
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(p, &f.contents)
                .map_err(|e| (125, format!("writing {}: {e}", f.path)))?;
        }
        if let Some((name, bytes)) = &start.seccomp_cache {
            if !name.contains('/') && !name.starts_with('.') {
                let _ = std::fs::create_dir_all(SECCOMP_CACHE);
                let _ = std::fs::write(Path::new(SECCOMP_CACHE).join(name), bytes);
            }
        }
        let spec = &start.spec;
        let layout = berth_sandbox::Layout::detect().map_err(|e| (125, e.to_string()))?;
        let linux = spec.linux().as_ref();
        let cgroup = match linux.and_then(|l| l.cgroups_path().clone()) {
            Some(p) => Some(
                berth_sandbox::Cgroup::create(
                    &layout,
                    &p,
                    linux.and_then(|l| l.resources().as_ref()),
                )
                .map_err(|e| (125, e.to_string()))?,
            ),
            None => None,
        };
        let tty = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let (stdio, ours) = stdio(tty, start.interactive).map_err(|e| (125, e))?;
        self.mark("spawning");
        let started = berth_sandbox::spawn(berth_sandbox::SpawnOptions {
            spec,
            rootfs: Path::new(init::ROOTFS),
            cgroup: cgroup.as_ref(),
            stdio,
            seccomp_cache: Some(Path::new(SECCOMP_CACHE)),
        });
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    let _ = cg.destroy();
                }
                return Err((e.exit_code(), e.to_string()));
            }
        };
        self.mark("spawned");
        let session = ours
            .into_session(0, started.pid.as_raw(), started.pty_master, true)
            .map_err(|e| (125, e.to_string()))?;
        self.container = Some(Container {
            spec: spec.clone(),
            pid: started.pid.as_raw(),
            cgroup,
        });
        Ok(session)
    }

    fn exec(&mut self, chan: u32, exec: proto::Exec) {
        let Some(c) = &self.container else {
            return self.fail(chan, 125, "the container is not running".into());
        };
        if chan == 0 || self.sessions.contains_key(&chan) {
            return self.fail(chan, 125, format!("exec channel {chan} is in use"));
        }
        let tty = exec.process.terminal().unwrap_or(false) && !exec.detach;
        let (stdio, ours) = if exec.detach {
            match null_stdio() {
                Ok(s) => (s, Ours::default()),
                Err(e) => return self.fail(chan, 125, e),
            }
        } else {
            match stdio(tty, exec.interactive) {
                Ok(v) => v,
                Err(e) => return self.fail(chan, 125, e),
            }
        };
        let started = berth_sandbox::exec(berth_sandbox::ExecOptions {
            pid: c.pid,
            spec: &c.spec,
            process: &exec.process,
            cgroup: None,
            stdio,
            seccomp_cache: Some(Path::new(SECCOMP_CACHE)),
            preserve_fds: 0,
        });
        match started {
            Ok(st) => {
                let pid = st.pid.as_raw();
                match ours.into_session(chan, pid, st.pty_master, !exec.detach) {
                    Ok(s) => {
                        self.sessions.insert(chan, s);
                        self.port
                            .send(&Frame::json(Kind::Started, chan, &proto::Started { pid }));
                    }
                    Err(e) => self.fail(chan, 125, e.to_string()),
                }
            }
            Err(e) => self.fail(chan, e.exit_code(), e.to_string()),
        }
    }

    fn stats(&self) -> proto::Stats {
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
            })
            .unwrap_or(0)
            * 1024;
        let Some(cg) = self.container.as_ref().and_then(|c| c.cgroup.as_ref()) else {
            return proto::Stats {
                memory_limit: mem_total,
                ..Default::default()
            };
        };
        let u = cg.usage();
        proto::Stats {
            cpu_ns: u.cpu_ns,
            memory: u.memory,
            memory_limit: u
                .memory_limit
                .filter(|l| *l < mem_total)
                .unwrap_or(mem_total),
            pids: u.pids,
        }
    }

    /// The container's processes (those of its cgroup: exec'd ones too).
    fn top(&self) -> proto::Top {
        let Some(cg) = self.container.as_ref().and_then(|c| c.cgroup.as_ref()) else {
            return proto::Top::default();
        };
        let boot = berth_sandbox::procfs::boot_time();
        let mut pids = cg.pids();
        pids.sort_unstable();
        proto::Top {
            processes: pids
                .into_iter()
                .filter_map(|p| berth_sandbox::procfs::proc_info(p, boot))
                .collect(),
        }
    }

    /// Kills what is left of the container and unmounts its disks.
    fn stop_everything(&mut self) {
        self.mark("shutting down");
        if let Some(c) = &self.container {
            if let Some(cg) = &c.cgroup {
                cg.kill_all();
                let _ = cg.destroy();
            }
        }
        self.sessions.clear();
        init::unmount_rootfs();
    }
}

/// Our ends of a new process's streams.
#[derive(Default)]
struct Ours {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Ours {
    fn into_session(
        self,
        chan: u32,
        pid: i32,
        pty: Option<OwnedFd>,
        report: bool,
    ) -> std::io::Result<Session> {
        let mut s = Session::new(chan, pid, report);
        if let Some(m) = pty {
            return s.with_pty(m);
        }
        if let Some(fd) = self.stdout {
            s.add_output(fd, Kind::Stdout)?;
        }
        if let Some(fd) = self.stderr {
            s.add_output(fd, Kind::Stderr)?;
        }
        if let Some(fd) = self.stdin {
            s.set_stdin(fd)?;
        }
        Ok(s)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

fn dev_null(write: bool) -> Result<OwnedFd, String> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(Into::into)
        .map_err(|e| format!("opening /dev/null: {e}"))
}

fn null_stdio() -> Result<berth_sandbox::Stdio, String> {
    Ok(berth_sandbox::Stdio {
        stdin: Some(dev_null(false)?),
        stdout: Some(dev_null(true)?),
        stderr: Some(dev_null(true)?),
        terminal: false,
    })
}

/// The new process's streams: a pty, or pipes (stdin from /dev/null
/// unless interactive).
fn stdio(tty: bool, interactive: bool) -> Result<(berth_sandbox::Stdio, Ours), String> {
    if tty {
        return Ok((
            berth_sandbox::Stdio {
                terminal: true,
                ..Default::default()
            },
            Ours::default(),
        ));
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin, ours_in) = if interactive {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (dev_null(false)?, None)
    };
    Ok((
        berth_sandbox::Stdio {
            stdin: Some(stdin),
            stdout: Some(out_w),
            stderr: Some(err_w),
            terminal: false,
        },
        Ours {
            stdin: ours_in,
            stdout: Some(out_r),
            stderr: Some(err_r),
        },
    ))
}
