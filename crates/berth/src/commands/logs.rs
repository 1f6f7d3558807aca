//! `berth logs`, `attach`, `events`.

use std::io::Write;

use anyhow::{Context, Result};
use berth_engine::events::{self, Filter};
use berth_engine::logs::{LogEntry, LogOptions};
use berth_engine::Engine;

use crate::cli::{EventsArgs, LogsArgs};

fn print_entry(e: &LogEntry, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", e.time, e.log)
    } else {
        e.log.clone()
    };
    if e.stream == "stderr" {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

pub fn logs(engine: &mut Engine, a: &LogsArgs) -> Result<u8> {
    let tail = match a.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("invalid --tail {n:?}: a number or \"all\""))?,
        ),
    };
    let since = a
        .since
        .as_deref()
        .map(|s| events::parse_time(s, berth_engine::now()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let opts = LogOptions {
        follow: a.follow,
        tail,
        since,
    };
    engine.logs(&a.container, &opts, |e| print_entry(e, a.timestamps))?;
    Ok(0)
}

/// Streams output logged since `since` (seconds) until the container stops
/// for good; returns its exit code.
pub fn attach_and_wait(engine: &mut Engine, key: &str, since: i64) -> Result<u8> {
    let opts = LogOptions {
        follow: true,
        tail: None,
        since: Some(since),
    };
    engine.logs(key, &opts, |e| print_entry(e, false))?;
    let code = engine.wait(key)?;
    Ok(u8::try_from(code & 0xff).unwrap_or(255))
}

pub fn attach(engine: &mut Engine, key: &str, no_stdin: bool) -> Result<u8> {
    let code = engine.attach(key, no_stdin)?;
    Ok(u8::try_from(code & 0xff).unwrap_or(255))
}

pub fn events(engine: &mut Engine, a: &EventsArgs) -> Result<u8> {
    let now = berth_engine::now();
    let parse = |s: &Option<String>| s.as_deref().map(|t| events::parse_time(t, now)).transpose();
    let since = parse(&a.since).map_err(anyhow::Error::msg)?;
    let until = parse(&a.until).map_err(anyhow::Error::msg)?;
    let filter = Filter::parse(&a.filter).map_err(anyhow::Error::msg)?;
    let json = match a.format.as_deref() {
        None => false,
        Some("json") | Some("{{json .}}") => true,
        Some(f) => anyhow::bail!("unsupported --format {f:?} for events: use json"),
    };
    let print = |e: &events::Event| {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            let attrs: Vec<String> = e
                .actor
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "{} {} {} {} ({})",
                berth_engine::containers::rfc3339(e.time),
                e.typ,
                e.action,
                e.actor.id,
                attrs.join(", ")
            );
        }
    };
    let mut seen = 0usize;
    loop {
        let list = events::read(&engine.root, since, until, &filter);
        for e in list.iter().skip(seen) {
            print(e);
        }
        seen = list.len();
        if until.is_some() {
            return Ok(0);
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
