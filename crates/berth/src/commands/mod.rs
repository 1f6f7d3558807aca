//! One module per group of commands; each turns arguments into engine calls
//! and prints the result.

mod containers;
mod images;
mod info;
mod run;

use anyhow::Result;
use berth_engine::Engine;

use crate::cli::{Cli, Command, ContainerCommand, ImageCommand};

pub fn dispatch(cli: Cli) -> Result<u8> {
    let open = || Engine::open(&cli.root, &cli.run_root);
    match cli.command {
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => run::run(&mut open()?, a),
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            run::create(&mut open()?, a)
        }
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            containers::ps(&mut open()?, &a)
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => {
            containers::rm(&mut open()?, &a)
        }
        Command::Inspect(a) => containers::inspect(&mut open()?, &a.names, a.typ.as_deref()),
        Command::Container(ContainerCommand::Inspect(a)) => {
            containers::inspect(&mut open()?, &a.names, Some("container"))
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(&mut open()?, &a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::remove(&mut open()?, &a),
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(&mut open()?, &a),
        Command::Image(ImageCommand::Import(a)) => images::import(&mut open()?, &a),
        Command::Image(ImageCommand::Inspect(a)) => {
            containers::inspect(&mut open()?, &a.names, Some("image"))
        }
        Command::Info => info::info(&cli.root, &cli.run_root),
    }
}
