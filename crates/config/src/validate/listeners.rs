//! Listeners → model: bind addresses from the service type, TLS material, authentication and
//! authorization names, and no two ports on the same address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::refs::{Refs, What};
use super::security::Links;
use crate::diag::Origin;
use crate::model::IssuerKind;
use crate::model::{
    Authentication, AuthnMethod, AutoCert, Issuer, Listener, Port, ServiceType, Tls,
};
use crate::reader::Located;
use crate::resources::listener::{RawListener, RawPort, RawTls};
use crate::san::{default_sans, host_name};

const ISSUER: What = What {
    group: "Issuer",
    singular: "issuer",
    plural: "issuers",
};
const AUTHENTICATION: What = What {
    group: "BrokerAuthentication",
    singular: "authentication",
    plural: "authentications",
};
const AUTHORIZATION: What = What {
    group: "BrokerAuthorization",
    singular: "authorization",
    plural: "authorizations",
};
const BROKER: What = What {
    group: "Broker",
    singular: "broker",
    plural: "brokers",
};

pub(crate) struct Known<'a> {
    /// The Broker's name, when one is defined.
    pub broker: Option<&'a str>,
    pub issuers: &'a BTreeMap<String, Issuer>,
    pub authentications: &'a BTreeMap<String, Authentication>,
    pub authorizations: &'a BTreeMap<String, ()>,
    pub links: &'a Links,
}

/// A bound address and who bound it, to report clashes.
struct Bound {
    addr: SocketAddr,
    listener: String,
    port: u16,
    origin: Origin,
    line: usize,
}

pub(crate) fn listeners(raw: &[RawListener], known: &Known<'_>, refs: &Refs<'_>) -> Vec<Listener> {
    let mut bound: Vec<Bound> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for l in raw {
        if let (Some(broker), Some(r)) = (known.broker, &l.broker_ref) {
            let brokers: BTreeMap<String, ()> = [(broker.to_owned(), ())].into();
            refs.lookup(&l.origin, r, &brokers, &BROKER, "");
        }
        let ports = l
            .ports
            .iter()
            .filter_map(|p| port(l, p, known, refs, &mut bound))
            .collect();
        out.push(Listener {
            name: l.name.value.clone(),
            service_type: l.service_type,
            ports,
            file: l.origin.file.clone(),
            line: l.origin.line.unwrap_or(0),
        });
    }
    out
}

