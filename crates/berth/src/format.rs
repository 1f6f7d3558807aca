//! Output helpers: tables, human sizes and durations, as Docker prints them.

/// A left-aligned table with columns separated by 3 spaces.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }

    pub fn print(&self) {
        let cols = self.rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < cols {
                    line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        print!("{out}");
    }
}

pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Docker's HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if d < 14 => format!("{d} days"),
        _ if d < 60 => format!("{} weeks", d / 7),
        _ if d < 365 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

pub fn ago(t: i64) -> String {
    format!("{} ago", human_duration(berth_engine::now() - t))
}

/// Decimal sizes with 3 significant digits, as Docker prints them ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let trimmed = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{trimmed}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
    }
}

/// Docker-style `--format`: `json` (the whole object on one line), or a
/// template with `{{.Field}}`, `{{.A.B}}`, `{{json .X}}` and `{{.}}`;
/// `\t` and `\n` in the template are tab and newline.
pub fn render(template: &str, v: &serde_json::Value) -> String {
    let t = template.trim();
    if t == "json" || t == "{{json .}}" {
        return v.to_string();
    }
    let t = t
        .strip_prefix("table ")
        .unwrap_or(t)
        .replace("\\t", "\t")
        .replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = t.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = rest[start + 2..start + end].trim();
        let (as_json, path) = match expr.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, expr),
        };
        let mut cur = v;
        let mut missing = false;
        for part in path
            .trim_start_matches('.')
            .split('.')
            .filter(|p| !p.is_empty())
        {
            match cur.get(part) {
                Some(x) => cur = x,
                None => {
                    missing = true;
                    break;
                }
            }
        }
        if missing {
            out.push_str("<no value>");
        } else if as_json {
            out.push_str(&cur.to_string());
        } else {
            match cur {
                serde_json::Value::String(s) => out.push_str(s),
                serde_json::Value::Null => out.push_str("<no value>"),
                other => out.push_str(&other.to_string()),
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod template_tests {
    use super::render;

    #[test]
    fn templates() {
        let v = serde_json::json!({"ID": "abc", "State": {"Status": "running", "Pid": 7}, "Names": "web"});
        assert_eq!(render("{{.ID}}\\t{{.Names}}", &v), "abc\tweb");
        assert_eq!(render("{{.State.Status}} {{.State.Pid}}", &v), "running 7");
        assert_eq!(
            render("{{json .State}}", &v),
            r#"{"Pid":7,"Status":"running"}"#
        );
        assert_eq!(render("{{.Nope}}", &v), "<no value>");
        assert_eq!(render("json", &serde_json::json!({"a":1})), r#"{"a":1}"#);
    }
}
