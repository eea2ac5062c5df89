//! The Custom method against a real local HTTPS server (127.0.0.1, certificates made in the
//! test) implementing the AIO custom-auth API.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgemq_codec::ReasonCode;
use edgemq_core::auth::{ConnectRequest, RequestKind};
use edgemq_security::custom::{CustomError, CustomMethod, CustomSettings, API_VERSION};
use edgemq_security::{Method, Outcome};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use support::{pki, serve, Handler, Pki, Response};

fn settings(endpoint: String, ca: Option<String>) -> CustomSettings {
    CustomSettings {
        endpoint,
        ca_pem: ca,
        client_cert: None,
        headers: vec![("X-Tenant".into(), "edge-1".into())],
        timeout: Duration::from_millis(2000),
    }
}

/// Trusting `p`'s CA.
fn method(p: &Pki, url: String) -> CustomMethod {
    CustomMethod::new(settings(url, Some(p.ca.cert_pem().to_string()))).unwrap()
}

fn request<'a>(password: &'a Bytes, certs: &'a [Bytes]) -> ConnectRequest<'a> {
    ConnectRequest {
        kind: RequestKind::Connect,
        listener: "l",
        port: 1883,
        peer: "127.0.0.1:5000".parse().unwrap(),
        client_id: "dev-1",
        username: Some("alice"),
        password: Some(password),
        authentication_method: None,
        authentication_data: None,
        client_certificates: certs,
    }
}

fn handler(f: impl Fn(&support::Request) -> Response + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::test]
async fn admitted_with_attributes_and_expiry_and_the_exact_request() {
    install_provider();
    let p = pki("Auth Server CA");
    let server = serve(
        &p,
        None,
        handler(|_| {
            Response::json(
                200,
                json!({"expiry": "2030-05-08T20:04:16+00:00", "attributes": {"group": "group1", "floor": "2"}}),
            )
        }),
    )
    .await;
    let m = method(&p, server.url("/"));
    let password = Bytes::from_static(b"password");
    // A two-certificate chain (leaf, CA) as a client would present it.
    let chain = format!("{}{}", p.server_chain, p.ca.cert_pem());
    let certs: Vec<Bytes> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .map(|c| Bytes::copy_from_slice(c.unwrap().as_ref()))
        .collect();
    assert!(certs.len() >= 2);
    match m.check(&request(&password, &certs)).await {
        Outcome::Admit(a) => {
            assert_eq!(
                a.attributes,
                vec![
                    ("floor".to_string(), "2".to_string()),
                    ("group".to_string(), "group1".to_string())
                ]
            );
            // `date -u -d 2030-05-08T20:04:16Z +%s`
            let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_904_501_056);
            assert_eq!(a.expires_at, Some(want));
            assert_eq!(a.username, None);
            assert_eq!(a.authentication_method, None);
        }
        other => panic!("{other:?}"),
    }
    let got = server.requests.lock().unwrap()[0].clone();
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/?api-version=0.5.0");
    assert_eq!(got.header("x-tenant"), Some("edge-1"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let body = got.json();
    let pem = body["certs"].as_str().unwrap().to_string();
    assert_eq!(
        body,
        json!({"type": "connect", "username": "alice", "password": "cGFzc3dvcmQ=", "certs": pem}),
        "exactly these fields; absent values are omitted"
    );
    // The PEM chain: leaf first, each block a CERTIFICATE, the same DER as presented.
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    assert_eq!(
        pem.matches("-----BEGIN CERTIFICATE-----").count(),
        certs.len()
    );
    let sent: Vec<Bytes> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| Bytes::copy_from_slice(c.unwrap().as_ref()))
        .collect();
    assert_eq!(sent, certs);
}

#[tokio::test]
async fn a_connect_without_credentials_is_still_sent_and_decided_by_the_server() {
    install_provider();
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|_| Response::json(200, json!({"attributes": {}}))),
    )
    .await;
    let m = method(&p, server.url("/auth/check"));
    let password = Bytes::new();
    let mut r = request(&password, &[]);
    r.username = None;
    r.password = None;
    match m.check(&r).await {
        Outcome::Admit(a) => {
            assert!(a.attributes.is_empty());
            assert_eq!(a.expires_at, None);
        }
        other => panic!("{other:?}"),
    }
    let got = server.requests.lock().unwrap()[0].clone();
    assert_eq!(got.target, "/auth/check?api-version=0.5.0");
    assert_eq!(got.json(), json!({"type": "connect"}));
}

