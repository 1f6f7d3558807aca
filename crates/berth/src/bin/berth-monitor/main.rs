//! berth-monitor: one small process per detached container, like podman's
//! conmon. It owns the container's stdout/stderr (or pty), writes them to a
//! JSON-lines log, waits for the container's exit status as its
//! subreaper, and asks `berth` what to do next (record, clean up, restart).
//!
//! All container logic stays in the `berth` binary (`berth __start`,
//! `berth __exited`); this binary only moves bytes and waits, so that an
//! idle monitor costs little memory. It depends on libc alone.

mod attach;
mod log;
mod sys;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attach::Attach;
use log::{JsonLog, Stream};

struct Args {
    berth: OsString,
    root: OsString,
    run_root: OsString,
    id: String,
    log: OsString,
    max_size: u64,
    max_file: u32,
    tty: bool,
    /// The first life was started by the CLI before it exec'd us: the
    /// container's PID and the read ends of its output.
    first_pid: Option<i32>,
    out_fd: Option<RawFd>,
    err_fd: Option<RawFd>,
    pty_fd: Option<RawFd>,
    /// The write end of the container's stdin (`-i`), first life only.
    in_fd: Option<RawFd>,
    /// Where `berth attach` connects.
    attach: Option<OsString>,
    /// The attach socket, already listening (bound by the CLI).
    attach_fd: Option<RawFd>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let mut a = Args {
        berth: OsString::new(),
        root: OsString::new(),
        run_root: OsString::new(),
        id: String::new(),
        log: OsString::new(),
        max_size: 0,
        max_file: 1,
        tty: false,
        first_pid: None,
        out_fd: None,
        err_fd: None,
        pty_fd: None,
        in_fd: None,
        attach: None,
        attach_fd: None,
    };
    while let Some(flag) = it.next() {
        let flag = flag.to_string_lossy().into_owned();
        if flag == "--tty" {
            a.tty = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            v.to_string_lossy()
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--berth" => a.berth = v,
            "--root" => a.root = v,
            "--run-root" => a.run_root = v,
            "--id" => a.id = v.to_string_lossy().into_owned(),
            "--log" => a.log = v,
            "--log-max-size" => a.max_size = num()?,
            "--log-max-file" => a.max_file = num()?.max(1) as u32,
            "--pid" => a.first_pid = Some(num()? as i32),
            "--out-fd" => a.out_fd = Some(num()? as RawFd),
            "--err-fd" => a.err_fd = Some(num()? as RawFd),
            "--pty-fd" => a.pty_fd = Some(num()? as RawFd),
            "--in-fd" => a.in_fd = Some(num()? as RawFd),
            "--attach" => a.attach = Some(v),
            "--attach-fd" => a.attach_fd = Some(num()? as RawFd),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.berth.is_empty() || a.id.is_empty() || a.log.is_empty() {
        return Err(
            "usage: berth-monitor --berth PATH --root DIR --run-root DIR --id ID --log FILE".into(),
        );
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            std::process::exit(2);
        }
    };
    sys::detach();
    let code = run(&args);
    std::process::exit(code);
}

fn berth(a: &Args) -> Command {
    let mut c = Command::new(&a.berth);
    c.arg("--root")
        .arg(&a.root)
        .arg("--run-root")
        .arg(&a.run_root);
    c
}

/// One life of the container: start it, log it, wait for it. Returns the
/// wait status, or None when it could not be started.
fn one_life(a: &Args, log: &mut JsonLog, attach: &mut Option<Attach>) -> Option<i32> {
    let (pid_sock, child_sock) = sys::socketpair().ok()?;
    let mut cmd = berth(a);
    cmd.arg("__start")
        .arg(&a.id)
        .arg("--notify-fd")
        .arg(child_sock.as_raw_fd().to_string());
    cmd.stdin(Stdio::null());
    let mut readers: Vec<(OwnedFd, Stream)> = Vec::new();
    if a.tty {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        let (out_r, out_w) = sys::pipe().ok()?;
        let (err_r, err_w) = sys::pipe().ok()?;
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        readers.push((out_r, Stream::Stdout));
        readers.push((err_r, Stream::Stderr));
    }
    let mut helper = cmd.spawn().ok()?;
    drop(child_sock);
    // The helper sends the container's PID (and its pty master with -t).
    let msg = sys::recv_with_fd(&pid_sock);
    drop(cmd);
    let _ = helper.wait();
    let (pid, pty) = msg?;
    if let Some(m) = pty {
        if let Some(at) = attach.as_mut() {
            at.set_stdin(m.try_clone().ok());
        }
        readers.push((m, Stream::Stdout));
    }
    Some(pump(pid, &mut readers, log, attach))
}

/// Copies output into the log until the container has exited and its
/// streams are closed; returns the container's wait status.
fn pump(
    pid: i32,
    readers: &mut Vec<(OwnedFd, Stream)>,
    log: &mut JsonLog,
    attach: &mut Option<Attach>,
) -> i32 {
    let mut status: Option<i32> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(s) = sys::reap(pid) {
            status.get_or_insert(s);
            exited_at.get_or_insert_with(Instant::now);
        }
        let finished = (readers.is_empty() && status.is_some())
            // Processes left in the container die with its init; give any
            // stragglers a moment to close their ends, no more.
            || exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2));
        if finished {
            if let Some(at) = attach.as_mut() {
                at.close_clients();
                at.set_stdin(None);
            }
            return status.unwrap_or(255 << 8);
        }
        let mut fds: Vec<RawFd> = readers.iter().map(|(f, _)| f.as_raw_fd()).collect();
        let n_readers = fds.len();
        if let Some(at) = attach.as_ref() {
            fds.extend(at.fds());
        }
        let timeout = if status.is_some() { 100 } else { 1000 };
        let ready = sys::poll_read(&fds, timeout);
        let mut closed = Vec::new();
        for (i, is_ready) in ready.iter().enumerate() {
            if !is_ready {
                continue;
            }
            if i >= n_readers {
                if let Some(at) = attach.as_mut() {
                    at.ready(i - n_readers, &mut buf);
                }
                // Client indexes shift when one leaves: poll again.
                break;
            }
            let (fd, stream) = &readers[i];
            match sys::read(fd.as_raw_fd(), &mut buf) {
                Some(0) | None => closed.push(i),
                Some(n) => {
                    log.write(*stream, &buf[..n]);
                    if let Some(at) = attach.as_mut() {
                        at.broadcast(*stream, &buf[..n]);
                    }
                }
            }
        }
        for i in closed.into_iter().rev() {
            let (_, stream) = readers.remove(i);
            log.flush_partial(stream);
        }
    }
}

