//! BrokerAuthentication: v1 (`method` + `…Settings`), transitional (`custom`,
//! `serviceAccountToken`, `x509Credentials`), legacy v1beta1 (one key per method, `listenerRef`).

use std::collections::BTreeMap;

use edgemq_formats::x509_attributes::DistinguishedName;

use super::{metadata, ApiVersion};
use crate::diag::Origin;
use crate::model::SubjectAttributes;
use crate::reader::{child, Located, Obj, Val};

pub(crate) struct RawAuthentication {
    pub origin: Origin,
    pub name: Located<String>,
    /// Legacy only: the listeners this authentication serves.
    pub listener_refs: Option<Vec<Located<String>>>,
    /// Each with the location of its `authenticationMethods[i]` entry.
    pub methods: Vec<Located<RawMethod>>,
}

pub(crate) enum RawSatVerification {
    InCluster,
    Kubeconfig(String),
    Jwks(Located<String>),
    Issuer {
        url: String,
        ca: Option<Located<String>>,
    },
}

pub(crate) enum RawMethod {
    Custom {
        endpoint: String,
        ca: Option<Located<String>>,
        client_cert: Option<Located<String>>,
        headers: BTreeMap<String, String>,
    },
    Sat {
        audiences: Vec<String>,
        verification: RawSatVerification,
    },
    X509 {
        ca: Located<String>,
        attributes: BTreeMap<String, SubjectAttributes>,
        attributes_secret: Option<Located<String>>,
    },
    UsernamePassword {
        secret: Located<String>,
    },
}

/// The v1 schema's default for `x509Settings.trustedClientCaCert`.
const DEFAULT_CLIENT_CA: &str = "client-ca";

const ROOT: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const SPEC: &[&str] = &["authenticationMethods"];
const LEGACY_SPEC: &[&str] = &["listenerRef", "authenticationMethods"];
const V1_METHOD: &[&str] = &[
    "method",
    "customSettings",
    "serviceAccountTokenSettings",
    "x509Settings",
    "usernamePasswordSettings",
];
const TRANSITIONAL_METHOD: &[&str] = &[
    "method",
    "customSettings",
    "serviceAccountTokenSettings",
    "x509Settings",
    "usernamePasswordSettings",
    "custom",
    "serviceAccountToken",
    "x509Credentials",
];
const CUSTOM: &[&str] = &["endpoint", "caCertConfigMap", "auth", "headers"];
const CUSTOM_AUTH: &[&str] = &["x509"];
const CUSTOM_X509: &[&str] = &["secretRef", "namespace"];
// `kubeconfig`, `jwksConfigMap`, `issuer`, `issuerCaConfigMap`: edgemq extensions saying
// how tokens are verified when the broker does not run inside the cluster.
const SAT: &[&str] = &[
    "audiences",
    "kubeconfig",
    "jwksConfigMap",
    "issuer",
    "issuerCaConfigMap",
];
const X509: &[&str] = &[
    "trustedClientCaCert",
    "authorizationAttributes",
    "additionalValidation",
];
const SUBJECT_ATTRIBUTES: &[&str] = &["subject", "attributes"];
const USERNAME_PASSWORD: &[&str] = &["secretRef"];
const LEGACY_METHOD: &[&str] = &["custom", "sat", "usernamePassword", "x509", "svid"];
const LEGACY_CUSTOM: &[&str] = &["endpoint", "caCert", "auth", "headers"];
const LEGACY_CUSTOM_AUTH: &[&str] = &["x509", "keyVault"];
const LEGACY_CUSTOM_X509: &[&str] = &["secretName", "namespace"];
const LEGACY_X509: &[&str] = &["trustedClientCaCert", "attributes"];
const LEGACY_X509_ATTRIBUTES: &[&str] = &["secretName", "keyVault"];
const LEGACY_USERNAME_PASSWORD: &[&str] = &["secretName", "keyVault"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Custom,
    Sat,
    X509,
    UsernamePassword,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Custom,
        Method::Sat,
        Method::X509,
        Method::UsernamePassword,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Custom => "Custom",
            Method::Sat => "ServiceAccountToken",
            Method::X509 => "X509",
            Method::UsernamePassword => "UsernamePassword",
        }
    }

    /// The settings field (v1 spelling first, then the transitional one).
    fn settings_keys(self, transitional: bool) -> &'static [&'static str] {
        match (self, transitional) {
            (Method::Custom, false) => &["customSettings"],
            (Method::Custom, true) => &["customSettings", "custom"],
            (Method::Sat, false) => &["serviceAccountTokenSettings"],
            (Method::Sat, true) => &["serviceAccountTokenSettings", "serviceAccountToken"],
            (Method::X509, false) => &["x509Settings"],
            (Method::X509, true) => &["x509Settings", "x509Credentials"],
            (Method::UsernamePassword, _) => &["usernamePasswordSettings"],
        }
    }
}

