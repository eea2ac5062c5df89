//! Authentication and authorization: their references (secrets, config maps) and, for legacy
//! v1beta1 listeners, the `listenerRef` links from the policy side.

use std::collections::{BTreeMap, BTreeSet};

use super::refs::{Refs, What};
use crate::diag::{existing, Origin};
use crate::model::{
    Authentication, AuthnMethod, Authorization, CustomAuth, SatVerification, X509Auth,
};
use crate::reader::Located;
use crate::resources::authn::{RawAuthentication, RawMethod, RawSatVerification};
use crate::resources::authz::RawAuthorization;
use crate::resources::listener::{LegacyLinks, RawListener};

pub(crate) fn authentications(
    raw: &[RawAuthentication],
    refs: &Refs<'_>,
    used: &BTreeSet<&str>,
) -> BTreeMap<String, Authentication> {
    raw.iter()
        .map(|a| {
            let methods = a
                .methods
                .iter()
                .map(|m| {
                    let errors_before = refs.diags.error_count();
                    let built = method(&a.origin, &m.value, refs);
                    // Only when the references resolved: otherwise they were reported.
                    if refs.diags.error_count() == errors_before {
                        let used = used.contains(a.name.value.as_str());
                        construct(&a.origin, m, &built, refs, used);
                    }
                    built
                })
                .collect();
            let name = a.name.value.clone();
            (name.clone(), Authentication { name, methods })
        })
        .collect()
}

fn method(origin: &Origin, m: &RawMethod, refs: &Refs<'_>) -> AuthnMethod {
    match m {
        RawMethod::Custom {
            endpoint,
            ca,
            client_cert,
            headers,
        } => {
            if let Some(ca) = ca {
                refs.ca_bundle(origin, ca, None, "");
            }
            if let Some(cc) = client_cert {
                refs.tls_pair(origin, cc, "");
            }
            AuthnMethod::Custom(CustomAuth {
                endpoint: endpoint.clone(),
                ca_config_map: ca.as_ref().map(|c| c.value.clone()),
                client_cert_secret: client_cert.as_ref().map(|c| c.value.clone()),
                headers: headers.clone(),
            })
        }
        RawMethod::Sat {
            audiences,
            verification,
        } => AuthnMethod::ServiceAccountToken {
            audiences: audiences.clone(),
            verification: match verification {
                RawSatVerification::InCluster => SatVerification::InCluster,
                RawSatVerification::Kubeconfig(path) => SatVerification::Kubeconfig(path.clone()),
                RawSatVerification::Jwks(cm) => {
                    refs.config_map_key(origin, cm, "jwks.json", "");
                    SatVerification::Jwks {
                        config_map: cm.value.clone(),
                    }
                }
                RawSatVerification::Issuer { url, ca } => {
                    if let Some(ca) = ca {
                        refs.ca_bundle(origin, ca, None, "");
                    }
                    SatVerification::Issuer {
                        url: url.clone(),
                        ca_config_map: ca.as_ref().map(|c| c.value.clone()),
                    }
                }
            },
        },
        RawMethod::X509 {
            ca,
            attributes,
            attributes_secret,
        } => {
            refs.ca_bundle(origin, ca, Some("client_ca.pem"), "");
            let attributes = match attributes_secret {
                Some(s) => refs.x509_attributes(origin, s, "").unwrap_or_default(),
                None => attributes.clone(),
            };
            AuthnMethod::X509(X509Auth {
                trusted_client_ca_config_map: ca.value.clone(),
                attributes,
                attributes_secret: attributes_secret.as_ref().map(|s| s.value.clone()),
            })
        }
        RawMethod::UsernamePassword { secret } => {
            refs.passwords(origin, secret, "");
            AuthnMethod::UsernamePassword {
                secret: secret.value.clone(),
            }
        }
    }
}

