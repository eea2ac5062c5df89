//! The admin API (`serve --admin-listen`), driven over HTTP while real clients (the raw
//! MQTT client) are connected: what it lists matches what the clients did, and what it does
//! (disconnect, end a session, delete a retained message) reaches the clients.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;
use edgemq_testkit::fixtures::WAIT;
use edgemq_testkit::http::{self, Response};
use edgemq_testkit::raw::*;

fn broker(extra: &[&str]) -> (Broker, SocketAddr) {
    let mut args = vec!["--in-memory", "--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let b = Broker::start_with(&args);
    let admin = b.admin_addr("admin");
    (b, admin)
}

/// GET `path` until `ok` holds for its JSON (the API reads live state: a client's
/// SUBSCRIBE is answered before the test asks, but a closing one takes a moment).
fn poll(
    admin: SocketAddr,
    path: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = http::get(admin, path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let v = r.json();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} never matched: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn expiry(secs: u32) -> Vec<u8> {
    props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, secs)])
}

#[test]
fn clients_are_listed_with_their_connect_and_live_state() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let (mut c, _) = RawClient::v5_with(b.addr, "sensor-1", &expiry(300));
    c.send(&subscribe(1, Some(&no_props()), &[("plant/+/temp", 1)]));
    c.expect_packet(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x01]);
    let _other = RawClient::v311(b.addr, "gateway-7");

    let list = http::get(admin, "/api/v1/clients?search=sensor").json();
    let clients = list["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{list}");
    assert_eq!(clients[0]["client_id"], "sensor-1");
    assert_eq!(clients[0]["client"]["protocol"], "5.0");
    assert_eq!(clients[0]["client"]["listener"], "default");
    let all = http::get(admin, "/api/v1/clients").json();
    assert_eq!(all["clients"].as_array().unwrap().len(), 2, "{all}");

    // The client's own task answers with its live state.
    let one = http::get(admin, "/api/v1/clients/sensor-1").json();
    assert_eq!(one["state"]["session_expiry"], 300);
    assert_eq!(one["state"]["subscriptions"][0]["filter"], "plant/+/temp");
    assert_eq!(one["state"]["subscriptions"][0]["qos"], 1);
    assert_eq!(http::get(admin, "/api/v1/clients/nobody").status, 404);

    let overview = http::get(admin, "/api/v1/overview").json();
    assert_eq!(overview["clients_connected"], 2, "{overview}");
    assert_eq!(overview["subscriptions"], 1);
    let metrics = http::get(admin, "/metrics").body;
    let port = format!("port=\"{}\"", b.addr.port());
    let line = metrics
        .lines()
        .find(|l| l.starts_with("edgemq_listener_connections{") && l.contains(&port))
        .unwrap_or_else(|| panic!("no listener gauge in {metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
}

#[test]
fn disconnect_from_the_api_sends_0x98_and_closes() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let (mut c, _) = RawClient::v5(b.addr, "to-kick");
    let r: Response = http::request(admin, "POST", "/api/v1/clients/to-kick/disconnect", None);
    assert_eq!(r.status, 204, "{}", r.body);
    // MQTT 5 §3.14.2.1: 0x98 Administrative action.
    c.expect_disconnect(0x98);
    poll(admin, "/api/v1/clients", |v| {
        v["clients"].as_array().unwrap().is_empty()
    });
    let again = http::request(admin, "POST", "/api/v1/clients/to-kick/disconnect", None);
    assert_eq!(again.status, 404);
}

