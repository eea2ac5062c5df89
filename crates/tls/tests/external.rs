//! Interoperability with the tools operators use: `openssl` (s_client, verify, CAs it made)
//! and `mosquitto_pub`. Each test is skipped, with a note, when its tool is not installed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::*;
use edgemq_tls::{
    server_config, BuiltInIssuer, CertificateAuthority, KeyAlgorithm, ServerCertSlot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

/// Runs a command off the async runtime with stdin closed.
async fn run(program: &str, args: Vec<String>) -> Output {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn openssl_s_client_verifies_the_server() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let issuer = BuiltInIssuer::load_or_create(tmp.path()).unwrap();
    let issued = issuer
        .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
        .unwrap();
    let addr = serve(server_config(
        Arc::new(ServerCertSlot::new(certified(&issued))),
        None,
    ))
    .await;
    let ca = write(tmp.path(), "ca.crt", issuer.ca_pem());
    let wrong = CertificateAuthority::generate_root("wrong", KeyAlgorithm::Ec256, DAY).unwrap();
    let wrong = write(tmp.path(), "wrong.crt", wrong.cert_pem());
    let args = |ca: &str, version: &str, check: [&str; 2]| -> Vec<String> {
        [
            "s_client",
            "-connect",
            &addr.to_string(),
            "-CAfile",
            ca,
            "-verify_return_error",
            check[0],
            check[1],
            "-servername",
            "localhost",
            version,
            "-brief",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for version in ["-tls1_2", "-tls1_3"] {
        for check in [
            ["-verify_hostname", "localhost"],
            ["-verify_ip", "127.0.0.1"],
        ] {
            let out = run("openssl", args(&ca, version, check)).await;
            let log = text(&out);
            assert!(out.status.success(), "{version} {check:?}: {log}");
            assert!(log.contains("Verification: OK"), "{log}");
        }
        let out = run(
            "openssl",
            args(&wrong, version, ["-verify_hostname", "localhost"]),
        )
        .await;
        assert!(!out.status.success(), "wrong CA must fail: {}", text(&out));
        let out = run(
            "openssl",
            args(&ca, version, ["-verify_hostname", "elsewhere.local"]),
        )
        .await;
        assert!(
            !out.status.success(),
            "wrong name must fail: {}",
            text(&out)
        );
    }
}

/// A CA made by openssl (as in the blog posts operators follow), in PKCS#8, SEC1 and PKCS#1
/// key formats, signs server certificates that rustls and `openssl verify` accept.
#[tokio::test]
async fn openssl_made_ca_signs_through_from_pem() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_string_lossy().into_owned();
    let sh = |script: String| async move {
        let out = run("sh", vec!["-ec".into(), script]).await;
        assert!(out.status.success(), "{}", text(&out));
    };
    sh(format!(
        "cd {dir}
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
           -subj '/C=US/O=Contoso/OU=Engineering/CN=Contoso Root CA Cert' \
           -keyout ec.key -out ec.crt 2>/dev/null
         openssl ec -in ec.key -out ec-sec1.key 2>/dev/null
         openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN=RSA Root' \
           -keyout rsa.key -out rsa.crt 2>/dev/null
         openssl rsa -in rsa.key -traditional -out rsa-pkcs1.key 2>/dev/null"
    ))
    .await;
    let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap();
    assert!(read("ec-sec1.key").contains("BEGIN EC PRIVATE KEY"));
    assert!(read("rsa-pkcs1.key").contains("BEGIN RSA PRIVATE KEY"));

    for (crt, key) in [
        ("ec.crt", "ec.key"),
        ("ec.crt", "ec-sec1.key"),
        ("rsa.crt", "rsa.key"),
        ("rsa.crt", "rsa-pkcs1.key"),
    ] {
        let ca = CertificateAuthority::from_pem(&read(crt), &read(key))
            .unwrap_or_else(|e| panic!("{crt} + {key}: {e}"));
        assert_eq!(ca.key_pem(), read(key), "the key is kept as given");
        let issued = ca
            .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
            .unwrap();
        let leaf = write(tmp.path(), "leaf.pem", &issued.chain_pem);
        let out = run(
            "openssl",
            vec![
                "verify".into(),
                "-CAfile".into(),
                format!("{dir}/{crt}"),
                "-purpose".into(),
                "sslserver".into(),
                leaf,
            ],
        )
        .await;
        assert!(out.status.success(), "{crt} + {key}: {}", text(&out));

        let addr = serve(server_config(
            Arc::new(ServerCertSlot::new(certified(&issued))),
            None,
        ))
        .await;
        let mut tls = connect(addr, client_both(&read(crt)), "localhost")
            .await
            .unwrap_or_else(|e| panic!("{crt} + {key}: {e}"));
        echo(&mut tls, b"openssl CA").await;
    }
}

/// `edgemq certs` output checked by openssl: root → intermediate → client, verified with the
/// intermediate as untrusted and the root as trusted, purpose sslclient.
#[tokio::test]
async fn openssl_verifies_intermediate_and_client_chain() {
    if !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
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
    let client = inter
        .issue_client("client42a", KeyAlgorithm::Rsa2048, 30 * DAY)
        .unwrap();
    let root_path = write(tmp.path(), "root.crt", root.cert_pem());
    let inter_path = write(tmp.path(), "inter.crt", inter.cert_pem());
    let leaf_path = write(tmp.path(), "client.crt", &client.leaf_pem);
    let out = run(
        "openssl",
        [
            "verify",
            "-CAfile",
            &root_path,
            "-untrusted",
            &inter_path,
            "-purpose",
            "sslclient",
            &leaf_path,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
}

/// A real MQTT client over TLS: mosquitto_pub connects, checks the host name, publishes.
/// The server side is a minimal MQTT responder (CONNACK, then it collects what follows).
#[tokio::test]
async fn mosquitto_pub_connects_over_tls() {
    if !have("mosquitto_pub") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let issuer = BuiltInIssuer::load_or_create(tmp.path()).unwrap();
    let issued = issuer
        .issue_server(&spec(&["localhost"], &["127.0.0.1"], KeyAlgorithm::Ec256))
        .unwrap();
    let config = server_config(Arc::new(ServerCertSlot::new(certified(&issued))), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut connect = [0u8; 256];
            if tls.read(&mut connect).await.unwrap_or(0) == 0 {
                continue;
            }
            let _ = tls.write_all(&[0x20, 0x02, 0x00, 0x00]).await; // CONNACK, accepted
            let _ = tls.flush().await;
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
            let _ = tx.send(rest);
        }
    });
    let ca = write(tmp.path(), "ca.crt", issuer.ca_pem());
    for host in ["localhost", "127.0.0.1"] {
        let out = run(
            "mosquitto_pub",
            [
                "-h",
                host,
                "-p",
                &port.to_string(),
                "--cafile",
                &ca,
                "-V",
                "mqttv311",
                "-t",
                "edgemq/test",
                "-m",
                "hello over tls",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
        .await;
        assert!(out.status.success(), "{host}: {}", text(&out));
        let received = rx.recv().await.unwrap();
        assert_eq!(received.first(), Some(&0x30), "a QoS 0 PUBLISH first");
        let received = String::from_utf8_lossy(&received);
        assert!(received.contains("edgemq/test") && received.contains("hello over tls"));
    }
    // And a client that does not trust the CA is refused.
    let wrong = CertificateAuthority::generate_root("wrong", KeyAlgorithm::Ec256, DAY).unwrap();
    let wrong = write(tmp.path(), "wrong.crt", wrong.cert_pem());
    let out = run(
        "mosquitto_pub",
        [
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "--cafile",
            &wrong,
            "-t",
            "t",
            "-m",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
}
