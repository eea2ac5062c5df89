//! Issue 17 through the real binary: the retained store's budgets (messages and bytes), the
//! purge of expired retained messages on a timer (from memory and from the store), the limit
//! on sessions, and the offline-session timers (expiry, will delay, a reconnection cancels
//! the old timer). After each, a fresh client is served.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;

const LONG: Duration = Duration::from_secs(20);

/// The purge of expired retained messages runs every 300 ms in these brokers (the
/// `EDGEMQ_RETAINED_PURGE_INTERVAL_MS` test hook; the default is 60 s). Set once, before any
/// broker of this file starts (std serialises it with process spawns).
fn start(extra: &[&str]) -> Broker {
    static ENV: Once = Once::new();
    ENV.call_once(|| std::env::set_var("EDGEMQ_RETAINED_PURGE_INTERVAL_MS", "300"));
    Broker::start_with(extra)
}

/// SIGUSR1, then the `state: ...` line it produced.
fn state_line(b: &Broker) -> String {
    let count = |log: &str| log.matches("signal=\"SIGUSR1\"").count();
    let before = count(&b.log());
    let status = Command::new("kill")
        .args(["-USR1", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + LONG;
    loop {
        let log = b.log();
        if count(&log) > before {
            return log
                .lines()
                .filter(|l| l.contains("signal=\"SIGUSR1\""))
                .nth(before)
                .unwrap()
                .to_string();
        }
        assert!(Instant::now() < deadline, "no state line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the state line contains `needle`; returns the last line seen.
fn wait_state(b: &Broker, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let line = state_line(b);
        if line.contains(needle) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "state never showed `{needle}`; last: {line}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Retained v5 PUBLISH, QoS 1, with a property block.
fn retained_v5(topic: &str, pid: u16, props: &[u8], payload: &[u8]) -> Vec<u8> {
    publish_raw(
        pub_flags(1, false, true),
        topic.as_bytes(),
        Some(pid),
        Some(props),
        payload,
    )
}

/// The reason code of a v5 PUBACK for `pid` (0 when the short form is used).
fn read_puback(c: &mut RawClient, pid: u16) -> u8 {
    let p = c.read_packet();
    assert_eq!(p[0], 0x40, "expected PUBACK, got {}", hex(&p));
    let b = body(&p);
    assert_eq!(u16::from_be_bytes([b[0], b[1]]), pid, "PUBACK {}", hex(&p));
    b.get(2).copied().unwrap_or(0)
}

/// Subscribe (v5, QoS 0) and read the SUBACK.
fn subscribe_v5(c: &mut RawClient, filter: &str) {
    c.send(&subscribe(1, Some(&no_props()), &[(filter, 0)]));
    let p = c.read_packet();
    assert_eq!(p[0], 0x90, "expected SUBACK, got {}", hex(&p));
}

/// Every PUBLISH that arrives within `quiet` of the previous one.
fn drain_publishes(c: &mut RawClient, quiet: Duration) -> Vec<Publish> {
    let mut out = Vec::new();
    while let Event::Packet(p) = c.next_event(quiet) {
        out.push(parse_publish(&p, true));
    }
    out
}

/// A new client connects, subscribes, publishes and receives.
fn assert_serving(b: &Broker) {
    let (mut c, _) = RawClient::v5(b.addr, "fresh-client");
    subscribe_v5(&mut c, "fresh/t");
    c.send(&publish_v5("fresh/t", 0, 0, &no_props(), b"hello"));
    let p = c.expect_publish(true);
    assert_eq!(p.payload, b"hello");
}

/// A PUBACK for an accepted message: success, or 0x10 No matching subscribers.
fn assert_accepted(code: u8) {
    assert!(code == 0x00 || code == 0x10, "PUBACK {code:#04x}");
}

/// The PUBACK for a retained PUBLISH the budget refused: 0x97 Quota exceeded once the
/// connection maps `Routed::retain_refused` (done in `connection/inbound.rs`); until then an
/// accepting code. Either way the message went to the current subscribers.
fn assert_refused_ack(code: u8) {
    assert_eq!(
        code, 0x97,
        "PUBACK for a refused retained message: {code:#04x} (expected 0x97 Quota exceeded)"
    );
}

#[test]
fn the_11th_new_retained_topic_is_refused_with_0x97_and_neither_kept_nor_delivered() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(&["--max-retained-messages", "10"]);
    let (mut live, _) = RawClient::v5(b.addr, "live-sub");
    subscribe_v5(&mut live, "r/#");
    let (mut p, _) = RawClient::v5(b.addr, "retainer");
    for i in 0..10u16 {
        p.send(&retained_v5(&format!("r/{i}"), i + 1, &no_props(), b"v1"));
        assert_accepted(read_puback(&mut p, i + 1));
    }
    p.send(&retained_v5("r/10", 11, &no_props(), b"v1"));
    assert_refused_ack(read_puback(&mut p, 11));
    // Replacing an existing topic's message is allowed at the limit.
    p.send(&retained_v5("r/0", 12, &no_props(), b"v2"));
    assert_accepted(read_puback(&mut p, 12));
    // All or nothing: the current subscriber got the 11 accepted ones, not the refused one
    // (a publisher told 0x97 may retry without a duplicate).
    let got = drain_publishes(&mut live, Duration::from_millis(500));
    assert_eq!(got.len(), 11, "{got:?}");
    assert!(!got.iter().any(|m| m.topic == "r/10"));
    // A new subscriber gets the 10 kept ones only.
    let (mut late, _) = RawClient::v5(b.addr, "late-sub");
    subscribe_v5(&mut late, "r/#");
    let got = drain_publishes(&mut late, Duration::from_millis(500));
    let mut topics: Vec<_> = got.iter().map(|m| m.topic.clone()).collect();
    topics.sort();
    assert_eq!(topics.len(), 10, "{topics:?}");
    assert!(!topics.contains(&"r/10".to_string()));
    assert!(got.iter().any(|m| m.topic == "r/0" && m.payload == b"v2"));
    // Counted and logged (once: the line is rate-limited).
    let line = wait_state(&b, "retained=10 ", LONG);
    assert!(line.contains("max_retained_messages=1"), "{line}");
    let warning = b
        .log()
        .lines()
        .find(|l| l.contains("retained message not kept"))
        .map(str::to_string);
    assert!(
        warning.as_deref().is_some_and(
            |l| l.contains("limit=\"max_retained_messages\"") && l.contains("refusals=1")
        ),
        "{warning:?}"
    );
    // Deleting one makes room.
    p.send(&retained_v5("r/1", 13, &no_props(), b""));
    assert_accepted(read_puback(&mut p, 13));
    p.send(&retained_v5("r/10", 14, &no_props(), b"v1"));
    assert_accepted(read_puback(&mut p, 14));
    wait_state(&b, "retained=10 ", LONG);
    assert_serving(&b);
}

#[test]
fn retained_bytes_are_bounded_and_a_refused_replacement_keeps_the_old_message() {
    if !Broker::edgemq_only() {
        return;
    }
    // Topic (3 bytes) plus payload (300): three fit in 1,000 bytes, not four.
    let b = start(&["--max-retained-bytes", "1000"]);
    let (mut p, _) = RawClient::v5(b.addr, "retainer");
    let payload = vec![b'x'; 300];
    for i in 0..3u16 {
        p.send(&retained_v5(
            &format!("b/{i}"),
            i + 1,
            &no_props(),
            &payload,
        ));
        assert_accepted(read_puback(&mut p, i + 1));
    }
    p.send(&retained_v5("b/3", 4, &no_props(), &payload));
    assert_refused_ack(read_puback(&mut p, 4));
    // A replacement that would grow past the budget is refused too; one that fits is not.
    p.send(&retained_v5("b/0", 5, &no_props(), &[b'y'; 400]));
    assert_refused_ack(read_puback(&mut p, 5));
    p.send(&retained_v5("b/1", 6, &no_props(), b"small"));
    assert_accepted(read_puback(&mut p, 6));
    let (mut late, _) = RawClient::v5(b.addr, "late-sub");
    subscribe_v5(&mut late, "b/#");
    let mut got = drain_publishes(&mut late, Duration::from_millis(500));
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let seen: Vec<_> = got
        .iter()
        .map(|m| (m.topic.as_str(), m.payload.len()))
        .collect();
    assert_eq!(seen, [("b/0", 300), ("b/1", 5), ("b/2", 300)]);
    let line = wait_state(&b, "retained=3 ", LONG);
    assert!(line.contains("max_retained_bytes=2"), "{line}");
    assert_serving(&b);
}

#[test]
fn expired_retained_messages_are_purged_from_memory_and_the_store() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = edgemq_testkit::broker::fresh_data_dir();
    let dir = data.to_str().unwrap().to_string();
    {
        let mut b = start(&["--data-dir", &dir]);
        let (mut p, _) = RawClient::v5(b.addr, "retainer");
        let expiring = props(&[p_u32(prop::MESSAGE_EXPIRY_INTERVAL, 5)]);
        let kb = vec![b'e'; 1000];
        let mut batch = Vec::new();
        for i in 0..5000u32 {
            batch.extend(publish_raw(
                pub_flags(0, false, true),
                format!("exp/{i}").as_bytes(),
                None,
                Some(&expiring),
                &kb,
            ));
        }
        p.send(&batch);
        p.send(&retained_v5("keep/me", 1, &no_props(), b"forever"));
        assert_accepted(read_puback(&mut p, 1));
        // All in (the PUBACK follows them), none expired yet (5 s).
        let line = state_line(&b);
        assert!(line.contains("retained=5001 "), "{line}");
        // Nobody subscribes: only the timer can remove them.
        wait_state(&b, "retained=1 ", LONG);
        assert!(
            b.log().contains("expired retained messages purged"),
            "{}",
            b.log()
        );
        assert_serving(&b);
        // A clean stop: the deletions the purge submitted are committed (a kill right after
        // the purge could stop the writer before its next group commit).
        b.terminate();
    }
    // The store no longer holds them either: nothing expired is found at recovery.
    let b = start(&["--data-dir", &dir]);
    let recovered = b
        .log()
        .lines()
        .find(|l| l.contains("store: state recovered"))
        .unwrap()
        .to_string();
    assert!(
        recovered.contains("retained=1 ") && recovered.contains("expired_messages=0"),
        "{recovered}"
    );
    let (mut late, _) = RawClient::v5(b.addr, "late-sub");
    subscribe_v5(&mut late, "#");
    let got = drain_publishes(&mut late, Duration::from_millis(300));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "keep/me");
    drop(b);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_new_session_beyond_max_sessions_is_refused_an_existing_one_resumes() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(&["--max-sessions", "5"]);
    let persistent = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 600)]);
    // Three offline persistent sessions and two online clean ones.
    for i in 0..3 {
        let (mut c, _) = RawClient::v5_with(b.addr, &format!("offline-{i}"), &persistent);
        c.send(&DISCONNECT);
        c.expect_closed();
    }
    let (_online0, _) = RawClient::v5(b.addr, "online-0");
    let (mut online1, _) = RawClient::v5(b.addr, "online-1");
    wait_state(&b, "sessions=5 ", LONG);
    // A sixth client id: v5 0x97 Quota exceeded, v3 3 Server unavailable.
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("sixth", flags::CLEAN, 0, &no_props()));
    c.expect_connack_refused(true, 0x97);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("sixth-v3", flags::CLEAN, 0));
    c.expect_connack_refused(false, 3);
    // An offline session resumes; an online one is taken over.
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("offline-1", 0, 0, &persistent));
    let ack = c.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, true));
    let (_taker, _) = RawClient::v5(b.addr, "online-1");
    online1.expect_closed();
    let line = wait_state(&b, "sessions=5 ", LONG);
    assert!(line.contains("max_sessions=2"), "{line}");
    assert!(b.log().contains("new session refused"), "{}", b.log());
    // A session that ends makes room for a new one.
    let mut ender = RawClient::open(b.addr);
    ender.send(&connect_v5("offline-2", flags::CLEAN, 0, &no_props()));
    assert_eq!(ender.expect_connack(true).code, 0);
    ender.send(&DISCONNECT);
    ender.expect_closed();
    wait_state(&b, "sessions=4 ", LONG);
    assert_serving(&b);
}

