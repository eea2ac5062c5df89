//! BrokerListener: v1 and transitional (`ports[]`), legacy v1beta1 (one port, `listenerRef`
//! links from the authentication/authorization side).

use std::net::IpAddr;
use std::time::Duration;

use super::{metadata, ApiVersion};
use crate::diag::Origin;
use crate::duration::{format_duration, parse_duration};
use crate::model::{KeyAlgorithm, Protocol, ServiceType};
use crate::reader::{child, Located, Obj, Val};

pub(crate) struct RawListener {
    pub origin: Origin,
    pub name: Located<String>,
    pub broker_ref: Option<Located<String>>,
    /// `serviceName`: a default SAN of automatic certificates.
    pub service_name: Option<Located<String>>,
    pub service_type: ServiceType,
    pub ports: Vec<RawPort>,
    /// Legacy listeners say only whether authentication/authorization are on.
    pub legacy: Option<LegacyLinks>,
}

pub(crate) struct LegacyLinks {
    pub authn_enabled: Located<bool>,
    pub authz_enabled: Located<bool>,
}

pub(crate) struct RawPort {
    /// The port entry (`spec.ports[i]`, or `spec` for a legacy listener).
    pub line: usize,
    pub path: String,
    /// `None` when invalid (already reported).
    pub port: Option<Located<u16>>,
    pub node_port: Option<Located<u16>>,
    pub protocol: Protocol,
    pub tls: Option<RawTls>,
    pub authn: Option<Located<String>>,
    pub authz: Option<Located<String>>,
    /// edgemq extension `maxConnections`: open connections on this port.
    pub max_connections: Option<usize>,
}

pub(crate) enum RawTls {
    Manual(Located<String>),
    Automatic(RawAutoCert),
}

pub(crate) struct RawAutoCert {
    /// The certificate spec block, for problems with the certificate as a whole.
    pub at: Located<()>,
    pub issuer: Located<String>,
    /// `Some(true)` = ClusterIssuer, `Some(false)` = Issuer, `None` = any kind with that name.
    pub cluster: Option<bool>,
    pub dns: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub duration: Duration,
    pub renew_before: Duration,
    pub algorithm: KeyAlgorithm,
    pub rotate_key: bool,
}

pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(2160 * 3600);
pub(crate) const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(5 * 3600);

const ROOT: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const V1_SPEC: &[&str] = &["brokerRef", "serviceName", "serviceType", "ports"];
const PORT: &[&str] = &[
    "port",
    "nodePort",
    "protocol",
    "authenticationRef",
    "authorizationRef",
    "tls",
    // edgemq extension (docs/limits.md).
    "maxConnections",
];
const V1_TLS: &[&str] = &["mode", "manual", "certManagerCertificateSpec"];
const TRANSITIONAL_TLS: &[&str] = &["mode", "manual", "certManagerCertificateSpec", "automatic"];
const V1_MANUAL: &[&str] = &["secretRef"];
const TRANSITIONAL_MANUAL: &[&str] = &["secretRef", "secretName", "secretNamespace"];
const CERT_SPEC: &[&str] = &[
    "issuerRef",
    "duration",
    "renewBefore",
    "secretName",
    "secretNamespace",
    "privateKey",
    "san",
];
const ISSUER_REF: &[&str] = &["name", "kind", "group"];
const PRIVATE_KEY: &[&str] = &["algorithm", "rotationPolicy"];
const LEGACY_PRIVATE_KEY: &[&str] = &["algorithm", "rotationPolicy", "size"];
const SAN: &[&str] = &["dns", "ip"];
const LEGACY_SPEC: &[&str] = &[
    "brokerRef",
    "port",
    "nodePort",
    "serviceType",
    "serviceName",
    "authenticationEnabled",
    "authorizationEnabled",
    "protocol",
    "tls",
];
const LEGACY_TLS: &[&str] = &["automatic", "manual", "keyVault"];
const LEGACY_MANUAL: &[&str] = &["secretName", "secretNamespace"];

const SERVICE_TYPES: &[(&str, ServiceType)] = &[
    ("ClusterIp", ServiceType::ClusterIp),
    ("NodePort", ServiceType::NodePort),
    ("LoadBalancer", ServiceType::LoadBalancer),
];
const PROTOCOLS: &[(&str, Protocol)] = &[
    ("Mqtt", Protocol::Mqtt),
    ("WebSockets", Protocol::WebSockets),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Automatic,
    Manual,
}

