//! berth-runtime driven as its real clients drive it. Runs as root; every
//! test has its own `--root`, bundles and cgroup parent, and checks that
//! nothing (containers, mounts, cgroups) is left behind.

mod bad_input;
mod common;
mod escapes;
mod lifecycle;
mod peers;
mod spec;
mod vm;