const METHODS: &[(&str, Method)] = &[
    ("Custom", Method::Custom),
    ("ServiceAccountToken", Method::Sat),
    ("X509", Method::X509),
    ("X509Credentials", Method::X509),
    ("UsernamePassword", Method::UsernamePassword),
];

pub(crate) fn read(root: &Val<'_>, version: ApiVersion) -> Option<RawAuthentication> {
    let obj = root.obj(ROOT)?;
    let name = metadata(&obj);
    let legacy = version == ApiVersion::Legacy;
    // Fail closed: an ignored misspelling here could weaken every port that uses it.
    let spec = obj
        .req("spec")?
        .strict()
        .obj(if legacy { LEGACY_SPEC } else { SPEC })?;
    let listener_refs = if legacy {
        spec.req("listenerRef").and_then(|v| v.name_list())
    } else {
        None
    };
    let items = spec
        .req("authenticationMethods")
        .and_then(|v| v.seq())
        .unwrap_or_default();
    if items.is_empty() {
        spec.cx().error(
            spec.line(),
            &child(spec.path(), "authenticationMethods"),
            "at least one method is required",
        );
    }
    let methods = items
        .iter()
        .filter_map(|item| {
            let method = if legacy {
                legacy_method(item)
            } else {
                v1_method(item, version == ApiVersion::Transitional)
            };
            method.map(|m| item.at(m))
        })
        .collect();
    Some(RawAuthentication {
        origin: obj.cx().origin.clone(),
        name: name?,
        listener_refs,
        methods,
    })
}

fn v1_method(item: &Val<'_>, transitional: bool) -> Option<RawMethod> {
    let m = item.obj(if transitional {
        TRANSITIONAL_METHOD
    } else {
        V1_METHOD
    })?;
    let method = m.req("method").and_then(|v| v.one_of(METHODS))?;
    for other in Method::ALL.into_iter().filter(|o| *o != method) {
        if let Some(v) = m.get_alias(other.settings_keys(transitional)) {
            v.warn(format!("ignored: method is {}", method.name()));
        }
    }
    let keys = method.settings_keys(transitional);
    let settings = if method == Method::X509 {
        m.get_alias(keys)
    } else {
        m.req_alias(keys)
    };
    match method {
        Method::Custom => {
            let s = settings?.obj(CUSTOM)?;
            let client_cert = s.get("auth").and_then(|a| {
                let a = a.obj(CUSTOM_AUTH)?;
                let x = a.req("x509")?.obj(CUSTOM_X509)?;
                x.req("secretRef")?.name()
            });
            custom(&s, s.get("caCertConfigMap"), client_cert)
        }
        Method::Sat => sat(&settings?.obj(SAT)?),
        Method::X509 => match settings {
            Some(s) => x509_v1(&s.obj(X509)?),
            // No settings: everything defaults, the CA config map to "client-ca".
            None => Some(RawMethod::X509 {
                ca: Located {
                    value: DEFAULT_CLIENT_CA.to_owned(),
                    line: m.line(),
                    path: child(&child(m.path(), keys[0]), "trustedClientCaCert"),
                },
                attributes: BTreeMap::new(),
                attributes_secret: None,
            }),
        },
        Method::UsernamePassword => {
            let s = settings?.obj(USERNAME_PASSWORD)?;
            Some(RawMethod::UsernamePassword {
                secret: s.req("secretRef")?.name()?,
            })
        }
    }
}

fn custom(
    s: &Obj<'_>,
    ca: Option<Val<'_>>,
    client_cert: Option<Located<String>>,
) -> Option<RawMethod> {
    let endpoint = s.req("endpoint").and_then(|e| {
        let url = e.string()?;
        let https = url
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
            && url.len() > 8;
        if !https {
            e.error(format!(
                "\"{url}\" must be an https:// URL (TLS is required)"
            ));
            return None;
        }
        Some(url)
    });
    let headers = s
        .get("headers")
        .and_then(|h| h.str_map())
        .unwrap_or_default();
    Some(RawMethod::Custom {
        endpoint: endpoint?,
        ca: ca.and_then(|c| c.name()),
        client_cert,
        headers,
    })
}

