//! The admin port with the real binary: `/metrics` counters change by exactly what real
//! client traffic did (publishes, deliveries, authorization and authentication refusals,
//! queue overflow, TLS handshakes), `/readyz` follows the listeners' binding, and the
//! access rules (token, loopback-only without one) hold.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgemq_security::password::PasswordHash;
use edgemq_testkit::broker::{binary, edgemq, free_port, fresh_data_dir, run_with_timeout, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::pki::{self, DAY};
use edgemq_testkit::raw::{self, connect_raw, flags, lp, RawClient};

const ADMIN: [&str; 2] = ["--admin-listen", "127.0.0.1:0"];
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------------------
// Helpers: the admin address, HTTP, samples
// ---------------------------------------------------------------------------------------

/// `GET path` (with a bearer `token`): (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let r = edgemq_testkit::http::request(addr, "GET", path, token);
    (r.status, r.body)
}

fn admin_addr(b: &Broker) -> SocketAddr {
    b.admin_addr("admin")
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `name` whose labels include `labels` (0 if absent).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && wanted.iter().all(|w| rest.contains(w.as_str()))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap() as u64)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

/// Poll `/metrics` until `name{labels}` is `expected` (counters are bumped by tasks that
/// may finish just after the client saw its answer); fails with the last value otherwise.
fn expect_metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)], expected: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = sample(&scrape(addr), name, labels);
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} = {value}, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A v5 SUBSCRIBE at QoS 1 and its SUBACK.
fn subscribe_v5(c: &mut RawClient, filter: &str) {
    c.send(&raw::subscribe(1, Some(&[0]), &[(filter, 1)]));
    let suback = c.read_packet();
    assert_eq!(suback[0], 0x90, "SUBACK expected: {}", raw::hex(&suback));
}

// ---------------------------------------------------------------------------------------
// Message traffic
// ---------------------------------------------------------------------------------------

#[test]
fn publishes_and_deliveries_are_counted_exactly() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&ADMIN);
    let admin = admin_addr(&b);
    let (mut sub1, _) = RawClient::v5(b.addr, "sub1");
    let (mut sub2, _) = RawClient::v5(b.addr, "sub2");
    subscribe_v5(&mut sub1, "m/#");
    subscribe_v5(&mut sub2, "m/#");
    let before = scrape(admin);
    let received = sample(&before, "aio_broker_publishes_received", &[]);
    let bytes = sample(&before, "aio_broker_payload_bytes_received", &[]);
    let sent = sample(&before, "aio_broker_publishes_sent", &[]);

    let payloads: [&[u8]; 5] = [b"a", b"bb", b"ccc", b"", b"0123456789"];
    let mut publisher = RawClient::v311(b.addr, "pub");
    for (i, payload) in payloads.iter().enumerate() {
        let pid = u16::try_from(i).unwrap() + 1;
        publisher.send(&raw::publish_v311("m/t", 1, pid, payload));
        publisher.expect_packet(&raw::puback(pid));
    }
    for sub in [&mut sub1, &mut sub2] {
        for payload in payloads {
            let p = sub.expect_publish(true);
            assert_eq!(p.payload, payload);
            if let Some(pid) = p.pid {
                sub.send(&raw::puback(pid));
            }
        }
    }
    let n = payloads.len() as u64;
    let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    expect_metric(admin, "aio_broker_publishes_received", &[], received + n);
    expect_metric(
        admin,
        "aio_broker_payload_bytes_received",
        &[],
        bytes + total,
    );
    expect_metric(admin, "aio_broker_publishes_sent", &[], sent + 2 * n);
}

#[test]
fn queue_overflow_drops_are_counted_by_reason() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--max-queued-messages",
        "1",
    ]);
    let admin = admin_addr(&b);
    let (mut sub, _) = raw::persistent_v5_session(b.addr, "offline-sub", true);
    subscribe_v5(&mut sub, "q/t");
    sub.send(&[0xE0, 0x00]); // DISCONNECT, normal: the session stays (expiry 1 h)
    drop(sub);
    expect_metric(admin, "aio_broker_connected_sessions", &[], 0);
    let reason = [("reason", "queue_full_drop_oldest")];
    let dropped = sample(&scrape(admin), "edgemq_messages_dropped_total", &reason);

    // Four QoS 1 messages for a queue of one: the three oldest are dropped.
    let mut publisher = RawClient::v311(b.addr, "pub");
    for pid in 1..=4u16 {
        publisher.send(&raw::publish_v311("q/t", 1, pid, b"x"));
        publisher.expect_packet(&raw::puback(pid));
    }
    expect_metric(admin, "edgemq_messages_dropped_total", &reason, dropped + 3);
}