#[test]
fn an_offline_session_is_listed_and_ended_from_the_api() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let mut watcher = RawClient::v311(b.addr, "watcher");
    watcher.send(&subscribe(1, None, &[("wills/#", 0)]));
    watcher.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x00]);
    // A persistent session with a will delayed longer than the test: it waits offline.
    let mut c = RawClient::open(b.addr);
    let delay = props(&[p_u32(prop::WILL_DELAY_INTERVAL, 3600)]);
    let payload = cat(&[&lp(b"keeper"), &delay, &lp(b"wills/keeper"), &lp(b"gone")]);
    c.send(&connect_raw(
        b"MQTT",
        5,
        flags::WILL,
        0,
        Some(&expiry(3600)),
        &payload,
    ));
    assert_eq!(c.expect_connack(true).code, 0);
    drop(c);

    let v = poll(admin, "/api/v1/sessions?search=keeper", |v| {
        v["sessions"][0]["connected"] == false
    });
    let offline = &v["sessions"][0]["offline"];
    assert_eq!(offline["session_expiry"], 3600, "{v}");
    assert_eq!(offline["will_pending"], true);
    assert_eq!(
        v["sessions"][0]["epoch"], 1,
        "the first connection took it: {v}"
    );

    let r = http::request(admin, "DELETE", "/api/v1/sessions/keeper", None);
    assert_eq!(r.status, 204, "{}", r.body);
    // The session ended, so its delayed will goes now [MQTT-3.1.3-9].
    let will = watcher.expect_publish(false);
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("wills/keeper", &b"gone"[..])
    );
    // Nothing to resume [MQTT-3.2.2-2]: Session Present 0.
    let mut back = RawClient::open(b.addr);
    back.send(&connect_v5("keeper", 0, 0, &expiry(3600)));
    let ack = back.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, false));
    let missing = http::request(admin, "DELETE", "/api/v1/sessions/nobody", None);
    assert_eq!(missing.status, 404);
}

#[test]
fn retained_messages_are_browsed_and_deleted() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let mut p = RawClient::v311(b.addr, "publisher");
    for (topic, payload) in [
        ("site/a/state", "on"),
        ("site/b/state", "off"),
        ("other/x", "1"),
    ] {
        p.send(&publish_raw(
            pub_flags(0, false, true),
            topic.as_bytes(),
            None,
            None,
            payload.as_bytes(),
        ));
    }
    p.ping();
    let v = poll(admin, "/api/v1/retained?filter=site/%2B/state", |v| {
        v["total"] == 2
    });
    assert_eq!(v["retained"][0]["topic"], "site/a/state");
    assert_eq!(v["retained"][0]["payload_text"], "on");
    assert_eq!(
        http::get(admin, "/api/v1/retained?filter=a/%23/b").status,
        400
    );

    let r = http::request(admin, "DELETE", "/api/v1/retained?topic=site/a/state", None);
    assert_eq!(r.status, 204, "{}", r.body);
    poll(admin, "/api/v1/retained", |v| v["total"] == 2);
    // A new subscriber gets only what is left [MQTT-3.3.1-6].
    let mut s = RawClient::v311(b.addr, "late");
    s.send(&subscribe(1, None, &[("site/#", 0)]));
    s.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x00]);
    let got = s.expect_publish(false);
    assert_eq!(got.topic, "site/b/state");
    s.expect_nothing(Duration::from_millis(100));
    let gone = http::request(admin, "DELETE", "/api/v1/retained?topic=site/a/state", None);
    assert_eq!(gone.status, 404);
}

#[test]
fn the_api_needs_the_token_when_one_is_set() {
    if !Broker::edgemq_only() {
        return;
    }
    let dir = edgemq_testkit::fresh_data_dir();
    let token_file = dir.join("admin.token");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (_b, admin) = broker(&["--admin-token-file", token_file.to_str().unwrap()]);
    let refused = http::get(admin, "/api/v1/overview");
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    let wrong = http::request(
        admin,
        "GET",
        "/api/v1/overview",
        Some("not-the-token-at-all"),
    );
    assert_eq!(wrong.status, 401);
    let ok = http::request(admin, "GET", "/api/v1/overview", Some(token));
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Probes stay open: they say only ok / not ok.
    assert_eq!(http::get(admin, "/healthz").status, 200);
    assert_eq!(http::get(admin, "/readyz").status, 200);
}

#[test]
fn edgemq_status_prints_the_overview() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let _c = RawClient::v311(b.addr, "status-client");
    let admin = admin.to_string();
    let (code, out, err) = edgemq_testkit::edgemq(&["status", "--admin", &admin]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 connected"), "{out}");
    assert!(out.starts_with("edgemq "), "{out}");
}

