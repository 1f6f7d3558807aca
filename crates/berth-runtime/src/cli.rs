//! runc's command line. Go's flag package (which runc uses) also accepts
//! long options with one dash (`-root`) and booleans as `--detach=true`;
//! [`normalize`] rewrites those into what clap expects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berth-runtime",
    about = "berth-runtime: a runc-compatible OCI runtime over berth's sandbox",
    disable_version_flag = true
)]
pub struct Cli {
    /// Where container state lives (a tmpfs)
    #[arg(long, global = true, default_value = berth_runtime::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log file (errors also go to stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// text or json
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Also log debug messages
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (not supported)
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Isolation of every container this invocation creates: container
    /// (default: the bundle's `run.berth.isolation` annotation decides) or
    /// vm (for engines that cannot pass annotations: a second runtime
    /// entry with this argument, e.g. Docker's `runtimeArgs`)
    #[arg(long, global = true)]
    pub isolation: Option<String>,
    #[arg(long, hide = true)]
    pub rootless: Option<String>,
    #[arg(long, hide = true)]
    pub criu: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Bundle directory (default: the working directory)
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Pass descriptors 3..3+N into the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Enter the rootfs with MS_MOVE + chroot instead of pivot_root
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: berth never creates a session keyring
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// An OCI process JSON (- for stdin) instead of the command line
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID]
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    #[arg(long, hide = true)]
    pub apparmor: Option<String>,
    #[arg(long = "process-label", hide = true)]
    pub process_label: Option<String>,
    #[arg(long, hide = true)]
    pub cgroup: Option<String>,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// An OCI linux.resources JSON (- for stdin)
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub memory: Option<i64>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<i64>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<i64>,
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a container (its process waits for `start`)
    Create(CreateArgs),
    /// Create and start a container
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Do not delete the container after it exits
        #[arg(long)]
        keep: bool,
    },
    /// Start a created container
    Start { id: String },
    /// Print the OCI state of a container
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init, or to all
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a process in a running container
    Exec(ExecArgs),
    /// List the container's processes
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Resource usage (--stats: once) and OOM events
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Change a container's resource limits
    Update(UpdateArgs),
    /// Write a starting config.json
    Spec {
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        #[arg(long)]
        rootless: bool,
    },
    /// What this runtime supports (JSON)
    Features,
    /// A microVM container's host process (started by `create`)
    #[command(name = "__vm", hide = true)]
    VmHost {
        id: String,
        #[arg(long)]
        gate: i32,
    },
}

/// Long options that take a value (a following argument is theirs).
const VALUE_FLAGS: &[&str] = &[
    "root",
    "isolation",
    "log",
    "log-format",
    "rootless",
    "criu",
    "bundle",
    "pid-file",
    "console-socket",
    "preserve-fds",
    "process",
    "cwd",
    "env",
    "user",
    "additional-gids",
    "cap",
    "apparmor",
    "process-label",
    "cgroup",
    "format",
    "interval",
    "resources",
    "memory",
    "memory-swap",
    "memory-reservation",
    "cpu-shares",
    "cpu-quota",
    "cpu-period",
    "cpuset-cpus",
    "cpuset-mems",
    "pids-limit",
    "blkio-weight",
];

const BOOL_FLAGS: &[&str] = &[
    "debug",
    "systemd-cgroup",
    "no-pivot",
    "no-new-keyring",
    "detach",
    "keep",
    "all",
    "force",
    "tty",
    "no-new-privs",
    "ignore-paused",
    "quiet",
    "stats",
    "help",
];

const SHORT_VALUE_FLAGS: &[&str] = &["-b", "-p", "-e", "-u", "-g", "-c", "-f", "-r"];

/// Whether `arg` (as [`normalize`] leaves it) is an option whose value is
/// the next argument.
pub fn takes_value(arg: &str) -> bool {
    arg.strip_prefix("--")
        .is_some_and(|n| !n.contains('=') && VALUE_FLAGS.contains(&n))
}

/// Rewrites Go-style options (`-root x`, `--detach=true`) into clap's
/// form. Stops after the container ID of `exec` and `ps`, whose remaining
/// arguments belong to the command.
pub fn normalize(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(a0) = it.next() {
        out.push(a0);
    }
    let mut sub: Option<String> = None;
    let mut expect_value = false;
    while let Some(a) = it.next() {
        if expect_value {
            expect_value = false;
            out.push(a);
            continue;
        }
        if a == "--" {
            out.push(a);
            out.extend(it);
            break;
        }
        if let Some(body) = a.strip_prefix('-') {
            let body = body.strip_prefix('-').unwrap_or(body);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            if name.len() > 1 && BOOL_FLAGS.contains(&name) {
                match value {
                    Some("false") => {}
                    _ => out.push(format!("--{name}")),
                }
                continue;
            }
            if name.len() > 1 && VALUE_FLAGS.contains(&name) {
                match value {
                    Some(v) => out.push(format!("--{name}={v}")),
                    None => {
                        out.push(format!("--{name}"));
                        expect_value = true;
                    }
                }
                continue;
            }
            expect_value = SHORT_VALUE_FLAGS.contains(&a.as_str());
            out.push(a);
            continue;
        }
        match &sub {
            None => sub = Some(a.clone()),
            Some(s) if s == "exec" || s == "ps" => {
                // The container ID: the rest is the command (or ps options).
                out.push(a);
                out.extend(it);
                break;
            }
            Some(_) => {}
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn go_style_flags_become_clap_style() {
        assert_eq!(
            n(&[
                "r",
                "-root",
                "/x",
                "-log-format=json",
                "run",
                "-detach=true",
                "-keep=false",
                "id"
            ]),
            [
                "r",
                "--root",
                "/x",
                "--log-format=json",
                "run",
                "--detach",
                "id"
            ]
        );
    }

    #[test]
    fn exec_command_is_left_alone() {
        assert_eq!(
            n(&["r", "exec", "-t", "id", "ls", "-all", "--root"]),
            ["r", "exec", "-t", "id", "ls", "-all", "--root"]
        );
        assert_eq!(
            n(&["r", "exec", "--env", "A=1", "id", "sh"]),
            ["r", "exec", "--env", "A=1", "id", "sh"]
        );
    }

    #[test]
    fn options_after_the_id_parse() {
        let cli = Cli::try_parse_from(n(&["r", "delete", "id", "--force"])).unwrap();
        assert!(matches!(cli.cmd, Cmd::Delete { force: true, .. }));
        let cli = Cli::try_parse_from(n(&["r", "kill", "id", "KILL", "--all"])).unwrap();
        assert!(matches!(cli.cmd, Cmd::Kill { all: true, .. }));
        let cli = Cli::try_parse_from(n(&["r", "create", "id", "--bundle", "/b", "--root", "/r"]))
            .unwrap();
        assert_eq!(cli.root, PathBuf::from("/r"));
    }
}