#[tokio::test]
async fn refused_with_the_server_reason_or_not_authorized() {
    install_provider();
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|r| match r.json()["username"].as_str() {
            Some("alice") => {
                Response::json(403, json!({"reason": 0x86, "message": "bad password"}))
            }
            Some("carol") => Response::json(403, json!({"reason": 0x10, "message": "odd code"})),
            Some("dave") => Response {
                status: 403,
                body: "not json".into(),
                hang: false,
            },
            _ => Response::json(403, json!({"message": "no"})),
        }),
    )
    .await;
    let m = method(&p, server.url("/"));
    let password = Bytes::from_static(b"x");
    match m.check(&request(&password, &[])).await {
        Outcome::Refuse { reason, why } => {
            assert_eq!(reason, ReasonCode::BadUserNameOrPassword);
            assert_eq!(why, "custom auth server refused: bad password");
        }
        other => panic!("{other:?}"),
    }
    for (user, message) in [
        ("bob", "no"),
        ("carol", "odd code"),
        ("dave", "(no message)"),
    ] {
        let mut r = request(&password, &[]);
        r.username = Some(user);
        match m.check(&r).await {
            Outcome::Refuse { reason, why } => {
                assert_eq!(reason, ReasonCode::NotAuthorized, "{user}");
                assert_eq!(why, format!("custom auth server refused: {message}"));
            }
            other => panic!("{user}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn api_version_is_negotiated_after_a_422() {
    install_provider();
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|r| {
            if r.target.ends_with("api-version=0.6.0") {
                Response::json(200, json!({"attributes": {"v": "0.6.0"}}))
            } else {
                Response::json(
                    422,
                    json!({"supportedVersions": ["0.4.0", "0.6.0", "0.5.1"]}),
                )
            }
        }),
    )
    .await;
    let m = method(&p, server.url("/auth"));
    assert_eq!(m.api_version(), API_VERSION);
    let password = Bytes::from_static(b"x");
    for _ in 0..2 {
        match m.check(&request(&password, &[])).await {
            Outcome::Admit(a) => {
                assert_eq!(a.attributes, vec![("v".to_string(), "0.6.0".to_string())])
            }
            other => panic!("{other:?}"),
        }
    }
    // Remembered: the second call goes straight to 0.6.0.
    assert_eq!(m.api_version(), "0.6.0");
    let requests = server.requests.lock().unwrap().clone();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/auth?api-version=0.5.0",
            "/auth?api-version=0.6.0",
            "/auth?api-version=0.6.0"
        ]
    );
    // The retry carries the same body.
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn a_second_422_or_one_without_versions_is_not_relevant() {
    install_provider();
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|_| Response::json(422, json!({"supportedVersions": ["1.0.0"]}))),
    )
    .await;
    let m = method(&p, server.url("/"));
    assert_not_relevant(&m, "HTTP status 422 for API version 1.0.0").await;
    assert_eq!(
        server.requests.lock().unwrap().len(),
        2,
        "retried once only"
    );

    let server = serve(&p, None, handler(|_| Response::json(422, json!({})))).await;
    let m = method(&p, server.url("/"));
    assert_not_relevant(&m, "without a usable supportedVersions list").await;
    assert_eq!(m.api_version(), API_VERSION);
}

async fn assert_not_relevant(m: &CustomMethod, what: &str) -> String {
    let password = Bytes::from_static(b"x");
    match m.check(&request(&password, &[])).await {
        Outcome::NotRelevant { why } => {
            assert!(
                why.to_lowercase().contains(&what.to_lowercase()),
                "{what:?} not in {why:?}"
            );
            why
        }
        other => panic!("expected not relevant ({what}), got {other:?}"),
    }
}

