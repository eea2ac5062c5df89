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
