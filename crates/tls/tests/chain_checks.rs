//! `check_server_chain` on chains made with this crate's issuer and rcgen, at chosen times,
//! and the built-in CA's read-only loading.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use edgemq_tls::{
    check_server_chain, BuiltInIssuer, CertificateAuthority, ChainProblem, KeyAlgorithm, Severity,
    TlsError,
};
use rustls::pki_types::CertificateDer;

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    edgemq_tls::pem::parse_certificates(pem.as_bytes()).unwrap()
}

fn loopback() -> Option<SocketAddr> {
    Some("127.0.0.1:8883".parse().unwrap())
}

fn int_chain() -> (CertificateAuthority, CertificateAuthority) {
    let root =
        CertificateAuthority::generate_root("Root", KeyAlgorithm::Ec256, 3650 * DAY).unwrap();
    let int =
        CertificateAuthority::generate_intermediate(&root, "Int", KeyAlgorithm::Ec256, 3650 * DAY)
            .unwrap();
    (root, int)
}

#[test]
fn a_good_chain_has_no_problems() {
    let (_, int) = int_chain();
    let leaf = int
        .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
        .unwrap();
    assert_eq!(
        check_server_chain(&ders(&leaf.chain_pem), loopback(), SystemTime::now()),
        vec![]
    );
}

#[test]
fn validity_is_checked_at_the_given_time() {
    let (_, int) = int_chain();
    let leaf = int
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    let chain = ders(&leaf.chain_pem);
    let later = leaf.not_after + Duration::from_secs(1);
    let problems = check_server_chain(&chain, loopback(), later);
    assert!(
        matches!(problems.first(), Some(ChainProblem::Expired { .. })),
        "{problems:?}"
    );
    assert_eq!(problems[0].severity(), Severity::Error);

    let earlier = leaf.not_before - Duration::from_secs(1);
    let problems = check_server_chain(&chain, loopback(), earlier);
    assert!(
        matches!(problems.first(), Some(ChainProblem::NotYetValid { .. })),
        "{problems:?}"
    );

    let soon = leaf.not_after - 3 * DAY;
    let problems = check_server_chain(&chain, loopback(), soon);
    assert!(
        matches!(
            problems.as_slice(),
            [ChainProblem::ExpiresSoon { days_left: 3, .. }]
        ),
        "{problems:?}"
    );
    assert_eq!(problems[0].severity(), Severity::Warning);
}

#[test]
fn a_chain_certificate_that_is_not_a_ca_is_an_error() {
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let named = |cn: &str, ca: IsCa| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = ca;
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = Issuer::new(
        named("Root", IsCa::Ca(rcgen::BasicConstraints::Unconstrained)),
        root_key,
    );
    // An "intermediate" that signs but says CA:FALSE.
    let int_key = KeyPair::generate().unwrap();
    let int_cert = named("Int", IsCa::ExplicitNoCa)
        .signed_by(&int_key, &root)
        .unwrap();
    let int = Issuer::new(named("Int", IsCa::ExplicitNoCa), int_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "leaf");
    let leaf = leaf_params.signed_by(&leaf_key, &int).unwrap();
    let chain = vec![leaf.der().clone(), int_cert.der().clone()];
    let problems = check_server_chain(&chain, loopback(), SystemTime::now());
    assert!(
        matches!(
            problems.as_slice(),
            [ChainProblem::NotACa {
                position: 2,
                child: 1,
                version: 3,
                ..
            }]
        ),
        "{problems:?}"
    );
    assert!(problems[0].is_error());
    assert!(
        problems[0].to_string().contains(edgemq_tls::NOT_A_CA_FIX),
        "{}",
        problems[0]
    );
}

#[test]
fn a_certificate_after_the_leaf_that_is_not_its_issuer_is_a_warning() {
    let (root, int) = int_chain();
    let leaf = int
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    let mut chain = ders(&leaf.leaf_pem);
    chain.extend(ders(root.cert_pem()));
    let problems = check_server_chain(&chain, loopback(), SystemTime::now());
    assert!(
        matches!(
            problems.as_slice(),
            [ChainProblem::NotTheIssuer { position: 2, .. }]
        ),
        "{problems:?}"
    );
    assert_eq!(problems[0].severity(), Severity::Warning);
    assert!(problems[0]
        .to_string()
        .contains("cat server.crt intermediate.crt > tls.crt"));
}

#[test]
fn a_reissued_ca_with_the_same_name_is_caught_by_its_signature() {
    let (root, int) = int_chain();
    let leaf = int
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    let again =
        CertificateAuthority::generate_intermediate(&root, "Int", KeyAlgorithm::Ec256, 365 * DAY)
            .unwrap();
    let mut chain = ders(&leaf.leaf_pem);
    chain.extend(ders(again.cert_pem()));
    let problems = check_server_chain(&chain, loopback(), SystemTime::now());
    assert!(
        matches!(
            problems.as_slice(),
            [ChainProblem::WrongIssuerKey {
                position: 2,
                child: 1,
                ..
            }]
        ),
        "{problems:?}"
    );
    assert!(problems[0].is_error());
}

#[test]
fn sans_are_compared_with_the_bound_address() {
    let (_, int) = int_chain();
    let lan = int
        .issue_server(&spec(&[], &["192.168.2.196"], KeyAlgorithm::Ec256))
        .unwrap();
    let chain = ders(&lan.chain_pem);
    let now = SystemTime::now();
    // Loopback bind, LAN SAN: warning.
    let p = check_server_chain(&chain, loopback(), now);
    assert!(
        matches!(p.as_slice(), [ChainProblem::SansMissBind { .. }]),
        "{p:?}"
    );
    // All interfaces: a non-loopback SAN is fine.
    assert_eq!(
        check_server_chain(&chain, Some("0.0.0.0:8883".parse().unwrap()), now),
        vec![]
    );
    // That address exactly: fine.
    assert_eq!(
        check_server_chain(&chain, Some("192.168.2.196:8883".parse().unwrap()), now),
        vec![]
    );
    // All interfaces with only localhost: warning.
    let local = int
        .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
        .unwrap();
    let p = check_server_chain(
        &ders(&local.chain_pem),
        Some("0.0.0.0:8883".parse().unwrap()),
        now,
    );
    assert!(
        matches!(p.as_slice(), [ChainProblem::SansMissBind { .. }]),
        "{p:?}"
    );
    assert!(
        p[0].to_string().contains("clients on other machines"),
        "{}",
        p[0]
    );
    // No bind given: SANs are not checked.
    assert_eq!(check_server_chain(&chain, None, now), vec![]);
}

#[test]
fn export_reads_only() {
    let data = tempfile::tempdir().unwrap();
    let err = BuiltInIssuer::load_existing(data.path()).unwrap_err();
    assert!(matches!(err, TlsError::NoBuiltInCa { .. }), "{err}");
    assert!(!data.path().join("ca").exists());
    let missing = data.path().join("nope");
    let err = BuiltInIssuer::load_existing(&missing).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "no built-in CA in {}: the directory does not exist",
            missing.display()
        )),
        "{err}"
    );
    assert!(!missing.exists());
    let created = BuiltInIssuer::load_or_create(data.path()).unwrap();
    let loaded = BuiltInIssuer::load_existing(data.path()).unwrap();
    assert_eq!(created.ca_pem(), loaded.ca_pem());
}
