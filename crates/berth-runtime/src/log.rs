//! `--log FILE` and `--log-format text|json`: runc's log, which containerd
//! and conmon read back for the last error (`{"level":"error","msg":...}`).

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    file: Option<std::fs::File>,
    json: bool,
    debug: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up logging; without `--log` nothing but errors on stderr is written.
pub fn init(path: Option<&std::path::Path>, json: bool, debug: bool) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => None,
    };
    let _ = LOGGER.set(Logger { file, json, debug });
    Ok(())
}

/// RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    berth_sandbox::time::rfc3339_nanos(d.as_secs() as i64, d.subsec_nanos())
}

fn write(level: &str, msg: &str) {
    let Some(l) = LOGGER.get() else { return };
    if level == "debug" && !l.debug {
        return;
    }
    let Some(mut f) = l.file.as_ref() else {
        return;
    };
    let line = if l.json {
        serde_json::json!({"level": level, "msg": msg, "time": now_rfc3339()}).to_string()
    } else {
        format!("time=\"{}\" level={level} msg={:?}", now_rfc3339(), msg)
    };
    let _ = writeln!(f, "{line}");
}

/// An error: one line on stderr, and in the log.
pub fn error(msg: &str) {
    eprintln!("berth-runtime: {msg}");
    write("error", msg);
}

pub fn warn(msg: &str) {
    if LOGGER.get().is_some_and(|l| l.file.is_none()) {
        eprintln!("berth-runtime: warning: {msg}");
    }
    write("warning", msg);
}

pub fn debug(msg: &str) {
    write("debug", msg);
}
