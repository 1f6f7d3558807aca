//! A minimal QMP client: greeting, capabilities, commands and their
//! replies (events in between are skipped).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{io_err, VmError};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn qmp_err(msg: String) -> VmError {
    VmError::Command {
        what: "QMP".into(),
        detail: msg,
    }
}

impl Qmp {
    /// Connects (retrying until QEMU has created the socket) and enters
    /// command mode.
    pub fn connect(path: &Path, deadline: Duration) -> Result<Qmp, VmError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > deadline => {
                    return Err(io_err(format!("connecting to {}", path.display()))(e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io_err("QMP socket"))?;
        let writer = stream.try_clone().map_err(io_err("QMP socket"))?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_err(format!("unexpected greeting {greeting}")));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(io_err("reading from QMP"))?;
        if n == 0 {
            return Err(qmp_err("QEMU closed the QMP socket".into()));
        }
        serde_json::from_str(&line).map_err(|e| qmp_err(format!("bad reply {line:?}: {e}")))
    }

    /// Runs a command; its `return` value, or its error as one line.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, VmError> {
        let msg = json!({"execute": cmd, "arguments": args});
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(io_err("writing to QMP"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e["desc"].as_str().unwrap_or("error");
                return Err(qmp_err(format!("{cmd}: {desc}")));
            }
            // An event: keep reading.
        }
    }
}
