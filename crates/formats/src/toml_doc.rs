//! The TOML layer the `.toml` formats share: UTF-8, syntax, and line numbers from spans.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::Problems;

/// A TOML file that is not text or not TOML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("{}{message}", at_line(*.line))]
    Toml {
        line: Option<usize>,
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// A parsed document and its text, for turning spans into line numbers.
pub(crate) struct Doc<'t> {
    text: &'t str,
    pub root: DeTable<'t>,
}

impl<'t> Doc<'t> {
    pub(crate) fn parse(bytes: &'t [u8]) -> Result<Doc<'t>, SyntaxError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SyntaxError::NotUtf8)?;
        match DeTable::parse(text) {
            Ok(root) => Ok(Doc {
                text,
                root: root.into_inner(),
            }),
            Err(e) => Err(SyntaxError::Toml {
                line: e.span().map(|s| line_of(text, s)),
                message: e.message().trim().to_owned(),
            }),
        }
    }

    /// The 1-based line where a key or value starts.
    pub(crate) fn line<T>(&self, at: &Spanned<T>) -> usize {
        line_of(self.text, at.span())
    }
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A top-level key (`[name]`), with where it is.
pub(crate) type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

/// The shape both `.toml` formats share: one top-level table per entry. `entry` reads one;
/// the result is every entry, or every problem of the file.
pub(crate) fn entries<T, E: From<SyntaxError>>(
    bytes: &[u8],
    entry: impl Fn(&Doc<'_>, &Key<'_>, &Spanned<DeValue<'_>>) -> Result<T, Vec<E>>,
) -> Result<Vec<T>, Problems<E>> {
    let doc = Doc::parse(bytes).map_err(|e| Problems(vec![e.into()]))?;
    let mut found = Vec::with_capacity(doc.root.len());
    let mut problems = Vec::new();
    for (name, value) in doc.root.iter() {
        match entry(&doc, name, value) {
            Ok(t) => found.push(t),
            Err(mut e) => problems.append(&mut e),
        }
    }
    Problems(problems).or_ok(found)
}

/// A table whose values are all strings, in key order; `None` if it is not one.
pub(crate) fn string_table(v: &DeValue<'_>) -> Option<Vec<(String, String)>> {
    v.as_table()?
        .iter()
        .map(|(k, v)| Some((k.get_ref().to_string(), v.get_ref().as_str()?.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_carry_their_line() {
        let Err(SyntaxError::Toml { line, .. }) = Doc::parse(b"[a]\nx = 1\n[b\n") else {
            panic!("expected a syntax error");
        };
        assert_eq!(line, Some(3));
    }

    #[test]
    fn bytes_must_be_utf8() {
        assert!(matches!(Doc::parse(b"\xff"), Err(SyntaxError::NotUtf8)));
    }
}
