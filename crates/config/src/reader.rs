//! Typed reading of a YAML node tree that reports every problem instead of stopping at one.
//!
//! An [`Obj`] is a mapping with a declared list of field names: reading a field gives a
//! [`Val`] that knows its path (`spec.ports[0].tls.mode`) and line, and whose typed getters
//! report a wrong type or value and return `None`. When an `Obj` is dropped, every key that is
//! not declared is reported as an unknown field (a warning), with a suggestion when the key is
//! close to a declared one. Declaring fields up front (rather than tracking which were read)
//! keeps early returns from producing spurious warnings.

use std::collections::BTreeMap;

use crate::diag::{Diags, Origin};
use crate::yaml::{Node, Value};

/// A value and where it was written: the line and the field path, for diagnostics made later
/// (cross-reference checks) about this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located<T> {
    pub value: T,
    pub line: usize,
    pub path: String,
}

/// Where diagnostics of one resource go.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub diags: &'a Diags,
    pub origin: &'a Origin,
    /// Unknown fields are errors, not warnings (see [`Val::strict`]); inherited by every
    /// mapping read below the value that set it.
    pub strict: bool,
}

impl Cx<'_> {
    pub(crate) fn error(&self, line: usize, path: &str, msg: impl Into<String>) {
        self.origin.error(self.diags, Some(line), path, msg);
    }
    pub(crate) fn warn(&self, line: usize, path: &str, msg: impl Into<String>) {
        self.origin.warn(self.diags, Some(line), path, msg);
    }
}

pub(crate) fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A mapping being read against a declared list of fields.
pub(crate) struct Obj<'a> {
    cx: Cx<'a>,
    path: String,
    line: usize,
    fields: &'static [&'static str],
    entries: Vec<(String, usize, &'a Node)>,
    /// Unknown fields of this mapping only are errors (a listener port).
    strict: bool,
}

/// Declared fields whose misspelling can never weaken authentication or authorization: in a
/// strict mapping an unknown key that is close to one of these stays a warning.
const HARMLESS: &[&str] = &[
    "port",
    "nodePort",
    "protocol",
    "serviceType",
    "serviceName",
    "brokerRef",
    "cache",
    "enableCache",
];

impl<'a> Obj<'a> {
    pub(crate) fn line(&self) -> usize {
        self.line
    }
    pub(crate) fn path(&self) -> &str {
        &self.path
    }
    pub(crate) fn cx(&self) -> Cx<'a> {
        self.cx
    }

    fn find(&self, key: &str) -> Option<Val<'a>> {
        debug_assert!(self.fields.contains(&key), "undeclared field {key}");
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(k, line, node)| Val {
                cx: self.cx,
                node,
                path: child(&self.path, k),
                line: *line,
            })
    }

    /// An optional field; `None` when absent.
    pub(crate) fn get(&self, key: &str) -> Option<Val<'a>> {
        self.find(key)
    }

    /// A required field: absent or null is reported at the line of this mapping.
    pub(crate) fn req(&self, key: &str) -> Option<Val<'a>> {
        match self.find(key) {
            Some(v) if !v.is_null() => Some(v),
            Some(v) => {
                v.error("required field is empty");
                None
            }
            None => {
                self.cx.error(
                    self.line,
                    &child(&self.path, key),
                    "required field is missing",
                );
                None
            }
        }
    }

    /// The first present spelling of a field that has aliases (transitional API names).
    pub(crate) fn get_alias(&self, keys: &[&str]) -> Option<Val<'a>> {
        let mut found: Option<Val<'a>> = None;
        for key in keys {
            if let Some(v) = self.find(key) {
                match &found {
                    Some(first) => v.warn(format!(
                        "also given as {}; this spelling is ignored",
                        first.path
                    )),
                    None => found = Some(v),
                }
            }
        }
        found
    }

    /// Like [`Obj::get_alias`], but required.
    pub(crate) fn req_alias(&self, keys: &[&str]) -> Option<Val<'a>> {
        let v = self.get_alias(keys);
        match &v {
            Some(x) if x.is_null() => {
                x.error("required field is empty");
                return None;
            }
            None => {
                let key = keys.first().copied().unwrap_or_default();
                self.cx.error(
                    self.line,
                    &child(&self.path, key),
                    "required field is missing",
                );
            }
            Some(_) => {}
        }
        v
    }

    /// A field AIO defines but a standalone broker has no use for: accepted with a warning.
    pub(crate) fn no_effect(&self, key: &str, why: &str) {
        if let Some(v) = self.find(key) {
            v.warn(format!("has no effect in edgemq ({why}); ignored"));
        }
    }
}