fn run(a: &Args) -> i32 {
    let mut log = match JsonLog::open(&a.log, a.max_size, a.max_file) {
        Ok(l) => l,
        Err(_) => return 1,
    };
    let _socket = RemoveOnDrop(a.attach.clone());
    let mut attach = match a.attach_fd {
        Some(fd) => {
            sys::cloexec(fd);
            Some(Attach::from_listener(sys::own(fd), a.tty))
        }
        None => a.attach.as_deref().and_then(|p| Attach::open(p, a.tty)),
    };
    if let (Some(at), Some(fd)) = (attach.as_mut(), a.in_fd) {
        sys::cloexec(fd);
        at.set_stdin(Some(sys::own(fd)));
    }
    if let (Some(at), Some(fd)) = (attach.as_mut(), a.pty_fd) {
        // The pty master carries input too.
        at.set_stdin(sys::dup(fd));
    }
    let mut first = a.first_pid.map(|pid| {
        let mut readers: Vec<(OwnedFd, Stream)> = Vec::new();
        if let Some(fd) = a.out_fd {
            readers.push((sys::own(fd), Stream::Stdout));
        }
        if let Some(fd) = a.err_fd {
            readers.push((sys::own(fd), Stream::Stderr));
        }
        if let Some(fd) = a.pty_fd {
            readers.push((sys::own(fd), Stream::Stdout));
        }
        for (fd, _) in &readers {
            sys::cloexec(fd.as_raw_fd());
        }
        (pid, readers)
    });
    loop {
        let status = match first.take() {
            Some((pid, mut readers)) => pump(pid, &mut readers, &mut log, &mut attach),
            None => match one_life(a, &mut log, &mut attach) {
                Some(s) => s,
                None => return 1,
            },
        };
        // Ask berth to record the exit, clean up and decide on a restart.
        let out = berth(a)
            .arg("__exited")
            .arg(&a.id)
            .arg("--status")
            .arg(status.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let Ok(out) = out else { return 1 };
        let text = String::from_utf8_lossy(&out.stdout);
        match text
            .trim()
            .strip_prefix("restart ")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            None => return 0,
        }
    }
}

/// Removes the attach socket however the monitor ends.
struct RemoveOnDrop(Option<OsString>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