// ---------------------------------------------------------------------------------------
// Authorization and authentication
// ---------------------------------------------------------------------------------------

const AUTHZ_EXAMPLE: &str =
    include_str!("../../config/tests/fixtures/examples/aio-docs/authz-v1/config.yaml");

/// A raw v5 CONNECT with credentials; the client and its CONNACK reason code.
fn login_v5(port: u16, id: &str, user: &str, pw: &str) -> (RawClient, u8) {
    let mut c = RawClient::open(at(port));
    let mut payload = lp(id.as_bytes());
    payload.extend(lp(user.as_bytes()));
    payload.extend(lp(pw.as_bytes()));
    let flags = flags::CLEAN | flags::USERNAME | flags::PASSWORD;
    c.send(&connect_raw(b"MQTT", 5, flags, 0, Some(&[0]), &payload));
    let code = c.expect_connack(true).code;
    (c, code)
}

#[test]
fn a_publish_denied_by_authorization_is_counted_once() {
    if !Broker::edgemq_only() {
        return;
    }
    // The documentation's policy: client1 may publish on telemetry/floor1/<client id> only.
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "config.yaml",
        &AUTHZ_EXAMPLE
            .replace("port: 1884", &format!("port: {port}"))
            .replace("serviceType: LoadBalancer", "serviceType: ClusterIp"),
    );
    let hash = PasswordHash::new(b"password", 1000).unwrap().to_phc();
    let passwords = format!(
        "[client1]\npassword = \"{hash}\"\n[client1.attributes]\nfloor = \"floor1\"\nsite = \"site1\"\n"
    );
    d.write("secrets/passwords-db/passwords.toml", &passwords);
    let b = Broker::start_config(&d.config, &d.data, 1, &ADMIN);
    let admin = admin_addr(&b);
    let (mut c, code) = login_v5(port, "c1", "client1", "password");
    assert_eq!(code, 0, "{}", b.log());
    let deny = sample(&scrape(admin), "aio_broker_authorization_deny", &[]);

    c.send(&raw::publish_v5("telemetry/floor2/c1", 1, 7, &[0], b"x"));
    assert_eq!(c.read_packet(), vec![0x40, 0x03, 0x00, 0x07, 0x87]);
    expect_metric(admin, "aio_broker_authorization_deny", &[], deny + 1);
}

#[test]
fn a_failed_login_is_counted_as_an_authentication_deny() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let port = free_port();
    let authn = "      protocol: Mqtt\n      authenticationRef: passwords\n";
    d.write(
        "listeners.yaml",
        &listener(
            "secure",
            "ClusterIp",
            &plain_port(port).replace("      protocol: Mqtt\n", authn),
        ),
    );
    d.write(
        "authentication.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: passwords\nspec:\n  authenticationMethods:\n    - method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: passwords-db\n"),
    );
    d.write("secrets/passwords-db/passwords.toml", PASSWORDS_TOML);
    let b = Broker::start_config(&d.config, &d.data, 1, &ADMIN);
    let admin = admin_addr(&b);
    let before = scrape(admin);
    let deny = sample(&before, "aio_broker_authentication_deny", &[]);
    let ok = sample(&before, "aio_broker_authentication_successes", &[]);

    // MQTT 5: a wrong password is CONNACK 0x86 Bad User Name or Password.
    let (_c, code) = login_v5(port, "wrong", "client1", "password2");
    assert_eq!(code, 0x86);
    expect_metric(admin, "aio_broker_authentication_deny", &[], deny + 1);
    let (_c, code) = login_v5(port, "right", "client1", "password");
    assert_eq!(code, 0);
    expect_metric(admin, "aio_broker_authentication_successes", &[], ok + 1);
    expect_metric(admin, "aio_broker_authentication_deny", &[], deny + 1);
}

// ---------------------------------------------------------------------------------------
// TLS handshakes
// ---------------------------------------------------------------------------------------

