//! Container events (create, start, die, oom, stop, kill, pause, unpause,
//! rename, destroy) as JSON lines in `<root>/events.log`, in Docker's shape.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::db::ContainerRow;

/// One event, as `berth events --format json` prints it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Seconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

pub fn log_path(root: &Path) -> PathBuf {
    root.join("events.log")
}

/// Appends an event for a container. Failures to log never fail the
/// operation that caused the event.
pub fn emit(root: &Path, c: &ContainerRow, action: &str, extra: &[(&str, String)]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("name".to_string(), c.name.clone());
    attributes.insert("image".to_string(), c.image_ref.clone());
    for (k, v) in extra {
        attributes.insert(k.to_string(), v.clone());
    }
    let e = Event {
        typ: "container".into(),
        action: action.into(),
        actor: Actor {
            id: c.id.clone(),
            attributes,
        },
        time: now.as_secs() as i64,
        time_nano: now.as_nanos() as i64,
    };
    let Ok(mut line) = serde_json::to_vec(&e) else {
        return;
    };
    line.push(b'\n');
    // One write(2) with O_APPEND: concurrent writers never interleave lines.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path(root))
    {
        let _ = f.write_all(&line);
    }
}

/// `--filter key=value` for events: container (ID, ID prefix or name),
/// event (action), image, type. Same key: any; different keys: all.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub pairs: Vec<(String, String)>,
}

impl Filter {
    pub fn parse(specs: &[String]) -> Result<Filter, String> {
        let mut pairs = Vec::new();
        for s in specs {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("invalid filter {s:?}: expected KEY=VALUE"))?;
            if !["container", "event", "image", "type"].contains(&k) {
                return Err(format!(
                    "invalid filter key {k:?}: expected container, event, image or type"
                ));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(Filter { pairs })
    }

    pub fn matches(&self, e: &Event) -> bool {
        let keys: std::collections::BTreeSet<&str> =
            self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        keys.into_iter().all(|key| {
            self.pairs
                .iter()
                .filter(|(k, _)| k == key)
                .any(|(_, v)| match key {
                    "container" => {
                        e.actor.id.starts_with(v.as_str())
                            || e.actor.attributes.get("name") == Some(v)
                    }
                    "event" => &e.action == v,
                    "image" => e.actor.attributes.get("image") == Some(v),
                    "type" => &e.typ == v,
                    _ => false,
                })
        })
    }
}

/// Parses Docker's time arguments: seconds since the epoch (with optional
/// fraction), RFC 3339, or a duration back from now ("10m", "1h30m", "45s").
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        return Ok(f as i64);
    }
    if let Some(t) = crate::images::parse_rfc3339(s) {
        return Ok(t);
    }
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| format!("invalid time {s:?}"))?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "invalid time {s:?}: use seconds, RFC 3339 or a duration like 10m"
                ))
            }
        };
    }
    if !num.is_empty() || total == 0 && !s.is_empty() && s != "0s" {
        return Err(format!(
            "invalid time {s:?}: use seconds, RFC 3339 or a duration like 10m"
        ));
    }
    Ok(now - total)
}

/// Events in `[since, until]`, filtered, read from the log.
pub fn read(root: &Path, since: Option<i64>, until: Option<i64>, filter: &Filter) -> Vec<Event> {
    let text = std::fs::read_to_string(log_path(root)).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| since.is_none_or(|s| e.time >= s) && until.is_none_or(|u| e.time <= u))
        .filter(|e| filter.matches(e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000", 0), Ok(1_700_000_000));
        assert_eq!(parse_time("10m", 1000), Ok(400));
        assert_eq!(parse_time("1h30m", 10_000), Ok(10_000 - 5400));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000));
        assert!(parse_time("soon", 0).is_err());
        assert!(parse_time("10x", 0).is_err());
    }

    #[test]
    fn filters() {
        assert!(Filter::parse(&["color=red".into()]).is_err());
        let f = Filter::parse(&[
            "event=die".into(),
            "event=start".into(),
            "container=web".into(),
        ])
        .unwrap();
        let mut e = Event {
            typ: "container".into(),
            action: "die".into(),
            actor: Actor {
                id: "abc".into(),
                attributes: Default::default(),
            },
            time: 0,
            time_nano: 0,
        };
        e.actor.attributes.insert("name".into(), "web".into());
        assert!(f.matches(&e));
        e.action = "stop".into();
        assert!(!f.matches(&e));
    }
}
