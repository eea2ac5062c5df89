//! X.509 client-certificate authentication, decided at CONNECT.
//!
//! The TLS layer only checked that the client holds the leaf's key (see
//! `edgemq_tls::DeferredClientVerifier`). Here OpenSSL's verifier checks the chain the
//! client sent against the trusted client CAs — dates, signatures, basic constraints, and
//! the client-authentication purpose — because it accepts X.509 v1 *leaves* (made by the
//! `openssl x509 -req` recipes operators copy), which webpki refuses, while still refusing v1
//! *CA* certificates. Every refusal is logged with OpenSSL's reason and, for the common
//! recipe mistakes, how to fix them.

use std::collections::BTreeMap;

use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509NameRef, X509PurposeId, X509Ref, X509StoreContext, X509};

use edgemq_codec::ReasonCode;
use edgemq_core::auth::{Admission, BoxFuture, ConnectRequest};
use edgemq_formats::x509_attributes::{DistinguishedName as Dn, DnError};

use crate::{Method, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    #[error("trusted client CA bundle: {0}")]
    TrustedCa(String),
    #[error("attribute entry {entry}: subject {subject:?}: {error}")]
    Subject {
        entry: String,
        subject: String,
        error: DnError,
    },
}

/// Read from a certificate (OpenSSL's names) into the form edgemq-formats parses subjects to.
fn dn_of(name: &X509NameRef) -> Dn {
    Dn::from_pairs(name.entries().map(|e| {
        let key = e
            .object()
            .nid()
            .short_name()
            .map(str::to_owned)
            .unwrap_or_else(|_| e.object().to_string());
        let value = e.data().to_string().unwrap_or_default();
        (key, value)
    }))
}

/// One `authorizationAttributes` entry: (entry name, subject, attributes).
type SubjectEntry = (String, Dn, Vec<(String, String)>);

/// The `X509` method.
pub struct X509Method {
    trusted: X509Store,
    /// In resource order.
    attributes: Vec<SubjectEntry>,
}

impl X509Method {
    /// `trusted_ca_pem`: the `client_ca.pem` bundle. `attributes`: entry name → (subject as
    /// written, attributes).
    pub fn new(
        trusted_ca_pem: &[u8],
        attributes: &BTreeMap<String, (String, BTreeMap<String, String>)>,
    ) -> Result<Self, X509Error> {
        let cas = X509::stack_from_pem(trusted_ca_pem)
            .map_err(|e| X509Error::TrustedCa(e.to_string()))?;
        if cas.is_empty() {
            return Err(X509Error::TrustedCa("no certificate in the bundle".into()));
        }
        let mut store = X509StoreBuilder::new().map_err(|e| X509Error::TrustedCa(e.to_string()))?;
        for ca in cas {
            store
                .add_cert(ca)
                .map_err(|e| X509Error::TrustedCa(e.to_string()))?;
        }
        // Leaves must be usable for TLS client authentication (extendedKeyUsage clientAuth
        // when the extension is present; a v1 leaf has none and passes).
        store
            .set_purpose(X509PurposeId::SSL_CLIENT)
            .map_err(|e| X509Error::TrustedCa(e.to_string()))?;
        let mut parsed = Vec::new();
        for (entry, (subject, attrs)) in attributes {
            let dn = Dn::parse(subject).map_err(|error| X509Error::Subject {
                entry: entry.clone(),
                subject: subject.clone(),
                error,
            })?;
            parsed.push((
                entry.clone(),
                dn,
                attrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ));
        }
        Ok(X509Method {
            trusted: store.build(),
            attributes: parsed,
        })
    }

    fn verify(&self, request: &ConnectRequest<'_>) -> Outcome {
        let Some((leaf_der, rest)) = request.client_certificates.split_first() else {
            return Outcome::not_relevant("no client certificate");
        };
        let leaf = match X509::from_der(leaf_der) {
            Ok(c) => c,
            Err(_) => {
                return Outcome::refuse(
                    ReasonCode::NotAuthorized,
                    "client certificate is not valid DER",
                )
            }
        };
        let mut untrusted = match Stack::new() {
            Ok(s) => s,
            Err(e) => {
                return Outcome::refuse(ReasonCode::ServerUnavailable, format!("openssl: {e}"))
            }
        };
        for der in rest {
            match X509::from_der(der) {
                Ok(c) => {
                    if untrusted.push(c).is_err() {
                        return Outcome::refuse(
                            ReasonCode::ServerUnavailable,
                            "openssl: stack push failed",
                        );
                    }
                }
                Err(_) => {
                    return Outcome::refuse(
                        ReasonCode::NotAuthorized,
                        "a certificate of the client's chain is not valid DER",
                    )
                }
            }
        }
        let result = X509StoreContext::new().and_then(|mut ctx| {
            ctx.init(&self.trusted, &leaf, &untrusted, |ctx| {
                let ok = ctx.verify_cert()?;
                if ok {
                    let chain: Vec<X509> = ctx
                        .chain()
                        .map(|c| c.iter().map(|x| x.to_owned()).collect())
                        .unwrap_or_default();
                    Ok(Ok(chain))
                } else {
                    let depth = ctx.error_depth();
                    let subject = ctx
                        .current_cert()
                        .map(subject_line)
                        .unwrap_or_else(|| "?".into());
                    Ok(Err((
                        ctx.error().as_raw(),
                        ctx.error().error_string(),
                        depth,
                        subject,
                    )))
                }
            })
        });
        match result {
            Err(e) => Outcome::refuse(ReasonCode::ServerUnavailable, format!("openssl: {e}")),
            Ok(Err((code, text, depth, subject))) => Outcome::refuse(
                ReasonCode::NotAuthorized,
                explain(code, text, depth, &subject, &leaf),
            ),
            Ok(Ok(chain)) => {
                let attributes = self.attributes_for(&chain);
                let username = common_name(leaf.subject_name());
                Outcome::Admit(Admission {
                    attributes,
                    username,
                    expires_at: None,
                    authentication_method: None,
                })
            }
        }
    }

