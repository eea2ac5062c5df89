//! Resolving a reference by name, and checking that what it names holds what the referrer
//! needs: a TLS pair that parses and matches, CA certificates, `passwords.toml`,
//! `x509Attributes.toml` (the two files read by edgemq-formats, the broker's own parser).
//! Every problem is reported at the referring field.

use std::collections::{BTreeMap, BTreeSet};

use edgemq_tls::pem::{certified_key, parse_certificates, PemError};

use crate::diag::{existing, Diags, Origin};
use crate::model::{Secret, SubjectAttributes};
use crate::reader::Located;

pub(crate) struct Refs<'a> {
    pub diags: &'a Diags,
    pub secrets: &'a BTreeMap<String, Secret>,
    pub config_maps: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Resources that failed to load: references to them are not reported a second time.
    pub broken: &'a BTreeSet<(&'static str, String)>,
}

/// How a reference is described in messages.
pub(crate) struct What {
    pub group: &'static str,
    pub singular: &'static str,
    pub plural: &'static str,
}

pub(crate) const SECRET: What = What {
    group: "Secret",
    singular: "secret",
    plural: "secrets",
};
pub(crate) const CONFIG_MAP: What = What {
    group: "ConfigMap",
    singular: "config map",
    plural: "config maps",
};

impl<'a> Refs<'a> {
    /// `map[r]`, or an error at `r` naming what is missing and what exists.
    pub(crate) fn lookup<'m, V>(
        &self,
        origin: &Origin,
        r: &Located<String>,
        map: &'m BTreeMap<String, V>,
        what: &What,
        ctx: &str,
    ) -> Option<&'m V> {
        let found = map.get(&r.value);
        if found.is_none() && !self.broken.contains(&(what.group, r.value.clone())) {
            self.error(
                origin,
                r,
                format!(
                    "{ctx}{} \"{}\" not found; {}",
                    what.singular,
                    r.value,
                    existing(what.plural, map.keys())
                ),
            );
        }
        found
    }

    pub(crate) fn error<T>(&self, origin: &Origin, at: &Located<T>, msg: String) {
        origin.error(self.diags, Some(at.line), &at.path, msg);
    }

    pub(crate) fn warn<T>(&self, origin: &Origin, at: &Located<T>, msg: String) {
        origin.warn(self.diags, Some(at.line), &at.path, msg);
    }

    /// A secret's key, or an error listing the keys it has.
    fn secret_key(
        &self,
        origin: &Origin,
        r: &Located<String>,
        key: &str,
        ctx: &str,
    ) -> Option<&'a [u8]> {
        let secret = self.lookup(origin, r, self.secrets, &SECRET, ctx)?;
        let value = secret.data.get(key);
        if value.is_none() {
            self.error(
                origin,
                r,
                format!(
                    "{ctx}secret \"{}\" has no key {key}{}",
                    r.value,
                    keys_of(secret.data.keys())
                ),
            );
        }
        value.map(Vec::as_slice)
    }

    pub(crate) fn config_map_key(
        &self,
        origin: &Origin,
        r: &Located<String>,
        key: &str,
        ctx: &str,
    ) -> Option<&'a str> {
        let cm = self.lookup(origin, r, self.config_maps, &CONFIG_MAP, ctx)?;
        let value = cm.get(key);
        if value.is_none() {
            self.error(
                origin,
                r,
                format!(
                    "{ctx}config map \"{}\" has no key {key}{}",
                    r.value,
                    keys_of(cm.keys())
                ),
            );
        }
        value.map(String::as_str)
    }

    /// `tls.crt` and `tls.key` of a secret, checked to parse and to belong together.
    pub(crate) fn tls_pair(
        &self,
        origin: &Origin,
        r: &Located<String>,
        ctx: &str,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        self.lookup(origin, r, self.secrets, &SECRET, ctx)?;
        let chain = self.secret_key(origin, r, "tls.crt", ctx);
        let key = self.secret_key(origin, r, "tls.key", ctx);
        let (chain, key) = (chain?, key?);
        if let Err(e) = certified_key(chain, key) {
            let detail = match e {
                PemError::KeyMismatch => {
                    "tls.key does not match the certificate in tls.crt".to_owned()
                }
                PemError::NoCertificate | PemError::BadCertificate(_) => format!("tls.crt: {e}"),
                PemError::NoKey | PemError::BadKey(_) | PemError::UnsupportedKey(_) => {
                    format!("tls.key: {e}")
                }
            };
            self.error(origin, r, format!("{ctx}secret \"{}\": {detail}", r.value));
            return None;
        }
        Some((chain.to_vec(), key.to_vec()))
    }

    /// A config map of CA certificates: `key` must exist and parse (X.509 client CAs), or with
    /// no key, every value must parse (a custom auth server's CA).
    pub(crate) fn ca_bundle(
        &self,
        origin: &Origin,
        r: &Located<String>,
        key: Option<&str>,
        ctx: &str,
    ) {
        let entries: Vec<(&str, &str)> = match key {
            Some(k) => match self.config_map_key(origin, r, k, ctx) {
                Some(v) => vec![(k, v)],
                None => return,
            },
            None => {
                let Some(cm) = self.lookup(origin, r, self.config_maps, &CONFIG_MAP, ctx) else {
                    return;
                };
                if cm.is_empty() {
                    self.error(
                        origin,
                        r,
                        format!(
                            "{ctx}config map \"{}\" is empty: expected PEM certificates",
                            r.value
                        ),
                    );
                }
                cm.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
            }
        };
        for (k, pem) in entries {
            if let Err(e) = parse_certificates(pem.as_bytes()) {
                self.error(
                    origin,
                    r,
                    format!("{ctx}config map \"{}\": {k}: {e}", r.value),
                );
            }
        }
    }

    /// `passwords.toml`, read by the parser the broker uses (edgemq-formats): every
    /// problem is reported, each with its line in the file.
    pub(crate) fn passwords(&self, origin: &Origin, r: &Located<String>, ctx: &str) {
        const KEY: &str = "passwords.toml";
        let Some(bytes) = self.secret_key(origin, r, KEY, ctx) else {
            return;
        };
        if let Err(problems) = edgemq_formats::passwords::parse(bytes) {
            for e in &problems {
                let msg = format!("{ctx}secret \"{}\": {KEY}: {e}", r.value);
                self.error(origin, r, msg);
            }
        }
    }

    /// `x509Attributes.toml`, the v1beta1 form of `authorizationAttributes`. Entries with a
    /// problem are reported and left out.
    pub(crate) fn x509_attributes(
        &self,
        origin: &Origin,
        r: &Located<String>,
        ctx: &str,
    ) -> Option<BTreeMap<String, SubjectAttributes>> {
        const KEY: &str = "x509Attributes.toml";
        let bytes = self.secret_key(origin, r, KEY, ctx)?;
        match edgemq_formats::x509_attributes::parse(bytes) {
            Ok(entries) => Some(entries.into_iter().map(subject_attributes).collect()),
            Err(problems) => {
                for e in &problems {
                    let msg = format!("{ctx}secret \"{}\": {KEY}: {e}", r.value);
                    self.error(origin, r, msg);
                }
                None
            }
        }
    }
}

fn keys_of<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    let keys: Vec<&str> = keys.map(String::as_str).collect();
    if keys.is_empty() {
        " (it is empty)".to_owned()
    } else {
        format!(" (keys: {})", keys.join(", "))
    }
}

fn subject_attributes(
    e: edgemq_formats::x509_attributes::SubjectAttributes,
) -> (String, SubjectAttributes) {
    let attributes = e.attributes.into_iter().collect();
    (
        e.name,
        SubjectAttributes {
            subject: e.subject,
            attributes,
        },
    )
}