pub(crate) fn read(root: &Val<'_>, version: ApiVersion) -> Option<RawListener> {
    let obj = root.obj(ROOT)?;
    let name = metadata(&obj);
    let legacy = version == ApiVersion::Legacy;
    let spec_val = obj.req("spec")?;
    // A legacy listener's spec is its port: strict like a v1 port.
    let spec = if legacy {
        spec_val.strict_obj(LEGACY_SPEC)?
    } else {
        spec_val.obj(V1_SPEC)?
    };
    let broker_ref = spec.get("brokerRef").and_then(|v| v.name());
    let service_name = spec.get("serviceName").and_then(|v| v.name());
    let service_type = spec
        .get("serviceType")
        .and_then(|v| v.one_of(SERVICE_TYPES))
        .unwrap_or(ServiceType::ClusterIp);
    let (ports, links) = if legacy {
        let (port, links) = legacy_port(&spec, service_type);
        (vec![port], Some(links))
    } else {
        (v1_ports(&spec, service_type, version), None)
    };
    Some(RawListener {
        origin: obj.cx().origin.clone(),
        name: name?,
        broker_ref,
        service_name,
        service_type,
        ports,
        legacy: links,
    })
}

fn v1_ports(spec: &Obj<'_>, service_type: ServiceType, version: ApiVersion) -> Vec<RawPort> {
    let Some(items) = spec.req("ports").and_then(|v| v.seq()) else {
        return Vec::new();
    };
    if items.is_empty() {
        spec.cx().error(
            spec.line(),
            &child(spec.path(), "ports"),
            "at least one port is required",
        );
    }
    let mut ports = Vec::with_capacity(items.len());
    for item in items {
        // Fail closed: a misspelt authenticationRef, authorizationRef or tls would leave
        // the port more open than written.
        let Some(p) = item.strict_obj(PORT) else {
            continue;
        };
        let (port, node_port) = port_numbers(&p, service_type);
        ports.push(RawPort {
            line: p.line(),
            path: p.path().to_owned(),
            port,
            node_port,
            protocol: protocol(&p),
            tls: p.get("tls").and_then(|t| v1_tls(&t, version)),
            authn: p.get("authenticationRef").and_then(|v| v.name()),
            authz: p.get("authorizationRef").and_then(|v| v.name()),
            max_connections: p.get("maxConnections").and_then(|v| v.int(1, 4294967296)),
        });
    }
    ports
}

fn legacy_port(spec: &Obj<'_>, service_type: ServiceType) -> (RawPort, LegacyLinks) {
    let (port, node_port) = port_numbers(spec, service_type);
    let flag = |key: &str| match spec.get(key) {
        Some(v) => v.at(v.bool().unwrap_or(false)),
        None => Located {
            value: false,
            line: spec.line(),
            path: child(spec.path(), key),
        },
    };
    let links = LegacyLinks {
        authn_enabled: flag("authenticationEnabled"),
        authz_enabled: flag("authorizationEnabled"),
    };
    let port = RawPort {
        line: spec.line(),
        path: spec.path().to_owned(),
        port,
        node_port,
        protocol: protocol(spec),
        tls: spec.get("tls").and_then(|t| legacy_tls(&t)),
        authn: None,
        authz: None,
        max_connections: None,
    };
    (port, links)
}

fn protocol(p: &Obj<'_>) -> Protocol {
    p.get("protocol")
        .and_then(|v| v.one_of(PROTOCOLS))
        .unwrap_or(Protocol::Mqtt)
}

fn port_numbers(
    p: &Obj<'_>,
    service_type: ServiceType,
) -> (Option<Located<u16>>, Option<Located<u16>>) {
    let port = p
        .req("port")
        .and_then(|v| v.int::<u16>(1, 65535).map(|n| v.at(n)));
    let node_port = p.get("nodePort").and_then(|v| {
        let n = v.int::<u16>(0, 65535)?;
        if service_type != ServiceType::NodePort {
            v.warn("only used with serviceType NodePort; ignored");
            None
        } else if !(30000..=32767).contains(&n) {
            v.error(format!(
                "must be in the NodePort range 30000-32767, got {n}"
            ));
            None
        } else {
            Some(v.at(n))
        }
    });
    (port, node_port)
}