    /// Walk the verified chain from the leaf upward; the first certificate whose subject
    /// equals an entry's subject gives that entry's attributes.
    fn attributes_for(&self, chain: &[X509]) -> Vec<(String, String)> {
        for cert in chain {
            let dn = dn_of(cert.subject_name());
            if let Some((_, _, attrs)) = self.attributes.iter().find(|(_, s, _)| *s == dn) {
                return attrs.clone();
            }
        }
        Vec::new()
    }
}

fn common_name(name: &X509NameRef) -> Option<String> {
    name.entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
}

fn subject_line(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// OpenSSL's X509_V_ERR_* values, from openssl-sys (they differ between OpenSSL versions).
use openssl_sys::{
    X509_V_ERR_CERT_HAS_EXPIRED as ERR_CERT_HAS_EXPIRED,
    X509_V_ERR_CERT_NOT_YET_VALID as ERR_CERT_NOT_YET_VALID,
    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT as ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
    X509_V_ERR_INVALID_CA as ERR_INVALID_CA, X509_V_ERR_INVALID_PURPOSE as ERR_INVALID_PURPOSE,
    X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN as ERR_SELF_SIGNED_CERT_IN_CHAIN,
    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT as ERR_UNABLE_TO_GET_ISSUER_CERT,
    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY as ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
};

/// OpenSSL's reason, which certificate, and what to do about it.
fn explain(code: i32, text: &str, depth: u32, subject: &str, leaf: &X509Ref) -> String {
    let which = if depth == 0 {
        format!("client certificate [{subject}]")
    } else {
        format!("chain certificate at depth {depth} [{subject}]")
    };
    let hint = match code {
        ERR_INVALID_CA => " — it is used as a CA but is not one: an X.509 v1 certificate, or one \
            without basicConstraints CA:TRUE (what `openssl x509 -req` makes without -extfile). \
            Re-issue the intermediate with basicConstraints=critical,CA:TRUE and \
            keyUsage=keyCertSign,cRLSign (or use `edgemq certs intermediate`)"
            .to_string(),
        ERR_CERT_HAS_EXPIRED => format!(
            " — expired (notAfter {})",
            leaf_or_any_not_after(leaf, depth)
        ),
        ERR_CERT_NOT_YET_VALID => format!(
            " — not valid before {}",
            leaf_or_any_not_before(leaf, depth)
        ),
        ERR_UNABLE_TO_GET_ISSUER_CERT
        | ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | ERR_SELF_SIGNED_CERT_IN_CHAIN => " — the chain does not lead to a trusted client CA \
            (the listener's trustedClientCaCert); send the intermediates with the leaf \
            (mosquitto: a --cert file holding leaf + intermediate)"
            .to_string(),
        ERR_INVALID_PURPOSE => " — wrong usage: not for TLS client authentication \
            (extendedKeyUsage must include clientAuth)"
            .to_string(),
        _ => String::new(),
    };
    format!("{which}: {text}{hint}")
}

fn leaf_or_any_not_after(leaf: &X509Ref, depth: u32) -> String {
    if depth == 0 {
        leaf.not_after().to_string()
    } else {
        "see the chain".into()
    }
}

fn leaf_or_any_not_before(leaf: &X509Ref, depth: u32) -> String {
    if depth == 0 {
        leaf.not_before().to_string()
    } else {
        "see the chain".into()
    }
}

impl Method for X509Method {
    fn name(&self) -> &'static str {
        "X509"
    }

    fn check<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(std::future::ready(self.verify(request)))
    }

    fn wants_client_certificates(&self) -> bool {
        true
    }
}
