//! Service account tokens signed with keys made in the test, verified offline against a JWKS
//! (a document and an OIDC issuer over real HTTPS) and through a real local HTTPS TokenReview
//! endpoint (directly and from a kubeconfig).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use edgemq_codec::ReasonCode;
use edgemq_core::auth::{ConnectRequest, RequestKind};
use edgemq_security::sat::{JwksSource, SatMethod, SatVerifier, TokenReviewClient};
use edgemq_security::{Method, Outcome};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::{pki, serve, Response};

/// A signing key and its public JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: serde_json::Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_signer(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = kp.public_key_raw().to_vec(); // 0x04 || X || Y
    Signer {
        kid: kid.into(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn rsa_signer(kid: &str) -> Signer {
    use x509_parser::prelude::FromDer as _;
    let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let der = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("not RSA")
    };
    let strip = |b: &[u8]| {
        b.iter()
            .skip_while(|x| **x == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    Signer {
        kid: kid.into(),
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                    "n": b64(&strip(rsa.modulus)), "e": b64(&strip(rsa.exponent))}),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(s: &Signer, aud: serde_json::Value, exp: u64) -> String {
    let mut header = Header::new(s.alg);
    header.kid = Some(s.kid.clone());
    let claims = json!({"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:azure-iot-operations:sensor",
                        "aud": aud, "exp": exp, "iat": now(), "nbf": now() - 5});
    jsonwebtoken::encode(&header, &claims, &s.key).unwrap()
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn sat_request<'a>(user: &'a str, password: Option<&'a Bytes>) -> ConnectRequest<'a> {
    ConnectRequest {
        kind: RequestKind::Connect,
        listener: "l",
        port: 18883,
        peer: "127.0.0.1:5000".parse().unwrap(),
        client_id: "sensor",
        username: Some(user),
        password,
        authentication_method: None,
        authentication_data: None,
        client_certificates: &[],
    }
}

async fn outcome(m: &SatMethod, user: &str, token: &str) -> Outcome {
    let t = Bytes::from(token.to_string());
    m.check(&sat_request(user, Some(&t))).await
}

fn assert_bad(o: Outcome, what: &str) {
    match o {
        Outcome::Refuse { reason, why } => {
            assert_eq!(reason, ReasonCode::BadUserNameOrPassword, "{why}");
            assert!(why.contains(what), "expected {what:?} in {why:?}");
        }
        other => panic!("expected a refusal ({what}), got {other:?}"),
    }
}

fn audiences() -> Vec<String> {
    vec!["aio-internal".into(), "my-audience".into()]
}

#[tokio::test]
async fn jwks_document_verifies_es256_and_rs256_tokens() {
    let ec = ec_signer("ec-1");
    let rsa = rsa_signer("rsa-1");
    let m = SatMethod::new(
        audiences(),
        SatVerifier::Jwks(JwksSource::from_json(&jwks(&[&ec, &rsa])).unwrap()),
    );
    let exp = now() + 3600;
    for signer in [&ec, &rsa] {
        match outcome(&m, "$sat", &token(signer, json!(["aio-internal"]), exp)).await {
            Outcome::Admit(a) => {
                assert_eq!(
                    a.expires_at,
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
                );
                assert_eq!(a.authentication_method, None);
            }
            other => panic!("{:?}: {other:?}", signer.alg),
        }
    }
    // The sat:// prefix form; a single-string audience.
    assert!(matches!(
        outcome(&m, "sat://sensor", &token(&ec, json!("my-audience"), exp)).await,
        Outcome::Admit(_)
    ));
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let ec = ec_signer("ec-1");
    let stranger = ec_signer("ec-1"); // same kid, another key
    let m = SatMethod::new(
        audiences(),
        SatVerifier::Jwks(JwksSource::from_json(&jwks(&[&ec])).unwrap()),
    );
    let exp = now() + 3600;
    let good = token(&ec, json!(["aio-internal"]), exp);
    assert_bad(
        outcome(&m, "$sat", &token(&ec, json!(["other-audience"]), exp)).await,
        "audience",
    );
    assert_bad(
        outcome(
            &m,
            "$sat",
            &token(&ec, json!(["aio-internal"]), now() - 3600),
        )
        .await,
        "expired",
    );
    assert_bad(
        outcome(&m, "$sat", &token(&stranger, json!(["aio-internal"]), exp)).await,
        "InvalidSignature",
    );
    assert_bad(outcome(&m, "$sat", &good[..good.len() - 10]).await, "");
    assert_bad(
        outcome(&m, "$sat", &good[..good.rfind('.').unwrap()]).await,
        "not a JWT",
    );
    assert_bad(outcome(&m, "$sat", "garbage").await, "not a JWT");
    assert_bad(outcome(&m, "$sat", "").await, "not a JWT");
    // alg "none" and HS256 (signed with the public key as an HMAC secret) are refused.
    let claims = URL_SAFE_NO_PAD.encode(json!({"aud": ["aio-internal"], "exp": exp}).to_string());
    let none = format!(
        "{}.{claims}.x",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"ec-1"}"#)
    );
    assert_bad(outcome(&m, "$sat", &none).await, "JWT header");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"aud": ["aio-internal"], "exp": exp}),
        &EncodingKey::from_secret(ec.jwk.to_string().as_bytes()),
    )
    .unwrap();
    assert_bad(outcome(&m, "$sat", &hs).await, "not accepted");
    // No password at all with $sat.
    assert_bad(m.check(&sat_request("$sat", None)).await, "no token");
    // Not a SAT user name: not relevant (the chain goes on).
    assert!(matches!(
        outcome(&m, "client1", &good).await,
        Outcome::NotRelevant { .. }
    ));
}

