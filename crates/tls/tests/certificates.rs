//! Issuance, the built-in issuer's files, renewal times and inspection, without sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use common::*;
use edgemq_tls::{
    inspect, renewal_time, BuiltInIssuer, CertificateAuthority, KeyAlgorithm, TlsError,
};

#[test]
fn builtin_issuer_persists_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let first = BuiltInIssuer::load_or_create(data.path()).unwrap();
    let second = BuiltInIssuer::load_or_create(data.path()).unwrap();
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(first.key_pem(), second.key_pem());
    assert_eq!(first.cert_path(), data.path().join("ca/ca.crt"));
    assert_eq!(
        fs::read_to_string(first.cert_path()).unwrap(),
        first.ca_pem()
    );

    let ca = &inspect(first.ca_pem().as_bytes()).unwrap()[0];
    assert_eq!(ca.subject, "CN=edgemq internal CA");
    assert!(ca.is_ca && ca.self_signed);
    assert_eq!(ca.public_key, "EC P-256");
    let lifetime = ca.not_after.duration_since(ca.not_before).unwrap();
    assert!(lifetime >= BuiltInIssuer::VALIDITY, "{lifetime:?}");
    assert!(first.is_root());

    // A certificate issued before the restart verifies against the CA loaded after it.
    let issued = first
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    assert_eq!(
        inspect(issued.chain_pem.as_bytes()).unwrap()[0].issuer,
        inspect(second.ca_pem().as_bytes()).unwrap()[0].subject
    );
}

#[cfg(unix)]
#[test]
fn builtin_issuer_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let issuer = BuiltInIssuer::load_or_create(data.path()).unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&issuer.key_path()), 0o600);
    assert_eq!(mode(&data.path().join("ca")), 0o700);
    // No temporary directory is left behind.
    let leftovers: Vec<_> = fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("ca")]);
}

#[test]
fn builtin_issuer_creates_missing_data_dir_and_fills_an_empty_ca_dir() {
    let data = tempfile::tempdir().unwrap();
    let nested = data.path().join("a/b");
    BuiltInIssuer::load_or_create(&nested).unwrap();
    assert!(nested.join("ca/ca.key").exists());

    let empty = tempfile::tempdir().unwrap();
    fs::create_dir(empty.path().join("ca")).unwrap();
    BuiltInIssuer::load_or_create(empty.path()).unwrap();
    assert!(empty.path().join("ca/ca.crt").exists());
}

/// Two processes starting at once (say `edgemq serve` and `edgemq ca export`) end up with
/// one CA, not two.
#[test]
fn concurrent_first_starts_agree_on_one_ca() {
    let data = tempfile::tempdir().unwrap();
    let pems: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| BuiltInIssuer::load_or_create(data.path()).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().ca_pem().to_string())
            .collect()
    });
    let on_disk = fs::read_to_string(data.path().join("ca/ca.crt")).unwrap();
    assert!(pems.iter().all(|p| *p == on_disk));
}

/// A damaged CA is reported with the file to look at, and left exactly as it was.
#[test]
fn damaged_builtin_ca_is_an_error_naming_the_file() {
    type Damage = fn(&std::path::Path);
    let cases: [(&str, Damage); 4] = [
        ("ca.key", |dir| fs::remove_file(dir.join("ca.key")).unwrap()),
        ("ca.crt", |dir| fs::remove_file(dir.join("ca.crt")).unwrap()),
        ("ca.crt", |dir| {
            fs::write(
                dir.join("ca.crt"),
                "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
            )
            .unwrap()
        }),
        ("ca.key", |dir| {
            let other = CertificateAuthority::generate_root("x", KeyAlgorithm::Ec256, DAY).unwrap();
            fs::write(dir.join("ca.key"), other.key_pem()).unwrap();
        }),
    ];
    for (file, damage) in cases {
        let data = tempfile::tempdir().unwrap();
        BuiltInIssuer::load_or_create(data.path()).unwrap();
        let dir = data.path().join("ca");
        damage(&dir);
        let before: Vec<_> = ["ca.crt", "ca.key"]
            .iter()
            .map(|f| fs::read(dir.join(f)).ok())
            .collect();
        let err = BuiltInIssuer::load_or_create(data.path()).unwrap_err();
        match &err {
            TlsError::BuiltInCa { path, .. } => assert_eq!(path, &dir.join(file), "{err}"),
            other => panic!("expected BuiltInCa for {file}, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(file) && message.contains("remove"),
            "{message}"
        );
        let after: Vec<_> = ["ca.crt", "ca.key"]
            .iter()
            .map(|f| fs::read(dir.join(f)).ok())
            .collect();
        assert_eq!(before, after, "the damaged CA must not be touched");
    }
}

#[test]
fn from_pem_rejects_a_mismatched_key_and_a_non_ca() {
    let ca = CertificateAuthority::generate_root("A", KeyAlgorithm::Ec256, DAY).unwrap();
    let other = CertificateAuthority::generate_root("B", KeyAlgorithm::Ec256, DAY).unwrap();
    let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
    assert!(
        matches!(err, TlsError::CaKeyMismatch { ref subject } if subject == "CN=A"),
        "{err}"
    );

    let leaf = ca
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    let err = CertificateAuthority::from_pem(&leaf.leaf_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, TlsError::NotACa { .. }), "{err}");

    let err = CertificateAuthority::from_pem("nothing", ca.key_pem()).unwrap_err();
    assert!(
        matches!(err, TlsError::Pem(edgemq_tls::pem::PemError::NoCertificate)),
        "{err}"
    );

    // Round trip: the same CA, usable.
    let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(again.subject(), "CN=A");
    again
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
}