fn v1_tls(v: &Val<'_>, version: ApiVersion) -> Option<RawTls> {
    let transitional = version == ApiVersion::Transitional;
    let tls = v.obj(if transitional {
        TRANSITIONAL_TLS
    } else {
        V1_TLS
    })?;
    let mode = tls
        .req("mode")
        .and_then(|m| m.one_of(&[("Automatic", Mode::Automatic), ("Manual", Mode::Manual)]));
    let (auto_keys, manual_fields, secret_keys): (&[&str], &[&str], &[&str]) = if transitional {
        (
            &["certManagerCertificateSpec", "automatic"],
            TRANSITIONAL_MANUAL,
            &["secretRef", "secretName"],
        )
    } else {
        (&["certManagerCertificateSpec"], V1_MANUAL, &["secretRef"])
    };
    // Both blocks are read whatever the mode, so problems in either are reported.
    let manual = tls.get("manual");
    let auto = tls.get_alias(auto_keys);
    let manual_tls = manual.as_ref().and_then(|m| {
        let m = m.obj(manual_fields)?;
        Some(RawTls::Manual(m.req_alias(secret_keys)?.name()?))
    });
    let auto_tls = auto
        .as_ref()
        .and_then(|a| auto_cert(a, false))
        .map(RawTls::Automatic);
    let (wanted, wanted_tls, other, name, key) = match mode? {
        Mode::Manual => (manual, manual_tls, auto, "Manual", "manual"),
        Mode::Automatic => (
            auto,
            auto_tls,
            manual,
            "Automatic",
            "certManagerCertificateSpec",
        ),
    };
    if let Some(o) = other {
        o.error(format!("not allowed with mode {name}: set only {key}"));
    }
    if wanted.is_none() {
        tls.cx().error(
            tls.line(),
            &child(tls.path(), key),
            format!("required when mode is {name}"),
        );
    }
    wanted_tls
}

fn legacy_tls(v: &Val<'_>) -> Option<RawTls> {
    let tls = v.obj(LEGACY_TLS)?;
    if let Some(kv) = tls.get("keyVault") {
        kv.error("Azure Key Vault certificates are not supported; use automatic or manual");
    }
    let auto = tls.get("automatic");
    let manual = tls.get("manual");
    let auto_tls = auto
        .as_ref()
        .and_then(|a| auto_cert(a, true))
        .map(RawTls::Automatic);
    let manual_tls = manual.as_ref().and_then(|m| {
        let m = m.obj(LEGACY_MANUAL)?;
        Some(RawTls::Manual(m.req("secretName")?.name()?))
    });
    match (&auto, &manual) {
        (Some(_), Some(m)) => m.error("not allowed together with automatic: set only one"),
        (None, None) if tls.get("keyVault").is_none() => v.error("set automatic or manual"),
        _ => {}
    }
    auto_tls.or(manual_tls)
}

fn auto_cert(v: &Val<'_>, legacy: bool) -> Option<RawAutoCert> {
    let spec = v.obj(CERT_SPEC)?;
    let issuer_ref = spec.req("issuerRef").and_then(|r| r.obj(ISSUER_REF));
    let (issuer, cluster) = match &issuer_ref {
        Some(r) => {
            if let Some(g) = r.get("group") {
                if let Some(group) = g.string() {
                    if !group.eq_ignore_ascii_case("cert-manager.io") {
                        g.error(format!(
                            "unsupported issuer group \"{group}\": edgemq issues certificates \
                             from cert-manager.io Issuers and ClusterIssuers"
                        ));
                    }
                }
            }
            let cluster = r
                .get("kind")
                .and_then(|k| k.one_of(&[("Issuer", false), ("ClusterIssuer", true)]));
            (r.req("name").and_then(|n| n.name()), cluster)
        }
        None => (None, None),
    };
    let duration = spec.get("duration").and_then(|d| read_duration(&d));
    let renew_before = spec.get("renewBefore").and_then(|d| read_duration(&d));
    let san = spec.get("san").and_then(|s| s.obj(SAN));
    let dns = san
        .as_ref()
        .and_then(|s| s.get("dns"))
        .and_then(|d| d.str_list())
        .unwrap_or_default();
    let ip = san
        .as_ref()
        .and_then(|s| s.get("ip"))
        .and_then(|i| i.seq())
        .unwrap_or_default()
        .iter()
        .filter_map(|item| {
            let text = item.string()?;
            let parsed = text.trim().parse::<IpAddr>();
            if parsed.is_err() {
                item.error(format!("\"{text}\" is not an IP address"));
            }
            parsed.ok()
        })
        .collect();
    let (algorithm, rotate_key) = match spec.get("privateKey") {
        Some(pk) => private_key(&pk, legacy),
        None => (DEFAULT_ALGORITHM, true),
    };
    check_renewal(&spec, &duration, &renew_before);
    Some(RawAutoCert {
        at: v.at(()),
        issuer: issuer?,
        cluster,
        dns,
        ip,
        duration: duration.map_or(DEFAULT_DURATION, |d| d.value),
        renew_before: renew_before.map_or(DEFAULT_RENEW_BEFORE, |d| d.value),
        algorithm,
        rotate_key,
    })
}

