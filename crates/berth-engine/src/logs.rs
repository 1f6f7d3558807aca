//! Reading a container's log (written by its monitor in Docker's json-file
//! format), with --tail, --since and --follow.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde::Deserialize;

use crate::lifecycle::log_path;
use crate::{Engine, EngineError};

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail: Option<usize>,
    /// Seconds since the epoch.
    pub since: Option<i64>,
}

fn entry_time(e: &LogEntry) -> i64 {
    crate::images::parse_rfc3339(&e.time).unwrap_or(0)
}

fn parse_lines(text: &str, out: &mut Vec<LogEntry>) {
    out.extend(
        text.lines()
            .filter_map(|l| serde_json::from_str::<LogEntry>(l).ok()),
    );
}

impl Engine {
    /// Calls `sink` for each entry; with `follow`, keeps going until the
    /// container has stopped (and is not going to restart).
    pub fn logs(
        &mut self,
        key: &str,
        opts: &LogOptions,
        mut sink: impl FnMut(&LogEntry),
    ) -> Result<(), EngineError> {
        let row = self.find(key)?;
        let path = log_path(&self.container_dir(&row.id));
        let cfg = Self::config_of(&row);
        let mut entries = Vec::new();
        for n in (1..cfg.log_max_file.max(1)).rev() {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{n}"));
            if let Ok(t) = std::fs::read_to_string(&p) {
                parse_lines(&t, &mut entries);
            }
        }
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(crate::io_err(format!("reading {}", path.display()))(e)),
        };
        let mut pos = 0u64;
        let mut ino = 0u64;
        if let Some(f) = file.as_mut() {
            let mut text = String::new();
            let mut r = BufReader::new(&*f);
            while let Ok(n) = r.read_line(&mut text) {
                if n == 0 || !text.ends_with('\n') {
                    break;
                }
                pos += n as u64;
                parse_lines(&text, &mut entries);
                text.clear();
            }
            ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
        }
        if let Some(s) = opts.since {
            entries.retain(|e| entry_time(e) >= s);
        }
        if let Some(t) = opts.tail {
            let skip = entries.len().saturating_sub(t);
            entries.drain(..skip);
        }
        entries.iter().for_each(&mut sink);
        if !opts.follow {
            return Ok(());
        }
        loop {
            let running = match self.find(&row.id) {
                Ok(r) => matches!(r.state.as_str(), "running" | "restarting" | "paused"),
                Err(_) => false,
            };
            // Reopen when the monitor rotated the file.
            let cur_ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
            if cur_ino != ino && cur_ino != 0 {
                file = std::fs::File::open(&path).ok();
                pos = 0;
                ino = cur_ino;
            }
            if let Some(f) = file.as_mut() {
                if f.seek(SeekFrom::Start(pos)).is_ok() {
                    let mut r = BufReader::new(&*f);
                    let mut text = String::new();
                    while let Ok(n) = r.read_line(&mut text) {
                        if n == 0 || !text.ends_with('\n') {
                            break;
                        }
                        pos += n as u64;
                        if let Ok(e) = serde_json::from_str::<LogEntry>(text.trim_end()) {
                            if opts.since.is_none_or(|s| entry_time(&e) >= s) {
                                sink(&e);
                            }
                        }
                        text.clear();
                    }
                }
            }
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
