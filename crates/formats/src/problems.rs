//! All the errors of one file: `check` reports each one, `serve` refuses with the list.

use std::fmt;

/// One or more errors, in file order. Never empty when returned as an `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems<E>(pub Vec<E>);

impl<E> Problems<E> {
    pub fn iter(&self) -> std::slice::Iter<'_, E> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was found wrong.
    pub(crate) fn or_ok<T>(self, value: T) -> Result<T, Problems<E>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl<E: fmt::Display> fmt::Display for Problems<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Problems<E> {}

impl<'a, E> IntoIterator for &'a Problems<E> {
    type Item = &'a E;
    type IntoIter = std::slice::Iter<'a, E>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