/// Builds the method as the broker does at start (the same constructors), so that what
/// `serve` refuses, `check` refuses, and what `serve` warns about, `check` warns about.
fn construct(
    origin: &Origin,
    at: &Located<RawMethod>,
    m: &AuthnMethod,
    refs: &Refs<'_>,
    used: bool,
) {
    use edgemq_security::custom::{CustomMethod, CustomSettings, DEFAULT_TIMEOUT};
    use edgemq_security::sat::{JwksSource, SatVerifier, TokenReviewClient};
    use edgemq_security::x509::X509Method;

    let cm_text = |name: &str, key: &str| {
        refs.config_maps
            .get(name)
            .and_then(|cm| cm.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let cm_all = |name: &str| {
        refs.config_maps
            .get(name)
            .map(|cm| cm.values().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    };
    let secret_text = |name: &str, key: &str| {
        refs.secrets
            .get(name)
            .and_then(|s| s.data.get(key))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let result: Result<(), String> = match m {
        AuthnMethod::UsernamePassword { .. } => Ok(()), // checked with its secret
        AuthnMethod::X509(x) => {
            let attributes = x
                .attributes
                .iter()
                .map(|(k, sa)| (k.clone(), (sa.subject.clone(), sa.attributes.clone())))
                .collect();
            X509Method::new(
                cm_text(&x.trusted_client_ca_config_map, "client_ca.pem").as_bytes(),
                &attributes,
            )
            .map(|_| ())
            .map_err(|e| format!("config map \"{}\": {e}", x.trusted_client_ca_config_map))
        }
        AuthnMethod::ServiceAccountToken { verification, .. } => match verification {
            SatVerification::InCluster => {
                if let (true, SatVerifier::Unavailable(why)) = (used, SatVerifier::in_cluster()) {
                    refs.warn(origin, at, why);
                }
                Ok(())
            }
            SatVerification::Kubeconfig(path) => {
                TokenReviewClient::from_kubeconfig(std::path::Path::new(path))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            SatVerification::Jwks { config_map } => {
                JwksSource::from_json(&cm_text(config_map, "jwks.json"))
                    .map(|_| ())
                    .map_err(|e| format!("config map \"{config_map}\": jwks.json: {e}"))
            }
            SatVerification::Issuer { url, ca_config_map } => {
                let ca = ca_config_map.as_deref().map(cm_all);
                JwksSource::issuer(url, ca.as_deref())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
        AuthnMethod::Custom(c) => CustomMethod::new(CustomSettings {
            endpoint: c.endpoint.clone(),
            ca_pem: c.ca_config_map.as_deref().map(cm_all),
            client_cert: c
                .client_cert_secret
                .as_deref()
                .map(|s| (secret_text(s, "tls.crt"), secret_text(s, "tls.key"))),
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout: DEFAULT_TIMEOUT,
        })
        .map(|_| ())
        .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        refs.error(origin, at, e);
    }
}

pub(crate) fn authorizations(raw: &[RawAuthorization]) -> BTreeMap<String, Authorization> {
    raw.iter()
        .map(|a| (a.name.value.clone(), a.authorization.clone()))
        .collect()
}

/// Listener name → the authentication / authorization that names it in `listenerRef`.
#[derive(Default)]
pub(crate) struct Links {
    pub authn: BTreeMap<String, String>,
    pub authz: BTreeMap<String, String>,
}

/// One policy resource as far as `listenerRef` linking is concerned.
struct Policy<'a> {
    origin: &'a Origin,
    name: &'a str,
    listener_refs: Option<&'a Vec<Located<String>>>,
}

struct Side {
    kind: &'static str,
    flag: &'static str,
    pick: fn(&LegacyLinks) -> &Located<bool>,
    what: What,
}

const AUTHN: Side = Side {
    kind: "BrokerAuthentication",
    flag: "authenticationEnabled",
    pick: |l| &l.authn_enabled,
    what: What {
        group: "BrokerAuthentication",
        singular: "authentication",
        plural: "authentications",
    },
};
const AUTHZ: Side = Side {
    kind: "BrokerAuthorization",
    flag: "authorizationEnabled",
    pick: |l| &l.authz_enabled,
    what: What {
        group: "BrokerAuthorization",
        singular: "authorization",
        plural: "authorizations",
    },
};

pub(crate) fn legacy_links(
    listeners: &[RawListener],
    authns: &[RawAuthentication],
    authzs: &[RawAuthorization],
    refs: &Refs<'_>,
) -> Links {
    let authn: Vec<Policy<'_>> = authns
        .iter()
        .map(|a| Policy {
            origin: &a.origin,
            name: &a.name.value,
            listener_refs: a.listener_refs.as_ref(),
        })
        .collect();
    let authz: Vec<Policy<'_>> = authzs
        .iter()
        .map(|a| Policy {
            origin: &a.origin,
            name: &a.name.value,
            listener_refs: a.listener_refs.as_ref(),
        })
        .collect();
    Links {
        authn: link(listeners, &authn, &AUTHN, refs),
        authz: link(listeners, &authz, &AUTHZ, refs),
    }
}

fn link(
    listeners: &[RawListener],
    policies: &[Policy<'_>],
    side: &Side,
    refs: &Refs<'_>,
) -> BTreeMap<String, String> {
    let by_name: BTreeMap<String, &RawListener> = listeners
        .iter()
        .map(|l| (l.name.value.clone(), l))
        .collect();
    let mut links: BTreeMap<String, (String, &Origin)> = BTreeMap::new();
    let listener_what = What {
        group: "BrokerListener",
        singular: "listener",
        plural: "listeners",
    };
    for p in policies {
        for r in p.listener_refs.into_iter().flatten() {
            let Some(l) = refs.lookup(p.origin, r, &by_name, &listener_what, "") else {
                continue;
            };
            let Some(legacy) = &l.legacy else {
                refs.error(
                    p.origin,
                    r,
                    format!(
                        "listener \"{}\" uses the ports[] form: link it from its ports' {}",
                        r.value,
                        if side.kind == AUTHN.kind {
                            "authenticationRef"
                        } else {
                            "authorizationRef"
                        }
                    ),
                );
                continue;
            };
            if let Some((first, first_origin)) = links.get(&r.value) {
                refs.error(
                    p.origin,
                    r,
                    format!(
                        "listener \"{}\" is already served by {} \"{first}\" ({}); a listener takes one {}",
                        r.value,
                        side.kind,
                        first_origin.location(),
                        side.what.singular
                    ),
                );
                continue;
            }
            if !(side.pick)(legacy).value {
                refs.warn(
                    p.origin,
                    r,
                    format!(
                        "listener \"{}\" has {}: false; this {} does not apply to it",
                        r.value, side.flag, side.what.singular
                    ),
                );
            }
            links.insert(r.value.clone(), (p.name.to_owned(), p.origin));
        }
    }
    // A policy that failed to load may be the one naming the listener: don't guess.
    let some_broken = refs
        .broken
        .iter()
        .any(|(group, _)| *group == side.what.group);
    for l in listeners {
        let Some(legacy) = &l.legacy else { continue };
        let flag = (side.pick)(legacy);
        if flag.value && !some_broken && !links.contains_key(&l.name.value) {
            let names: Vec<String> = policies.iter().map(|p| p.name.to_owned()).collect();
            refs.error(
                &l.origin,
                flag,
                format!(
                    "{} is enabled but no {} lists listener \"{}\" in spec.listenerRef; {}",
                    side.what.singular,
                    side.kind,
                    l.name.value,
                    existing(side.what.plural, names.iter())
                ),
            );
        }
    }
    links
        .into_iter()
        .map(|(listener, (policy, _))| (listener, policy))
        .collect()
}
