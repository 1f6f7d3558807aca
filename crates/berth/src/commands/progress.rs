//! Transfer progress of `pull` and `push`: on a terminal, one line per
//! layer redrawn in place (at most ten times a second); otherwise one line
//! per layer when it is done (or retried), so logs stay readable.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_engine::registry::{BlobState, Progress};

use crate::format::human_size;

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// Pull or push: the words differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pull,
    Push,
}

struct Row {
    digest: String,
    size: u64,
    state: BlobState,
}

struct State {
    rows: Vec<Row>,
    drawn: usize,
    last: Option<Instant>,
}

/// A [`Progress`] that prints.
pub struct Display {
    sink: Sink,
    kind: Kind,
    tty: bool,
    state: Mutex<State>,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn bar(done: u64, size: u64) -> String {
    const WIDTH: usize = 30;
    let filled = if size == 0 {
        WIDTH
    } else {
        ((done as f64 / size as f64) * WIDTH as f64) as usize
    }
    .min(WIDTH);
    let mut s = "=".repeat(filled);
    if filled < WIDTH {
        s.push('>');
        s.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    format!("[{s}] {}/{}", human_size(done), human_size(size))
}

impl Display {
    pub fn new(sink: Sink, kind: Kind) -> Display {
        let tty = match sink {
            Sink::Stdout => std::io::stdout().is_terminal(),
            Sink::Stderr => std::io::stderr().is_terminal(),
        };
        Display {
            sink,
            kind,
            tty,
            state: Mutex::new(State {
                rows: Vec::new(),
                drawn: 0,
                last: None,
            }),
        }
    }

    fn text(&self, row: &Row) -> String {
        let s = short(&row.digest);
        let (pull, push) = (self.kind == Kind::Pull, self.kind == Kind::Push);
        match &row.state {
            BlobState::Waiting => format!("{s}: Waiting"),
            BlobState::Exists if pull => format!("{s}: Already exists"),
            BlobState::Exists => format!("{s}: Layer already exists"),
            BlobState::Transferring { done } if push => {
                format!("{s}: Pushing {}", bar(*done, row.size))
            }
            BlobState::Transferring { done } => {
                format!("{s}: Downloading {}", bar(*done, row.size))
            }
            BlobState::Retrying { attempt, error } => {
                format!("{s}: Retrying (attempt {attempt}) after: {error}")
            }
            BlobState::Pulled => format!("{s}: Pull complete"),
            BlobState::Pushed => format!("{s}: Pushed"),
            BlobState::Mounted { from } => format!("{s}: Mounted from {from}"),
            BlobState::Failed => format!("{s}: Failed"),
        }
    }

    fn write(&self, text: &str) {
        let _ = match self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }

    fn redraw(&self, st: &mut State) {
        let mut out = String::new();
        if st.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", st.drawn));
        }
        for row in &st.rows {
            out.push_str("\x1b[2K");
            out.push_str(&self.text(row));
            out.push('\n');
        }
        st.drawn = st.rows.len();
        st.last = Some(Instant::now());
        self.write(&out);
    }

    /// Draws the final state (terminal only).
    pub fn finish(&self) {
        if self.tty {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.redraw(&mut st);
        }
    }

    /// Prints a line of its own (below the layer lines on a terminal).
    pub fn line(&self, text: &str) {
        self.finish();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.rows.clear();
        st.drawn = 0;
        self.write(&format!("{text}\n"));
    }
}

impl Progress for Display {
    fn blob(&self, digest: &str, size: u64, state: BlobState) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let done = matches!(
            state,
            BlobState::Exists
                | BlobState::Pulled
                | BlobState::Pushed
                | BlobState::Mounted { .. }
                | BlobState::Retrying { .. }
        );
        let transfer = matches!(state, BlobState::Transferring { .. });
        let row = Row {
            digest: digest.to_owned(),
            size,
            state,
        };
        if !self.tty {
            if done {
                self.write(&format!("{}\n", self.text(&row)));
            }
            return;
        }
        match st.rows.iter_mut().find(|r| r.digest == row.digest) {
            Some(r) => *r = row,
            None => st.rows.push(row),
        }
        let due = st
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if !transfer || due {
            self.redraw(&mut st);
        }
    }
}