/// The value of the sample `name` (with `labels`, e.g. `{le="+Inf"`) in a scrape, 0 if absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_delivery_latency_histogram_counts_each_live_delivery() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let mut subscribers: Vec<RawClient> = (0..2)
        .map(|i| {
            let mut s = RawClient::v311(b.addr, &format!("lat-{i}"));
            s.send(&subscribe(1, None, &[("lat/t", 0)]));
            s.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x00]);
            s
        })
        .collect();
    let mut p = RawClient::v311(b.addr, "lat-pub");
    for _ in 0..5 {
        p.send(&publish_v311("lat/t", 0, 0, b"x"));
    }
    for s in &mut subscribers {
        for _ in 0..5 {
            s.expect_publish(false);
        }
    }
    // A retained message sent on SUBSCRIBE is not a live delivery.
    p.send(&publish_raw(
        pub_flags(0, false, true),
        b"lat/r",
        None,
        None,
        b"r",
    ));
    p.ping();
    let mut late = RawClient::v311(b.addr, "lat-late");
    late.send(&subscribe(1, None, &[("lat/r", 0)]));
    late.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x00]);
    late.expect_publish(false);
    let metrics = http::get(admin, "/metrics").body;
    let count = "edgemq_delivery_latency_seconds_count";
    assert_eq!(sample(&metrics, count), 10.0, "{metrics}");
    let inf = "edgemq_delivery_latency_seconds_bucket{le=\"+Inf\"";
    assert_eq!(sample(&metrics, inf), 10.0);
}

#[test]
fn traffic_is_counted_by_the_metric_category_a_client_names() {
    // AIO: the CONNECT user property `metriccategory` becomes the `category` label of the
    // client's traffic metrics; clients without one are `uncategorized`.
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    let category = props(&[p_pair(prop::USER_PROPERTY, "metriccategory", "line-3")]);
    let (mut tagged, _) = RawClient::v5_with(b.addr, "press-1", &category);
    let mut plain = RawClient::v311(b.addr, "plain-1");
    for _ in 0..3 {
        tagged.send(&publish_v5("cat/t", 0, 0, &no_props(), b"12345"));
    }
    plain.send(&publish_v311("cat/t", 0, 0, b"x"));
    tagged.ping();
    plain.ping();
    let line = |metrics: &str, category: &str| -> f64 {
        let wanted = format!("category=\"{category}\"");
        metrics
            .lines()
            .find(|l| l.starts_with("aio_broker_publishes_received{") && l.contains(&wanted))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = http::get(admin, "/metrics").body;
    assert_eq!(line(&metrics, "line-3"), 3.0, "{metrics}");
    assert_eq!(line(&metrics, "uncategorized"), 1.0, "{metrics}");
    let bytes = metrics
        .lines()
        .find(|l| l.starts_with("aio_broker_payload_bytes_received{") && l.contains("line-3"))
        .unwrap();
    assert!(bytes.ends_with(" 15"), "{bytes}");
}

#[test]
fn each_tls_port_reports_when_its_certificate_expires() {
    if !Broker::edgemq_only() {
        return;
    }
    use edgemq_testkit::fixtures::{auto_tls_port, listener, Dirs};
    let d = Dirs::new();
    let port = edgemq_testkit::free_port();
    d.write(
        "listeners.yaml",
        &listener("secure", "ClusterIp", &auto_tls_port(port, "")),
    );
    let b = Broker::start_config(&d.config, &d.data, 1, &["--admin-listen", "127.0.0.1:0"]);
    let metrics = http::get(b.admin_addr("admin"), "/metrics").body;
    let wanted = format!("port=\"{port}\"");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("edgemq_tls_certificate_expiry_seconds{") && l.contains(&wanted))
        .unwrap_or_else(|| panic!("no expiry gauge for port {port}:\n{metrics}"));
    assert!(line.contains("listener=\"secure\""), "{line}");
    let left: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // A freshly issued automatic certificate: days to years ahead, not expired.
    assert!((86_400..10 * 365 * 86_400).contains(&left), "{line}");
    // The listeners API shows the same port: TLS, its certificate's expiry, who may connect.
    let listeners = http::get(b.admin_addr("admin"), "/api/v1/listeners").json();
    let secure = &listeners["listeners"][0];
    assert_eq!(secure["transport"], "mqtt+tls", "{listeners}");
    assert!(
        secure["certificate_expires_unix_s"].as_u64().is_some(),
        "{listeners}"
    );
    assert!(secure["authentication"].is_string(), "{listeners}");
}

