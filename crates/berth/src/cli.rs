//! Argument definitions, shaped like Docker's CLI.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Run OCI images as containers or microVMs",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// State directory (images, container records).
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    pub root: PathBuf,
    /// Runtime directory (sockets, transient state).
    #[arg(
        long,
        global = true,
        env = "BERTH_RUN_ROOT",
        default_value = "/run/berth"
    )]
    pub run_root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and run a container in the foreground.
    Run(RunArgs),
    /// Create a container (or, with --bundle-only, just write its OCI bundle).
    Create(CreateArgs),
    /// List containers.
    Ps(PsArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Show low-level information on containers or images (JSON).
    Inspect(InspectArgs),
    /// List images.
    Images(ImagesArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Log in to a registry (credentials are checked, then saved).
    Login(LoginArgs),
    /// Forget the credentials for a registry.
    Logout(LogoutArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Show how berth runs on this host.
    Info,
    /// Start stopped containers.
    Start(StartArgs),
    /// Stop running containers (stop signal, then SIGKILL after a timeout).
    Stop(StopArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Send a signal to running containers.
    Kill(KillArgs),
    /// Block until containers stop; print their exit codes.
    Wait(ContainersArgs),
    /// Freeze all processes of containers.
    Pause(ContainersArgs),
    /// Thaw paused containers.
    Unpause(ContainersArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Show a container's log.
    Logs(LogsArgs),
    /// Follow a running container's output until it stops.
    Attach(AttachArgs),
    /// Show the processes of a container.
    Top(TopArgs),
    /// Show containers' resource usage.
    Stats(StatsArgs),
    /// Show container events.
    Events(EventsArgs),
    /// Host-wide maintenance.
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(crate::cli_net::NetworkCommand),
    /// List a container's published ports.
    Port(crate::cli_net::PortArgs),
    /// Internal: run by berth-monitor to start a container.
    #[command(name = "__start", hide = true)]
    InternalStart(InternalStartArgs),
    /// Internal: run by berth-monitor when a container exited.
    #[command(name = "__exited", hide = true)]
    InternalExited(InternalExitedArgs),
    /// Internal: the host process of a VM container (QEMU and its agent).
    #[command(name = "__vm", hide = true)]
    InternalVm(InternalVmArgs),
}

#[derive(Args, Debug)]
pub struct InternalVmArgs {
    pub id: String,
    /// Gets "ok" once the workload runs, or "err CODE MESSAGE".
    #[arg(long)]
    pub ready_fd: Option<i32>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Mark containers whose processes are gone as exited, remove leftover
    /// mounts and cgroups, restart `always`/`unless-stopped` containers.
    Reconcile,
}

impl Command {
    /// Whether this command may put a process into a container: it then
    /// runs from a sealed view of the binary (`berth_sandbox::seal`).
    pub fn enters_containers(&self) -> bool {
        matches!(
            self,
            Command::Run(_)
                | Command::Container(ContainerCommand::Run(_))
                | Command::Start(_)
                | Command::Restart(_)
                | Command::Exec(_)
                | Command::InternalStart(_)
                | Command::InternalExited(_)
                | Command::System(SystemCommand::Reconcile)
        )
    }
}

#[derive(Args, Debug)]
pub struct ContainersArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Attach to the container's output and wait for it.
    #[arg(short, long)]
    pub attach: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Seconds to wait before killing the container.
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_hyphen_values = true
    )]
    pub time: Option<i64>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep standard input open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// CONTAINER COMMAND [ARG...]
    #[arg(required = true, trailing_var_arg = true, num_args = 2..)]
    pub container_and_command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub container: String,
    /// Keep following the log.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Only entries since this time (RFC 3339, seconds, or 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    pub container: String,
    /// Do not send our input to the container.
    #[arg(long)]
    pub no_stdin: bool,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Containers (default: all running).
    pub containers: Vec<String>,
    /// Print one sample and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Output: table (default) or json.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Events since this time (RFC 3339, seconds, or 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Events until this time; without it, keep streaming.
    #[arg(long)]
    pub until: Option<String>,
    /// KEY=VALUE: container, event, image, type.
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Output: json for one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InternalStartArgs {
    pub id: String,
    #[arg(long)]
    pub notify_fd: i32,
}

#[derive(Args, Debug)]
pub struct InternalExitedArgs {
    pub id: String,
    #[arg(long, allow_hyphen_values = true)]
    pub status: i32,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI image layout or `docker save` tarball (FILE or - for stdin).
    Import(ImportArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Show an image's details (JSON).
    Inspect(InspectArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Show a container's details (JSON).
    Inspect(InspectArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
    /// Create and run a container.
    Run(RunArgs),
    /// Create a container.
    Create(CreateArgs),
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation (berth never asks).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The archive, or - for standard input.
    pub file: String,
    /// Name the imported image (when the archive names none, or to override).
    #[arg(long)]
    pub tag: Option<String>,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// A template like '{{.State.Status}}' or '{{json .Config}}'.
    #[arg(short, long)]
    pub format: Option<String>,
    /// Only look at objects of this type (container or image).
    #[arg(long = "type")]
    pub typ: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// json, or a template like '{{.Repository}}:{{.Tag}}'.
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove even if containers use the image, or it has several names.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: only running).
    #[arg(short, long)]
    pub all: bool,
    /// json, or a template like '{{.ID}} {{.Names}}'.
    #[arg(long)]
    pub format: Option<String>,
    /// Only show IDs.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Kill and remove a running container.
    #[arg(short, long)]
    pub force: bool,
}

/// Options shared by `run` and `create`.
#[derive(Args, Debug, Default)]
pub struct ContainerOpts {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (K=V, or K to copy it from here).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Bind mount a volume (HOST:CONTAINER[:ro|rw]).
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount a tmpfs (PATH[:OPTIONS]).
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Keep standard input open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Overwrite the image's entrypoint.
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Log options: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Signal that stops the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL.
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    #[command(flatten)]
    pub net: crate::cli_net::NetOpts,
    /// Isolation: container (namespaces on the host kernel) or vm (a
    /// microVM with its own kernel). Default: the image's
    /// run.berth.isolation label, else berth's config file, else container.
    #[arg(long)]
    pub isolation: Option<String>,
    /// IMAGE [COMMAND [ARG...]]
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = false, num_args = 1..)]
    pub image_and_command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub pull: PullOpts,
    #[command(flatten)]
    pub opts: ContainerOpts,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Write a standalone OCI bundle (config.json + rootfs) to DIR instead
    /// of creating a container.
    #[arg(long, value_name = "DIR")]
    pub bundle_only: Option<PathBuf>,
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub pull: PullOpts,
    #[command(flatten)]
    pub opts: ContainerOpts,
}

/// TLS policy of commands that talk to a registry.
#[derive(Args, Debug, Default, Clone)]
pub struct TlsArgs {
    /// Require a verified HTTPS connection (default: yes, except for
    /// loopback and BERTH_INSECURE_REGISTRIES); false also allows plain HTTP.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_verify: Option<bool>,
}

/// `--pull` and `--platform` of `run` and `create`.
#[derive(Args, Debug, Default)]
pub struct PullOpts {
    /// Pull the image: missing (when not in the store), always or never.
    #[arg(long = "pull", value_name = "POLICY", default_value = "missing")]
    pub policy: berth_engine::registry::PullPolicy,
    /// Platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub name: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// NAME[:TAG]
    pub name: String,
    /// Print only the pushed reference.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry (default: docker.io).
    pub server: Option<String>,
    /// User name (asked for on a terminal when missing).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (insecure: it shows in the process list; use --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry (default: docker.io).
    pub server: Option<String>,
}
