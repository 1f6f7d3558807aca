//! Crash points, a debug knob for tests: with `BERTH_FAULT=STEP` in its
//! environment, berth aborts (SIGABRT: no cleanup, no unwinding, as a
//! crash or `kill -9` would leave things) when it reaches the named step.
//! The tests crash each step of `run`, `run -d`, `rm`, `pull`, `image
//! import` and a VM's start, then check that `ps` tells the truth and
//! `system reconcile` leaves nothing behind. The steps:
//!
//! | step | where |
//! |---|---|
//! | `run:created` | foreground run: record, bundle and rootfs made |
//! | `run:network` | foreground run: network namespace set up |
//! | `run:started` | foreground run: the container runs, recorded |
//! | `start:network` | `run -d`/`start`: network set up, no monitor yet |
//! | `start:spawned` | the monitor-to-be: container spawned, before exec of berth-monitor |
//! | `start:recorded` | `run -d`/`start`: running and its monitor recorded |
//! | `rm:killed` | `rm -f`: processes killed, nothing cleaned |
//! | `rm:cleaned` | `rm`: files cleaned, record still there |
//! | `import:stored` | `image import`: in the store, not recorded |
//! | `pull:stored` | `pull`: in the store, not recorded |
//! | `vm:prepared` | a VM's host process: disks made, QEMU not started |
//! | `vm:qemu` | a VM's host process: QEMU started |

/// Aborts the process when `BERTH_FAULT` names `step`.
pub fn point(step: &str) {
    if std::env::var_os("BERTH_FAULT").is_some_and(|v| v == step) {
        eprintln!("berth: BERTH_FAULT={step}: aborting here");
        std::process::abort();
    }
}