impl Drop for Obj<'_> {
    fn drop(&mut self) {
        for (key, line, _) in &self.entries {
            if self.fields.contains(&key.as_str()) {
                continue;
            }
            let suggestion = suggest(key, self.fields);
            let path = child(&self.path, key);
            // Fail closed: where an ignored field could leave a port with less
            // authentication or authorization than written, refuse it.
            if (self.strict || self.cx.strict) && !suggestion.is_some_and(|s| HARMLESS.contains(&s))
            {
                let msg = match suggestion {
                    Some(s) => format!("unknown field (did you mean {s}?); not ignored: ignoring it could leave a port with less authentication or authorization than written"),
                    None => format!("unknown field; not ignored: ignoring it could leave a port with less authentication or authorization than written (expected one of: {})", self.fields.join(", ")),
                };
                self.cx.error(*line, &path, msg);
                continue;
            }
            let msg = match suggestion {
                Some(s) => format!("unknown field, ignored (did you mean {s}?)"),
                None => "unknown field, ignored".to_owned(),
            };
            self.cx.warn(*line, &path, msg);
        }
    }
}

/// A declared field close to `key`: same letters ignoring case, or at most two edits away.
fn suggest(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    fields
        .iter()
        .copied()
        .find(|f| f.eq_ignore_ascii_case(key))
        .or_else(|| {
            fields
                .iter()
                .copied()
                .filter(|f| f.len() > 3)
                .map(|f| (edit_distance(&lower, &f.to_ascii_lowercase()), f))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, f)| f)
        })
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One field's value, its path and line.
#[derive(Clone)]
pub(crate) struct Val<'a> {
    cx: Cx<'a>,
    node: &'a Node,
    path: String,
    line: usize,
}