/// v5 CONNECT with a will whose properties are `will_props` (e.g. a Will Delay Interval).
fn connect_v5_will(client_id: &str, connect_props: &[u8], will_props: &[u8]) -> Vec<u8> {
    let payload = cat(&[
        lp(client_id.as_bytes()).as_slice(),
        will_props,
        lp(b"wills/t").as_slice(),
        lp(b"gone").as_slice(),
    ]);
    connect_raw(b"MQTT", 5, flags::WILL, 0, Some(connect_props), &payload)
}

#[test]
fn an_offline_session_expires_on_time_and_its_will_is_published() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(&[]);
    let (mut watcher, _) = RawClient::v5(b.addr, "watcher");
    subscribe_v5(&mut watcher, "wills/#");
    // Session expiry 2 s; will delay 600 s: the will goes when the session ends.
    let expiry = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 2)]);
    let delay = props(&[p_u32(prop::WILL_DELAY_INTERVAL, 600)]);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will("expiring", &expiry, &delay));
    assert_eq!(c.expect_connack(true).code, 0);
    let dropped = Instant::now();
    drop(c); // abrupt: the will stands
    let will = watcher.expect_publish(true);
    let after = dropped.elapsed();
    assert_eq!(will.payload, b"gone");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
        "will published {after:?} after the connection dropped (session expiry 2 s)"
    );
    wait_state(&b, "sessions=1 ", LONG);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("expiring", 0, 0, &expiry));
    let ack = c.expect_connack(true);
    assert_eq!(
        (ack.code, ack.session_present),
        (0, false),
        "the session ended"
    );
    assert_serving(&b);
}

