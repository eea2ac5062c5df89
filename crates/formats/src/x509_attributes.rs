//! X.509 attribute files: `x509Attributes.toml` (the v1beta1 form of a BrokerAuthentication's
//! `authorizationAttributes`) and the distinguished names they match certificates by.
//!
//! ```toml
//! [root]
//! subject = "CN = Contoso Root CA Cert, OU = Engineering, C = US"
//! [root.attributes]
//! organization = "contoso"
//! ```

use toml::de::DeValue;

use crate::toml_doc::{self, string_table, Doc, Key, SyntaxError};
use crate::Problems;

/// A distinguished name compared as a multiset of (attribute type, value), so
/// `CN = a, O = b` equals `O=b,CN=a`, and `commonName` equals `CN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName(Vec<(String, String)>);

/// Why a subject is not a distinguished name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("empty distinguished name")]
    Empty,
    #[error("{part:?} is not TYPE = value")]
    NotTypeValue { part: String },
}

impl DistinguishedName {
    /// The written form (`CN = Contoso Root CA Cert, OU = Engineering, C = US`; `/`
    /// separators as `openssl -subj` uses them are accepted too).
    pub fn parse(text: &str) -> Result<Self, DnError> {
        let separator = if text.trim_start().starts_with('/') {
            '/'
        } else {
            ','
        };
        let parts = text
            .split(separator)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|part| {
                let (key, value) = part.split_once('=').ok_or_else(|| DnError::NotTypeValue {
                    part: part.to_owned(),
                })?;
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parts.is_empty() {
            return Err(DnError::Empty);
        }
        Ok(Self::from_pairs(parts))
    }

    /// A name read from a certificate: (attribute type, value) pairs in any order.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut parts: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(key, value)| (normalize_type(&key), value))
            .collect();
        parts.sort();
        DistinguishedName(parts)
    }
}

/// Long attribute type names (OpenSSL's and RFC 4519's) to the short ones, upper case.
fn normalize_type(t: &str) -> String {
    match t.to_ascii_uppercase().as_str() {
        "COMMONNAME" => "CN".into(),
        "ORGANIZATIONNAME" => "O".into(),
        "ORGANIZATIONALUNITNAME" => "OU".into(),
        "COUNTRYNAME" => "C".into(),
        "LOCALITYNAME" => "L".into(),
        "STATEORPROVINCENAME" => "ST".into(),
        other => other.to_owned(),
    }
}

/// One entry: certificates whose subject (or an issuer's) is `dn` get `attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAttributes {
    pub name: String,
    /// As written, for messages.
    pub subject: String,
    pub dn: DistinguishedName,
    /// In key order.
    pub attributes: Vec<(String, String)>,
}

/// What is wrong in an `x509Attributes.toml`, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributesError {
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error(
        "line {line}: [{name}] needs subject = \"…\" and an [{name}.attributes] table of strings"
    )]
    Entry { line: usize, name: String },
    #[error("line {line}: [{name}] subject {subject:?}: {error}")]
    Subject {
        line: usize,
        name: String,
        subject: String,
        error: DnError,
    },
}

/// Every entry, or every problem of the file.
pub fn parse(bytes: &[u8]) -> Result<Vec<SubjectAttributes>, Problems<AttributesError>> {
    toml_doc::entries(bytes, |doc, name, entry| {
        from_toml(doc, name, entry.get_ref()).map_err(|e| vec![e])
    })
}

/// One `[name]` table: `subject` and a string table `attributes`.
fn from_toml(
    doc: &Doc<'_>,
    name: &Key<'_>,
    value: &DeValue<'_>,
) -> Result<SubjectAttributes, AttributesError> {
    let (line, name) = (doc.line(name), name.get_ref().to_string());
    let subject = value.get("subject").and_then(|s| s.get_ref().as_str());
    let attributes = value
        .get("attributes")
        .and_then(|a| string_table(a.get_ref()));
    let (Some(subject), Some(attributes)) = (subject, attributes) else {
        return Err(AttributesError::Entry { line, name });
    };
    entry_of(name, subject, attributes).map_err(|(name, subject, error)| AttributesError::Subject {
        line: value.get("subject").map_or(line, |s| doc.line(s)),
        name,
        subject,
        error,
    })
}