impl<'a> Val<'a> {
    /// The root of a document.
    pub(crate) fn root(cx: Cx<'a>, node: &'a Node) -> Val<'a> {
        Val {
            cx,
            node,
            path: String::new(),
            line: node.line,
        }
    }

    /// This value, with unknown fields in every mapping read from it reported as errors:
    /// the `spec` of a BrokerAuthentication or BrokerAuthorization, where an ignored
    /// misspelling could weaken what a port enforces.
    pub(crate) fn strict(mut self) -> Val<'a> {
        self.cx.strict = true;
        self
    }

    /// Like [`Val::obj`], with unknown fields of this mapping (not of those below it)
    /// reported as errors: a listener port.
    pub(crate) fn strict_obj(&self, fields: &'static [&'static str]) -> Option<Obj<'a>> {
        let mut obj = self.obj(fields)?;
        obj.strict = true;
        Some(obj)
    }

    pub(crate) fn node(&self) -> &'a Node {
        self.node
    }
    pub(crate) fn is_null(&self) -> bool {
        matches!(self.node.value, Value::Null)
    }

    pub(crate) fn error(&self, msg: impl Into<String>) {
        self.cx.error(self.line, &self.path, msg);
    }
    pub(crate) fn warn(&self, msg: impl Into<String>) {
        self.cx.warn(self.line, &self.path, msg);
    }

    pub(crate) fn at<T>(&self, value: T) -> Located<T> {
        Located {
            value,
            line: self.line,
            path: self.path.clone(),
        }
    }

    fn wrong_type(&self, expected: &str) {
        self.error(format!(
            "expected {expected}, found {}",
            self.node.type_name()
        ));
    }

    /// A scalar as text (numbers and booleans rendered back); `None` for null.
    pub(crate) fn string(&self) -> Option<String> {
        if self.is_null() {
            return None;
        }
        let s = self.node.scalar_text();
        if s.is_none() {
            self.wrong_type("a string");
        }
        s
    }

    /// A non-empty string, with its location: a reference to another resource.
    pub(crate) fn name(&self) -> Option<Located<String>> {
        let s = self.string()?;
        if s.trim().is_empty() {
            self.error("must not be empty");
            return None;
        }
        Some(self.at(s))
    }

    /// An integer in `min..=max`.
    pub(crate) fn int<T: TryFrom<i128>>(&self, min: i128, max: i128) -> Option<T> {
        match self.node.value {
            Value::Null => None,
            Value::Int(i) if (min..=max).contains(&i) => T::try_from(i).ok(),
            Value::Int(i) => {
                self.error(format!("must be between {min} and {max}, got {i}"));
                None
            }
            _ => {
                self.wrong_type("an integer");
                None
            }
        }
    }

    /// A size as Kubernetes and AIO write it (`10GiB`, `1G`, `500Mi`, `1048576`): binary
    /// suffixes `Ki Mi Gi Ti Pi Ei` (optionally with `B`), decimal `k K M G T P E` (optionally
    /// with `B`). An error for anything else.
    pub(crate) fn quantity(&self) -> Option<u64> {
        let text = match &self.node.value {
            Value::Int(n) => {
                return u64::try_from(*n).ok().or_else(|| {
                    self.error("expected a size such as 10GiB, not a negative number");
                    None
                })
            }
            _ => self.string()?,
        };
        match parse_quantity(&text) {
            Some(n) => Some(n),
            None => {
                self.error(format!(
                    "expected a size such as 10GiB, 500Mi or 1G, not {text:?}"
                ));
                None
            }
        }
    }

    pub(crate) fn bool(&self) -> Option<bool> {
        match self.node.value {
            Value::Null => None,
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type("true or false");
                None
            }
        }
    }

    /// One of the names in `table`, compared case-insensitively (v1 writes `ClusterIp`, v1beta1
    /// `clusterIp`).
    pub(crate) fn one_of<T: Copy>(&self, table: &[(&str, T)]) -> Option<T> {
        let s = self.string()?;
        let found = table
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
            .map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            self.error(format!(
                "unknown value \"{s}\"; expected one of: {}",
                names.join(", ")
            ));
        }
        found
    }

    /// A mapping with the given fields; null reads as an empty mapping.
    pub(crate) fn obj(&self, fields: &'static [&'static str]) -> Option<Obj<'a>> {
        let entries = match &self.node.value {
            Value::Map(m) => self.keyed(m)?,
            Value::Null => Vec::new(),
            _ => {
                self.wrong_type("a mapping");
                return None;
            }
        };
        Some(Obj {
            cx: self.cx,
            path: self.path.clone(),
            line: self.line,
            fields,
            entries,
            strict: false,
        })
    }

    fn keyed(&self, m: &'a [(Node, Node)]) -> Option<Vec<(String, usize, &'a Node)>> {
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m {
            match k.scalar_text() {
                Some(key) => out.push((key, k.line, v)),
                None => self
                    .cx
                    .error(k.line, &self.path, "mapping keys must be strings"),
            }
        }
        Some(out)
    }

    /// The entries of a mapping with free-form keys (labels, secret data, attribute maps);
    /// each value's path is `parent[key]`.
    pub(crate) fn entries(&self) -> Option<Vec<(String, Val<'a>)>> {
        let m = match &self.node.value {
            Value::Map(m) => m,
            Value::Null => return Some(Vec::new()),
            _ => {
                self.wrong_type("a mapping");
                return None;
            }
        };
        let entries = self.keyed(m)?;
        Some(
            entries
                .into_iter()
                .map(|(key, line, node)| {
                    let path = format!("{}[{key}]", self.path);
                    (
                        key,
                        Val {
                            cx: self.cx,
                            node,
                            path,
                            line,
                        },
                    )
                })
                .collect(),
        )
    }

    /// A mapping of strings to strings (headers, attributes).
    pub(crate) fn str_map(&self) -> Option<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.entries()? {
            match v.node.scalar_text() {
                Some(s) => {
                    out.insert(k, s);
                }
                None => v.wrong_type("a string"),
            }
        }
        Some(out)
    }

    /// A list; null reads as empty. Items' paths are `parent[i]`.
    pub(crate) fn seq(&self) -> Option<Vec<Val<'a>>> {
        match &self.node.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| Val {
                        cx: self.cx,
                        node,
                        path: format!("{}[{i}]", self.path),
                        line: node.line,
                    })
                    .collect(),
            ),
            Value::Null => Some(Vec::new()),
            _ => {
                self.wrong_type("a list");
                None
            }
        }
    }

    /// A list of non-empty strings.
    pub(crate) fn str_list(&self) -> Option<Vec<String>> {
        let items = self.seq()?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.node.scalar_text() {
                Some(s) if !s.is_empty() => out.push(s),
                Some(_) => item.error("must not be empty"),
                None => item.wrong_type("a string"),
            }
        }
        Some(out)
    }

    /// Like [`Val::str_list`], keeping each item's location.
    pub(crate) fn name_list(&self) -> Option<Vec<Located<String>>> {
        let items = self.seq()?;
        Some(items.iter().filter_map(Val::name).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("servicetype", &["serviceType", "ports"]),
            Some("serviceType")
        );
        assert_eq!(suggest("prots", &["serviceType", "ports"]), Some("ports"));
        assert_eq!(suggest("zzz", &["serviceType", "ports"]), None);
    }
}

/// `10GiB` → 10 × 2³⁰; `1G` → 10⁹; `1048576` → 1,048,576 (see [`Val::quantity`]).
pub(crate) fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let suffix = suffix.strip_suffix('B').unwrap_or(suffix);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod quantity_tests {
    use super::parse_quantity;

    #[test]
    fn kubernetes_and_aio_sizes() {
        assert_eq!(parse_quantity("10GiB"), Some(10 << 30));
        assert_eq!(parse_quantity("500Mi"), Some(500 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("1048576"), Some(1_048_576));
        assert_eq!(parse_quantity("2K"), Some(2000));
        for bad in ["", "G", "1.5Gi", "-1", "10 GiB", "10GiBs", "99999999999Ei"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