fn read_duration(v: &Val<'_>) -> Option<Located<Duration>> {
    let text = v.string()?;
    match parse_duration(&text) {
        Ok(d) if d.is_zero() => {
            v.error("must be greater than 0");
            None
        }
        Ok(d) => Some(v.at(d)),
        Err(e) => {
            v.error(e.to_string());
            None
        }
    }
}

/// cert-manager renews at `notAfter - renewBefore`: a renewBefore not shorter than the
/// duration would renew forever.
fn check_renewal(
    spec: &Obj<'_>,
    duration: &Option<Located<Duration>>,
    renew: &Option<Located<Duration>>,
) {
    let d = duration.as_ref().map_or(DEFAULT_DURATION, |d| d.value);
    let r = renew.as_ref().map_or(DEFAULT_RENEW_BEFORE, |r| r.value);
    if r < d {
        return;
    }
    let describe = |v: Duration, given: bool| {
        if given {
            format_duration(v)
        } else {
            format!("{}, the default", format_duration(v))
        }
    };
    let msg = format!(
        "renewBefore ({}) must be shorter than duration ({})",
        describe(r, renew.is_some()),
        describe(d, duration.is_some())
    );
    match (renew, duration) {
        (Some(at), _) | (None, Some(at)) => spec.cx().error(at.line, &at.path, msg),
        (None, None) => {}
    }
}

fn private_key(v: &Val<'_>, legacy: bool) -> (KeyAlgorithm, bool) {
    let Some(pk) = v.obj(if legacy {
        LEGACY_PRIVATE_KEY
    } else {
        PRIVATE_KEY
    }) else {
        return (DEFAULT_ALGORITHM, true);
    };
    let rotate_key = pk
        .get("rotationPolicy")
        .and_then(|r| r.one_of(&[("Always", true), ("Never", false)]))
        .unwrap_or(true);
    let algorithm = match pk.get("algorithm") {
        Some(a) if legacy => legacy_algorithm(&a, pk.get("size")),
        Some(a) => algorithm_name(&a),
        None => None,
    };
    (algorithm.unwrap_or(DEFAULT_ALGORITHM), rotate_key)
}

/// Legacy keys were also written as `algorithm: ECDSA|RSA` plus `size`.
fn legacy_algorithm(a: &Val<'_>, size: Option<Val<'_>>) -> Option<KeyAlgorithm> {
    let text = a.string()?;
    let size_of =
        |allowed: &[(u32, KeyAlgorithm)], default: KeyAlgorithm| -> Option<KeyAlgorithm> {
            let Some(s) = &size else { return Some(default) };
            let n = s.int::<u32>(0, i128::from(u32::MAX))?;
            let found = allowed.iter().find(|(bits, _)| *bits == n).map(|(_, k)| *k);
            if found.is_none() {
                let sizes: Vec<String> = allowed.iter().map(|(b, _)| b.to_string()).collect();
                s.error(format!(
                    "unsupported key size {n}; expected one of: {}",
                    sizes.join(", ")
                ));
            }
            found
        };
    if text.eq_ignore_ascii_case("ecdsa") {
        size_of(
            &[
                (256, KeyAlgorithm::Ec256),
                (384, KeyAlgorithm::Ec384),
                (521, KeyAlgorithm::Ec521),
            ],
            KeyAlgorithm::Ec256,
        )
    } else if text.eq_ignore_ascii_case("rsa") {
        size_of(
            &[
                (2048, KeyAlgorithm::Rsa2048),
                (4096, KeyAlgorithm::Rsa4096),
                (8192, KeyAlgorithm::Rsa8192),
            ],
            KeyAlgorithm::Rsa2048,
        )
    } else {
        algorithm_name(a)
    }
}

/// AIO's default for `privateKey.algorithm`.
const DEFAULT_ALGORITHM: KeyAlgorithm = KeyAlgorithm::Ec256;

fn algorithm_name(a: &Val<'_>) -> Option<KeyAlgorithm> {
    let parsed = a.string()?.parse::<KeyAlgorithm>();
    parsed.map_err(|e| a.error(e.to_string())).ok()
}