#[test]
fn a_reconnected_session_is_not_ended_by_its_old_timer() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(&[]);
    let (mut watcher, _) = RawClient::v5(b.addr, "watcher");
    subscribe_v5(&mut watcher, "wills/#");
    // Session expiry 2 s and will delay 2 s: both deadlines 2 s after each disconnection.
    let expiry = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 2)]);
    let delay = props(&[p_u32(prop::WILL_DELAY_INTERVAL, 2)]);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will("comeback", &expiry, &delay));
    assert_eq!(c.expect_connack(true).code, 0);
    let t0 = Instant::now();
    drop(c);
    std::thread::sleep(Duration::from_millis(500));
    // Back before the deadline: the session is there, its will cancelled [MQTT-3.1.3-9].
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will("comeback", &expiry, &delay));
    let ack = c.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, true));
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(t0.elapsed()));
    drop(c); // second offline period: deadlines at t0 + ~3 s
             // Past the first period's deadline (t0 + 2 s), before the second one's.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t0.elapsed()));
    watcher.expect_nothing(Duration::from_millis(1));
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("comeback", 0, 0, &expiry));
    let ack = c.expect_connack(true);
    assert!(
        t0.elapsed() < Duration::from_millis(2900),
        "too slow to prove anything: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        (ack.code, ack.session_present),
        (0, true),
        "the old timer ended a reconnected session"
    );
    watcher.expect_nothing(Duration::from_millis(200));
    // This connection has no will; it ends with a DISCONNECT and the session expires.
    c.send(&DISCONNECT);
    c.expect_closed();
    wait_state(&b, "sessions=1 ", LONG);
    watcher.expect_nothing(Duration::from_millis(100));
    assert_serving(&b);
}

