//! The authentication chain end to end, with real clients: Custom (HTTPS server) →
//! ServiceAccountToken (JWKS) → UsernamePassword on one port — fall-through when the custom
//! server is down, "first relevant method decides" when it is up — and MQTT 5 enhanced
//! authentication with K8S-SAT: CONNACK, re-authentication with AUTH, and disconnection when
//! the token expires.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

#[path = "../../security/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use edgemq_testkit::broker::{free_port, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::raw::{connect_raw, flags, lp, p_str, packet, prop, props, RawClient};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// A cluster's token signer: an EC key made in the test and its JWKS.
struct Cluster {
    key: EncodingKey,
    jwks: String,
}

fn cluster() -> Cluster {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = kp.public_key_raw().to_vec();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]});
    Cluster {
        key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwks: jwks.to_string(),
    }
}

impl Cluster {
    /// A token for `audience` valid for `secs` seconds (negative: already expired).
    fn token(&self, audience: &str, secs: i64) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let claims = json!({"sub": "system:serviceaccount:aio:sensor", "aud": [audience], "exp": now + secs, "iat": now});
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

/// The chain on one plain port; `custom_endpoint` is where the custom server is (or not).
fn start(d: &Dirs, c: &Cluster, custom_endpoint: &str, custom_ca: &str) -> (Broker, u16) {
    let port = free_port();
    d.write(
        "l.yaml",
        &listener(
            "chain",
            "ClusterIp",
            &plain_port(port).replace(
                "      protocol: Mqtt\n",
                "      protocol: Mqtt\n      authenticationRef: chain\n",
            ),
        ),
    );
    d.write(
        "a.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: chain\nspec:\n  authenticationMethods:\n    - method: Custom\n      customSettings:\n        endpoint: {custom_endpoint}\n        caCertConfigMap: custom-auth-ca\n        headers: {{X-Tenant: edge-1}}\n    - method: ServiceAccountToken\n      serviceAccountTokenSettings:\n        audiences: [aio-internal]\n        jwksConfigMap: cluster-jwks\n    - method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: passwords-db\n"),
    );
    d.write("configmaps/cluster-jwks/jwks.json", &c.jwks);
    d.write("configmaps/custom-auth-ca/ca.pem", custom_ca);
    d.write("secrets/passwords-db/passwords.toml", PASSWORDS_TOML);
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    (b, port)
}

fn pub_as(port: u16, client_id: &str, user: &str, password: &str) -> (Option<i32>, String) {
    let args = ["-u", user, "-P", password, "-t", "chain/x", "-m", client_id];
    run_mosquitto_pub(port, "5", client_id, &args)
}

/// The chain's decision line for `client_id`.
fn decision(b: &Broker, client_id: &str) -> String {
    let needle = format!("client_id=\"{client_id}\"");
    assert!(
        b.wait_for_log(&needle, WAIT),
        "no line for {client_id}:\n{}",
        b.log()
    );
    b.log()
        .lines()
        .rev()
        .find(|l| {
            l.contains(&needle)
                && (l.contains("authenticated") || l.contains("authentication refused"))
        })
        .unwrap_or_default()
        .to_string()
}

#[test]
fn custom_server_down_falls_through_to_tokens_and_passwords() {
    let d = Dirs::new();
    let c = cluster();
    let ca = support::pki("Auth CA");
    let closed = free_port();
    let (b, port) = start(
        &d,
        &c,
        &format!("https://127.0.0.1:{closed}/"),
        ca.ca.cert_pem(),
    );
    let sub = Sub::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "chain/#",
        &["-u", "client1", "-P", "password"],
    );

    // Step 1 (Custom): unreachable → not relevant; step 2 (SAT): the token admits.
    let (code, out) = pub_as(port, "sensor", "$sat", &c.token("aio-internal", 600));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "chain/x sensor");
    assert!(
        decision(&b, "sensor").contains("method=\"ServiceAccountToken\""),
        "{}",
        b.log()
    );
    assert!(
        b.wait_for_log("custom auth server unavailable", WAIT),
        "{}",
        b.log()
    );
    // Custom and SAT not relevant; step 3 (UsernamePassword) admits.
    let (code, out) = pub_as(port, "plc", "client1", "password");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        decision(&b, "plc").contains("method=\"UsernamePassword\""),
        "{}",
        b.log()
    );
    // SAT is relevant and the token is for another audience: refused there (0x86); the
    // password method is not consulted.
    let (code, out) = pub_as(port, "wrong-aud", "$sat", &c.token("other", 600));
    assert_ne!(code, Some(0));
    assert!(out.contains("Bad User Name or Password"), "{out}");
    let line = decision(&b, "wrong-aud");
    assert!(
        line.contains("method=\"ServiceAccountToken\"") && line.contains("audience"),
        "{line}"
    );
    // Expired token.
    let (code, out) = pub_as(port, "expired", "$sat", &c.token("aio-internal", -600));
    assert_ne!(code, Some(0));
    assert!(decision(&b, "expired").contains("expired"), "{out}");
    // Wrong password: refused by step 3.
    let (code, out) = pub_as(port, "bad-pw", "client1", "nope");
    assert_ne!(code, Some(0));
    assert!(out.contains("Bad User Name or Password"), "{out}");
    // Tokens and passwords never reach the log.
    assert!(!b.log().contains("nope"));
    assert!(!b.log().contains(&c.token("aio-internal", 600)[..40]));
}

