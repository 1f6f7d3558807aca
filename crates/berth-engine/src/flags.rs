//! The parsers of Docker-style option values that every front end shares
//! (the CLI now, the API and Compose later): sizes (`--memory 64m`,
//! `--log-opt max-size=10m`) and volume specs (`-v HOST:CTR[:ro|rw]`).
//! They take untrusted text: errors, never panics (fuzzed).

use crate::config::VolumeMount;

/// Docker's RAMInBytes: "64m", "1g", "512k", "100000", "6MB" (binary units).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let n: f64 = num.parse().map_err(|_| "not a size".to_string())?;
    let mult: f64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("unknown unit {unit:?}")),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > i64::MAX as f64 {
        return Err("out of range".into());
    }
    Ok(v as i64)
}

/// `-v HOST:CONTAINER[:ro|rw]`.
pub fn parse_volume(v: &str) -> Result<VolumeMount, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => {
            return Err(format!(
                "invalid volume specification {v:?}: expected HOST:CONTAINER[:ro|rw]"
            ))
        }
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => {
            return Err(format!(
                "invalid volume mode {m:?} in {v:?}: expected ro or rw"
            ))
        }
    };
    Ok(VolumeMount {
        source: source.into(),
        target: target.into(),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("6MB").unwrap(), 6 << 20);
        assert_eq!(parse_bytes("100000").unwrap(), 100000);
        for bad in ["", "m", "1x", "-1", "1e400", "9999999999999999999999p"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume("/a:/b:ro").unwrap();
        assert_eq!(
            (v.source.as_str(), v.target.as_str(), v.read_only),
            ("/a", "/b", true)
        );
        assert!(!parse_volume("/a:/b").unwrap().read_only);
        for bad in ["/a", "/a:/b:rx", "a:b:c:d"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }
}
