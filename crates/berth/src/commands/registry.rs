//! `berth pull`, `push`, `login`, `logout`, and the pull policy of `run`
//! and `create`.

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use berth_engine::registry::{
    self as reg, Credentials, NoProgress, PullPolicy, PullSummary, RegistryOptions, DOCKER_HUB,
};
use berth_engine::{Engine, Reference};

use super::progress::{Display, Kind, Sink};
use crate::cli::{LoginArgs, LogoutArgs, PullArgs, PullOpts, PushArgs, TlsArgs};

fn options(tls: &TlsArgs, platform: Option<&str>) -> RegistryOptions {
    RegistryOptions {
        tls_verify: tls.tls_verify,
        platform: platform.map(str::to_owned),
        auth_files: None,
    }
}

/// The lines after the layers: digest and status.
fn pull_tail(display: &Display, s: &PullSummary) {
    for w in &s.warnings {
        eprintln!("berth: warning: {w}");
    }
    display.line(&format!("Digest: {}", s.digest));
    let status = if s.changed {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    display.line(&format!("Status: {status} {}", s.familiar));
}

/// The first line of a pull: `TAG: Pulling from PATH`.
fn pull_head(name: &str) -> Result<String> {
    let r = Reference::parse_tagged(name)?;
    let what = r.tag.as_deref().or(r.digest.as_deref()).unwrap_or("latest");
    let repo = r.familiar_repository();
    let path = if r.domain == DOCKER_HUB {
        repo
    } else {
        r.path.clone()
    };
    Ok(format!("{what}: Pulling from {path}"))
}

pub fn pull(engine: &mut Engine, a: &PullArgs) -> Result<u8> {
    let opts = options(&a.tls, a.platform.as_deref());
    if let Some(p) = &a.platform {
        reg::Platform::parse(p)?;
    }
    if a.quiet {
        let s = engine.pull(&a.name, &opts, &NoProgress)?;
        println!("{}", s.reference);
        return Ok(0);
    }
    let display = Display::new(Sink::Stdout, Kind::Pull);
    display.line(&pull_head(&a.name)?);
    let s = engine.pull(&a.name, &opts, &display)?;
    display.finish();
    pull_tail(&display, &s);
    println!("{}", s.reference);
    Ok(0)
}

/// Progress whose first lines wait for the first layer: a pull that fails
/// before it fetches anything prints only its error.
struct Deferred<'a> {
    display: &'a Display,
    pending: std::sync::Mutex<Vec<String>>,
}

impl Deferred<'_> {
    fn flush(&self) {
        let lines = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for l in lines {
            self.display.line(&l);
        }
    }
}

impl reg::Progress for Deferred<'_> {
    fn blob(&self, digest: &str, size: u64, state: reg::BlobState) {
        self.flush();
        self.display.blob(digest, size, state);
    }
}

/// Before `run`/`create`: pulls the image as `--pull` says, with progress
/// on stderr (stdout belongs to the container).
pub fn ensure_image(engine: &mut Engine, image: &str, p: &PullOpts) -> Result<()> {
    let opts = options(&p.tls, p.platform.as_deref());
    let display = Display::new(Sink::Stderr, Kind::Pull);
    let familiar = Reference::parse_tagged(image)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| image.to_owned());
    let progress = Deferred {
        display: &display,
        pending: std::sync::Mutex::new(Vec::new()),
    };
    let pulling = std::cell::Cell::new(false);
    let announce = || {
        pulling.set(true);
        let mut pending = progress.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.policy == PullPolicy::Missing {
            pending.push(format!("Unable to find image '{familiar}' locally"));
        }
        pending.extend(pull_head(image).ok());
    };
    let pulled = engine.ensure_image(image, p.policy, &opts, announce, &progress);
    let pulled = match pulled {
        Err(e) if p.policy == PullPolicy::Missing && pulling.get() => {
            return Err(anyhow::Error::new(e).context(format!(
                "no such image: {image}, and pulling {familiar} failed"
            )))
        }
        other => other?,
    };
    if let Some(s) = pulled {
        progress.flush();
        display.finish();
        pull_tail(&display, &s);
    }
    Ok(())
}

pub fn push(engine: &mut Engine, a: &PushArgs) -> Result<u8> {
    let opts = options(&a.tls, None);
    if a.quiet {
        let s = engine.push(&a.name, &opts, &NoProgress)?;
        println!("{}:{}", s.repository, s.tag);
        return Ok(0);
    }
    let r = Reference::parse_tagged(&a.name)?;
    let display = Display::new(Sink::Stdout, Kind::Push);
    display.line(&format!(
        "The push refers to repository [{}]",
        r.familiar_repository()
    ));
    let s = engine.push(&a.name, &opts, &display)?;
    display.finish();
    display.line(&format!("{}: digest: {} size: {}", s.tag, s.digest, s.size));
    Ok(0)
}

/// Reads a line from the terminal, echoing it or not.
fn prompt(label: &str, echo: bool) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = if echo {
        None
    } else {
        let saved = tcgetattr(&stdin).context("reading terminal settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
        Some(saved)
    };
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        eprintln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub fn login(a: &LoginArgs) -> Result<u8> {
    let server = a.server.as_deref().unwrap_or(DOCKER_HUB);
    let tty = std::io::stdin().is_terminal();
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let username = match &a.username {
        Some(u) => u.clone(),
        None if a.password_stdin || a.password.is_some() => {
            bail!("--username is required with --password or --password-stdin")
        }
        None if tty => prompt("Username: ", true)?,
        None => bail!("cannot perform an interactive login from a non-TTY device: use --username and --password-stdin"),
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Some(p) = &a.password {
        eprintln!("berth: warning: using --password on the command line is insecure; use --password-stdin");
        p.clone()
    } else if tty {
        prompt("Password: ", false)?
    } else {
        bail!("cannot perform an interactive login from a non-TTY device: use --password-stdin")
    };
    if username.is_empty() || password.is_empty() {
        bail!("username and password must not be empty");
    }
    let creds = Credentials { username, password };
    reg::login(server, creds, &options(&a.tls, None))?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(a: &LogoutArgs) -> Result<u8> {
    let server = a.server.as_deref().unwrap_or(DOCKER_HUB);
    let (name, removed) = reg::logout(server, &RegistryOptions::default())?;
    if removed {
        println!("Removing login credentials for {name}");
    } else {
        println!("Not logged in to {name}");
    }
    Ok(0)
}
