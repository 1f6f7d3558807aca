//! The `berth` command line: parses arguments and calls the engine.

mod cli;
mod cli_net;
mod commands;
mod format;

use std::process::ExitCode;

use clap::Parser;

/// Docker's exit code for errors of the engine itself.
const ENGINE_FAILURE: u8 = 125;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    if cli.command.enters_containers() {
        // The host binary is never what a container can open and rewrite
        // (CVE-2019-5736): returns only when already sealed.
        if let Err(e) = berth_sandbox::seal::reexec_sealed() {
            eprintln!("berth: running from a sealed copy of the berth binary: {e}");
            return ExitCode::from(ENGINE_FAILURE);
        }
    }
    // Nothing our caller left open reaches a container, the monitor, QEMU,
    // virtiofsd, a hook or berth-dns (CVE-2024-21626): see berth_sandbox::fds.
    // (After the re-exec: descriptors passed on purpose, `--notify-fd` and
    // the like, survive it.)
    berth_sandbox::fds::seal_inherited();
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("berth: {}", chain(&e));
            let code = e
                .downcast_ref::<berth_engine::EngineError>()
                .map(|e| e.exit_code())
                .unwrap_or(i32::from(ENGINE_FAILURE));
            ExitCode::from(u8::try_from(code).unwrap_or(ENGINE_FAILURE))
        }
    }
}

/// The error and its causes on one line, each cause once.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// clap's errors are several lines; berth prints one.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("berth: {first} (see 'berth --help')");
            ExitCode::from(ENGINE_FAILURE)
        }
    }
}
