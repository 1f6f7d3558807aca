//! `berth start|stop|restart|kill|wait|pause|unpause|rename`,
//! `container prune`, and the monitor's internal commands.

use anyhow::Result;
use berth_engine::Engine;

use crate::cli::{
    ContainersArgs, ExecArgs, InternalExitedArgs, InternalStartArgs, KillArgs, RenameArgs,
    StartArgs, StopArgs,
};

/// Runs `f` for each container, printing its name on success and one error
/// line per failure, as Docker does.
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<(), berth_engine::EngineError>) -> u8 {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    u8::from(failed)
}

pub fn start(engine: &mut Engine, a: &StartArgs) -> Result<u8> {
    if a.attach {
        let [one] = a.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        let since = berth_engine::now();
        let row = engine.start_detached(one)?;
        return crate::commands::logs::attach_and_wait(engine, &row.id, since);
    }
    Ok(each(&a.containers, |c| {
        engine.start_detached(c).map(|_| ())
    }))
}

pub fn stop(engine: &mut Engine, a: &StopArgs) -> Result<u8> {
    Ok(each(&a.containers, |c| engine.stop(c, a.time).map(|_| ())))
}

pub fn restart(engine: &mut Engine, a: &StopArgs) -> Result<u8> {
    Ok(each(&a.containers, |c| {
        engine.stop(c, a.time)?;
        engine.start_detached(c).map(|_| ())
    }))
}

pub fn kill(engine: &mut Engine, a: &KillArgs) -> Result<u8> {
    // A bad signal is refused before anything is touched.
    berth_engine::lifecycle::parse_signal(&a.signal)?;
    Ok(each(&a.containers, |c| {
        engine.kill(c, &a.signal).map(|_| ())
    }))
}

pub fn wait(engine: &mut Engine, a: &ContainersArgs) -> Result<u8> {
    let mut failed = false;
    for c in &a.containers {
        match engine.wait(c) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("berth: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

pub fn pause(engine: &mut Engine, a: &ContainersArgs, paused: bool) -> Result<u8> {
    Ok(each(&a.containers, |c| {
        engine.set_paused(c, paused).map(|_| ())
    }))
}

pub fn rename(engine: &mut Engine, a: &RenameArgs) -> Result<u8> {
    engine.rename(&a.container, &a.new_name)?;
    Ok(0)
}

pub fn prune(engine: &mut Engine) -> Result<u8> {
    let removed = engine.prune()?;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed containers: {}", removed.len());
    Ok(0)
}

pub fn internal_start(engine: &mut Engine, a: &InternalStartArgs) -> Result<u8> {
    let notify = berth_engine::lifecycle::inherited_fd(a.notify_fd)?;
    let code = engine.internal_start(&a.id, notify);
    Ok(u8::try_from(code).unwrap_or(1))
}

pub fn internal_exited(engine: &mut Engine, a: &InternalExitedArgs) -> Result<u8> {
    if let Some(ms) = engine.internal_exited(&a.id, a.status)? {
        println!("restart {ms}");
    }
    Ok(0)
}

pub fn exec(engine: &mut Engine, a: ExecArgs) -> Result<u8> {
    let mut it = a.container_and_command.into_iter();
    let container = it.next().unwrap_or_default();
    let env = a
        .env
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect();
    let cfg = berth_engine::exec::ExecConfig {
        cmd: it.collect(),
        env,
        user: a.user,
        workdir: a.workdir,
        interactive: a.interactive,
        tty: a.tty,
        detach: a.detach,
    };
    let code = engine.exec(&container, &cfg)?;
    Ok(u8::try_from(code & 0xff).unwrap_or(255))
}
