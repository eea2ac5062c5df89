//! `serve --config`, `check` and `ca export` with real clients and real certificates made in
//! the test: the seed's three-listener layout, manual and automatic TLS, MQTT over
//! WebSocket, certificate renewal under a connected client, live reload, Broker settings
//! and the self-check.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use edgemq_testkit::broker::{edgemq, free_port, run_with_timeout, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::pki::{self, DAY};
use edgemq_testkit::raw;

/// A root CA and a server certificate for 127.0.0.1 / localhost signed by it.
struct ServerPki {
    root_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn server_pki() -> ServerPki {
    let root = pki::root_ca("Test Root CA", 30 * DAY);
    let (chain_pem, key_pem) =
        pki::server_cert(&root, "mqtts-endpoint", &["localhost"], &["127.0.0.1"]);
    ServerPki {
        root_pem: root.cert_pem().to_string(),
        chain_pem,
        key_pem,
    }
}

fn other_root_pem() -> String {
    pki::root_ca("Unrelated CA", DAY).cert_pem().to_string()
}

fn export_ca(data: &Path) -> String {
    let (code, out, err) = edgemq(&["ca", "export", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, Some(0), "ca export failed: {err}");
    assert!(out.starts_with("-----BEGIN CERTIFICATE-----"), "{out}");
    out
}

// =======================================================================================
// The seed's three-listener layout
// =======================================================================================

#[test]
fn seed_three_listeners_share_one_bus_with_automatic_tls() {
    // ClusterIp 18883 (automatic TLS, authentication not enforced yet), NodePort 31883
    // plain, LoadBalancer 8883 automatic TLS with SAN 127.0.0.1. Fixed ports: the only test
    // that uses them.
    let d = Dirs::new();
    d.write(
        "listeners.yaml",
        &[
            listener(
                "default",
                "ClusterIp",
                &auto_tls_port(18883, "").replace(
                    "      protocol: Mqtt\n",
                    "      protocol: Mqtt\n      authenticationRef: default\n",
                ),
            ),
            listener(
                "nodeport-listener",
                "NodePort",
                "    - port: 1883\n      nodePort: 31883\n      protocol: Mqtt\n",
            ),
            listener(
                "loadbalancer-listener",
                "LoadBalancer",
                &auto_tls_port(8883, ""),
            ),
        ]
        .join("---\n"),
    );
    d.write(
        "authentication.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: default\nspec:\n  authenticationMethods:\n    - method: ServiceAccountToken\n      serviceAccountTokenSettings:\n        audiences: [aio-internal]\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 3, &[]);
    let nodeport = b.listener_addr("nodeport-listener");
    let lb = b.listener_addr("loadbalancer-listener");
    assert_eq!(
        nodeport,
        "0.0.0.0:31883".parse().unwrap(),
        "NodePort binds the node port on all interfaces"
    );
    assert_eq!(
        lb,
        "0.0.0.0:8883".parse().unwrap(),
        "LoadBalancer binds the port on all interfaces"
    );
    assert_eq!(
        b.listener_addr("default"),
        "127.0.0.1:18883".parse().unwrap(),
        "ClusterIp is loopback only"
    );
    assert!(b.log().contains("admits anonymous clients"), "{}", b.log());

    let ca = d.file("broker-ca.crt", &export_ca(&d.data));
    let tls = tls_args(&ca);
    // Published over TLS on 8883, received in plain on 31883 ...
    let sub = Sub::start(nodeport, "seed/#", &[]);
    publish_ok(lb, "seed/tls-to-plain", "hello", &as_strs(&tls));
    assert_eq!(sub.message(), "seed/tls-to-plain hello");
    // ... and the other way round.
    let tls_sub = Sub::start(lb, "seed/#", &as_strs(&tls));
    publish_ok(nodeport, "seed/plain-to-tls", "back", &[]);
    assert_eq!(tls_sub.message(), "seed/plain-to-tls back");

    // A client trusting another CA fails the handshake, and the operator sees why.
    let wrong = d.file("wrong-ca.crt", &other_root_pem());
    let (code, out) = publish(lb, "seed/x", "no", &as_strs(&tls_args(&wrong)));
    assert_ne!(
        code,
        Some(0),
        "handshake with a foreign CA succeeded: {out}"
    );
    assert!(
        b.wait_for_log("TLS handshake failed", WAIT),
        "no log line for the failed handshake:\n{}",
        b.log()
    );
    // `ca export` is stable: the same CA on every call.
    assert_eq!(export_ca(&d.data), std::fs::read_to_string(&ca).unwrap());
}

// =======================================================================================
// Manual TLS
// =======================================================================================

fn manual_tls_round_trip(secret_files: impl FnOnce(&Dirs, &ServerPki)) {
    let d = Dirs::new();
    let pki = server_pki();
    secret_files(&d, &pki);
    let (tls_port, plain) = (free_port(), free_port());
    d.write(
        "listeners.yaml",
        &[
            listener(
                "secure",
                "ClusterIp",
                &manual_tls_port(tls_port, "broker-server-cert"),
            ),
            listener("plain", "ClusterIp", &plain_port(plain)),
        ]
        .join("---\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let root = d.file("root.crt", &pki.root_pem);
    let sub = Sub::start(b.listener_addr("plain"), "manual/#", &[]);
    publish_ok(
        b.listener_addr("secure"),
        "manual/x",
        "over-tls",
        &as_strs(&tls_args(&root)),
    );
    assert_eq!(sub.message(), "manual/x over-tls");
    let wrong = d.file("wrong.crt", &other_root_pem());
    let (code, _) = publish(
        b.listener_addr("secure"),
        "manual/x",
        "no",
        &as_strs(&tls_args(&wrong)),
    );
    assert_ne!(code, Some(0));
}

#[test]
fn manual_tls_from_a_secret_folder() {
    manual_tls_round_trip(|d, pki| {
        d.write("secrets/broker-server-cert/tls.crt", &pki.chain_pem);
        d.write("secrets/broker-server-cert/tls.key", &pki.key_pem);
    });
}

#[test]
fn manual_tls_from_a_secret_manifest() {
    // The shape `kubectl create secret tls … --dry-run=client -o yaml` prints.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    manual_tls_round_trip(|d, pki| {
        d.write(
            "secret.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  creationTimestamp: null\n  name: broker-server-cert\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
                b64(&pki.chain_pem),
                b64(&pki.key_pem)
            ),
        );
    });
}

#[test]
fn manual_certificate_change_is_swapped_in_without_dropping_clients() {
    let d = Dirs::new();
    let (first, second) = (server_pki(), server_pki());
    d.write("secrets/broker-server-cert/tls.crt", &first.chain_pem);
    d.write("secrets/broker-server-cert/tls.key", &first.key_pem);
    let (tls_port, plain) = (free_port(), free_port());
    d.write(
        "listeners.yaml",
        &[
            listener(
                "secure",
                "ClusterIp",
                &manual_tls_port(tls_port, "broker-server-cert"),
            ),
            listener("plain", "ClusterIp", &plain_port(plain)),
        ]
        .join("---\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let secure = b.listener_addr("secure");
    let first_root = d.file("first.crt", &first.root_pem);
    let sub = Sub::start(secure, "swap/#", &as_strs(&tls_args(&first_root)));

    // The operator rotates the secret (as a kubelet would update the mounted files).
    d.write("secrets/broker-server-cert/tls.key", &second.key_pem);
    d.write("secrets/broker-server-cert/tls.crt", &second.chain_pem);
    assert!(
        b.wait_for_log("TLS certificate replaced in place", WAIT),
        "certificate not swapped:\n{}",
        b.log()
    );
    // The client connected with the old certificate stays connected ...
    publish_ok(b.listener_addr("plain"), "swap/x", "after-swap", &[]);
    assert_eq!(sub.message(), "swap/x after-swap");
    // ... and new clients get the new certificate: the old root no longer verifies it.
    let second_root = d.file("second.crt", &second.root_pem);
    publish_ok(
        secure,
        "swap/y",
        "new-chain",
        &as_strs(&tls_args(&second_root)),
    );
    assert_eq!(sub.message(), "swap/y new-chain");
    let (code, _) = publish(
        secure,
        "swap/z",
        "old-chain",
        &as_strs(&tls_args(&first_root)),
    );
    assert_ne!(code, Some(0), "the old certificate is still served");
}

// =======================================================================================
// MQTT over WebSocket
// =======================================================================================

/// paho-mqtt over WebSocket (the transport browsers, MQTTX and Node-RED use).
const PAHO_WS: &str = r#"
import sys, ssl, threading
import paho.mqtt.client as mqtt
port, topic, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-client", transport="websockets", protocol=mqtt.MQTTv5)
c.ws_set_options(path="/mqtt")
if cafile:
    c.tls_set(ca_certs=cafile)
done = threading.Event()
c.on_connect = lambda cl, u, f, rc, p: done.set()
c.connect("127.0.0.1", port)
c.loop_start()
if not done.wait(10):
    sys.exit("no CONNACK over WebSocket")
info = c.publish(topic, b"via-websocket", qos=1)
info.wait_for_publish(10)
c.disconnect()
c.loop_stop()
print("published", info.is_published())
"#;

fn paho_ws(port: u16, topic: &str, cafile: Option<&Path>) -> (Option<i32>, String) {
    let ca = cafile
        .map(|p| p.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (code, out, err) = run_with_timeout(
        Command::new("python3").args(["-c", PAHO_WS, &port.to_string(), topic, &ca]),
        WAIT,
    );
    (code, format!("{out}{err}"))
}

#[test]
fn mqtt_over_websocket_plain_and_tls_reach_tcp_subscribers() {
    let d = Dirs::new();
    let (ws, wss, plain) = (free_port(), free_port(), free_port());
    d.write(
        "listeners.yaml",
        &[
            listener(
                "ws",
                "ClusterIp",
                &format!(
                    "    - port: {ws}\n      protocol: WebSockets\n{}",
                    auto_tls_port(wss, "").replace("protocol: Mqtt", "protocol: WebSockets")
                ),
            ),
            listener("plain", "ClusterIp", &plain_port(plain)),
        ]
        .join("---\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 3, &[]);
    let ca = d.file("ca.crt", &export_ca(&d.data));
    let sub = Sub::start(b.listener_addr("plain"), "ws/#", &[]);
    let (code, out) = paho_ws(ws, "ws/plain", None);
    assert_eq!(code, Some(0), "paho over ws failed: {out}");
    assert!(out.contains("published True"), "{out}");
    assert_eq!(sub.message(), "ws/plain via-websocket");
    let (code, out) = paho_ws(wss, "ws/tls", Some(&ca));
    assert_eq!(code, Some(0), "paho over wss failed: {out}");
    assert_eq!(sub.message(), "ws/tls via-websocket");
}

// =======================================================================================
// Renewal and reload
// =======================================================================================

/// The leaf certificate a TLS port presents now (DER), via a rustls client trusting `ca`.
fn served_leaf(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", addr.port())).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .expect("TLS handshake with the exported CA");
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn automatic_certificate_is_renewed_and_swapped_under_a_connected_client() {
    // duration 60s, renewBefore 50s: renewed about 10s after issue, then every ~10s.
    let d = Dirs::new();
    let (tls_port, plain) = (free_port(), free_port());
    d.write(
        "listeners.yaml",
        &[
            listener(
                "secure",
                "ClusterIp",
                &auto_tls_port(
                    tls_port,
                    "          duration: 60s\n          renewBefore: 50s\n",
                ),
            ),
            listener("plain", "ClusterIp", &plain_port(plain)),
        ]
        .join("---\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let ca_pem = export_ca(&d.data);
    let ca = d.file("ca.crt", &ca_pem);
    let secure = b.listener_addr("secure");
    let before = served_leaf(secure, &ca_pem);
    let sub = Sub::start(secure, "renew/#", &as_strs(&tls_args(&ca)));
    assert!(
        b.wait_for_log("TLS certificate renewed", Duration::from_secs(60)),
        "no renewal:\n{}",
        b.log()
    );
    // The connection made before the renewal still works ...
    publish_ok(b.listener_addr("plain"), "renew/x", "after-renewal", &[]);
    assert_eq!(sub.message(), "renew/x after-renewal");
    // ... and new handshakes get the new certificate, trusted through the same CA.
    let after = served_leaf(secure, &ca_pem);
    assert_ne!(before, after, "the served certificate did not change");
}

#[test]
fn reload_adds_a_listener_keeps_clients_and_rejects_a_broken_configuration() {
    let d = Dirs::new();
    let (a, b_port) = (free_port(), free_port());
    d.write("a.yaml", &listener("first", "ClusterIp", &plain_port(a)));
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let first = b.listener_addr("first");
    let sub = Sub::start(first, "reload/#", &[]);

    d.write(
        "b.yaml",
        &listener("second", "ClusterIp", &plain_port(b_port)),
    );
    let deadline = Instant::now() + WAIT;
    while !b.listening().iter().any(|(n, _)| n == "second") {
        assert!(
            Instant::now() < deadline,
            "second listener not started:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    publish_ok(
        b.listener_addr("second"),
        "reload/x",
        "via-new-listener",
        &[],
    );
    assert_eq!(
        sub.message(),
        "reload/x via-new-listener",
        "the first client was dropped"
    );

    // A broken file: rejected with the same message `check` prints; the old set runs on.
    d.write(
        "c.yaml",
        "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: NotAKind\nmetadata: {name: x}\n",
    );
    assert!(
        b.wait_for_log("configuration rejected", WAIT),
        "invalid configuration not reported:\n{}",
        b.log()
    );
    assert!(b.log().contains("NotAKind"), "{}", b.log());
    publish_ok(b.listener_addr("second"), "reload/y", "still-running", &[]);
    assert_eq!(sub.message(), "reload/y still-running");

    // Removing the file again, then removing listener `second`: it stops.
    std::fs::remove_file(d.config.join("c.yaml")).unwrap();
    std::fs::remove_file(d.config.join("b.yaml")).unwrap();
    assert!(
        b.wait_for_log("listener stopped listener=second", WAIT),
        "second listener not stopped:\n{}",
        b.log()
    );
    publish_ok(first, "reload/z", "first-survives", &[]);
    assert_eq!(sub.message(), "reload/z first-survives");
}

#[test]
fn sighup_reloads() {
    let d = Dirs::new();
    let (a, b_port) = (free_port(), free_port());
    d.write("a.yaml", &listener("first", "ClusterIp", &plain_port(a)));
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    assert!(b.wait_for_log("listening", WAIT));
    d.write(
        "b.yaml",
        &listener("second", "ClusterIp", &plain_port(b_port)),
    );
    let _ = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status();
    let deadline = Instant::now() + WAIT;
    while !b.listening().iter().any(|(n, _)| n == "second") {
        assert!(
            Instant::now() < deadline,
            "second listener not started:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// =======================================================================================
// Validation at start and with `check`
// =======================================================================================

#[test]
fn serve_refuses_an_invalid_configuration_with_every_problem() {
    let d = Dirs::new();
    d.write(
        "listeners.yaml",
        &listener(
            "lb",
            "LoadBalancer",
            &auto_tls_port(free_port(), "").replace(
                "name: azure-iot-operations-aio-certificate-issuer",
                "name: no-such-issuer",
            ),
        ),
    );
    d.write(
        "other.yaml",
        "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: Gadget\nmetadata: {name: g}\n",
    );
    let (code, _out, err) = edgemq(&[
        "serve",
        "--config",
        d.config.to_str().unwrap(),
        "--data-dir",
        d.data.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "serve must exit 1: {err}");
    assert!(err.contains("BrokerListener/lb"), "{err}");
    assert!(err.contains("no-such-issuer"), "{err}");
    assert!(
        err.contains("azure-iot-operations-aio-certificate-issuer"),
        "existing issuers are listed: {err}"
    );
    assert!(err.contains("Gadget"), "every problem is reported: {err}");
}

#[test]
fn check_prints_file_line_kind_name_field_message() {
    let d = Dirs::new();
    let path = d.write(
        "listeners.yaml",
        &listener(
            "np",
            "NodePort",
            "    - port: 1883\n      nodePort: 40000\n",
        ),
    );
    let (code, out, _) = edgemq(&["check", "--config", d.config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("nodePort"))
        .unwrap_or_else(|| panic!("no nodePort problem: {out}"));
    let prefix = format!("{}:", path.display());
    assert!(line.starts_with(&prefix), "{line}");
    assert!(line.contains("BrokerListener/np"), "{line}");
    assert!(line.contains("30000"), "the range is named: {line}");

    let good = Dirs::new();
    good.write("l.yaml", &listener("ok", "ClusterIp", &plain_port(1883)));
    let (code, out, err) = edgemq(&["check", "--config", good.config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
}

// =======================================================================================
// Broker settings and the self-check
// =======================================================================================

#[test]
fn broker_client_limits_are_advertised_in_connack() {
    use edgemq_testkit::raw::prop;
    let d = Dirs::new();
    let port = free_port();
    d.write("l.yaml", &listener("l", "ClusterIp", &plain_port(port)));
    d.write(
        "broker.yaml",
        &format!("apiVersion: {V1}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  advanced:\n    clients:\n      maxSessionExpirySeconds: 60\n      maxPacketSizeBytes: 4096\n      maxReceiveMaximum: 12\n      maxKeepAliveSeconds: 30\n      subscriberQueueLimit: {{length: 10, strategy: DropOldest}}\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    // Keep-alive 0 and session expiry 3600 exceed the limits: the server says so.
    let (_c, props) = raw::RawClient::v5_with(
        b.addr,
        "limits",
        &raw::props(&[raw::p_u32(prop::SESSION_EXPIRY_INTERVAL, 3600)]),
    );
    assert_eq!(
        props.num(prop::MAXIMUM_PACKET_SIZE),
        Some(4096),
        "{props:?}"
    );
    assert_eq!(props.num(prop::RECEIVE_MAXIMUM), Some(12), "{props:?}");
    assert_eq!(props.num(prop::SERVER_KEEP_ALIVE), Some(30), "{props:?}");
    assert_eq!(
        props.num(prop::SESSION_EXPIRY_INTERVAL),
        Some(60),
        "{props:?}"
    );
}

#[test]
fn self_check_probe_is_routed_and_visible_to_wildcard_subscribers() {
    let d = Dirs::new();
    let port = free_port();
    d.write("l.yaml", &listener("l", "ClusterIp", &plain_port(port)));
    d.write(
        "broker.yaml",
        &format!("apiVersion: {V1}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  diagnostics:\n    selfCheck: {{mode: Enabled, intervalSeconds: 30, timeoutSeconds: 5}}\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    assert!(
        b.wait_for_log("self-check passed", WAIT),
        "no self-check result:\n{}",
        b.log()
    );
    // The next probe (one interval later) reaches a client subscribed to `#`, as on AIO.
    let sub = Sub::start(b.addr, "#", &[]);
    let line = {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match sub.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("azedge/dmqtt/selftest/") => break l,
                Ok(_) => {}
                Err(_) => panic!("no self-check probe seen by a # subscriber"),
            }
        }
    };
    let topic = line.split(' ').next().unwrap();
    let suffix = topic.trim_start_matches("azedge/dmqtt/selftest/");
    assert_eq!(suffix.len(), 8, "{topic}");
    assert!(suffix.chars().all(|c| c.is_ascii_lowercase()), "{topic}");
}
