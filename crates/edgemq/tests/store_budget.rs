//! Issue 17 through the real binary: disk is a budget. A message queued for many persistent
//! sessions is stored once, a client id once per session; at `--max-store-bytes` the broker
//! refuses what it would have to store (0x97), from 90 % it refuses new persistent sessions,
//! and it accepts again once clients drain their queues. Nothing acknowledged is lost.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::time::{Duration, Instant};

use edgemq_testkit::broker::{fresh_data_dir, Broker};
use edgemq_testkit::raw::*;

const LONG: Duration = Duration::from_secs(30);

/// v3.1.1 CONNECT with clean session 0 (a persistent session).
fn persistent_v311(b: &Broker, id: &str) -> (RawClient, u8) {
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311(id, 0, 0));
    let ack = c.expect_connack(false);
    (c, ack.code)
}

/// v5 CONNECT, clean start 0, Session Expiry 1 hour.
fn persistent_v5(b: &Broker, id: &str) -> (RawClient, Connack) {
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(id, 0, 0, &props(&[p_u32(0x11, 3600)])));
    let ack = c.expect_connack(true);
    (c, ack)
}

fn suback_ok(c: &mut RawClient) {
    let p = c.read_packet();
    assert_eq!(p[0], 0x90, "expected SUBACK, got {}", hex(&p));
    assert!(
        body(&p).last().copied().unwrap() < 0x80,
        "SUBACK {}",
        hex(&p)
    );
}

fn store_file(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("state.redb")).unwrap().len()
}

/// The case: throw-away MQTT 3.1.1 client ids with clean session 0, all subscribed
/// to `churn/#`, then 20 × 100 kB messages. Every persistent session stored its own copy of
/// every message (2,000 sessions grew the store by 6.48 GB, 3,241 × the bytes published).
/// Now each message is stored once: the store grows by about the bytes published plus a
/// small record per delivery.
#[test]
fn a_message_for_many_persistent_sessions_is_stored_once() {
    let data = fresh_data_dir();
    let b = Broker::start_with(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--max-connect-rate-per-address",
        "100000",
        "--max-store-bytes",
        "0",
    ]);
    const SESSIONS: usize = 900;
    for i in 0..SESSIONS {
        let (mut c, code) = persistent_v311(&b, &format!("churn-client-{i:05}"));
        assert_eq!(code, 0);
        c.send(&subscribe(1, None, &[("churn/#", 1)]));
        suback_ok(&mut c);
        c.send(&packet(0xE0, &[]));
    }
    let before = store_file(&data);
    let mut publisher = RawClient::v311(b.addr, "churn-publisher");
    for i in 0..20u16 {
        let payload = vec![b'a' + (i % 26) as u8; 100_000];
        publisher.send(&publish_v311("churn/data", 1, i + 1, &payload));
        let ack = publisher.read_packet();
        assert_eq!(ack[0], 0x40, "PUBACK expected, got {}", hex(&ack));
    }
    let grown = store_file(&data).saturating_sub(before);
    // 20 × 100 kB published = 2 MB; 18,000 deliveries of ~60 bytes. Before: 1.8 GB.
    assert!(
        grown < 40_000_000,
        "state.redb grew by {grown} bytes for 2 MB published to {SESSIONS} sessions"
    );
    // Nothing was lost: a session resumed gets all 20.
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("churn-client-00450", 0, 0));
    let ack = c.expect_connack(false);
    assert!(ack.session_present);
    for i in 0..20u16 {
        let p = c.expect_publish(false);
        assert_eq!(p.payload.len(), 100_000);
        assert_eq!(p.payload[0], b'a' + (i % 26) as u8, "in order");
        c.send(&puback(p.pid.unwrap()));
    }
    eprintln!("store grew by {grown} bytes for 20 × 100 kB to {SESSIONS} persistent sessions");
}