#[test]
fn the_broker_resources_prometheus_port_serves_metrics_and_health_only() {
    // AIO's `diagnostics.metrics.prometheusPort`: metrics and probes, no admin API.
    if !Broker::edgemq_only() {
        return;
    }
    use edgemq_testkit::fixtures::{listener, plain_port, Dirs, V1};
    let d = Dirs::new();
    let (mqtt, metrics_port) = (edgemq_testkit::free_port(), edgemq_testkit::free_port());
    d.write(
        "listeners.yaml",
        &listener("plain", "ClusterIp", &plain_port(mqtt)),
    );
    d.write(
        "broker.yaml",
        &format!("apiVersion: {V1}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  diagnostics:\n    metrics: {{prometheusPort: {metrics_port}}}\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let port = b.admin_addr("metrics");
    assert_eq!(port.port(), metrics_port);
    let scrape = http::get(port, "/metrics");
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.body.contains("aio_broker_total_sessions{"),
        "{}",
        scrape.body
    );
    assert_eq!(http::get(port, "/readyz").status, 200);
    assert_eq!(http::get(port, "/api/v1/overview").status, 404);
}

#[test]
fn store_commits_are_counted_with_their_operations_and_time() {
    if !Broker::edgemq_only() {
        return;
    }
    // A durable store (no --in-memory): a retained QoS 1 message is committed before its
    // PUBACK.
    let b = Broker::start_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = b.admin_addr("admin");
    let mut p = RawClient::v311(b.addr, "durable-pub");
    p.send(&publish_raw(
        pub_flags(1, false, true),
        b"kept/t",
        Some(1),
        None,
        b"v",
    ));
    p.expect_packet(&[0x40, 0x02, 0x00, 0x01]);
    let metrics = http::get(admin, "/metrics").body;
    let value = |name: &str| sample(&metrics, name);
    assert!(value("edgemq_store_commits_total") >= 1.0, "{metrics}");
    assert!(value("edgemq_store_committed_operations_total") >= 1.0);
    assert!(value("edgemq_store_commit_microseconds_total") > 0.0);
}

#[test]
fn each_session_shows_what_it_lost_and_the_queue_depths_are_a_distribution() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&["--max-queued-messages", "2"]);
    // An offline persistent session subscribed at QoS 1: 5 QoS 1 messages fill its queue
    // of 2 (drop-oldest drops 3); 2 QoS 0 messages are dropped because it is offline.
    let (mut s, _) = RawClient::v5_with(b.addr, "lossy", &expiry(600));
    s.send(&subscribe(1, Some(&no_props()), &[("loss/t", 1)]));
    s.expect_packet(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x01]);
    drop(s);
    poll(admin, "/api/v1/sessions?search=lossy", |v| {
        v["sessions"][0]["connected"] == false
    });
    let mut p = RawClient::v311(b.addr, "lossy-pub");
    for i in 1..=5u16 {
        p.send(&publish_v311("loss/t", 1, i, b"q1"));
        p.expect_packet(&[0x40, 0x02, 0x00, i as u8]);
    }
    p.send(&publish_v311("loss/t", 0, 0, b"q0"));
    p.send(&publish_v311("loss/t", 0, 0, b"q0"));
    p.ping();
    let v = http::get(admin, "/api/v1/sessions?search=lossy").json();
    let drops = &v["sessions"][0]["offline"]["drops"];
    assert_eq!(drops["queue_full"], 3, "{v}");
    assert_eq!(drops["offline_qos0"], 2, "{v}");
    assert_eq!(v["sessions"][0]["offline"]["queued"], 2);
    let metrics = http::get(admin, "/metrics").body;
    let bucket = |le: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("edgemq_sessions_by_queue_depth{")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    // Two sessions: the publisher's (nothing queued) and lossy's (2 queued).
    assert_eq!(bucket("0"), 1.0, "{metrics}");
    assert_eq!(bucket("1"), 1.0);
    assert_eq!(bucket("10"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
}

#[test]
fn the_openapi_document_lists_every_route() {
    if !Broker::edgemq_only() {
        return;
    }
    let (_b, admin) = broker(&[]);
    let doc = http::get(admin, "/api/v1/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    let expected = [
        "/api/v1/authz/explain",
        "/api/v1/clients",
        "/api/v1/clients/{id}",
        "/api/v1/clients/{id}/disconnect",
        "/api/v1/config",
        "/api/v1/listeners",
        "/api/v1/overview",
        "/api/v1/retained",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/subscriptions",
        "/healthz",
        "/metrics",
        "/readyz",
    ];
    assert_eq!(paths, expected);
    // Each documented GET without a path parameter answers on the running broker.
    for path in expected.iter().filter(|p| !p.contains('{')) {
        let methods = doc["paths"][*path].as_object().unwrap();
        if methods.contains_key("get") {
            let status = http::get(admin, path).status;
            assert_eq!(status, 200, "GET {path}");
        }
    }
}

#[test]
fn the_broker_resource_opens_admin_ports_on_loopback_only() {
    // edgemq extension `spec.advanced.adminListen`: what `check` accepts, `serve` runs; an
    // address off loopback would need a token, which only the command line gives.
    if !Broker::edgemq_only() {
        return;
    }
    use edgemq_testkit::fixtures::{listener, plain_port, Dirs, V1};
    let broker_yaml = |addr: &str| {
        format!("apiVersion: {V1}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  advanced:\n    adminListen: [\"{addr}\"]\n")
    };
    let d = Dirs::new();
    let (mqtt, admin_port) = (edgemq_testkit::free_port(), edgemq_testkit::free_port());
    d.write(
        "listeners.yaml",
        &listener("plain", "ClusterIp", &plain_port(mqtt)),
    );
    d.write(
        "broker.yaml",
        &broker_yaml(&format!("127.0.0.1:{admin_port}")),
    );
    let config = d.config.to_str().unwrap().to_string();
    let (code, out, err) = edgemq_testkit::edgemq(&["check", "--config", &config]);
    assert_eq!(code, Some(0), "{out}{err}");
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    assert_eq!(b.admin_addr("admin").port(), admin_port);
    assert_eq!(
        http::get(b.admin_addr("admin"), "/api/v1/overview").status,
        200
    );
    drop(b);

    let open = Dirs::new();
    open.write(
        "listeners.yaml",
        &listener("plain", "ClusterIp", &plain_port(mqtt)),
    );
    open.write("broker.yaml", &broker_yaml("0.0.0.0:9090"));
    let config = open.config.to_str().unwrap().to_string();
    let (code, out, err) = edgemq_testkit::edgemq(&["check", "--config", &config]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("is not a loopback address"), "{out}{err}");
    let (code, log) = open.serve_to_exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("is not a loopback address"), "{log}");
}

#[test]
fn in_flight_messages_are_a_distribution_over_sessions() {
    if !Broker::edgemq_only() {
        return;
    }
    let (b, admin) = broker(&[]);
    // A subscriber that never acknowledges: what it was sent stays in flight.
    let mut s = RawClient::v311(b.addr, "slow-acker");
    s.send(&subscribe(1, None, &[("fl/t", 1)]));
    s.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x01]);
    let mut p = RawClient::v311(b.addr, "fl-pub");
    for i in 1..=3u16 {
        p.send(&publish_v311("fl/t", 1, i, b"x"));
        p.expect_packet(&[0x40, 0x02, 0x00, i as u8]);
    }
    for _ in 0..3 {
        s.expect_publish(false);
    }
    let metrics = http::get(admin, "/metrics").body;
    let bucket = |le: &str| {
        let wanted = format!("le=\"{le}\"");
        metrics
            .lines()
            .find(|l| l.starts_with("edgemq_sessions_by_inflight{") && l.contains(&wanted))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    // The publisher's session has none in flight, the subscriber's 3.
    assert_eq!(bucket("0"), 1.0, "{metrics}");
    assert_eq!(bucket("1"), 1.0);
    assert_eq!(bucket("10"), 2.0);
}