/// Two manual-TLS listeners on 127.0.0.1 (server chain from "Metrics Root CA"): `tls` without
/// authentication, `x509` with X.509 client authentication trusting `client_ca_pem`.
/// Returns (tls port, x509 port, the server's root CA file).
fn tls_config(d: &Dirs, client_ca_pem: &str) -> (u16, u16, std::path::PathBuf) {
    let root = pki::root_ca("Metrics Root CA", 30 * DAY);
    let int = pki::intermediate_ca(&root, "Metrics Intermediate CA", 30 * DAY);
    let (chain, key) = pki::server_cert(&int, "mqtts-endpoint", &[], &["127.0.0.1"]);
    d.write("secrets/broker-server-cert/tls.key", &key);
    d.write("secrets/broker-server-cert/tls.crt", &chain);
    let (tls, x509) = (free_port(), free_port());
    let x509_port = manual_tls_port(x509, "broker-server-cert").replace(
        "      protocol: Mqtt\n",
        "      protocol: Mqtt\n      authenticationRef: x509-policy\n",
    );
    d.write(
        "listeners.yaml",
        &[
            listener(
                "tls",
                "ClusterIp",
                &manual_tls_port(tls, "broker-server-cert"),
            ),
            listener("x509", "ClusterIp", &x509_port),
        ]
        .join("---\n"),
    );
    d.write(
        "authentication.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: x509-policy\nspec:\n  authenticationMethods:\n    - method: X509\n      x509Settings:\n        trustedClientCaCert: clients-ca\n"),
    );
    d.write("configmaps/clients-ca/client_ca.pem", client_ca_pem);
    (tls, x509, d.file("server_root_ca.crt", root.cert_pem()))
}

fn tls_failed(text: &str, reason: &str) -> u64 {
    sample(
        text,
        "edgemq_tls_handshakes_failed_total",
        &[("reason", reason)],
    )
}

const TLS_REASONS: [&str; 5] = [
    "unknown_ca",
    "bad_certificate",
    "protocol",
    "timeout",
    "other",
];

/// Every failure reason's count after `f`, minus before, must be `expected` (the others 0).
fn expect_tls_failures(admin: SocketAddr, before: &str, expected: &[(&str, u64)]) {
    for reason in TLS_REASONS {
        let delta = expected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |e| e.1);
        let labels = [("reason", reason)];
        let name = "edgemq_tls_handshakes_failed_total";
        expect_metric(admin, name, &labels, tls_failed(before, reason) + delta);
    }
}

#[test]
fn failed_tls_handshakes_are_counted_by_reason() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let other = pki::root_ca("Other Root CA", 30 * DAY);
    let other_ca = d.file("other_root_ca.crt", other.cert_pem());
    let (tls, _, server_ca) = tls_config(&d, other.cert_pem());
    let b = Broker::start_config(&d.config, &d.data, 2, &ADMIN);
    let admin = admin_addr(&b);
    let before = scrape(admin);
    let ok = sample(&before, "edgemq_tls_handshakes_total", &[]);

    // openssl s_client trusting another root: it sends alert UnknownCA.
    let (_, out, err) = run_with_timeout(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
            .args(["-verify_return_error", "-CAfile"])
            .arg(&other_ca),
        WAIT,
    );
    let all = format!("{out}{err}");
    assert!(
        all.contains("unable to get local issuer certificate"),
        "{all}"
    );
    expect_tls_failures(admin, &before, &[("unknown_ca", 1)]);

    // A plain MQTT client on the TLS port: not TLS.
    // (Read to the end: the broker answers with a TLS alert, not MQTT, then closes.)
    let mut plain = TcpStream::connect_timeout(&at(tls), WAIT).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain
        .write_all(&raw::connect_v311("plain", flags::CLEAN, 0))
        .unwrap();
    let _ = plain.read_to_end(&mut Vec::new());
    expect_tls_failures(admin, &before, &[("unknown_ca", 1), ("protocol", 1)]);

    // A client trusting the right CA completes its handshake.
    publish_ok(at(tls), "tls/ok", "x", &as_strs(&tls_args(&server_ca)));
    expect_metric(admin, "edgemq_tls_handshakes_total", &[], ok + 1);
    expect_tls_failures(admin, &before, &[("unknown_ca", 1), ("protocol", 1)]);
}