fn sat(s: &Obj<'_>) -> Option<RawMethod> {
    let audiences = s.req("audiences")?.str_list()?;
    if audiences.is_empty() {
        s.cx().error(
            s.line(),
            &child(s.path(), "audiences"),
            "at least one audience is required",
        );
        return None;
    }
    let kubeconfig = s.get("kubeconfig").and_then(|v| v.string());
    let jwks = s.get("jwksConfigMap").and_then(|v| v.name());
    let issuer_given = s.get("issuer").is_some();
    let issuer = s.get("issuer").and_then(|v| {
        let url = v.string()?;
        if !url.starts_with("https://") {
            v.error("the issuer must be an https:// URL");
            return None;
        }
        Some(url)
    });
    if issuer_given && issuer.is_none() {
        // Reported; not read as "verify in the cluster".
        return None;
    }
    let issuer_ca = s.get("issuerCaConfigMap").and_then(|v| v.name());
    let chosen = [kubeconfig.is_some(), jwks.is_some(), issuer.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen > 1 {
        s.cx().error(
            s.line(),
            s.path(),
            "at most one of kubeconfig, jwksConfigMap, issuer",
        );
        return None;
    }
    let verification = match (kubeconfig, jwks, issuer) {
        (Some(path), _, _) => RawSatVerification::Kubeconfig(path),
        (_, Some(cm), _) => RawSatVerification::Jwks(cm),
        (_, _, Some(url)) => RawSatVerification::Issuer { url, ca: issuer_ca },
        _ => RawSatVerification::InCluster,
    };
    Some(RawMethod::Sat {
        audiences,
        verification,
    })
}

fn x509_v1(s: &Obj<'_>) -> Option<RawMethod> {
    let ca = match s.get("trustedClientCaCert") {
        Some(v) => v.name()?,
        None => Located {
            value: DEFAULT_CLIENT_CA.to_owned(),
            line: s.line(),
            path: child(s.path(), "trustedClientCaCert"),
        },
    };
    if let Some(v) = s.get("additionalValidation") {
        let azure = v.one_of(&[("None", false), ("AzureDeviceRegistry", true)]);
        if azure == Some(true) {
            v.error(
                "AzureDeviceRegistry validation is not supported by a standalone broker; use None",
            );
        }
    }
    let mut attributes = BTreeMap::new();
    if let Some(entries) = s.get("authorizationAttributes").and_then(|a| a.entries()) {
        for (key, v) in entries {
            let Some(e) = v.obj(SUBJECT_ATTRIBUTES) else {
                continue;
            };
            let subject = e.req("subject").and_then(|s| subject(&s));
            let attrs = e.req("attributes").and_then(|a| a.str_map());
            if let (Some(subject), Some(attrs)) = (subject, attrs) {
                attributes.insert(
                    key,
                    SubjectAttributes {
                        subject: subject.value,
                        attributes: attrs,
                    },
                );
            }
        }
    }
    Some(RawMethod::X509 {
        ca,
        attributes,
        attributes_secret: None,
    })
}

fn legacy_method(item: &Val<'_>) -> Option<RawMethod> {
    let m = item.obj(LEGACY_METHOD)?;
    let present: Vec<(&str, Val<'_>)> = LEGACY_METHOD
        .iter()
        .filter_map(|k| m.get(k).map(|v| (*k, v)))
        .collect();
    if present.len() != 1 {
        item.error(format!(
            "each method entry needs exactly one of: custom, sat, usernamePassword, x509 (found {})",
            present.len()
        ));
        return None;
    }
    let (key, v) = &present[0];
    match *key {
        "custom" => {
            let s = v.obj(LEGACY_CUSTOM)?;
            let client_cert = s.get("auth").and_then(|a| {
                let a = a.obj(LEGACY_CUSTOM_AUTH)?;
                if let Some(kv) = a.get("keyVault") {
                    kv.error("Azure Key Vault certificates are not supported; use x509.secretName");
                }
                let x = a.get("x509")?.obj(LEGACY_CUSTOM_X509)?;
                x.req("secretName")?.name()
            });
            custom(&s, s.get("caCert"), client_cert)
        }
        "sat" => sat(&v.obj(SAT)?),
        "usernamePassword" => {
            let s = v.obj(LEGACY_USERNAME_PASSWORD)?;
            if let Some(kv) = s.get("keyVault") {
                kv.error("Azure Key Vault secrets are not supported; use secretName");
            }
            Some(RawMethod::UsernamePassword {
                secret: s.req("secretName")?.name()?,
            })
        }
        "x509" => {
            let s = v.obj(LEGACY_X509)?;
            let ca = s.req("trustedClientCaCert").and_then(|c| c.name());
            let attributes_secret = s.get("attributes").and_then(|a| {
                let a = a.obj(LEGACY_X509_ATTRIBUTES)?;
                if let Some(kv) = a.get("keyVault") {
                    kv.error("Azure Key Vault secrets are not supported; use secretName");
                }
                a.req("secretName")?.name()
            });
            Some(RawMethod::X509 {
                ca: ca?,
                attributes: BTreeMap::new(),
                attributes_secret,
            })
        }
        _ => {
            v.error("SPIFFE (svid) authentication is not supported");
            None
        }
    }
}

/// A subject the X509 method can match: parsed as the broker parses it, so an entry it
/// would refuse at start is refused here, at its line (and left out of the model).
fn subject(v: &Val<'_>) -> Option<Located<String>> {
    let name = v.name()?;
    match DistinguishedName::parse(&name.value) {
        Ok(_) => Some(name),
        Err(e) => {
            v.error(format!("not a distinguished name: {e}"));
            None
        }
    }
}