#[test]
fn a_reachable_custom_server_decides_first() {
    let d = Dirs::new();
    let c = cluster();
    let ca = support::pki("Auth CA");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(support::serve(
        &ca,
        None,
        Arc::new(|r: &support::Request| {
            let body = r.json();
            if body["username"] == "alice" && r.header("x-tenant") == Some("edge-1") {
                support::Response::json(200, json!({"attributes": {"group": "g1"}}))
            } else {
                support::Response::json(403, json!({"reason": 135, "message": "unknown device"}))
            }
        }),
    ));
    let (b, port) = start(&d, &c, &server.url("/"), ca.ca.cert_pem());
    let (code, out) = pub_as(port, "alice-dev", "alice", "anything");
    assert_eq!(code, Some(0), "{out}");
    let line = decision(&b, "alice-dev");
    assert!(
        line.contains("method=\"Custom\"") && line.contains("attributes=group=g1"),
        "{line}"
    );
    // The custom server is relevant for everyone: its refusal stops the chain, even for
    // credentials a later method would accept.
    let (code, out) = pub_as(port, "client1-dev", "client1", "password");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("Not authorized"), "{out}");
    assert!(
        decision(&b, "client1-dev").contains("unknown device"),
        "{}",
        b.log()
    );
    drop(server);
}

// ---------------------------------------------------------------------------------------
// K8S-SAT enhanced authentication
// ---------------------------------------------------------------------------------------

fn sat_props(token: &str) -> Vec<u8> {
    props(&[
        p_str(prop::AUTHENTICATION_METHOD, b"K8S-SAT"),
        p_str(prop::AUTHENTICATION_DATA, token.as_bytes()),
    ])
}

fn connect_k8s_sat(port: u16, client_id: &str, token: &str) -> RawClient {
    let mut c = RawClient::open(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    c.send(&connect_raw(
        b"MQTT",
        5,
        flags::CLEAN,
        0,
        Some(&sat_props(token)),
        &lp(client_id.as_bytes()),
    ));
    c
}

fn auth_packet(reason: u8, token: &str) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(sat_props(token));
    packet(0xF0, &body)
}

