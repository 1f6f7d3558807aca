//! The container log in Docker's json-file format: one JSON object per
//! line, `{"log":"…","stream":"stdout","time":"RFC 3339 with ns"}`,
//! rotated by size into FILE.1 … FILE.(max_file-1).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

/// Longest line kept whole; longer output is split into several entries.
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct JsonLog {
    path: OsString,
    file: File,
    size: u64,
    max_size: u64,
    max_file: u32,
    partial: [Vec<u8>; 2],
    line: Vec<u8>,
}

fn open(path: &OsStr) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl JsonLog {
    pub fn open(path: &OsStr, max_size: u64, max_file: u32) -> io::Result<JsonLog> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonLog {
            path: path.to_os_string(),
            file,
            size,
            max_size,
            max_file,
            partial: [Vec::new(), Vec::new()],
            line: Vec::with_capacity(256),
        })
    }

    /// Adds output; complete lines become entries.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            self.entry(stream, &buf[start..start + pos + 1]);
            start += pos + 1;
        }
        while buf.len() - start >= MAX_LINE {
            self.entry(stream, &buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        buf.drain(..start);
        if buf.capacity() > 4 * MAX_LINE {
            buf.shrink_to(MAX_LINE);
        }
        self.partial[i] = buf;
    }

    /// Writes out an unterminated last line.
    pub fn flush_partial(&mut self, stream: Stream) {
        let buf = std::mem::take(&mut self.partial[stream as usize]);
        if !buf.is_empty() {
            self.entry(stream, &buf);
        }
    }

    fn entry(&mut self, stream: Stream, text: &[u8]) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        line.extend_from_slice(b"{\"log\":\"");
        escape(&String::from_utf8_lossy(text), &mut line);
        line.extend_from_slice(match stream {
            Stream::Stdout => b"\",\"stream\":\"stdout\",\"time\":\"",
            Stream::Stderr => b"\",\"stream\":\"stderr\",\"time\":\"",
        });
        let (secs, nanos) = crate::sys::now();
        line.extend_from_slice(rfc3339_nanos(secs, nanos).as_bytes());
        line.extend_from_slice(b"\"}\n");
        if self.max_size > 0 && self.size + line.len() as u64 > self.max_size && self.size > 0 {
            self.rotate();
        }
        if self.file.write_all(&line).is_ok() {
            self.size += line.len() as u64;
        }
        if line.capacity() > 4 * MAX_LINE {
            line = Vec::with_capacity(256);
        }
        self.line = line;
    }

    fn rotate(&mut self) {
        let name = |n: u32| {
            let mut p = self.path.clone();
            p.push(format!(".{n}"));
            p
        };
        if self.max_file <= 1 {
            // Keep no history: truncate in place.
            let _ = self.file.set_len(0);
            self.size = 0;
            return;
        }
        for n in (1..self.max_file - 1).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        let _ = std::fs::rename(&self.path, name(1));
        if let Ok(f) = open(&self.path) {
            self.file = f;
            self.size = 0;
        }
    }
}

/// JSON string escaping.
pub fn escape(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// "2026-11-22T01:10:10.123456789Z".
pub fn rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        let mut out = Vec::new();
        escape("a\"b\\c\n\u{1}é", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\n\\u0001é");
        assert_eq!(
            rfc3339_nanos(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
    }

    #[test]
    fn splits_lines_and_rotates() {
        let dir = std::env::temp_dir().join(format!("berth-monitor-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let mut log = JsonLog::open(path.as_os_str(), 300, 3).unwrap();
        log.write(Stream::Stdout, b"one\ntw");
        log.write(Stream::Stdout, b"o\n");
        log.write(Stream::Stderr, b"err");
        log.flush_partial(Stream::Stderr);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("{\"log\":\"two\\n\",\"stream\":\"stdout\""));
        assert!(lines[2].starts_with("{\"log\":\"err\",\"stream\":\"stderr\""));
        for _ in 0..20 {
            log.write(Stream::Stdout, b"some more output to force a rotation\n");
        }
        assert!(dir.join("c.log.1").exists() && dir.join("c.log.2").exists());
        assert!(!dir.join("c.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
