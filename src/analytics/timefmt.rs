//! Wall-clock time as Unix milliseconds, and its RFC 3339 text form for the query API
//! (`2025-01-31T12:00:00.000Z`, accepted also as a bare date or Unix seconds).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day number since 1970-01-01
/// (the inverse of `days_from_civil`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `2025-01-31T12:00:00.000Z` for Unix milliseconds.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// `2025-01-31` for Unix milliseconds (the `day` group of the usage API).
pub fn format_day(ms: i64) -> String {
    format_ms(ms)[..10].to_string()
}

/// Parses `2025-01-31`, `2025-01-31T12:00:00Z` (fraction and `±hh:mm` offsets allowed) or
/// Unix seconds into Unix milliseconds.
pub fn parse(text: &str) -> Option<i64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().ok()?.checked_mul(1000);
    }
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (date, time) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let (y, m, d) = (
        num(parts.next()?)?,
        num(parts.next()?)?,
        num(parts.next()?)?,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if let Some(time) = time {
        let (clock, offset_ms) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = time.rfind(['+', '-']) {
            let sign = if time.as_bytes()[i] == b'-' { -1 } else { 1 };
            let (oh, om) = time[i + 1..].split_once(':')?;
            (
                &time[..i],
                sign * (num(oh)? * 3_600_000 + num(om)? * 60_000),
            )
        } else {
            (time, 0)
        };
        let (hms, frac) = match clock.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (clock, None),
        };
        let mut f = hms.split(':');
        let h = num(f.next()?)?;
        let mi = num(f.next()?)?;
        let s = f.next().map(num).unwrap_or(Some(0))?;
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        ms += h * 3_600_000 + mi * 60_000 + s * 1000;
        if let Some(frac) = frac {
            let digits: String = frac.chars().take(3).collect();
            let n = num(&digits)?;
            ms += n * 10_i64.pow(3 - digits.len() as u32);
        }
        ms -= offset_ms;
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_parses_forms() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        let t = parse("2025-03-01T12:34:56.789Z").unwrap();
        assert_eq!(format_ms(t), "2025-03-01T12:34:56.789Z");
        assert_eq!(parse("2024-02-29").map(format_day).unwrap(), "2024-02-29");
        assert_eq!(parse("1700000000"), Some(1_700_000_000_000));
        assert_eq!(
            parse("2025-03-01T14:34:56+02:00"),
            parse("2025-03-01T12:34:56Z")
        );
        assert_eq!(parse("2025-13-01"), None);
        assert_eq!(parse("yesterday"), None);
    }
}
