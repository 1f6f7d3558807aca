//! RFC 3339 timestamps in UTC for records and logs, without a date crate:
//! days since the epoch to a civil date (Howard Hinnant's algorithm).

/// `YYYY-MM-DDThh:mm:ss` of `secs` since the epoch.
fn civil(secs: i64) -> String {
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
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 in UTC, whole seconds: `2026-11-22T04:35:00Z`.
pub fn rfc3339(secs: i64) -> String {
    format!("{}Z", civil(secs))
}

/// RFC 3339 in UTC with nanoseconds: `2026-11-22T04:35:00.000000123Z`.
pub fn rfc3339_nanos(secs: i64, nanos: u32) -> String {
    format!("{}.{nanos:09}Z", civil(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_around_the_epoch_and_leap_days() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_nanos(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
    }
}