#[tokio::test]
async fn other_statuses_and_broken_answers_are_not_relevant() {
    install_provider();
    let p = pki("CA");
    for status in [500, 503, 400, 405, 401, 404, 302] {
        let server = serve(
            &p,
            None,
            handler(move |_| Response::json(status, json!({}))),
        )
        .await;
        let m = method(&p, server.url("/"));
        let why = assert_not_relevant(&m, &format!("HTTP status {status}")).await;
        assert!(why.contains(&server.url("/")), "names the endpoint: {why}");
    }
    // 200 without the required attributes is a broken server, not an admission.
    for body in [
        json!({"expiry": null}),
        json!({"attributes": {"n": 1}}),
        json!({"attributes": {}, "expiry": "tomorrow"}),
    ] {
        let server = serve(
            &p,
            None,
            handler(move |_| Response::json(200, body.clone())),
        )
        .await;
        let m = method(&p, server.url("/"));
        let password = Bytes::from_static(b"x");
        assert!(matches!(
            m.check(&request(&password, &[])).await,
            Outcome::NotRelevant { .. }
        ));
    }
    // An answer too long to be a custom-auth answer.
    let server = serve(
        &p,
        None,
        handler(|_| Response::json(200, json!({"attributes": {"a": "x".repeat(100_000)}}))),
    )
    .await;
    assert_not_relevant(&method(&p, server.url("/")), "longer than").await;
}

#[tokio::test]
async fn a_server_that_is_down_is_not_relevant() {
    install_provider();
    let p = pki("CA");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = method(&p, format!("https://127.0.0.1:{port}/"));
    assert_not_relevant(&m, "connection refused").await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_not_relevant() {
    install_provider();
    let p = pki("CA");
    let server = serve(&p, None, handler(|_| Response::hang())).await;
    let mut s = settings(server.url("/"), Some(p.ca.cert_pem().to_string()));
    s.timeout = Duration::from_millis(300);
    let m = CustomMethod::new(s).unwrap();
    let start = Instant::now();
    assert_not_relevant(&m, "timed out").await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        server.requests.lock().unwrap().len(),
        1,
        "the request arrived"
    );
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_not_relevant() {
    install_provider();
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|_| Response::json(200, json!({"attributes": {}}))),
    )
    .await;
    let other = pki("Other CA");
    let m = method(&other, server.url("/"));
    assert_not_relevant(&m, "UnknownIssuer").await;
    assert!(server.requests.lock().unwrap().is_empty());
    // Without a configured CA the bundled public roots do not trust a private CA either.
    let m = CustomMethod::new(settings(server.url("/"), None)).unwrap();
    assert_not_relevant(&m, "UnknownIssuer").await;
}

#[tokio::test]
async fn mutual_tls_to_the_auth_server() {
    install_provider();
    let p = pki("Server CA");
    let clients = pki("Broker Client CA");
    let server = serve(
        &p,
        Some(clients.ca.cert_pem()),
        handler(|_| Response::json(200, json!({"attributes": {"via": "mtls"}}))),
    )
    .await;
    let broker_cert = clients
        .ca
        .issue_client("edgemq", edgemq_tls::KeyAlgorithm::Ec256, support::DAY)
        .unwrap();
    let mut s = settings(server.url("/"), Some(p.ca.cert_pem().to_string()));
    s.client_cert = Some((broker_cert.chain_pem.clone(), broker_cert.key_pem.clone()));
    let with = CustomMethod::new(s).unwrap();
    let password = Bytes::from_static(b"x");
    match with.check(&request(&password, &[])).await {
        Outcome::Admit(a) => {
            assert_eq!(a.attributes, vec![("via".to_string(), "mtls".to_string())])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests.lock().unwrap().len(), 1);

    let without = method(&p, server.url("/"));
    assert_not_relevant(&without, "CertificateRequired").await;
    // A certificate from a CA the server does not trust is no better.
    let stranger = pki("Stranger CA")
        .ca
        .issue_client("edgemq", edgemq_tls::KeyAlgorithm::Ec256, support::DAY)
        .unwrap();
    let mut s = settings(server.url("/"), Some(p.ca.cert_pem().to_string()));
    s.client_cert = Some((stranger.chain_pem, stranger.key_pem));
    assert_not_relevant(&CustomMethod::new(s).unwrap(), "UnknownCA").await;
    assert_eq!(
        server.requests.lock().unwrap().len(),
        1,
        "no request got through without a trusted client certificate"
    );
}

#[tokio::test]
async fn reauthentication_sends_type_auth_with_enhanced_data() {
    install_provider();
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|_| {
            Response::json(
                200,
                json!({"attributes": {}, "expiry": "2031-01-01T00:00:00Z"}),
            )
        }),
    )
    .await;
    let m = method(&p, server.url("/"));
    let data = Bytes::from_static(b"token-bytes");
    let password = Bytes::from_static(b"x");
    let mut r = request(&password, &[]);
    r.kind = RequestKind::Reauthenticate;
    r.password = None;
    r.authentication_method = Some("CUSTOM-TOKEN");
    r.authentication_data = Some(&data);
    match m.check(&r).await {
        Outcome::Admit(a) => {
            assert_eq!(a.authentication_method.as_deref(), Some("CUSTOM-TOKEN"));
            // `date -u -d 2031-01-01T00:00:00Z +%s`
            let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_924_992_000);
            assert_eq!(a.expires_at, Some(want));
        }
        other => panic!("{other:?}"),
    }
    let got = server.requests.lock().unwrap()[0].clone();
    assert_eq!(got.target, "/?api-version=0.5.0");
    assert_eq!(
        got.json(),
        json!({
            "type": "auth",
            "username": "alice",
            "enhancedAuthentication": {"method": "CUSTOM-TOKEN", "data": "dG9rZW4tYnl0ZXM="}
        })
    );
}

