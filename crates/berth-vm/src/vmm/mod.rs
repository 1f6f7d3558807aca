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
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::api::Api;
use crate::conn::{read_some, write_all, Conn};
use crate::console::Console;
use crate::proto;
use crate::qemu::Machine;
use crate::{io_err, VmError};

mod relay;

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
    /// Restore a snapshot of a booted guest (kept in this directory)
    /// instead of booting; falls back to booting.
    pub snapshots: Option<PathBuf>,
    /// Cached files this VM boots from (its initramfs), kept from pruning
    /// while it lives.
    pub held: Vec<crate::cache::InUse>,
    /// Where to say how the VM started (restored from which snapshot, or
    /// booted and why), for `inspect`; also traced with `BERTH_VM_TRACE`.
    pub start_note: Option<PathBuf>,
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
    /// The image's read-only disk and the container's writable disk; none
    /// when the root is a host directory shared with virtiofs (see
    /// [`proto::Start::root_share`]).
    pub disks: Option<(PathBuf, PathBuf)>,
    /// QEMU's seccomp sandbox and the uid:gid it drops to (which must be
    /// able to open `rw_disk` again after restoring a snapshot).
    pub confine: Option<(u32, u32)>,
    /// One TAP device per network card; kept open for the VM's life (a
    /// fallback boot after a failed restore needs them again).
    pub nics: Vec<OwnedFd>,
    /// Host directories for the guest, each with its virtiofsd's socket.
    /// A VM with shares boots (vhost-user devices cannot be restored from
    /// a snapshot).
    pub shares: Vec<(crate::virtiofs::Share, PathBuf)>,
}

impl MachineSpec {
    fn machine<'a>(&'a self, ctl: &'a Path) -> Machine<'a> {
        Machine {
            name: self.name.clone(),
            accel: self.accel,
            tsc_khz: self.tsc_khz,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            kernel: &self.kernel,
            initrd: &self.initrd,
            append: self.append.clone(),
            drives: self
                .disks
                .iter()
                .flat_map(|(image, rw)| {
                    [
                        crate::qemu::Drive {
                            path: image,
                            read_only: true,
                            serial: crate::IMAGE_DISK_SERIAL,
                            fds: Vec::new(),
                        },
                        crate::qemu::Drive {
                            path: rw,
                            read_only: false,
                            serial: crate::RW_DISK_SERIAL,
                            fds: Vec::new(),
                        },
                    ]
                })
                .collect(),
            control: Some(ctl),
            confine: self.confine,
            qmp: None,
            incoming_fd: None,
            nics: self
                .nics
                .iter()
                .map(|f| Some(std::os::fd::AsRawFd::as_raw_fd(f)))
                .collect(),
            shares: self
                .shares
                .iter()
                .map(|(s, sock)| (s.tag.clone(), sock.as_path()))
                .collect(),
        }
    }
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
    /// Restored from a snapshot: pinging the agent (what is sent before
    /// the guest's state is loaded is lost) until it answers, then Start.
    Waking(Instant),
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
    /// Restored from a snapshot: a failure before the workload runs means
    /// the snapshot is bad, and the caller boots instead.
    restored: bool,
    retry_boot: bool,
    /// `BERTH_VM_TRACE`: phase times on stderr.
    trace: Option<Instant>,
}