/// A connection to `to` from another loopback address (Linux routes all of 127/8 to lo).
fn raw_from(src: &str, to: std::net::SocketAddr) -> RawClient {
    RawClient::from_stream(tcp_from(src, to))
}

/// A persistent v5 session (expiry 600 s) for `client_id`, left offline.
fn leave_offline_session(c: &mut RawClient, client_id: &str) {
    let persistent = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 600)]);
    c.send(&connect_v5(client_id, flags::CLEAN, 0, &persistent));
    assert_eq!(c.expect_connack(true).code, 0, "{client_id} refused");
    c.send(&DISCONNECT);
    c.expect_closed();
}

#[test]
fn new_sessions_beyond_max_sessions_per_address_are_refused_resumption_and_other_addresses_are_not()
{
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(&["--max-sessions-per-address", "3"]);
    // One address leaves three throw-away persistent sessions behind.
    for i in 0..3 {
        leave_offline_session(&mut RawClient::open(b.addr), &format!("throwaway-{i}"));
    }
    wait_state(&b, "sessions=3 ", LONG);
    // A fourth new client id from the same address: v5 CONNACK 0x97 Quota exceeded, v3
    // return code 3 Server unavailable, then close; a refusal has Session Present 0
    // [MQTT-3.2.2-6] (5.0) / [MQTT-3.2.2-4] (3.1.1). Nothing was created.
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("throwaway-3", flags::CLEAN, 0, &no_props()));
    c.expect_connack_refused(true, 0x97);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("throwaway-3-v3", 0, 0));
    c.expect_connack_refused(false, 3);
    // Resuming one of its sessions is always allowed: Session Present 1 [MQTT-3.2.2-3].
    let mut c = RawClient::open(b.addr);
    let persistent = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 600)]);
    c.send(&connect_v5("throwaway-1", 0, 0, &persistent));
    let ack = c.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, true));
    // ...and so is a clean start for a client id that has a session: it is discarded for a
    // new one [MQTT-3.1.2-4], Session Present 0 [MQTT-3.2.2-2].
    let mut c2 = RawClient::open(b.addr);
    c2.send(&connect_v5("throwaway-2", flags::CLEAN, 0, &persistent));
    let ack = c2.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, false));
    // Another source address creates sessions of its own.
    let mut other = raw_from("127.0.0.2", b.addr);
    other.send(&connect_v5("other-address", flags::CLEAN, 0, &no_props()));
    assert_eq!(other.expect_connack(true).code, 0);
    other.ping();
    // A clean start from another address replaces a session with one created there: the
    // first address gets that place back and may create a new session.
    let mut mover = raw_from("127.0.0.2", b.addr);
    mover.send(&connect_v5("throwaway-0", flags::CLEAN, 0, &persistent));
    let ack = mover.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, false));
    let (mut moved, _) = RawClient::v5(b.addr, "in-the-freed-place");
    // Counted, and one WARN line (rate-limited) naming the address.
    let line = wait_state(&b, "sessions=5 ", LONG);
    assert!(line.contains("max_sessions_per_address=2"), "{line}");
    let warning = b
        .log()
        .lines()
        .find(|l| l.contains("new session refused: its source address"))
        .map(str::to_string);
    assert!(
        warning
            .as_deref()
            .is_some_and(|l| l.contains("address=127.0.0.1")
                && l.contains("max_sessions_per_address=3")
                && l.contains("refusals=1")),
        "{warning:?}\n{}",
        b.log()
    );
    // A session that ends gives its address a place back: a clean start discards
    // `throwaway-2` [MQTT-3.1.2-4], and the new session, with no Session Expiry Interval
    // (0), ends when its connection closes (5.0 §3.1.2.11.2).
    drop(c2);
    let mut ender = RawClient::open(b.addr);
    ender.send(&connect_v5("throwaway-2", flags::CLEAN, 0, &no_props()));
    assert_eq!(ender.expect_connack(true).code, 0);
    ender.send(&DISCONNECT);
    ender.expect_closed();
    wait_state(&b, "sessions=4 ", LONG);
    // A fresh client from 127.0.0.1 is served (a new session, within the limit again).
    assert_serving(&b);
    c.ping();
    moved.ping();
    mover.ping();
}

