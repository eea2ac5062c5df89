//! Real handshakes against `server_config(slot)`: trust, names, expiry, hot swap, TLS
//! versions, every key algorithm, client certificates.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use edgemq_tls::{
    server_config, BuiltInIssuer, CertificateAuthority, KeyAlgorithm, ServerCertSlot,
};
use rustls::{CertificateError, Error as RustlsError};

fn builtin() -> (tempfile::TempDir, BuiltInIssuer) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = BuiltInIssuer::load_or_create(dir.path()).unwrap();
    (dir, issuer)
}

/// Serves a certificate for `localhost` + `127.0.0.1` from the built-in issuer.
async fn builtin_server() -> (
    tempfile::TempDir,
    BuiltInIssuer,
    Arc<ServerCertSlot>,
    std::net::SocketAddr,
) {
    let (dir, issuer) = builtin();
    let issued = issuer
        .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
        .unwrap();
    let slot = Arc::new(ServerCertSlot::new(certified(&issued)));
    let addr = serve(server_config(slot.clone(), None)).await;
    (dir, issuer, slot, addr)
}

#[tokio::test]
async fn builtin_issuer_cert_accepted_for_dns_and_ip() {
    let (_dir, issuer, _slot, addr) = builtin_server().await;
    for name in ["localhost", "127.0.0.1"] {
        let mut tls = connect(addr, client_both(issuer.ca_pem()), name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        echo(&mut tls, b"hello").await;
    }
    // MQTT clients often offer ALPN "mqtt"; the server has no ALPN list and must not refuse.
    let mut config = client_both(issuer.ca_pem());
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    let mut tls = connect(addr, config, "localhost").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    echo(&mut tls, b"alpn").await;
}

#[tokio::test]
async fn client_trusting_another_ca_rejects_with_unknown_issuer() {
    let (_dir, _issuer, _slot, addr) = builtin_server().await;
    let other = CertificateAuthority::generate_root("other CA", KeyAlgorithm::Ec256, DAY).unwrap();
    let err = connect(addr, client_both(other.cert_pem()), "localhost")
        .await
        .unwrap_err();
    assert_eq!(
        rustls_error(&err),
        RustlsError::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn name_not_in_sans_is_rejected() {
    let (_dir, issuer, _slot, addr) = builtin_server().await;
    for name in ["n013edge.local", "127.0.0.2"] {
        let err = connect(addr, client_both(issuer.ca_pem()), name)
            .await
            .unwrap_err();
        assert!(
            matches!(
                rustls_error(&err),
                RustlsError::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{name}: {err}"
        );
    }
}

#[tokio::test]
async fn hot_swap_changes_new_handshakes_and_keeps_established_connections() {
    let (_dir, issuer, slot, addr) = builtin_server().await;
    let mut before = connect(addr, client_both(issuer.ca_pem()), "localhost")
        .await
        .unwrap();
    echo(&mut before, b"before swap").await;
    let old_leaf = peer_leaf(&before);

    let renewed = issuer
        .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec384))
        .unwrap();
    slot.swap(certified(&renewed));

    let mut after = connect(addr, client_both(issuer.ca_pem()), "localhost")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&after), leaf_der(&renewed));
    assert_ne!(peer_leaf(&after), old_leaf);
    echo(&mut after, b"new connection").await;
    // The connection made before the swap still works, in both directions.
    echo(&mut before, b"still here after the swap").await;
    assert_eq!(
        slot.current_not_after(),
        Some(renewed.not_after),
        "slot reports the new certificate's notAfter"
    );
}

#[tokio::test]
async fn tls12_only_and_tls13_only_clients_connect() {
    let (_dir, issuer, _slot, addr) = builtin_server().await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut tls = connect(addr, client(issuer.ca_pem(), &[version]), "127.0.0.1")
            .await
            .unwrap_or_else(|e| panic!("{expected:?}: {e}"));
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        echo(&mut tls, b"version").await;
    }
}

/// For each algorithm: a root of that algorithm issues a leaf of that algorithm, and both
/// TLS 1.2 and 1.3 clients complete a handshake with it. RSA-8192 leaves get an RSA-4096 root:
/// one 8192-bit key takes about ten seconds to generate here, and one proves the point.
#[tokio::test]
async fn every_key_algorithm_completes_a_handshake() {
    for algorithm in KeyAlgorithm::ALL {
        let started = std::time::Instant::now();
        let ca_algorithm = match algorithm {
            KeyAlgorithm::Rsa8192 => KeyAlgorithm::Rsa4096,
            other => other,
        };
        let ca = CertificateAuthority::generate_root("algo CA", ca_algorithm, DAY).unwrap();
        assert_eq!(ca.algorithm(), ca_algorithm);
        let issued = ca
            .issue_server(&spec(&["localhost"], &[], algorithm))
            .unwrap();
        let summary = &edgemq_tls::inspect(issued.chain_pem.as_bytes()).unwrap()[0];
        eprintln!(
            "{algorithm}: {} (generated in {:?})",
            summary.public_key,
            started.elapsed()
        );
        let slot = Arc::new(ServerCertSlot::new(certified(&issued)));
        let addr = serve(server_config(slot, None)).await;
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let mut tls = connect(addr, client(ca.cert_pem(), &[version]), "localhost")
                .await
                .unwrap_or_else(|e| panic!("{algorithm} {:?}: {e}", version.version));
            echo(&mut tls, algorithm.as_str().as_bytes()).await;
        }
    }
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let (_dir, issuer) = builtin();
    // Built directly with rcgen: the library refuses to make a certificate that is already
    // expired.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(10);
    params.not_after = now - time::Duration::days(1);
    let ca_key = rcgen::KeyPair::from_pem(issuer.key_pem()).unwrap();
    let ca = rcgen::Issuer::from_ca_cert_pem(issuer.ca_pem(), ca_key).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let ck = edgemq_tls::pem::certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .unwrap();
    let addr = serve(server_config(Arc::new(ServerCertSlot::new(ck)), None)).await;
    let err = connect(addr, client_both(issuer.ca_pem()), "localhost")
        .await
        .unwrap_err();
    assert!(
        matches!(
            rustls_error(&err),
            RustlsError::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err}"
    );
}

