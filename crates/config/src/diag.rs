//! Diagnostics: one line per problem, `file:line: Kind/name: field: message`.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a configuration folder.
///
/// Displayed as `file:line: Kind/name: field: message`; a warning shows `warning: ` right after
/// the location. Parts that do not apply are left out: no `:line` for folder-mounted secrets,
/// no `Kind/name: ` for a file that is not valid YAML, no `field: ` for a whole resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub kind: String,
    pub name: String,
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.kind.is_empty() {
            let name = if self.name.is_empty() {
                "?"
            } else {
                &self.name
            };
            write!(f, "{}/{}: ", self.kind, name)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects diagnostics from every stage; interior mutability lets many readers of one
/// document report without threading `&mut` through every helper.
#[derive(Debug, Default)]
pub(crate) struct Diags(RefCell<Vec<Diagnostic>>);

impl Diags {
    pub(crate) fn push(&self, d: Diagnostic) {
        self.0.borrow_mut().push(d);
    }

    pub(crate) fn error_count(&self) -> usize {
        self.0.borrow().iter().filter(|d| d.is_error()).count()
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.0.borrow().iter().any(Diagnostic::is_error)
    }

    /// All diagnostics, sorted by file then line (stable: same line keeps discovery order).
    pub(crate) fn into_sorted(self) -> Vec<Diagnostic> {
        let mut v = self.0.into_inner();
        v.sort_by(|a, b| (&a.file, a.line.unwrap_or(0)).cmp(&(&b.file, b.line.unwrap_or(0))));
        v
    }
}

/// Where a resource lives: the file, the resource's kind and name. Every diagnostic about the
/// resource is made through it so the location prefix is always complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub file: PathBuf,
    /// First line of the document; `None` for folder-mounted secrets and config maps.
    pub line: Option<usize>,
    pub kind: String,
    pub name: String,
}

impl Origin {
    pub(crate) fn new(file: &Path, line: Option<usize>, kind: &str, name: &str) -> Origin {
        Origin {
            file: file.to_path_buf(),
            line,
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `file:line` (or `file`), for messages that point at another resource.
    pub(crate) fn location(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    fn diag(
        &self,
        severity: Severity,
        line: Option<usize>,
        field: &str,
        msg: String,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.clone(),
            line: line.or(self.line),
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_owned(),
            message: msg,
        }
    }

    pub(crate) fn error(
        &self,
        diags: &Diags,
        line: Option<usize>,
        field: &str,
        msg: impl Into<String>,
    ) {
        diags.push(self.diag(Severity::Error, line, field, msg.into()));
    }

    pub(crate) fn warn(
        &self,
        diags: &Diags,
        line: Option<usize>,
        field: &str,
        msg: impl Into<String>,
    ) {
        diags.push(self.diag(Severity::Warning, line, field, msg.into()));
    }
}

/// `; existing Xs: a, b` or `; no Xs are defined` — every dangling reference lists what exists.
pub(crate) fn existing<'a>(
    what_plural: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> String {
    let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
    if names.is_empty() {
        format!("no {what_plural} are defined")
    } else {
        format!("existing {what_plural}: {}", names.join(", "))
    }
}