fn port(
    l: &RawListener,
    p: &RawPort,
    known: &Known<'_>,
    refs: &Refs<'_>,
    bound: &mut Vec<Bound>,
) -> Option<Port> {
    let origin = &l.origin;
    let ctx = p
        .port
        .as_ref()
        .map(|n| format!("port {}: ", n.value))
        .unwrap_or_default();

    let (authentication, authorization) = match &l.legacy {
        Some(links) => (
            links
                .authn_enabled
                .value
                .then(|| known.links.authn.get(&l.name.value).cloned())
                .flatten(),
            links
                .authz_enabled
                .value
                .then(|| known.links.authz.get(&l.name.value).cloned())
                .flatten(),
        ),
        None => {
            let authn = p.authn.as_ref().filter(|r| {
                refs.lookup(origin, r, known.authentications, &AUTHENTICATION, &ctx)
                    .is_some()
            });
            let authz = p.authz.as_ref().filter(|r| {
                refs.lookup(origin, r, known.authorizations, &AUTHORIZATION, &ctx)
                    .is_some()
            });
            if let (None, Some(z)) = (&p.authn, &p.authz) {
                refs.warn(
                    origin,
                    z,
                    format!(
                        "{ctx}no authenticationRef: clients are anonymous, so only clientIds \
                         principals can match"
                    ),
                );
            }
            (
                authn.map(|r| r.value.clone()),
                authz.map(|r| r.value.clone()),
            )
        }
    };

    let ip = match l.service_type {
        ServiceType::ClusterIp => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ServiceType::NodePort | ServiceType::LoadBalancer => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let tls = p
        .tls
        .as_ref()
        .and_then(|t| tls(l, ip, t, known, refs, &ctx));
    if tls.is_none() && p.tls.is_none() {
        let x509 = authentication
            .as_ref()
            .and_then(|a| known.authentications.get(a))
            .is_some_and(|a| a.methods.iter().any(|m| matches!(m, AuthnMethod::X509(_))));
        if x509 {
            origin.warn(
                refs.diags,
                Some(p.line),
                &p.path,
                format!("{ctx}X509 authentication needs TLS: clients cannot present a certificate on plain TCP"),
            );
        }
    }

    let number = p.port.as_ref()?;
    let bind_port = match l.service_type {
        ServiceType::NodePort => p.node_port.as_ref().unwrap_or(number),
        ServiceType::ClusterIp | ServiceType::LoadBalancer => number,
    };
    let bind = SocketAddr::new(ip, bind_port.value);
    check_clash(l, number.value, bind, bind_port, refs, bound);
    Some(Port {
        port: number.value,
        node_port: p.node_port.as_ref().map(|n| n.value),
        bind,
        protocol: p.protocol,
        tls,
        authentication,
        authorization,
        max_connections: p.max_connections,
    })
}

/// Two sockets clash on the same port when their addresses are equal or either is the
/// wildcard (0.0.0.0:p covers 127.0.0.1:p).
fn check_clash(
    l: &RawListener,
    number: u16,
    bind: SocketAddr,
    at: &Located<u16>,
    refs: &Refs<'_>,
    bound: &mut Vec<Bound>,
) {
    let clash = bound.iter().find(|b| {
        b.addr.port() == bind.port()
            && (b.addr.ip() == bind.ip()
                || b.addr.ip().is_unspecified()
                || bind.ip().is_unspecified())
    });
    match clash {
        Some(b) => refs.error(
            &l.origin,
            at,
            format!(
                "port {number}: address {bind} clashes with {} of listener \"{}\" port {} ({}:{})",
                b.addr,
                b.listener,
                b.port,
                b.origin.file.display(),
                b.line
            ),
        ),
        None => bound.push(Bound {
            addr: bind,
            listener: l.name.value.clone(),
            port: number,
            origin: l.origin.clone(),
            line: at.line,
        }),
    }
}

fn tls(
    l: &RawListener,
    bind: IpAddr,
    t: &RawTls,
    known: &Known<'_>,
    refs: &Refs<'_>,
    ctx: &str,
) -> Option<Tls> {
    let origin = &l.origin;
    match t {
        RawTls::Manual(secret) => {
            let (chain_pem, key_pem) = refs.tls_pair(origin, secret, ctx)?;
            Some(Tls::Manual {
                secret: secret.value.clone(),
                chain_pem,
                key_pem,
            })
        }
        RawTls::Automatic(a) => {
            let issuer = refs.lookup(origin, &a.issuer, known.issuers, &ISSUER, ctx)?;
            if let Some(cluster) = a.cluster {
                if cluster != issuer.cluster {
                    let kind = |c: bool| if c { "ClusterIssuer" } else { "Issuer" };
                    refs.error(
                        origin,
                        &a.issuer,
                        format!(
                            "{ctx}issuer \"{}\" is a {}, but issuerRef.kind says {}",
                            a.issuer.value,
                            kind(issuer.cluster),
                            kind(cluster)
                        ),
                    );
                    return None;
                }
            }
            // `san` is optional, as in AIO: names a client can reach this port by.
            let (dns, ip) = if a.dns.is_empty() && a.ip.is_empty() {
                let service = l.service_name.as_ref().map(|s| s.value.as_str());
                default_sans(service, host_name().as_deref(), bind)
            } else {
                (a.dns.clone(), a.ip.clone())
            };
            let auto = AutoCert {
                issuer: issuer.name.clone(),
                issuer_kind: issuer.kind.clone(),
                dns,
                ip,
                duration: a.duration,
                renew_before: a.renew_before,
                algorithm: a.algorithm,
                rotate_key: a.rotate_key,
            };
            if let Err(e) = issue_dry_run(&l.name.value, &auto) {
                refs.error(
                    origin,
                    &a.at,
                    format!("{ctx}the server certificate cannot be issued: {e}"),
                );
                return None;
            }
            Some(Tls::Automatic(auto))
        }
    }
}

/// Issues the certificate `serve` would issue, with the same names, issuer and validity (an
/// EC P-256 key stands in for the configured algorithm: key generation is not what can fail,
/// and RSA keys take seconds). Anything `serve` would refuse is refused here.
fn issue_dry_run(listener: &str, auto: &AutoCert) -> Result<(), edgemq_tls::TlsError> {
    let spec = edgemq_tls::ServerCertSpec {
        // As the broker names it: the first DNS SAN, else the listener.
        common_name: auto
            .dns
            .first()
            .cloned()
            .unwrap_or_else(|| listener.to_owned()),
        dns: auto.dns.clone(),
        ip: auto.ip.clone(),
        algorithm: edgemq_tls::KeyAlgorithm::Ec256,
        validity: auto.duration,
        previous_key_pem: None,
    };
    match &auto.issuer_kind {
        // The built-in CA lives in the data dir, which `check` does not know; the
        // certificate itself is checked by signing it with its own key.
        IssuerKind::BuiltIn | IssuerKind::SelfSigned => {
            edgemq_tls::self_signed_server(&spec).map(|_| ())
        }
        IssuerKind::Ca {
            cert_pem, key_pem, ..
        } => edgemq_tls::CertificateAuthority::from_pem(
            &String::from_utf8_lossy(cert_pem),
            &String::from_utf8_lossy(key_pem),
        )?
        .issue_server(&spec)
        .map(|_| ()),
    }
}
