//! Client-chosen text in log lines: a client id, user name, topic or filter can be 65,535
//! bytes, and a log line must not grow with it.

use std::fmt;

/// Bytes of a client-chosen string shown in a log line; the rest is summarised.
pub const SHOWN: usize = 96;

/// Displays at most [`SHOWN`] bytes (cut on a character boundary), then `…(+N bytes)`.
#[derive(Clone, Copy)]
pub struct Short<'a>(pub &'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= SHOWN {
            return f.write_str(self.0);
        }
        let mut end = SHOWN;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…(+{} bytes)", &self.0[..end], self.0.len() - end)
    }
}

impl fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
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
    }
}
