//! Client-chosen text in log lines: a client id, user name, topic or filter can be 65,535
//! bytes, and a log line must not grow with it.

use std::fmt;

/// Bytes of a client-chosen string shown in a log line; the rest is summarised.
pub const SHOWN: usize = 96;

/// Displays at most [`SHOWN`] bytes (cut on a character boundary), then `…(+N bytes)`.
#[derive(Clone, Copy)]
pub struct Short<'a>(pub &'a str);

impl Short<'_> {
    /// The part shown and the number of bytes left out.
    fn split(&self) -> (&str, usize) {
        let mut end = SHOWN.min(self.0.len());
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        (&self.0[..end], self.0.len() - end)
    }
}

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.split() {
            (all, 0) => f.write_str(all),
            (shown, rest) => write!(f, "{shown}…(+{rest} bytes)"),
        }
    }
}

/// Quoted and escaped like a `&str`, the summary outside the quotes.
impl fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.split() {
            (all, 0) => write!(f, "{all:?}"),
            (shown, rest) => write!(f, "{shown:?}…(+{rest} bytes)"),
        }
    }
}

/// An optional string, shortened (`-` when absent).
pub struct ShortOpt<'a>(pub Option<&'a str>);

impl fmt::Display for ShortOpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => Short(s).fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Attributes as `name=value,name=value` (each part shortened; `-` when there are none).
pub struct Attrs<'a>(pub &'a [(String, String)]);

impl fmt::Display for Attrs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, (k, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}={}", Short(k), Short(v))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        assert_eq!(Short("abc").to_string(), "abc");
        let long = "é".repeat(100);
        let shown = Short(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(48)));
        assert!(shown.ends_with("…(+104 bytes)"), "{shown}");
        assert_eq!(ShortOpt(None).to_string(), "-");
        let attrs = [
            ("floor".to_string(), "floor1".to_string()),
            ("site".into(), "s".into()),
        ];
        assert_eq!(Attrs(&attrs).to_string(), "floor=floor1,site=s");
        assert_eq!(format!("{:?}", Short("a\"b")), r#""a\"b""#);
    }
}

/// At most one log line a second for a stream of events a client can cause (refusals,
/// denials, bad input), each line carrying how many events it stands for, so a flood of
/// them cannot become a flood of log lines. Time is an argument: no clock of its own.
#[derive(Debug, Default, Clone)]
pub struct LogLimiter {
    last: Option<std::time::Instant>,
    since: u64,
}

impl LogLimiter {
    /// Count one event at `now`; `Some(events since the last line, this one included)` if
    /// a line may be written.
    pub fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        self.since += 1;
        let due = self
            .last
            .is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(1));
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod limiter_tests {
    use std::time::{Duration, Instant};

    use super::LogLimiter;

    #[test]
    fn one_line_a_second_counting_what_it_stands_for() {
        let mut l = LogLimiter::default();
        let t = Instant::now();
        assert_eq!(l.admit(t), Some(1));
        assert_eq!(l.admit(t), None);
        assert_eq!(l.admit(t + Duration::from_millis(999)), None);
        assert_eq!(l.admit(t + Duration::from_secs(1)), Some(3));
        assert_eq!(l.admit(t + Duration::from_secs(3)), Some(1));
    }
}
