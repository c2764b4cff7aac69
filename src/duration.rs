//! Go-style durations as CRDs write them (`30s`, `5m`, `1h30m`, `500ms`).

use std::time::Duration;

/// Parses a duration of one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 30s, 5m or 1h");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        let seconds = number * unit;
        if !seconds.is_finite() || seconds > 10.0 * 365.0 * 86400.0 {
            return Err(bad());
        }
        total += Duration::from_secs_f64(seconds);
    }
    Ok(total)
}

/// `parse`, or `default` when the field is unset.
pub fn parse_or(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    text.map(parse).unwrap_or(Ok(default))
}

/// `d` the way [`parse`] reads it back, in whole seconds with the largest units first: `720h`,
/// `1h30m`, `40s`, `0s`. For messages that name a configured duration.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_or(None, Duration::from_secs(7)).unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn formats_what_parse_reads_back() {
        for (secs, text) in
            [(0, "0s"), (40, "40s"), (180, "3m"), (5400, "1h30m"), (2_592_000, "720h"), (3661, "1h1m1s")]
        {
            assert_eq!(format(Duration::from_secs(secs)), text);
            assert_eq!(parse(text).unwrap(), Duration::from_secs(secs));
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "5", "m", "5d", "1h 2m", "-1s", "s5", "99999999999h"] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