/// [MQTT-3.2.2-? / 4.13] The store budget: QoS 1 messages a persistent session would store
/// are refused whole at the budget (v5 PUBACK 0x97 Quota exceeded; v3 closed without a
/// PUBACK, so nothing acknowledged is lost); retained messages likewise; new persistent
/// sessions get CONNACK 0x97 (v3: 3 Server unavailable) from 90 %; sessions that store
/// nothing go on. When the subscriber drains its queue, everything is accepted again.
#[test]
fn at_the_store_budget_the_broker_refuses_what_it_would_store_and_recovers_when_drained() {
    let b = Broker::start_with(&["--max-store-bytes", "2000000"]);
    let (mut sub, ack) = persistent_v5(&b, "keeper");
    assert_eq!(ack.code, 0);
    sub.send(&subscribe(1, Some(&no_props()), &[("q/#", 1)]));
    suback_ok(&mut sub);
    sub.send(&packet(0xE0, &[0]));
    drop(sub);

    let (mut publisher, _) = RawClient::v5(b.addr, "filler");
    let mut accepted = 0u16;
    let refused_at = loop {
        let pid = accepted + 1;
        let payload = vec![pid as u8; 100_000];
        publisher.send(&publish_v5("q/data", 1, pid, &no_props(), &payload));
        let p = publisher.read_packet();
        assert_eq!(p[0], 0x40, "PUBACK expected, got {}", hex(&p));
        let code = body(&p).get(2).copied().unwrap_or(0);
        if code == 0x97 {
            break pid;
        }
        assert_eq!(code, 0, "PUBACK {}", hex(&p));
        accepted += 1;
        assert!(accepted < 40, "never refused");
    };
    assert!(
        (19..=21).contains(&accepted),
        "accepted {accepted} × 100 kB into 2 MB"
    );
    assert!(
        b.wait_for_log("store: FULL (max-store-bytes)", LONG),
        "{}",
        b.log()
    );

    // Retained: refused whole too.
    publisher.send(&publish_raw(
        pub_flags(1, false, true),
        b"r/t",
        Some(refused_at + 1),
        Some(&no_props()),
        b"kept?",
    ));
    let p = publisher.read_packet();
    assert_eq!(
        body(&p).get(2).copied(),
        Some(0x97),
        "retained: {}",
        hex(&p)
    );

    // New persistent sessions are refused; a session that stores nothing is served.
    let (_c, ack) = persistent_v5(&b, "newcomer-v5");
    assert_eq!(ack.code, 0x97, "{ack:?}");
    let (_c, code) = persistent_v311(&b, "newcomer-v3");
    assert_eq!(code, 3);
    let (mut fresh, _) = RawClient::v5(b.addr, "fresh-client");
    fresh.send(&subscribe(1, Some(&no_props()), &[("fresh/t", 1)]));
    suback_ok(&mut fresh);
    fresh.send(&publish_v5("fresh/t", 1, 9, &no_props(), b"hello"));
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(fresh.read_packet()[0] & 0xF0);
    }
    got.sort_unstable();
    assert_eq!(got, vec![0x30, 0x40], "PUBLISH and PUBACK");

    // v3 has no code to refuse with: closed, not acknowledged.
    let mut v3 = RawClient::v311(b.addr, "v3-publisher");
    v3.send(&publish_v311("q/data", 1, 1, b"would be stored"));
    let seen = v3.expect_closed();
    assert!(seen.iter().all(|p| p[0] != 0x40), "no PUBACK");

    // The subscriber drains: every accepted message, none of the refused.
    let (mut sub, ack) = persistent_v5(&b, "keeper");
    assert!(ack.session_present);
    for i in 1..=accepted {
        let p = sub.expect_publish(true);
        assert_eq!(p.payload[0], i as u8, "message {i} of {accepted}");
        sub.send(&puback(p.pid.unwrap()));
    }
    assert!(
        matches!(sub.next_event(Duration::from_millis(300)), Event::TimedOut),
        "nothing refused was delivered"
    );
    // Accepted again once the acknowledgements are committed.
    let deadline = Instant::now() + LONG;
    loop {
        let (_c, ack) = persistent_v5(&b, "newcomer-v5");
        if ack.code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {ack:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    publisher.send(&publish_v5("q/data", 1, 100, &no_props(), b"after"));
    let p = publisher.read_packet();
    assert_eq!(body(&p).get(2).copied().unwrap_or(0), 0, "{}", hex(&p));
    let log = b.log();
    assert!(log.contains("refused: the store is at its budget"), "{log}");
}

/// `persistence.maxSize` in the `Broker` resource sets the budget (AIO's field), and `check`
/// reads it as `serve` does.
#[test]
fn the_broker_resource_sets_the_store_budget() {
    let dir = fresh_data_dir();
    std::fs::write(
        dir.join("broker.yaml"),
        "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: Broker\nmetadata:\n  name: default\nspec:\n  persistence:\n    maxSize: 3Mi\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("listener.yaml"),
        format!("apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: BrokerListener\nmetadata:\n  name: default\nspec:\n  ports:\n  - port: {}\n", edgemq_testkit::broker::free_port()),
    )
    .unwrap();
    let data = fresh_data_dir();
    let b = Broker::start_config(&dir, &data, 1, &[]);
    assert!(
        b.wait_for_log("max_store_bytes=3145728", LONG),
        "{}",
        b.log()
    );
    drop(b);
    std::fs::write(
        dir.join("broker.yaml"),
        "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: Broker\nmetadata:\n  name: default\nspec:\n  persistence:\n    maxSize: 3 gigs\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgemq"))
        .args(["check", "--config", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("maxSize") && text.contains("10GiB"), "{text}");
}
