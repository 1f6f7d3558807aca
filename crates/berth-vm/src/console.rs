//! The guest's serial console: kept in memory (the last 64 KiB, to explain
//! a failed boot or a panic) and in `console.log`, which stops growing at
//! 1 MiB so that a noisy guest cannot fill the host's disk.

use std::io::Write;
use std::path::Path;

const KEEP: usize = 64 * 1024;
const FILE_CAP: u64 = 1 << 20;

pub struct Console {
    tail: Vec<u8>,
    file: Option<std::fs::File>,
    written: u64,
}

impl Console {
    pub fn new(log: &Path) -> Console {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(log)
            .ok();
        Console {
            tail: Vec::new(),
            file,
            written: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * KEEP {
            self.tail.drain(..self.tail.len() - KEEP);
        }
        if let Some(f) = &mut self.file {
            let room = FILE_CAP.saturating_sub(self.written) as usize;
            let n = data.len().min(room);
            if n > 0 && f.write_all(&data[..n]).is_ok() {
                self.written += n as u64;
                if n < data.len() {
                    let _ = f.write_all(b"\n[berth: console log truncated at 1 MiB]\n");
                }
            }
        }
    }

    /// The console's text, lines without carriage returns.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.tail).replace('\r', "")
    }

    /// The kernel's panic line, if the guest panicked.
    pub fn panic_line(&self) -> Option<String> {
        let text = self.text();
        let line = text.lines().find(|l| l.contains("Kernel panic"))?;
        let msg = line
            .split("Kernel panic - not syncing:")
            .nth(1)
            .unwrap_or(line);
        Some(msg.trim().trim_end_matches(" ]---").trim().to_string())
    }

    /// The kernel's panic report: from a few lines before "Kernel panic"
    /// to the end (at most 80 lines).
    pub fn panic_report(&self) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let at = lines
            .iter()
            .position(|l| l.contains("Kernel panic"))
            .unwrap_or(lines.len());
        let from = at.saturating_sub(3);
        lines[from..(from + 80).min(lines.len())]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }

    /// The last `n` non-empty lines.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_found_and_the_file_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        let mut c = Console::new(&log);
        c.push(
            b"[    1.0] boot\r\n[    2.0] Kernel panic - not syncing: sysrq triggered crash\r\n",
        );
        assert_eq!(c.panic_line().as_deref(), Some("sysrq triggered crash"));
        assert_eq!(c.last_lines(1).len(), 1);
        for _ in 0..300 {
            c.push(&[b'x'; 8192]);
        }
        assert!(std::fs::metadata(&log).unwrap().len() < FILE_CAP + 100);
        assert!(c.tail.len() <= 2 * KEEP);
    }
}
