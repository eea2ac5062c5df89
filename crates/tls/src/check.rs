//! Checks of a server's certificate chain (a manual secret's `tls.crt`) before it is served:
//! what every client would refuse is an error, what some clients would refuse is a warning.
//! Each problem says how to fix it, in the words `edgemq certs inspect` uses.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::inspect::{inspect_der, rfc3339, CertSummary};

/// Manual certificates expiring within this window are warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// What `edgemq certs inspect` and the server chain check say about a certificate that is
/// used as a CA without being one.
pub const NOT_A_CA_FIX: &str = "it cannot act as a CA (OpenSSL 3 says \"invalid CA certificate\"). Re-issue it with basicConstraints=critical,CA:TRUE and keyUsage=keyCertSign,cRLSign (openssl: -extfile with those lines; or: edgemq certs intermediate)";

const REISSUE: &str = "issue a new server certificate (openssl x509 -req … -days N, or: edgemq certs server --name NAME --san ADDRESS --ca PREFIX --bundle) and replace tls.crt and tls.key";

/// How bad a [`ChainProblem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Every client refuses the certificate: the broker does not serve it.
    Error,
    /// Some clients (or clients connecting some way) refuse it.
    Warning,
}

/// One thing wrong with a server certificate chain. Positions count from 1 (the leaf), as
/// `edgemq certs inspect` numbers them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainProblem {
    #[error("certificate {position} cannot be parsed: {reason}")]
    Unparsable { position: usize, reason: String },
    #[error("the server certificate \"{subject}\" expired at {not_after}: every client refuses it (OpenSSL says \"certificate has expired\"); {REISSUE}")]
    Expired { subject: String, not_after: String },
    #[error("the server certificate \"{subject}\" is not valid before {not_before} (now: {now}): every client refuses it until then; check the clock of this machine and of the machine that issued it, or {REISSUE}")]
    NotYetValid {
        subject: String,
        not_before: String,
        now: String,
    },
    #[error("the server certificate \"{subject}\" expires at {not_after} ({days_left} days left); {REISSUE} before then")]
    ExpiresSoon {
        subject: String,
        not_after: String,
        days_left: u64,
    },
    #[error("certificate {position} in the chain (\"{subject}\") is not valid now (valid {not_before} → {not_after}): every client refuses the chain; renew that CA certificate, re-issue the server certificate from it and replace tls.crt")]
    ChainCertNotValid {
        position: usize,
        subject: String,
        not_before: String,
        not_after: String,
    },
    #[error("certificate {position} in the chain (\"{subject}\"), the issuer of certificate {child}, is an X.509 v{version} certificate without basicConstraints CA:TRUE: {NOT_A_CA_FIX}; then put the re-issued certificate into tls.crt")]
    NotACa {
        position: usize,
        child: usize,
        subject: String,
        version: u32,
    },
    #[error("certificate {position} in the chain is named \"{issuer}\" like the issuer of certificate {child} (\"{subject}\") but its key did not sign it (the CA was probably re-created after the certificate was issued): every client refuses the chain; re-issue the server certificate from the current CA, or put the CA certificate that signed it into tls.crt")]
    WrongIssuerKey {
        position: usize,
        child: usize,
        subject: String,
        issuer: String,
    },
    #[error("the chain does not end in the issuer of certificate {child} (\"{subject}\" is issued by \"{issuer}\", but certificate {position} is \"{found}\"): clients that trust only the root CA fail with \"unable to get local issuer certificate\"; write tls.crt as the server certificate followed by its issuer, then that issuer's issuer (cat server.crt intermediate.crt > tls.crt); check it with: edgemq certs inspect tls.crt")]
    NotTheIssuer {
        position: usize,
        child: usize,
        subject: String,
        issuer: String,
        found: String,
    },
    #[error("the server certificate \"{subject}\" has no DNS or IP subject alternative name: clients that check host names against SANs only (rustls, Node.js/MQTT.js, Go) refuse it; re-issue it with the names clients connect to (openssl: -extfile with subjectAltName=IP:ADDRESS,DNS:NAME; or: edgemq certs server --san ADDRESS)")]
    NoSans { subject: String },
    #[error("the port binds {bind} but the server certificate's SANs ({sans}) do not cover it: {who} fail host name verification (\"certificate verify failed\" / \"Hostname mismatch\"); re-issue the certificate with {add} among its SANs (openssl: -extfile with subjectAltName=…; or: edgemq certs server --san …)")]
    SansMissBind {
        bind: IpAddr,
        sans: String,
        who: &'static str,
        add: String,
    },
}

