//! Cross-resource checks and assembly of the model. Works on whatever loaded, so that one run
//! reports every dangling reference and bad secret, not just the first.

mod listeners;
mod refs;
mod security;

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::Diags;
use crate::model::{BrokerSettings, Config, Issuer, IssuerKind, Secret, BUILTIN_ISSUER};
use crate::resources::issuer::{RawIssuer, RawIssuerKind};
use crate::resources::Resources;
use refs::Refs;

pub(crate) fn build(res: Resources, diags: &Diags) -> Config {
    let secrets: BTreeMap<String, Secret> = res
        .secrets
        .iter()
        .map(|s| {
            (
                s.name.value.clone(),
                Secret {
                    data: s.data.clone(),
                },
            )
        })
        .collect();
    let config_maps: BTreeMap<String, BTreeMap<String, String>> = res
        .config_maps
        .iter()
        .map(|c| (c.name.value.clone(), c.data.clone()))
        .collect();
    let mut broken = res.broken.clone();

    let issuers = {
        let refs = Refs {
            diags,
            secrets: &secrets,
            config_maps: &config_maps,
            broken: &broken,
        };
        issuers(&res.issuers, &refs)
    };
    // An issuer whose CA secret is bad was reported already; listeners using it need not be.
    for i in &res.issuers {
        if !issuers.contains_key(&i.name.value) {
            broken.insert(("Issuer", i.name.value.clone()));
        }
    }

    let refs = Refs {
        diags,
        secrets: &secrets,
        config_maps: &config_maps,
        broken: &broken,
    };
    let broker = broker(&res, diags);
    // Authentications a port uses: the broker builds only these, so only these can draw its
    // start-up warnings.
    let used_authn: BTreeSet<&str> = res
        .listeners
        .iter()
        .flat_map(|l| &l.ports)
        .filter_map(|p| p.authn.as_ref())
        .map(|r| r.value.as_str())
        .chain(
            res.authentications
                .iter()
                .filter(|a| a.listener_refs.as_ref().is_some_and(|r| !r.is_empty()))
                .map(|a| a.name.value.as_str()),
        )
        .collect();
    let authentications = security::authentications(&res.authentications, &refs, &used_authn);
    let authorizations = security::authorizations(&res.authorizations);
    let links = security::legacy_links(
        &res.listeners,
        &res.authentications,
        &res.authorizations,
        &refs,
    );
    let authz_names: BTreeMap<String, ()> =
        authorizations.keys().map(|k| (k.clone(), ())).collect();
    let listeners = listeners::listeners(
        &res.listeners,
        &listeners::Known {
            broker: res.brokers.first().map(|b| b.name.value.as_str()),
            issuers: &issuers,
            authentications: &authentications,
            authorizations: &authz_names,
            links: &links,
        },
        &refs,
    );
    warn_unused(&res, diags);

    Config {
        broker,
        listeners,
        authentications,
        authorizations,
        secrets,
        config_maps,
        issuers,
    }
}

/// At most one Broker; none means defaults.
fn broker(res: &Resources, diags: &Diags) -> BrokerSettings {
    let Some(first) = res.brokers.first() else {
        return BrokerSettings::default();
    };
    for extra in &res.brokers[1..] {
        extra.origin.error(
            diags,
            Some(extra.name.line),
            "metadata.name",
            format!(
                "only one Broker is allowed; already defined: Broker/{} at {}",
                first.name.value,
                first.origin.location()
            ),
        );
    }
    first.settings.clone()
}

fn issuers(raw: &[RawIssuer], refs: &Refs<'_>) -> BTreeMap<String, Issuer> {
    let mut out = BTreeMap::new();
    out.insert(
        BUILTIN_ISSUER.to_owned(),
        Issuer {
            name: BUILTIN_ISSUER.to_owned(),
            cluster: true,
            kind: IssuerKind::BuiltIn,
        },
    );
    for i in raw {
        if i.name.value == BUILTIN_ISSUER {
            refs.error(
                &i.origin,
                &i.name,
                "this name is reserved for the built-in issuer".to_owned(),
            );
            continue;
        }
        let kind = match &i.kind {
            RawIssuerKind::SelfSigned => Some(IssuerKind::SelfSigned),
            RawIssuerKind::Ca(secret) => {
                refs.tls_pair(&i.origin, secret, "")
                    .map(|(cert_pem, key_pem)| IssuerKind::Ca {
                        secret: secret.value.clone(),
                        cert_pem,
                        key_pem,
                    })
            }
        };
        if let Some(kind) = kind {
            out.insert(
                i.name.value.clone(),
                Issuer {
                    name: i.name.value.clone(),
                    cluster: i.cluster,
                    kind,
                },
            );
        }
    }
    out
}

/// A v1 policy no port uses is probably a typo in a ref (legacy ones say what they serve).
fn warn_unused(res: &Resources, diags: &Diags) {
    let ports = || res.listeners.iter().flat_map(|l| &l.ports);
    let used_authn: BTreeSet<&str> = ports()
        .filter_map(|p| p.authn.as_ref())
        .map(|r| r.value.as_str())
        .collect();
    let used_authz: BTreeSet<&str> = ports()
        .filter_map(|p| p.authz.as_ref())
        .map(|r| r.value.as_str())
        .collect();
    for a in &res.authentications {
        if a.listener_refs.is_none() && !used_authn.contains(a.name.value.as_str()) {
            a.origin.warn(
                diags,
                None,
                "",
                "not used by any listener port (no authenticationRef names it)",
            );
        }
    }
    for a in &res.authorizations {
        if a.listener_refs.is_none() && !used_authz.contains(a.name.value.as_str()) {
            a.origin.warn(
                diags,
                None,
                "",
                "not used by any listener port (no authorizationRef names it)",
            );
        }
    }
}
