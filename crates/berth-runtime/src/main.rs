//! `berth-runtime`: runc's command line over berth's sandbox. Parses,
//! sets up logging, calls the library; errors are one line on stderr (and
//! a JSON line in `--log` with `--log-format json`).

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use berth_runtime::create::CreateOpts;
use berth_runtime::exec::ExecOpts;
use berth_runtime::info::UpdateOpts;
use berth_runtime::{create, exec, info, lifecycle, log, spec, Result, RuntimeError, Store};
use clap::Parser;
use cli::{Cli, Cmd, CreateArgs};

fn create_opts<'a>(a: &'a CreateArgs, vm: bool) -> CreateOpts<'a> {
    CreateOpts {
        vm,
        id: &a.id,
        bundle: a.bundle.as_deref(),
        pid_file: a.pid_file.as_deref(),
        console_socket: a.console_socket.as_deref(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

fn parse_interval(s: &str) -> Result<Duration> {
    let bad = || RuntimeError::Usage(format!("invalid --interval {s:?} (e.g. 5s, 500ms)"));
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn dispatch(cli: Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        return Err(RuntimeError::Unsupported(
            "--systemd-cgroup: the systemd cgroup driver is not supported; berth-runtime manages cgroupfs itself (leave the option off)".into(),
        ));
    }
    if matches!(cli.cmd, Cmd::Create(_) | Cmd::Run { .. } | Cmd::Exec(_)) {
        // What enters a container never exposes the host binary
        // (CVE-2019-5736): returns only when already sealed.
        berth_sandbox::seal::reexec_sealed().map_err(|source| RuntimeError::Io {
            what: "running from a sealed copy of the berth-runtime binary".into(),
            source,
        })?;
    }
    // Nothing our caller left open reaches a hook, QEMU or a container by
    // accident (after the re-exec, which keeps them); `--preserve-fds`
    // reopens its range on purpose.
    berth_sandbox::fds::seal_inherited();
    let store = Store::new(&cli.root);
    let vm = match cli.isolation.as_deref() {
        None | Some("container") | Some("") => false,
        Some("vm") | Some("microvm") => true,
        Some(other) => {
            return Err(RuntimeError::Usage(format!(
                "--isolation {other:?}: expected container or vm"
            )))
        }
    };
    match cli.cmd {
        Cmd::Create(a) => create::create(&store, &create_opts(&a, vm), false).map(|_| 0),
        Cmd::Run {
            create: a,
            detach,
            keep,
        } => create::run(&store, &create_opts(&a, vm), detach, keep),
        Cmd::Start { id } => create::start(&store, &id).map(|()| 0),
        Cmd::State { id } => info::state(&store, &id).map(|()| 0),
        Cmd::Kill { all, id, signal } => {
            lifecycle::kill(&store, &id, signal.as_deref().unwrap_or("SIGTERM"), all).map(|()| 0)
        }
        Cmd::Delete { force, id } => lifecycle::delete(&store, &id, force).map(|()| 0),
        Cmd::Exec(a) => {
            if a.apparmor.is_some() || a.process_label.is_some() {
                return Err(RuntimeError::Unsupported(
                    "exec: --apparmor and --process-label are not supported".into(),
                ));
            }
            if a.cgroup.is_some() {
                return Err(RuntimeError::Unsupported(
                    "exec: --cgroup is not supported".into(),
                ));
            }
            let o = ExecOpts {
                process: a.process,
                tty: a.tty,
                detach: a.detach,
                pid_file: a.pid_file,
                console_socket: a.console_socket,
                cwd: a.cwd,
                env: a.env,
                user: a.user,
                additional_gids: a.additional_gids,
                caps: a.cap,
                no_new_privs: a.no_new_privs,
                preserve_fds: a.preserve_fds,
                ignore_paused: a.ignore_paused,
                args: a.command,
            };
            exec::exec(&store, &a.id, &o)
        }
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => info::ps(&store, &id, &format, &ps_args).map(|()| 0),
        Cmd::List { format, quiet } => info::list(&store, &format, quiet).map(|()| 0),
        Cmd::Pause { id } => lifecycle::pause(&store, &id, true).map(|()| 0),
        Cmd::Resume { id } => lifecycle::pause(&store, &id, false).map(|()| 0),
        Cmd::Events {
            stats,
            interval,
            id,
        } => info::events(&store, &id, stats, parse_interval(&interval)?).map(|()| 0),
        Cmd::Update(a) => {
            let o = UpdateOpts {
                resources: a.resources,
                memory: a.memory,
                memory_swap: a.memory_swap,
                memory_reservation: a.memory_reservation,
                cpu_shares: a.cpu_shares,
                cpu_quota: a.cpu_quota,
                cpu_period: a.cpu_period,
                cpuset_cpus: a.cpuset_cpus,
                cpuset_mems: a.cpuset_mems,
                pids_limit: a.pids_limit,
                blkio_weight: a.blkio_weight,
            };
            info::update(&store, &a.id, &o).map(|()| 0)
        }
        Cmd::Spec { bundle, rootless } => spec::spec(bundle.as_deref(), rootless).map(|()| 0),
        Cmd::VmHost { id, gate } => Ok(berth_runtime::vm::host(&store, &id, gate)),
        Cmd::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&spec::features()).unwrap_or_default()
            );
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let args = cli::normalize(std::env::args().collect());
    // `--version` / `-v` before any command, as runc.
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if a == "--version" || a == "-v" {
            print!("{}", berth_runtime::version_text());
            return ExitCode::SUCCESS;
        }
        if !a.starts_with('-') {
            break;
        }
        if cli::takes_value(a) {
            rest.next();
        }
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            if first.ends_with(':') {
                // "required arguments were not provided:" names them next.
                if let Some(next) = lines.next() {
                    first = format!("{first} {next}");
                }
            }
            log::error(&format!("{first} (see 'berth-runtime --help')"));
            return ExitCode::from(1);
        }
    };
    let json = match cli.log_format.as_str() {
        "json" => true,
        "text" => false,
        other => {
            log::error(&format!("invalid --log-format {other:?} (text or json)"));
            return ExitCode::from(1);
        }
    };
    if let Err(e) = log::init(cli.log.as_deref(), json, cli.debug) {
        eprintln!("berth-runtime: --log: {e}");
        return ExitCode::from(1);
    }
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            log::error(&e.to_string());
            ExitCode::from(e.exit_code().clamp(1, 255) as u8)
        }
    }
}