/// Boots the VM (or restores a booted one), runs the container, and
/// returns how it ended. Never leaves QEMU or the sockets behind.
pub fn run(mut l: Launch) -> Outcome {
    let run_dir = l.run_dir.clone();
    let mut ready = l.ready.take();
    let t0 = Instant::now();
    let mut outcome = None;
    // Kept until the VM is gone; each also exits when QEMU disconnects.
    let mut daemons = Vec::new();
    if !l.machine.shares.is_empty() {
        // vhost-user devices cannot be restored from a snapshot.
        l.snapshots = None;
        if let Err(e) = std::fs::create_dir_all(&run_dir) {
            return failed(ready, io_err(format!("creating {}", run_dir.display()))(e));
        }
    }
    for (share, sock) in &l.machine.shares {
        match crate::virtiofs::start(share, sock) {
            Ok(d) => daemons.push(d),
            Err(e) => {
                drop(daemons);
                let _ = std::fs::remove_dir_all(&run_dir);
                return failed(ready, e);
            }
        }
    }
    let trace = std::env::var_os("BERTH_VM_TRACE").is_some();
    let mut note = if !l.machine.shares.is_empty() {
        "booted: a VM with volumes cannot be restored (vhost-user is not migratable)".to_string()
    } else {
        "booted: snapshots are off".to_string()
    };
    if let Some(dir) = l.snapshots.clone() {
        let ctl = run_dir.join("ctl.sock");
        let snap = crate::snapshot::ensure(&dir, &l.machine.machine(&ctl)).map(|(path, held)| {
            l.held.push(held);
            path
        });
        if trace {
            eprintln!(
                "berth-vm: {:>6} ms snapshot {}",
                t0.elapsed().as_millis(),
                match &snap {
                    Ok(p) => p.display().to_string(),
                    Err(e) => e.to_string(),
                }
            );
        }
        match snap {
            Err(e) => note = format!("booted: no snapshot: {e}"),
            Ok(snap) => {
                note = format!("restored from {}", snap.display());
                write_note(&l, trace, &note);
                let failed = match boot(&l, Some(&snap)) {
                    Ok(mut vm) => {
                        vm.ready = ready.take();
                        let o = vm.run();
                        if vm.retry_boot {
                            ready = vm.ready.take();
                            // The guest did not come back to life: the
                            // snapshot is bad, whoever uses it.
                            crate::snapshot::discard(&snap);
                            let why = o
                                .reason
                                .unwrap_or_else(|| "the restored agent did not answer".into());
                            Some(format!("{why}; the snapshot was discarded"))
                        } else {
                            outcome = Some(o);
                            None
                        }
                    }
                    // QEMU refused to start: this VM's problem (kept).
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = failed {
                    note = format!("booted: restoring {} failed: {why}", snap.display());
                }
            }
        }
    }
    if outcome.is_none() {
        write_note(&l, trace, &note);
    }
    let outcome = match outcome {
        Some(o) => o,
        None => match boot(&l, None) {
            Ok(mut vm) => {
                vm.ready = ready;
                vm.run()
            }
            Err(e) => failed(ready, e),
        },
    };
    drop(daemons);
    let _ = std::fs::remove_dir_all(&run_dir);
    outcome
}

/// Says how the VM started (see [`Launch::start_note`]).
fn write_note(l: &Launch, trace: bool, note: &str) {
    if trace {
        eprintln!("berth-vm: {note}");
    }
    if let Some(p) = &l.start_note {
        let _ = std::fs::write(p, note);
    }
}

/// The VM could not be started (125), said as [`report_failure`] does.
fn failed(ready: Option<OwnedFd>, e: VmError) -> Outcome {
    let o = Outcome {
        code: 125,
        reason: Some(e.to_string()),
    };
    report_failure(ready, &o);
    o
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

fn drain(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(d)) = read_some(fd.as_fd(), 8192) {
        if d.is_empty() {
            break;
        }
        out.extend_from_slice(&d);
    }
    out
}

/// Starts QEMU (restoring `snapshot` if given) and connects to the agent.
fn boot(l: &Launch, snapshot: Option<&Path>) -> Result<Vm, VmError> {
    crate::qemu::check()?;
    std::fs::create_dir_all(&l.run_dir)
        .map_err(io_err(format!("creating {}", l.run_dir.display())))?;
    let ctl_path = l.run_dir.join("ctl.sock");
    let api_path = l.run_dir.join("api.sock");
    let _ = std::fs::remove_file(&ctl_path);
    let sfd = block_signals()?;
    let mut machine = l.machine.machine(&ctl_path);
    let snap_file = match snapshot {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(io_err(format!("opening {}", p.display())))?;
            let fd: OwnedFd = f.into();
            // Only QEMU inherits it: we are single-threaded.
            berth_sandbox::sys::set_cloexec(std::os::fd::AsRawFd::as_raw_fd(&fd), false)
                .map_err(io_err("passing the snapshot to QEMU"))?;
            machine.incoming_fd = Some(std::os::fd::AsRawFd::as_raw_fd(&fd));
            Some(fd)
        }
        None => None,
    };
    let (console_r, console_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("creating a pipe")(e.into()))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("creating a pipe")(e.into()))?;
    // The disks go to QEMU open (see qemu::Drive::fds).
    let mut disks = Vec::new();
    for d in &mut machine.drives {
        for write in [false, true]
            .into_iter()
            .take(if d.read_only { 1 } else { 2 })
        {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(write)
                .open(d.path)
                .map_err(io_err(format!("opening {}", d.path.display())))?;
            let fd: OwnedFd = f.into();
            d.fds.push(std::os::fd::AsRawFd::as_raw_fd(&fd));
            disks.push(fd);
        }
    }
    let mut cmd = machine.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(console_w))
        .stderr(Stdio::from(err_w));
    let t0 = Instant::now();
    // Only QEMU inherits the TAP devices: we are single-threaded.
    let inherit = |on: bool| {
        for f in l.machine.nics.iter().chain(&disks) {
            let _ = berth_sandbox::sys::set_cloexec(std::os::fd::AsRawFd::as_raw_fd(f), !on);
        }
    };
    inherit(true);
    let spawned = cmd.spawn();
    inherit(false);
    drop(cmd);
    drop(snap_file);
    drop(disks);
    let mut qemu = spawned.map_err(io_err("starting qemu-system-x86_64"))?;
    berth_sandbox::fault::point("vm:qemu");
    crate::conn::set_nonblocking(console_r.as_fd()).map_err(io_err("console pipe"))?;
    crate::conn::set_nonblocking(err_r.as_fd()).map_err(io_err("qemu stderr pipe"))?;
    // QEMU creates the control socket while it sets up its devices.
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&ctl_path) {
            break s;
        }
        if let Ok(Some(st)) = qemu.try_wait() {
            return Err(VmError::Command {
                what: "starting the VM".into(),
                detail: last_line(&drain(&err_r)).unwrap_or_else(|| st.to_string()),
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
    let mut vm = Vm {
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
        ready: None,
        pending: None,
        outcome: None,
        start: Some(l.start.clone()),
        boot_timeout: l.boot_timeout,
        restored: snapshot.is_some(),
        retry_boot: false,
        trace: std::env::var_os("BERTH_VM_TRACE").map(|_| t0),
    };
    if vm.restored {
        // The restored agent already greeted the snapshot's builder.
        vm.phase = Phase::Waking(Instant::now() + Duration::from_secs(15));
    }
    Ok(vm)
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