impl ChainProblem {
    pub fn severity(&self) -> Severity {
        match self {
            ChainProblem::ExpiresSoon { .. }
            | ChainProblem::NotTheIssuer { .. }
            | ChainProblem::NoSans { .. }
            | ChainProblem::SansMissBind { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

/// Checks `chain` (DER, leaf first, as a server sends it) at `now` for a port bound to
/// `bind`: validity of every certificate, that each certificate is followed by the CA that
/// signed it and that CA is one, expiry within [`EXPIRY_WARNING`], and SANs covering the
/// address clients reach the port on. Errors first, then warnings.
pub fn check_server_chain(
    chain: &[impl AsRef<[u8]>],
    bind: Option<SocketAddr>,
    now: SystemTime,
) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    let mut certs = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let der = der.as_ref();
        let parsed = X509Certificate::from_der(der)
            .map_err(|e| e.to_string())
            .and_then(|(_, x)| inspect_der(der).map(|s| (x, s)).map_err(|e| e.to_string()));
        match parsed {
            Ok(pair) => certs.push(pair),
            Err(reason) => {
                problems.push(ChainProblem::Unparsable {
                    position: i + 1,
                    reason,
                });
                return problems;
            }
        }
    }
    let Some((_, leaf)) = certs.first() else {
        return problems;
    };

    // The leaf's validity.
    if now > leaf.not_after {
        problems.push(ChainProblem::Expired {
            subject: leaf.subject.clone(),
            not_after: rfc3339(leaf.not_after),
        });
    } else if now < leaf.not_before {
        problems.push(ChainProblem::NotYetValid {
            subject: leaf.subject.clone(),
            not_before: rfc3339(leaf.not_before),
            now: rfc3339(now),
        });
    } else if let Ok(left) = leaf.not_after.duration_since(now) {
        if left < EXPIRY_WARNING {
            problems.push(ChainProblem::ExpiresSoon {
                subject: leaf.subject.clone(),
                not_after: rfc3339(leaf.not_after),
                days_left: left.as_secs() / 86_400,
            });
        }
    }

    // Each certificate must be followed by its issuer, a CA whose key signed it.
    for (i, pair) in certs.windows(2).enumerate() {
        let [(child_x, child), (parent_x, parent)] = pair else {
            continue;
        };
        let (child_pos, pos) = (i + 1, i + 2);
        if child_x.issuer().as_raw() != parent_x.subject().as_raw() {
            problems.push(ChainProblem::NotTheIssuer {
                position: pos,
                child: child_pos,
                subject: child.subject.clone(),
                issuer: child.issuer.clone(),
                found: parent.subject.clone(),
            });
            // What follows is not on the leaf's path: nothing more to say about it.
            break;
        }
        if !parent.is_ca {
            problems.push(ChainProblem::NotACa {
                position: pos,
                child: child_pos,
                subject: parent.subject.clone(),
                version: parent.version,
            });
        }
        if !parent.is_valid_at(now) {
            problems.push(ChainProblem::ChainCertNotValid {
                position: pos,
                subject: parent.subject.clone(),
                not_before: rfc3339(parent.not_before),
                not_after: rfc3339(parent.not_after),
            });
        }
        // Algorithms the verifier does not know are left to the clients.
        if let Err(x509_parser::error::X509Error::SignatureVerificationError) =
            child_x.verify_signature(Some(parent_x.public_key()))
        {
            problems.push(ChainProblem::WrongIssuerKey {
                position: pos,
                child: child_pos,
                subject: child.subject.clone(),
                issuer: parent.subject.clone(),
            });
        }
    }

    if let Some(bind) = bind {
        problems.extend(check_sans(leaf, bind.ip()));
    }
    problems.sort_by_key(ChainProblem::severity);
    problems
}

/// Whether the leaf's SANs name an address clients can reach a port bound to `bind` on.
fn check_sans(leaf: &CertSummary, bind: IpAddr) -> Option<ChainProblem> {
    if leaf.dns_names.is_empty() && leaf.ip_addresses.is_empty() {
        return Some(ChainProblem::NoSans {
            subject: leaf.subject.clone(),
        });
    }
    let loopback_name = |d: &String| d.eq_ignore_ascii_case("localhost");
    let names_loopback = leaf.dns_names.iter().any(loopback_name)
        || leaf.ip_addresses.iter().any(IpAddr::is_loopback);
    let names_other = leaf.dns_names.iter().any(|d| !loopback_name(d))
        || leaf.ip_addresses.iter().any(|ip| !ip.is_loopback());
    let (covered, who, add) = if bind.is_loopback() {
        (
            leaf.ip_addresses.contains(&bind) || names_loopback,
            "clients on this machine (the port is reachable only through loopback)",
            format!("IP:{bind} or DNS:localhost"),
        )
    } else if bind.is_unspecified() {
        (
            names_other,
            "clients on other machines",
            "the IP address or DNS name they connect to".to_string(),
        )
    } else {
        (
            leaf.ip_addresses.contains(&bind) || !leaf.dns_names.is_empty(),
            "clients connecting to that address",
            format!("IP:{bind} (or a DNS name that resolves to it)"),
        )
    };
    (!covered).then(|| ChainProblem::SansMissBind {
        bind,
        sans: leaf.sans().join(", "),
        who,
        add,
    })
}