#[tokio::test]
async fn k8s_sat_enhanced_authentication() {
    let ec = ec_signer("k");
    let m = SatMethod::new(
        audiences(),
        SatVerifier::Jwks(JwksSource::from_json(&jwks(&[&ec])).unwrap()),
    );
    assert_eq!(m.enhanced_method(), Some("K8S-SAT"));
    let data = Bytes::from(token(&ec, json!(["aio-internal"]), now() + 60));
    let mut r = sat_request("ignored", None);
    r.username = None;
    r.authentication_method = Some("K8S-SAT");
    r.authentication_data = Some(&data);
    match m.check(&r).await {
        Outcome::Admit(a) => assert_eq!(a.authentication_method.as_deref(), Some("K8S-SAT")),
        other => panic!("{other:?}"),
    }
    r.kind = RequestKind::Reauthenticate;
    assert!(matches!(m.check(&r).await, Outcome::Admit(_)));
}

#[tokio::test]
async fn jwks_from_an_oidc_issuer_over_https() {
    let p = pki("Cluster CA");
    let ec = ec_signer("rotated");
    let keys = jwks(&[&ec]);
    let issuer_url: Arc<std::sync::Mutex<String>> = Arc::default();
    let shared = issuer_url.clone();
    let server = serve(
        &p,
        None,
        Arc::new(move |r: &support::Request| {
            if r.target == "/.well-known/openid-configuration" {
                let base = shared.lock().unwrap().clone();
                Response::json(
                    200,
                    json!({"issuer": base, "jwks_uri": format!("{base}/openid/v1/jwks")}),
                )
            } else if r.target == "/openid/v1/jwks" {
                Response::json(200, serde_json::from_str(&keys).unwrap())
            } else {
                Response::json(404, json!({}))
            }
        }),
    )
    .await;
    *issuer_url.lock().unwrap() = server.url("");
    let m = SatMethod::new(
        audiences(),
        SatVerifier::Jwks(JwksSource::issuer(&server.url(""), Some(p.ca.cert_pem())).unwrap()),
    );
    assert!(matches!(
        outcome(&m, "$sat", &token(&ec, json!(["aio-internal"]), now() + 60)).await,
        Outcome::Admit(_)
    ));
    // Cached: a second token costs no fetch.
    assert!(matches!(
        outcome(&m, "$sat", &token(&ec, json!(["my-audience"]), now() + 60)).await,
        Outcome::Admit(_)
    ));
    assert_eq!(
        server.requests.lock().unwrap().len(),
        2,
        "discovery + jwks, once"
    );
    // An issuer we cannot reach: the token cannot be trusted → 0x88, not a fall-through.
    let down = SatMethod::new(
        audiences(),
        SatVerifier::Jwks(
            JwksSource::issuer("https://127.0.0.1:1", Some(p.ca.cert_pem())).unwrap(),
        ),
    );
    match outcome(
        &down,
        "$sat",
        &token(&ec, json!(["aio-internal"]), now() + 60),
    )
    .await
    {
        Outcome::Refuse { reason, why } => {
            assert_eq!(reason, ReasonCode::ServerUnavailable);
            assert!(why.contains("JWKS unavailable"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn token_review_through_a_real_https_api_server_and_a_kubeconfig() {
    let p = pki("Kubernetes CA");
    let ec = ec_signer("k");
    let good = token(&ec, json!(["aio-internal"]), now() + 600);
    let revoked = token(&ec, json!(["aio-internal"]), now() + 601);
    let (g, r) = (good.clone(), revoked.clone());
    let server = serve(&p, None, Arc::new(move |req: &support::Request| {
        if req.header("authorization") != Some("Bearer broker-sa-token") {
            return Response::json(401, json!({"kind": "Status", "code": 401}));
        }
        assert_eq!(req.target, "/apis/authentication.k8s.io/v1/tokenreviews");
        let body = req.json();
        assert_eq!(body["kind"], "TokenReview");
        let t = body["spec"]["token"].as_str().unwrap();
        if t == g {
            Response::json(201, json!({"kind": "TokenReview", "status": {"authenticated": true, "audiences": ["aio-internal"], "user": {"username": "system:serviceaccount:ns:sensor"}}}))
        } else if t == r {
            Response::json(201, json!({"kind": "TokenReview", "status": {"authenticated": false, "error": "token has been invalidated"}}))
        } else {
            Response::json(500, json!({}))
        }
    }))
    .await;
    let direct = SatMethod::new(
        audiences(),
        SatVerifier::TokenReview(
            TokenReviewClient::new(
                &server.url(""),
                Some(p.ca.cert_pem()),
                "broker-sa-token".into(),
            )
            .unwrap(),
        ),
    );
    assert!(matches!(
        outcome(&direct, "$sat", &good).await,
        Outcome::Admit(_)
    ));
    assert_bad(
        outcome(&direct, "$sat", &revoked).await,
        "token has been invalidated",
    );
    // The API server failing: 0x88.
    let odd = token(&ec, json!(["aio-internal"]), now() + 602);
    match outcome(&direct, "$sat", &odd).await {
        Outcome::Refuse { reason, why } => {
            assert_eq!(reason, ReasonCode::ServerUnavailable);
            assert!(why.contains("HTTP status 500"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Wrong broker credentials: 401 → unavailable, never admitted.
    let wrong = SatMethod::new(
        audiences(),
        SatVerifier::TokenReview(
            TokenReviewClient::new(&server.url(""), Some(p.ca.cert_pem()), "nope".into()).unwrap(),
        ),
    );
    assert!(matches!(
        outcome(&wrong, "$sat", &good).await,
        Outcome::Refuse {
            reason: ReasonCode::ServerUnavailable,
            ..
        }
    ));

    // The same cluster through a kubeconfig file.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: edge\nclusters:\n- name: edge-cluster\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: edge\n  context: {{cluster: edge-cluster, user: broker}}\nusers:\n- name: broker\n  user:\n    token: broker-sa-token\npreferences: {{}}\n",
        server.url(""),
        STANDARD.encode(p.ca.cert_pem())
    )).unwrap();
    let via_kubeconfig = SatMethod::new(
        audiences(),
        SatVerifier::TokenReview(TokenReviewClient::from_kubeconfig(&kubeconfig).unwrap()),
    );
    assert!(matches!(
        outcome(&via_kubeconfig, "$sat", &good).await,
        Outcome::Admit(_)
    ));
    // Expired tokens never reach the API server.
    let before = server.requests.lock().unwrap().len();
    assert_bad(
        outcome(
            &via_kubeconfig,
            "$sat",
            &token(&ec, json!(["aio-internal"]), now() - 600),
        )
        .await,
        "expired",
    );
    assert_eq!(server.requests.lock().unwrap().len(), before);
    // A broken kubeconfig says what is wrong.
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
    let err = TokenReviewClient::from_kubeconfig(&kubeconfig)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no current-context"), "{err}");
}