/// A `MakeWriter` collecting the log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn an_unreachable_server_is_logged_at_warn_without_secrets() {
    install_provider();
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish(),
    );
    let p = pki("CA");
    let server = serve(&p, None, handler(|_| Response::json(503, json!({})))).await;
    let mut s = settings(server.url("/"), Some(p.ca.cert_pem().to_string()));
    s.headers = vec![("Authorization".into(), "Bearer header-token-123".into())];
    let m = CustomMethod::new(s.clone()).unwrap();
    let password = Bytes::from_static(b"s3cret-pw");
    let data = Bytes::from_static(b"auth-data-456");
    let mut r = request(&password, &[]);
    r.authentication_method = Some("CUSTOM");
    r.authentication_data = Some(&data);
    assert!(matches!(m.check(&r).await, Outcome::NotRelevant { .. }));
    assert_eq!(
        server.requests.lock().unwrap()[0].header("authorization"),
        Some("Bearer header-token-123")
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warn = text
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(warn.contains(&server.url("/")), "{warn}");
    assert!(warn.contains("HTTP status 503"), "{warn}");
    // Debug output is redacted too.
    let shown = format!("{text}\n{s:?}\n{m:?}");
    for secret in [
        "s3cret-pw",
        "czNjcmV0LXB3", // base64 of the password
        "auth-data-456",
        "YXV0aC1kYXRhLTQ1Ng", // base64 of the authentication data
        "header-token-123",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
}

#[test]
fn bad_settings_are_refused_at_construction() {
    let err = |s: CustomSettings| CustomMethod::new(s).err().unwrap();
    assert!(matches!(
        err(settings("http://auth".into(), None)),
        CustomError::NotHttps(_)
    ));
    assert_eq!(
        err(settings("http://auth".into(), None)).to_string(),
        "endpoint \"http://auth\": must be an https:// URL"
    );
    assert!(matches!(
        err(settings("not a url".into(), None)),
        CustomError::Endpoint(..)
    ));
    let e = err(settings("http://user:pw@auth/".into(), None)).to_string();
    assert!(!e.contains("pw"), "{e}");
    assert!(matches!(
        err(settings("https://auth/".into(), Some("no pem here".into()))),
        CustomError::Ca(_)
    ));
    let mut s = settings("https://auth/".into(), None);
    s.headers = vec![("Bad Header".into(), "v".into())];
    assert!(matches!(err(s), CustomError::Header(..)));
    let mut s = settings("https://auth/".into(), None);
    s.headers = vec![("X-Token".into(), "line\nbreak-secret".into())];
    let e = err(s);
    assert!(matches!(e, CustomError::Header(..)));
    assert!(!e.to_string().contains("break-secret"), "{e}");
    let mut s = settings("https://auth/".into(), None);
    s.client_cert = Some(("no cert".into(), "no key".into()));
    assert!(matches!(err(s), CustomError::ClientCert(_)));
}
