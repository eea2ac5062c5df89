//! The Custom method against a real local HTTPS server implementing the AIO custom-auth API.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edgemq_codec::ReasonCode;
use edgemq_core::auth::{ConnectRequest, RequestKind};
use edgemq_security::custom::{CustomMethod, CustomSettings};
use edgemq_security::{Method, Outcome};
use serde_json::json;
use support::{pki, serve, Handler, Response};

fn settings(endpoint: String, ca: Option<String>) -> CustomSettings {
    CustomSettings {
        endpoint,
        ca_pem: ca,
        client_cert: None,
        headers: vec![("X-Tenant".into(), "edge-1".into())],
        timeout: Duration::from_millis(2000),
    }
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

#[tokio::test]
async fn admitted_with_attributes_and_expiry_and_the_exact_request() {
    let p = pki("Auth Server CA");
    let server = serve(
        &p,
        None,
        handler(|_| {
            Response::json(
                200,
                json!({"expiry": "2030-05-08T20:04:16+00:00", "attributes": {"group": "group1"}}),
            )
        }),
    )
    .await;
    let m =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    let password = Bytes::from_static(b"password");
    let cert = edgemq_tls::pem::parse_certificates(p.server_chain.as_bytes()).unwrap();
    let certs: Vec<Bytes> = cert
        .iter()
        .map(|c| Bytes::copy_from_slice(c.as_ref()))
        .collect();
    match m.check(&request(&password, &certs)).await {
        Outcome::Admit(a) => {
            assert_eq!(
                a.attributes,
                vec![("group".to_string(), "group1".to_string())]
            );
            // `date -u -d 2030-05-08T20:04:16Z +%s`
            let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_904_501_056);
            assert_eq!(a.expires_at, Some(want));
        }
        other => panic!("{other:?}"),
    }
    let got = server.requests.lock().unwrap()[0].clone();
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/?api-version=0.5.0");
    assert_eq!(got.header("x-tenant"), Some("edge-1"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let body = got.json();
    assert_eq!(body["type"], "connect");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["password"], "cGFzc3dvcmQ=");
    let pem = body["certs"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), certs.len());
    assert!(
        body.get("enhancedAuthentication").is_none(),
        "absent values are omitted: {body}"
    );
}

#[tokio::test]
async fn refused_with_the_server_reason_or_not_authorized() {
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|r| {
            if r.json()["username"] == "alice" {
                Response::json(403, json!({"reason": 134, "message": "bad password"}))
            } else {
                Response::json(403, json!({"message": "no"}))
            }
        }),
    )
    .await;
    let m =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    let password = Bytes::from_static(b"x");
    match m.check(&request(&password, &[])).await {
        Outcome::Refuse { reason, why } => {
            assert_eq!(reason, ReasonCode::BadUserNameOrPassword);
            assert!(why.contains("bad password"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let mut r = request(&password, &[]);
    r.username = Some("bob");
    match m.check(&r).await {
        Outcome::Refuse { reason, .. } => assert_eq!(reason, ReasonCode::NotAuthorized),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn api_version_is_negotiated_after_a_422() {
    let p = pki("CA");
    let server = serve(
        &p,
        None,
        handler(|r| {
            if r.target.contains("api-version=0.5.0") {
                Response::json(422, json!({"supportedVersions": ["0.4.0", "0.6.0"]}))
            } else {
                Response::json(200, json!({"attributes": {}}))
            }
        }),
    )
    .await;
    let m = CustomMethod::new(settings(
        server.url("/auth"),
        Some(p.ca.cert_pem().to_string()),
    ))
    .unwrap();
    let password = Bytes::from_static(b"x");
    assert!(matches!(
        m.check(&request(&password, &[])).await,
        Outcome::Admit(_)
    ));
    // Remembered: the next call goes straight to 0.6.0.
    assert!(matches!(
        m.check(&request(&password, &[])).await,
        Outcome::Admit(_)
    ));
    let targets: Vec<String> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/auth?api-version=0.5.0",
            "/auth?api-version=0.6.0",
            "/auth?api-version=0.6.0"
        ]
    );
}

async fn assert_not_relevant(m: &CustomMethod, what: &str) {
    let password = Bytes::from_static(b"x");
    match m.check(&request(&password, &[])).await {
        Outcome::NotRelevant { why } => assert!(why.contains(what), "{why}"),
        other => panic!("expected not relevant ({what}), got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_not_relevant() {
    let p = pki("CA");
    // 500.
    let server = serve(&p, None, handler(|_| Response::json(500, json!({})))).await;
    let m =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    assert_not_relevant(&m, "HTTP status 500").await;
    // 400 and 405.
    let server = serve(&p, None, handler(|_| Response::json(405, json!({})))).await;
    let m =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    assert_not_relevant(&m, "HTTP status 405").await;
    // 200 without attributes is a broken server, not an admission.
    let server = serve(
        &p,
        None,
        handler(|_| Response::json(200, json!({"expiry": null}))),
    )
    .await;
    let m =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    assert_not_relevant(&m, "unusable body").await;
    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = CustomMethod::new(settings(
        format!("https://127.0.0.1:{port}/"),
        Some(p.ca.cert_pem().to_string()),
    ))
    .unwrap();
    assert_not_relevant(&m, "unavailable").await;
    // A server that never answers: the timeout.
    let server = serve(&p, None, handler(|_| Response::hang())).await;
    let mut s = settings(server.url("/"), Some(p.ca.cert_pem().to_string()));
    s.timeout = Duration::from_millis(300);
    let m = CustomMethod::new(s).unwrap();
    assert_not_relevant(&m, "unavailable").await;
    // A server certificate from a CA we do not trust.
    let server = serve(
        &p,
        None,
        handler(|_| Response::json(200, json!({"attributes": {}}))),
    )
    .await;
    let other = pki("Other CA");
    let m = CustomMethod::new(settings(
        server.url("/"),
        Some(other.ca.cert_pem().to_string()),
    ))
    .unwrap();
    assert_not_relevant(&m, "unavailable").await;
}

#[tokio::test]
async fn mutual_tls_to_the_auth_server() {
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
    let without =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    assert_not_relevant(&without, "unavailable").await;
}

#[tokio::test]
async fn reauthentication_sends_type_auth_with_enhanced_data() {
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
    let m =
        CustomMethod::new(settings(server.url("/"), Some(p.ca.cert_pem().to_string()))).unwrap();
    let data = Bytes::from_static(b"token-bytes");
    let password = Bytes::from_static(b"x");
    let mut r = request(&password, &[]);
    r.kind = RequestKind::Reauthenticate;
    r.password = None;
    r.authentication_method = Some("CUSTOM-TOKEN");
    r.authentication_data = Some(&data);
    match m.check(&r).await {
        Outcome::Admit(a) => assert_eq!(a.authentication_method.as_deref(), Some("CUSTOM-TOKEN")),
        other => panic!("{other:?}"),
    }
    let body = server.requests.lock().unwrap()[0].json();
    assert_eq!(body["type"], "auth");
    assert_eq!(body["enhancedAuthentication"]["method"], "CUSTOM-TOKEN");
    assert_eq!(body["enhancedAuthentication"]["data"], "dG9rZW4tYnl0ZXM=");
    assert!(body.get("password").is_none());
}

#[test]
fn plain_http_endpoints_are_refused() {
    let err = CustomMethod::new(settings("http://auth".into(), None))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "endpoint \"http://auth\": must be an https:// URL"
    );
}
