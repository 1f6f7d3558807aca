//! berth-runtime: a runc-compatible OCI runtime over berth's sandbox, so
//! that podman, containerd (and Kubernetes through it) and Docker can run
//! their containers with berth. The binary (`src/main.rs`) only parses
//! runc's command line and calls these modules.

pub mod bundle;
pub mod console;
pub mod create;
pub mod error;
pub mod exec;
pub mod info;
pub mod lifecycle;
pub mod log;
pub mod spec;
pub mod state;
pub mod vm;

pub use error::{Result, RuntimeError};
pub use state::Store;

/// The default `--root`.
pub const DEFAULT_ROOT: &str = "/run/berth-runtime";

/// `--version` output, in runc's shape (Docker reads the `commit:` line).
pub fn version_text() -> String {
    format!(
        "berth-runtime version {}\ncommit: berth-{}\nspec: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION"),
        spec::SPEC_VERSION
    )
}