/// The TLS layer asks for a client certificate but judges it at CONNECT (see
/// `edgemq_tls::client_auth`): one from an unknown CA completes the handshake and is
/// refused by authentication (CONNACK 0x87), so it is an authentication deny, not a TLS
/// failure.
#[test]
fn a_client_certificate_from_an_unknown_ca_is_an_authentication_deny() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let trusted = pki::root_ca("Clients Root CA", 30 * DAY);
    let (_, x509, server_ca) = tls_config(&d, trusted.cert_pem());
    let dir = d.config.parent().unwrap().join("stranger");
    std::fs::create_dir_all(&dir).unwrap();
    pki::sh(&dir, &format!("openssl req -x509 -new {} -keyout stranger.key -out stranger.crt -days 1 -subj '/CN=stranger'", pki::EC));
    let b = Broker::start_config(&d.config, &d.data, 2, &ADMIN);
    let admin = admin_addr(&b);
    let before = scrape(admin);
    let ok = sample(&before, "edgemq_tls_handshakes_total", &[]);
    let deny = sample(&before, "aio_broker_authentication_deny", &[]);

    let (crt, key) = (dir.join("stranger.crt"), dir.join("stranger.key"));
    let args = [
        "-q",
        "1",
        "-t",
        "x509/t",
        "-m",
        "x",
        "--cafile",
        server_ca.to_str().unwrap(),
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (code, out) = run_mosquitto_pub(x509, "5", "stranger", &args);
    assert_ne!(code, Some(0), "admitted: {out}");
    assert!(out.contains("Not authorized"), "{out}\n{}", b.log());
    expect_metric(admin, "edgemq_tls_handshakes_total", &[], ok + 1);
    expect_metric(admin, "aio_broker_authentication_deny", &[], deny + 1);
    expect_tls_failures(admin, &before, &[]);
}

// ---------------------------------------------------------------------------------------
// Health, readiness and access
// ---------------------------------------------------------------------------------------

/// `edgemq serve ARGS` whose listeners may not bind yet (so [`Broker`], which waits for
/// them, cannot start it); stderr is collected. Killed on drop.
struct Unready {
    child: Child,
    log: Arc<Mutex<String>>,
    _data: std::path::PathBuf,
}

impl Unready {
    fn start(args: &[&str]) -> Unready {
        let data = fresh_data_dir();
        let mut child = Command::new(binary())
            .args(["serve", "--log-level", "debug", "--data-dir"])
            .arg(&data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Unready {
            child,
            log,
            _data: data,
        }
    }

    fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log.lock().unwrap().clone();
            if let Some(addr) = edgemq_testkit::broker::parse_admin_addr(&log, "admin") {
                return addr;
            }
            assert!(Instant::now() < deadline, "no admin port:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Unready {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._data);
    }
}

#[test]
fn readyz_is_503_while_a_listener_port_is_taken_and_200_once_it_binds() {
    if !Broker::edgemq_only() {
        return;
    }
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let listen_arg = listen.to_string();
    let broker = Unready::start(&["--listen", &listen_arg, "--admin-listen", "127.0.0.1:0"]);
    let admin = broker.admin_addr();
    let (status, body) = get(admin, "/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"listeners_bound\":false"), "{body}");
    assert_eq!(get(admin, "/healthz", None).0, 200);

    // The broker tries again every second.
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(admin, "/readyz", None);
        if status == 200 {
            assert!(body.contains("\"listeners_bound\":true"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    RawClient::v311(listen, "after-ready");
}

#[test]
fn healthz_is_open_and_metrics_need_the_token_when_one_is_set() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let token_file = d.file("admin.token", TOKEN);
    let b = Broker::start_with(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    let admin = admin_addr(&b);
    assert_eq!(get(admin, "/healthz", None).0, 200);
    assert_eq!(get(admin, "/readyz", None).0, 200);
    assert_eq!(get(admin, "/metrics", None).0, 401);
    assert_eq!(get(admin, "/metrics", Some("not-the-token-at-all")).0, 401);
    let (status, body) = get(admin, "/metrics", Some(TOKEN));
    assert_eq!(status, 200);
    assert!(body.contains("aio_broker_publishes_received"), "{body}");
}

#[test]
fn an_admin_port_open_to_the_network_needs_a_token() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = fresh_data_dir();
    let (code, out, err) = edgemq(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "0.0.0.0:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&data);
    let all = format!("{out}{err}");
    assert!(code.is_some_and(|c| c != 0), "started: {code:?}\n{all}");
    assert!(
        all.contains("is not a loopback address: it needs a token (--admin-token-file)"),
        "{all}"
    );

    let d = Dirs::new();
    let token_file = d.file("admin.token", TOKEN);
    let b = Broker::start_with(&[
        "--admin-listen",
        "0.0.0.0:0",
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    let admin = admin_addr(&b);
    assert_eq!(get(admin, "/metrics", None).0, 401);
    assert_eq!(get(admin, "/metrics", Some(TOKEN)).0, 200);
    assert_eq!(get(admin, "/healthz", None).0, 200);
}
