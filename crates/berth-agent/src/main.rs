//! berth-agent: PID 1 of a berth microVM.
//!
//! It mounts the pseudo filesystems, loads the kernel modules the host put
//! in the initramfs (virtio transport, disks, console port, erofs,
//! overlay), moves onto a tmpfs root, opens the virtio-serial port named
//! `berth.ctl` and greets the host. On `Start` it mounts the image disk and
//! the writable disk as an overlay and runs the container's OCI spec with
//! `berth-sandbox`, the crate the host uses for containers; then it relays
//! stdio, signals, window sizes, exec sessions and stats until the host
//! says `Shutdown`, and powers the VM off.
//!
//! It is single-threaded (the sandbox forks) and never exits: PID 1
//! exiting panics the kernel. Kernel arguments: `berth.poweroff` (power off
//! at once: the benchmark's floor and the KVM probe), `berth.test=hang`
//! and `berth.test=panic` (an unresponsive agent, a guest kernel panic
//! after the container started; for berth's tests).

mod agent;
mod init;
mod net;
mod session;

/// One line each; the agent prints them on the console.
#[derive(thiserror::Error, Debug)]
pub enum AgentError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Proto(#[from] berth_vm::proto::ProtoError),
}

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "berth-agent: this is the init of a berth microVM; it runs as PID 1 in the guest"
        );
        std::process::exit(2);
    }
    if let Err(e) = boot() {
        eprintln!("berth-agent: {e}");
    }
    init::poweroff();
}

fn boot() -> Result<(), AgentError> {
    init::early_mounts()?;
    let args = init::cmdline_args();
    let has = |k: &str, v: &str| args.iter().any(|(a, b)| a == k && b == v);
    if args.iter().any(|(k, _)| k == "poweroff") {
        init::poweroff();
    }
    let trace = args.iter().any(|(k, _)| k == "trace");
    let mark = |what: &str| {
        if trace {
            eprintln!("berth-agent: {:>5} ms {what}", init::uptime_ms());
        }
    };
    mark("init");
    init::load_modules()?;
    mark("modules loaded");
    if has("test", "hang") {
        // An agent that never answers (berth's timeout test).
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    init::switch_root()?;
    mark("root switched");
    net::wake_cards();
    mark("cards up");
    let port = init::open_port(berth_vm::PORT_NAME, std::time::Duration::from_secs(20))?;
    mark("port open");
    let mut a = agent::Agent::new(port, has("test", "panic"), trace)?;
    a.run()
}