type BadSubject = (String, String, DnError);

/// Also how a YAML `authorizationAttributes` entry is read, so both forms agree.
pub fn entry_of(
    name: String,
    subject: &str,
    attributes: Vec<(String, String)>,
) -> Result<SubjectAttributes, BadSubject> {
    match DistinguishedName::parse(subject) {
        Ok(dn) => Ok(SubjectAttributes {
            name,
            subject: subject.to_owned(),
            dn,
            attributes,
        }),
        Err(error) => Err((name, subject.to_owned(), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_sets_of_short_types() {
        let written =
            DistinguishedName::parse("CN = Contoso Root CA Cert, OU = Engineering, C = US");
        let slashes = DistinguishedName::parse("/C=US/OU=Engineering/CN=Contoso Root CA Cert");
        let from_cert = DistinguishedName::from_pairs([
            ("commonName".to_owned(), "Contoso Root CA Cert".to_owned()),
            ("countryName".to_owned(), "US".to_owned()),
            (
                "organizationalUnitName".to_owned(),
                "Engineering".to_owned(),
            ),
        ]);
        assert_eq!(written, Ok(from_cert.clone()));
        assert_eq!(slashes, Ok(from_cert));
        assert_ne!(
            DistinguishedName::parse("CN=a"),
            DistinguishedName::parse("CN=b")
        );
    }

    #[test]
    fn each_dn_error() {
        assert_eq!(DistinguishedName::parse(" , "), Err(DnError::Empty));
        assert_eq!(DistinguishedName::parse(""), Err(DnError::Empty));
        assert_eq!(
            DistinguishedName::parse("CN=a, Contoso"),
            Err(DnError::NotTypeValue {
                part: "Contoso".into()
            })
        );
    }

    #[test]
    fn entries() {
        let text = "[root]\nsubject = \"CN = Root, O = Contoso\"\n[root.attributes]\norg = \"contoso\"\n\
                    [leaf]\nsubject = \"/CN=dev1\"\nattributes = { floor = \"f1\", site = \"s1\" }\n";
        let entries = parse(text.as_bytes()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["leaf", "root"]);
        assert_eq!(entries[0].subject, "/CN=dev1");
        assert_eq!(
            entries[0].attributes,
            [("floor".into(), "f1".into()), ("site".into(), "s1".into())]
        );
        assert_eq!(
            entries[1].dn,
            DistinguishedName::parse("O=Contoso,CN=Root").unwrap()
        );
    }

    #[test]
    fn each_file_error_with_its_line() {
        assert!(matches!(
            parse(b"[a\n").unwrap_err().0[..],
            [AttributesError::Syntax(SyntaxError::Toml {
                line: Some(1),
                ..
            })]
        ));
        assert_eq!(
            parse(b"\xfe").unwrap_err().0,
            [AttributesError::Syntax(SyntaxError::NotUtf8)]
        );
        let text =
            "a = 1\n[b]\nsubject = \"CN=b\"\n[c]\nsubject = \"CN=c\"\nattributes = { n = 1 }\n\
                    [d]\nsubject = \"Contoso\"\nattributes = {}\n";
        let messages: Vec<String> = parse(text.as_bytes())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            [
                "line 1: [a] needs subject = \"…\" and an [a.attributes] table of strings",
                "line 2: [b] needs subject = \"…\" and an [b.attributes] table of strings",
                "line 4: [c] needs subject = \"…\" and an [c.attributes] table of strings",
                "line 8: [d] subject \"Contoso\": \"Contoso\" is not TYPE = value",
            ]
        );
    }
}