#[test]
fn k8s_sat_connect_reauthentication_and_expiry() {
    let d = Dirs::new();
    let c = cluster();
    let ca = support::pki("Auth CA");
    let (b, port) = start(
        &d,
        &c,
        &format!("https://127.0.0.1:{}/", free_port()),
        ca.ca.cert_pem(),
    );

    // CONNECT with K8S-SAT: CONNACK success echoes the method ...
    let mut client = connect_k8s_sat(port, "reauth", &c.token("aio-internal", 4));
    let ack = client.expect_connack(true);
    assert_eq!(ack.code, 0, "{ack:?}\n{}", b.log());
    assert_eq!(ack.props.str(prop::AUTHENTICATION_METHOD), Some("K8S-SAT"));
    // ... re-authentication with a fresh token before it expires: AUTH 0x00 ...
    client.send(&auth_packet(0x19, &c.token("aio-internal", 3600)));
    let auth = client.read_packet();
    assert_eq!(auth[0], 0xF0, "AUTH expected: {auth:?}");
    assert_eq!(auth[2], 0x00, "AUTH success: {auth:?}");
    // ... and the connection outlives the first token (PINGREQ answered after it expired).
    std::thread::sleep(Duration::from_secs(5));
    client.send(&[0xC0, 0x00]);
    assert_eq!(client.read_packet(), vec![0xD0, 0x00]);
    // A bad token on re-authentication: DISCONNECT 0x86 [MQTT-4.12.1-2].
    client.send(&auth_packet(0x19, &c.token("other-audience", 3600)));
    let got = client.expect_closed();
    assert_eq!(
        got.last().map(|p| (p[0], p[2])),
        Some((0xE0, 0x86)),
        "{got:?}"
    );

    // Without re-authentication the broker disconnects at expiry with 0x87.
    let mut lazy = connect_k8s_sat(port, "lazy", &c.token("aio-internal", 2));
    assert_eq!(lazy.expect_connack(true).code, 0);
    let got = lazy.expect_closed();
    assert_eq!(
        got.last().map(|p| (p[0], p[2])),
        Some((0xE0, 0x87)),
        "{got:?}"
    );
    assert!(
        b.wait_for_log("credentials expired without re-authentication", WAIT),
        "{}",
        b.log()
    );

    // K8S-SAT with a bad token at CONNECT: 0x86; an unknown method: 0x8C.
    let mut bad = connect_k8s_sat(port, "bad", "not-a-token");
    assert_eq!(bad.expect_connack(true).code, 0x86);
    let mut other = RawClient::open(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    other.send(&connect_raw(
        b"MQTT",
        5,
        flags::CLEAN,
        0,
        Some(&props(&[p_str(
            prop::AUTHENTICATION_METHOD,
            b"SCRAM-SHA-256",
        )])),
        &lp(b"scram"),
    ));
    assert_eq!(other.expect_connack(true).code, 0x8C);
}

#[test]
fn k8s_sat_with_rumqttc() {
    let d = Dirs::new();
    let c = cluster();
    let ca = support::pki("Auth CA");
    let (_b, port) = start(
        &d,
        &c,
        &format!("https://127.0.0.1:{}/", free_port()),
        ca.ca.cert_pem(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Packet};
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut options = MqttOptions::new("rumqttc-sat", "127.0.0.1", port);
        let mut properties = ConnectProperties::new();
        properties.authentication_method = Some("K8S-SAT".into());
        properties.authentication_data = Some(bytes::Bytes::from(c.token("aio-internal", 2)));
        options.set_connect_properties(properties);
        let (_client, mut events) = AsyncClient::new(options, 10);
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut connected = false;
        loop {
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .expect("no DISCONNECT at token expiry");
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(format!("{:?}", ack.code), "Success");
                    connected = true;
                }
                Ok(Event::Incoming(Packet::Disconnect(dis))) => {
                    assert!(connected);
                    assert_eq!(format!("{:?}", dis.reason_code), "NotAuthorized");
                    break;
                }
                Ok(_) => {}
                // rumqttc reports the server's DISCONNECT as an error carrying its reason.
                Err(e) => {
                    let shown = format!("{e:?}");
                    assert!(connected, "{shown}");
                    assert!(
                        shown.contains("ServerDisconnect") && shown.contains("NotAuthorized"),
                        "{shown}"
                    );
                    break;
                }
            }
        }
    });
}

/// A token reviewer that answers the CONNECT and then fails: the re-authentication gets
/// AUTH 0x18 (try again later) and the connection stays.
#[test]
fn reauthentication_with_the_reviewer_down_answers_continue() {
    use base64::engine::general_purpose::STANDARD;
    let d = Dirs::new();
    let c = cluster();
    let ca = support::pki("Kubernetes CA");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let server = rt.block_on(support::serve(
        &ca,
        None,
        Arc::new(move |_r: &support::Request| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                support::Response::json(
                    201,
                    json!({"status": {"authenticated": true, "audiences": ["aio-internal"]}}),
                )
            } else {
                support::Response::json(500, json!({}))
            }
        }),
    ));
    let kubeconfig = d.file(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user: {{token: broker}}\n",
            server.url(""),
            STANDARD.encode(ca.ca.cert_pem())
        ),
    );
    let port = free_port();
    d.write(
        "l.yaml",
        &listener(
            "sat",
            "ClusterIp",
            &plain_port(port).replace(
                "      protocol: Mqtt\n",
                "      protocol: Mqtt\n      authenticationRef: sat\n",
            ),
        ),
    );
    d.write(
        "a.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: sat\nspec:\n  authenticationMethods:\n    - method: ServiceAccountToken\n      serviceAccountTokenSettings:\n        audiences: [aio-internal]\n        kubeconfig: {}\n", kubeconfig.display()),
    );
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let mut client = connect_k8s_sat(port, "review", &c.token("aio-internal", 600));
    assert_eq!(client.expect_connack(true).code, 0, "{}", b.log());
    client.send(&auth_packet(0x19, &c.token("aio-internal", 3600)));
    let auth = client.read_packet();
    assert_eq!(
        (auth[0], auth[2]),
        (0xF0, 0x18),
        "AUTH Continue expected: {auth:?}"
    );
    client.send(&[0xC0, 0x00]);
    assert_eq!(client.read_packet(), vec![0xD0, 0x00], "still connected");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(server);
}