/// Root → intermediate → leaf: the server sends leaf + intermediate, the client trusts only
/// the root.
#[tokio::test]
async fn intermediate_chain_verifies_against_the_root() {
    let root =
        CertificateAuthority::generate_root("AIO42 Root CA", KeyAlgorithm::Ec384, 3650 * DAY)
            .unwrap();
    let inter = CertificateAuthority::generate_intermediate(
        &root,
        "AIO42 Intermediate CA 1",
        KeyAlgorithm::Ec256,
        365 * DAY,
    )
    .unwrap();
    let issued = inter
        .issue_server(&spec(
            &["n013edge.local"],
            &["127.0.0.1"],
            KeyAlgorithm::Ec256,
        ))
        .unwrap();
    let addr = serve(server_config(
        Arc::new(ServerCertSlot::new(certified(&issued))),
        None,
    ))
    .await;
    for name in ["n013edge.local", "127.0.0.1"] {
        let mut tls = connect(addr, client_both(root.cert_pem()), name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tls.get_ref().1.peer_certificates().unwrap().len(), 2);
        echo(&mut tls, b"chain").await;
    }
}

#[tokio::test]
async fn self_signed_server_is_trusted_when_pinned() {
    let issued =
        edgemq_tls::self_signed_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
            .unwrap();
    let addr = serve(server_config(
        Arc::new(ServerCertSlot::new(certified(&issued))),
        None,
    ))
    .await;
    let mut tls = connect(addr, client_both(&issued.chain_pem), "127.0.0.1")
        .await
        .unwrap();
    echo(&mut tls, b"pinned").await;
    let other = CertificateAuthority::generate_root("other", KeyAlgorithm::Ec256, DAY).unwrap();
    let err = connect(addr, client_both(other.cert_pem()), "127.0.0.1")
        .await
        .unwrap_err();
    assert_eq!(
        rustls_error(&err),
        RustlsError::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

/// Client certificates are requested, never required: a client with a certificate from the
/// trusted CA is seen by the server; one without still connects; one from another CA fails.
#[tokio::test]
async fn optional_client_certificates() {
    let (_dir, issuer) = builtin();
    let server_cert = issuer
        .issue_server(&spec(&["localhost"], &[], KeyAlgorithm::Ec256))
        .unwrap();
    let client_ca =
        CertificateAuthority::generate_root("clients CA", KeyAlgorithm::Ec256, DAY).unwrap();
    let verifier = edgemq_tls::optional_client_verifier(client_ca.cert_pem().as_bytes()).unwrap();
    let config = server_config(
        Arc::new(ServerCertSlot::new(certified(&server_cert))),
        Some(verifier),
    );

    // A server that reports the client's certificate CN back instead of echoing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let who = match tls.get_ref().1.peer_certificates() {
                Some(certs) => edgemq_tls::inspect_der(&certs[0]).unwrap().subject,
                None => "anonymous".to_string(),
            };
            let _ = tls.write_all(format!("{who:<20}").as_bytes()).await;
            let _ = tls.flush().await;
        }
    });
    async fn who(
        addr: std::net::SocketAddr,
        config: rustls::ClientConfig,
    ) -> Result<String, std::io::Error> {
        use tokio::io::AsyncReadExt;
        let mut tls = connect(addr, config, "localhost").await?;
        let mut buf = [0u8; 20];
        tls.read_exact(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).trim().to_string())
    }

    let with_cert = |cert: &edgemq_tls::IssuedCert| {
        rustls::ClientConfig::builder_with_provider(edgemq_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(issuer.ca_pem()))
            .with_client_auth_cert(
                edgemq_tls::pem::parse_certificates(cert.chain_pem.as_bytes()).unwrap(),
                edgemq_tls::pem::parse_private_key(cert.key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
    };
    let good = client_ca
        .issue_client("client42a", KeyAlgorithm::Ec256, DAY)
        .unwrap();
    assert_eq!(who(addr, with_cert(&good)).await.unwrap(), "CN=client42a");
    assert_eq!(
        who(addr, client_both(issuer.ca_pem())).await.unwrap(),
        "anonymous"
    );
    let stranger = CertificateAuthority::generate_root("stranger", KeyAlgorithm::Ec256, DAY)
        .unwrap()
        .issue_client("mallory", KeyAlgorithm::Ec256, DAY)
        .unwrap();
    // TLS 1.3: the client learns of the rejection on its first read.
    assert!(who(addr, with_cert(&stranger)).await.is_err());
}

#[tokio::test]
async fn server_config_has_no_alpn() {
    let (_dir, _issuer, slot, _addr) = builtin_server().await;
    let config = server_config(slot, None);
    assert!(config.alpn_protocols.is_empty());
}