#[test]
fn sessions_restored_from_the_store_count_against_no_address() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = edgemq_testkit::broker::fresh_data_dir();
    let dir = data.to_str().unwrap().to_string();
    {
        let mut b = start(&["--data-dir", &dir, "--max-sessions-per-address", "2"]);
        for i in 0..2 {
            leave_offline_session(&mut RawClient::open(b.addr), &format!("stored-{i}"));
        }
        let mut c = RawClient::open(b.addr);
        c.send(&connect_v5("stored-2", flags::CLEAN, 0, &no_props()));
        c.expect_connack_refused(true, 0x97);
        b.terminate();
    }
    // After a restart the two stored sessions are back, but their address is not known:
    // the same address may create two new ones (and the stored ones still resume).
    let b = start(&["--data-dir", &dir, "--max-sessions-per-address", "2"]);
    wait_state(&b, "sessions=2 ", LONG);
    for i in 0..2 {
        leave_offline_session(&mut RawClient::open(b.addr), &format!("new-{i}"));
    }
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("new-2", flags::CLEAN, 0, &no_props()));
    c.expect_connack_refused(true, 0x97);
    let mut c = RawClient::open(b.addr);
    let persistent = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 600)]);
    c.send(&connect_v5("stored-0", 0, 0, &persistent));
    let ack = c.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, true));
    wait_state(&b, "sessions=4 ", LONG);
    drop(b);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_client_id_longer_than_max_client_id_length_is_refused_with_0x85_or_identifier_rejected() {
    if !Broker::edgemq_only() {
        return;
    }
    // The default, 1,024 bytes: 1,024 accepted, 1,025 refused.
    let b = start(&[]);
    let mut accepted = RawClient::open(b.addr);
    accepted.send(&connect_v5(&"a".repeat(1024), flags::CLEAN, 0, &no_props()));
    assert_eq!(
        accepted.expect_connack(true).code,
        0,
        "a 1,024-byte client id"
    );
    let long = "b".repeat(1025);
    // v5: CONNACK 0x85 Client Identifier not valid, then close [MQTT-3.1.3-8].
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(&long, flags::CLEAN, 0, &no_props()));
    c.expect_connack_refused(true, 0x85);
    // 3.1.1: return code 2 Identifier rejected, then close [MQTT-3.1.3-9].
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311(&long, flags::CLEAN, 0));
    c.expect_connack_refused(false, 2);
    // Nothing was created for them: only the accepted client's session exists.
    let line = wait_state(&b, "sessions=1 ", LONG);
    assert!(line.contains("max_client_id_length=2"), "{line}");
    accepted.ping();
    // One WARN line (rate-limited), with the client id cut as all client-chosen text is.
    let log = b.log();
    let warning = log
        .lines()
        .find(|l| l.contains("refused: client identifier longer than max-client-id-length"))
        .map(str::to_string);
    assert!(
        warning.as_deref().is_some_and(|l| l.contains("length=1025")
            && l.contains("max_client_id_length=1024")
            && l.contains("refusals=1")),
        "{warning:?}\n{log}"
    );
    assert!(!log.contains(&long), "the refused client id appears whole");
    assert_serving(&b);
    drop(b);

    // Set lower: the 23 bytes every server must allow [MQTT-3.1.3-5] still are.
    let b = start(&["--max-client-id-length", "23"]);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311(&"c".repeat(23), flags::CLEAN, 0));
    c.expect_packet(&CONNACK_OK);
    let mut c2 = RawClient::open(b.addr);
    c2.send(&connect_v5(&"d".repeat(24), flags::CLEAN, 0, &no_props()));
    c2.expect_connack_refused(true, 0x85);
    c.ping();
    assert_serving(&b);
}
