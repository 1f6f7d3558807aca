//! One module per group of commands; each turns arguments into engine calls
//! and prints the result.

mod containers;
mod images;
mod info;
mod lifecycle;
pub(crate) mod logs;
mod network;
mod progress;
mod registry;
mod run;
mod stats;

use anyhow::Result;
use berth_engine::Engine;

use crate::cli::{Cli, Command, ContainerCommand, ImageCommand, SystemCommand};

pub fn dispatch(cli: Cli) -> Result<u8> {
    let open = || Engine::open(&cli.root, &cli.run_root);
    // State-changing commands first fix records whose processes are gone.
    let open_reconciled = || -> Result<Engine> {
        let mut e = open()?;
        e.reconcile_quick()?;
        Ok(e)
    };
    match cli.command {
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => run::run(&mut open()?, a),
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            run::create(&mut open()?, a)
        }
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            containers::ps(&mut open()?, &a)
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => {
            containers::rm(&mut open_reconciled()?, &a)
        }
        Command::Inspect(a) => containers::inspect(
            &mut open()?,
            &a.names,
            a.typ.as_deref(),
            a.format.as_deref(),
        ),
        Command::Container(ContainerCommand::Inspect(a)) => containers::inspect(
            &mut open()?,
            &a.names,
            Some("container"),
            a.format.as_deref(),
        ),
        Command::Container(ContainerCommand::Prune(_)) => lifecycle::prune(&mut open_reconciled()?),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(&mut open()?, &a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::remove(&mut open()?, &a),
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(&mut open()?, &a),
        Command::Image(ImageCommand::Import(a)) => images::import(&mut open()?, &a),
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => {
            registry::pull(&mut open()?, &a)
        }
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            registry::push(&mut open()?, &a)
        }
        Command::Login(a) => registry::login(&a),
        Command::Logout(a) => registry::logout(&a),
        Command::Image(ImageCommand::Inspect(a)) => {
            containers::inspect(&mut open()?, &a.names, Some("image"), a.format.as_deref())
        }
        Command::Info => info::info(&cli.root, &cli.run_root),
        Command::Start(a) => lifecycle::start(&mut open_reconciled()?, &a),
        Command::Stop(a) => lifecycle::stop(&mut open_reconciled()?, &a),
        Command::Restart(a) => lifecycle::restart(&mut open_reconciled()?, &a),
        Command::Kill(a) => lifecycle::kill(&mut open_reconciled()?, &a),
        Command::Wait(a) => lifecycle::wait(&mut open()?, &a),
        Command::Pause(a) => lifecycle::pause(&mut open_reconciled()?, &a, true),
        Command::Unpause(a) => lifecycle::pause(&mut open_reconciled()?, &a, false),
        Command::Rename(a) => lifecycle::rename(&mut open_reconciled()?, &a),
        Command::Logs(a) => logs::logs(&mut open()?, &a),
        Command::Exec(a) => lifecycle::exec(&mut open()?, a),
        Command::Attach(a) => logs::attach(&mut open()?, &a.container, a.no_stdin),
        Command::Events(a) => logs::events(&mut open()?, &a),
        Command::Top(a) => stats::top(&mut open()?, &a.container),
        Command::Stats(a) => stats::stats(&mut open()?, &a),
        Command::System(SystemCommand::Reconcile) => {
            let r = open()?.reconcile()?;
            for id in &r.marked_exited {
                println!("marked exited: {id}");
            }
            for id in &r.restarted {
                println!("restarted: {id}");
            }
            for what in &r.cleaned {
                println!("removed: {what}");
            }
            Ok(0)
        }
        Command::Network(c) => network::network(&mut open_reconciled()?, c),
        Command::Port(a) => network::port(&mut open()?, &a),
        Command::InternalStart(a) => lifecycle::internal_start(&mut open()?, &a),
        Command::InternalExited(a) => lifecycle::internal_exited(&mut open()?, &a),
        Command::InternalVm(a) => {
            let ready = a
                .ready_fd
                .map(berth_engine::lifecycle::inherited_fd)
                .transpose()?;
            Ok((open()?.run_vmm(&a.id, ready) & 0xff) as u8)
        }
    }
}