#[test]
fn server_certificate_contents() {
    let ca = CertificateAuthority::generate_root("Root", KeyAlgorithm::Ec256, 365 * DAY).unwrap();
    let issued = ca
        .issue_server(&spec(
            &["n013edge.local", "*.edge.local"],
            &["10.13.100.11", "::1"],
            KeyAlgorithm::Ec256,
        ))
        .unwrap();
    let chain = inspect(issued.chain_pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 1, "a root is not sent in the chain");
    let leaf = &chain[0];
    assert_eq!(leaf.subject, "CN=n013edge.local");
    assert_eq!(leaf.issuer, "CN=Root");
    assert_eq!(leaf.dns_names, ["n013edge.local", "*.edge.local"]);
    assert_eq!(
        leaf.ip_addresses,
        [
            "10.13.100.11".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert!(leaf.other_sans.is_empty());
    assert!(!leaf.is_ca && !leaf.self_signed);
    assert_eq!(leaf.key_usage, ["digitalSignature"]);
    assert_eq!(leaf.extended_key_usage, ["serverAuth"]);
    assert_eq!(leaf.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(leaf.not_before, issued.not_before);
    assert_eq!(leaf.not_after, issued.not_after);
    // Backdated for clock skew; valid for the requested 90 days from now.
    let now = SystemTime::now();
    assert!(issued.not_before <= now - Duration::from_secs(59));
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    assert_eq!(lifetime, 90 * DAY + edgemq_tls::CLOCK_SKEW);
    assert!(leaf
        .to_string()
        .contains("DNS:n013edge.local, DNS:*.edge.local, IP:10.13.100.11, IP:::1"));

    // Two issuances never share a serial.
    let again = ca
        .issue_server(&spec(&["n013edge.local"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    assert_ne!(
        inspect(again.chain_pem.as_bytes()).unwrap()[0].serial,
        leaf.serial
    );
}

#[test]
fn server_request_errors() {
    let ca = CertificateAuthority::generate_root("Root", KeyAlgorithm::Ec256, DAY).unwrap();
    let mut no_sans = spec(&[], &[], KeyAlgorithm::Ec256);
    no_sans.common_name = "x".into();
    assert!(matches!(
        ca.issue_server(&no_sans),
        Err(TlsError::InvalidRequest(_))
    ));
    assert!(matches!(
        ca.issue_server(&spec(&["bad name"], &[], KeyAlgorithm::Ec256)),
        Err(TlsError::InvalidRequest(_))
    ));
    let mut zero = spec(&["a.local"], &[], KeyAlgorithm::Ec256);
    zero.validity = Duration::ZERO;
    assert!(matches!(
        ca.issue_server(&zero),
        Err(TlsError::InvalidRequest(_))
    ));
}

#[test]
fn leaf_validity_is_capped_by_the_ca() {
    let ca = CertificateAuthority::generate_root("Short", KeyAlgorithm::Ec256, DAY).unwrap();
    let issued = ca
        .issue_server(&spec(&["a.local"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    assert_eq!(issued.not_after, ca.not_after());
    let inter =
        CertificateAuthority::generate_intermediate(&ca, "I", KeyAlgorithm::Ec256, 365 * DAY)
            .unwrap();
    assert_eq!(inter.not_after(), ca.not_after());
}

#[test]
fn intermediate_chain_contents() {
    let root =
        CertificateAuthority::generate_root("AIO42 Root CA", KeyAlgorithm::Ec256, 3650 * DAY)
            .unwrap();
    let inter = CertificateAuthority::generate_intermediate(
        &root,
        "AIO42 Intermediate CA 1",
        KeyAlgorithm::Ec256,
        365 * DAY,
    )
    .unwrap();
    assert!(!inter.is_root());
    let issued = inter
        .issue_client("client42a", KeyAlgorithm::Ec256, 30 * DAY)
        .unwrap();
    let chain = inspect(issued.chain_pem.as_bytes()).unwrap();
    let subjects: Vec<_> = chain.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["CN=client42a", "CN=AIO42 Intermediate CA 1"]);
    assert_eq!(chain[0].extended_key_usage, ["clientAuth"]);
    assert!(chain[0].dns_names.is_empty() && chain[0].ip_addresses.is_empty());
    assert!(chain[1].is_ca && !chain[1].self_signed);
    assert_eq!(inspect(issued.leaf_pem.as_bytes()).unwrap().len(), 1);

    // An intermediate loaded from PEM with its root attached: the root stays out of chains.
    let bundle = format!("{}{}", inter.cert_pem(), root.cert_pem());
    let loaded = CertificateAuthority::from_pem(&bundle, inter.key_pem()).unwrap();
    let issued = loaded
        .issue_server(&spec(&["a.local"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    assert_eq!(inspect(issued.chain_pem.as_bytes()).unwrap().len(), 2);
}

#[test]
fn rotation_policy_never_reuses_the_key() {
    let ca = CertificateAuthority::generate_root("Root", KeyAlgorithm::Ec256, DAY).unwrap();
    let first = ca
        .issue_server(&spec(&["a.local"], &[], KeyAlgorithm::Ec384))
        .unwrap();
    let mut renew = spec(&["a.local"], &[], KeyAlgorithm::Ec384);
    renew.previous_key_pem = Some(first.key_pem.clone());
    let second = ca.issue_server(&renew).unwrap();
    assert_eq!(second.key_pem, first.key_pem);
    assert_ne!(second.chain_pem, first.chain_pem);
    second.certified_key().unwrap();

    // Always (no previous key): a new key.
    let third = ca
        .issue_server(&spec(&["a.local"], &[], KeyAlgorithm::Ec384))
        .unwrap();
    assert_ne!(third.key_pem, first.key_pem);

    // The kept key must still fit the requested algorithm.
    renew.algorithm = KeyAlgorithm::Ec256;
    assert!(matches!(
        ca.issue_server(&renew),
        Err(TlsError::PreviousKeyMismatch {
            requested: KeyAlgorithm::Ec256,
            found: KeyAlgorithm::Ec384
        })
    ));
}

#[test]
fn self_signed_server_contents() {
    let issued = edgemq_tls::self_signed_server(&spec(
        &["localhost"],
        &["127.0.0.1"],
        KeyAlgorithm::Ed25519,
    ))
    .unwrap();
    let certs = inspect(issued.chain_pem.as_bytes()).unwrap();
    assert_eq!(certs.len(), 1);
    assert!(certs[0].self_signed && !certs[0].is_ca);
    assert_eq!(certs[0].public_key, "Ed25519");
    assert_eq!(certs[0].extended_key_usage, ["serverAuth"]);
}

#[test]
fn renewal_time_cases() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let h = Duration::from_secs(3600);
    // The usual case: notAfter - renewBefore (90 days, renew 5 h before).
    assert_eq!(
        renewal_time(t0, t0 + 90 * DAY, 5 * h),
        t0 + 90 * DAY - 5 * h
    );
    // renewBefore of zero: at expiry.
    assert_eq!(renewal_time(t0, t0 + DAY, Duration::ZERO), t0 + DAY);
    // renewBefore equal to or longer than the lifetime: at 2/3 of it (cert-manager).
    assert_eq!(renewal_time(t0, t0 + 3 * h, 3 * h), t0 + 2 * h);
    assert_eq!(renewal_time(t0, t0 + 3 * h, 240 * h), t0 + 2 * h);
    // Just under the lifetime: still notAfter - renewBefore, after notBefore.
    let r = renewal_time(t0, t0 + 3 * h, 3 * h - Duration::from_secs(1));
    assert_eq!(r, t0 + Duration::from_secs(1));
    // A nonsensical certificate (notAfter before notBefore): notBefore, never earlier.
    assert_eq!(renewal_time(t0 + h, t0, h), t0 + h);
    assert_eq!(renewal_time(t0, t0, h), t0);
}

#[test]
fn inspect_reads_der_and_rejects_garbage() {
    let ca = CertificateAuthority::generate_root("Root", KeyAlgorithm::Rsa2048, DAY).unwrap();
    let der = edgemq_tls::pem::parse_certificates(ca.cert_pem().as_bytes()).unwrap();
    let summary = &inspect(&der[0]).unwrap()[0];
    assert_eq!(summary.public_key, "RSA 2048");
    assert_eq!(summary.signature_algorithm, "sha256WithRSAEncryption");
    assert!(summary.is_ca);
    assert_eq!(
        summary.key_usage,
        ["digitalSignature", "keyCertSign", "cRLSign"]
    );
    assert_eq!(summary.sha256_fingerprint.len(), 32 * 3 - 1);
    assert!(summary.is_valid_at(SystemTime::now()));
    assert!(inspect(b"not a certificate").is_err());
    assert!(inspect(&[0x30, 0x03, 0x01, 0x01, 0x00]).is_err());
}

#[test]
fn algorithm_names_round_trip() {
    for a in KeyAlgorithm::ALL {
        assert_eq!(a.to_string().parse::<KeyAlgorithm>(), Ok(a));
        assert_eq!(a.to_string().to_lowercase().parse::<KeyAlgorithm>(), Ok(a));
    }
}
