//! Durations as cert-manager and the AIO portal write them: Go's `time.ParseDuration` forms
//! (`2160h`, `90m`, `1h30m`, `1.5h`, `300ms`) plus a day unit for the portal's `0d5h0s` style.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("invalid duration \"{0}\": expected numbers with units d, h, m, s, ms, us or ns (e.g. 2160h, 1h30m, 0d5h0s)")]
    Invalid(String),
    #[error("missing unit in duration \"{0}\" (e.g. 90m, 2160h)")]
    MissingUnit(String),
    #[error("duration \"{0}\" is too large")]
    Overflow(String),
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
];

/// Parses a duration; like Go, a bare `0` is allowed and every other number needs a unit.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    let s = match s.strip_prefix('+') {
        Some(rest) => rest,
        None if s.starts_with('-') => return Err(DurationError::Negative),
        None => s,
    };
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(num_len);
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, n)| *n)
            .ok_or_else(invalid)?;
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.contains('.') {
            return Err(invalid());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions: digits beyond nanosecond precision are dropped, as Go does.
        let mut place = scale;
        for d in frac.chars().filter_map(|c| c.to_digit(10)) {
            place /= 10;
            value = value
                .checked_add(u128::from(d) * place)
                .ok_or_else(overflow)?;
        }
        nanos = nanos.checked_add(value).ok_or_else(overflow)?;
        rest = tail;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| overflow())?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, sub))
}

/// Renders like Go (`2160h0m0s` → shown as `2160h`, `5h30m`), for messages.
pub fn format_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || d.subsec_nanos() > 0 || out.is_empty() {
        if d.subsec_nanos() > 0 {
            out.push_str(&format!("{}s", d.as_secs_f64() % 60.0));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn go_and_portal_forms() {
        assert_eq!(parse_duration("2160h"), Ok(secs(2160 * 3600)));
        assert_eq!(parse_duration("90m"), Ok(secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("0d5h0s"), Ok(secs(5 * 3600)));
        assert_eq!(parse_duration("1d"), Ok(secs(86400)));
        assert_eq!(parse_duration("1.5h"), Ok(secs(5400)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 45m "), Ok(secs(2700)));
    }

    #[test]
    fn bad_forms() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-5m"), Err(DurationError::Negative));
        assert_eq!(
            parse_duration("90"),
            Err(DurationError::MissingUnit("90".into()))
        );
        assert!(matches!(
            parse_duration("5 hours"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("1.2.3h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(secs(2160 * 3600)), "2160h");
        assert_eq!(format_duration(secs(5400)), "1h30m");
        assert_eq!(format_duration(secs(0)), "0s");
    }
}
