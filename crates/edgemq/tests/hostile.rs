//! Hostile input: topic depth and filter-count limits, de-duplicated retained messages,
//! input pipelined behind CONNECT, log amplification, stack safety with very deep topics,
//! deep state left in the store by an older version, and many overlapping subscriptions.
//!
//! Every client is hand-built (see `edgemq_testkit::raw`). The broker must survive each attack: the
//! stack-safety tests raise `--max-topic-levels` so the deep input is admitted, then check
//! that the process is still running and that a fresh client gets a CONNACK and a PUBLISH
//! round trip. Waits are on packets (or on the broker's own answers while polling), never on
//! the clock.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::collections::BTreeSet;
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;

/// The default `--max-topic-levels` (Mosquitto's limit).
const DEFAULT_MAX_LEVELS: usize = 200;
/// The default `--max-filters-per-packet`.
const DEFAULT_MAX_FILTERS: usize = 1000;
/// Admits every possible depth: a topic or filter is at most 65,535 bytes, so at most
/// 65,536 levels (the flag's maximum).
const DEEP_LIMIT: &str = "65536";

/// v5 reason codes used below.
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
const UNSPECIFIED_ERROR: u8 = 0x80;
const TOPIC_FILTER_INVALID: u8 = 0x8F;
const TOPIC_NAME_INVALID: u8 = 0x90;
const QUOTA_EXCEEDED: u8 = 0x97;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Start edgemq with `extra` serve arguments; `None` against mosquitto (edgemq-only flags).
fn start(extra: &[&str]) -> Option<Broker> {
    Broker::edgemq_only().then(|| Broker::start_with(extra))
}

/// A topic (or filter) of exactly `n` levels: `word/word/…/word`.
fn levels(word: &str, n: usize) -> String {
    vec![word; n].join("/")
}

/// A process-unique suffix for client ids.
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// At most the first `n` bytes of `s` (on a char boundary), with its length if cut.
fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Hex of at most the first 48 bytes of a packet (deep topics make packets huge).
fn short_hex(p: &[u8]) -> String {
    if p.len() <= 48 {
        hex(p)
    } else {
        format!("{} … ({} bytes)", hex(&p[..48]), p.len())
    }
}

/// The last lines of the broker's log, each clipped (a stack overflow report ends it).
fn log_tail(b: &Broker) -> String {
    let log = b.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..]
        .iter()
        .map(|l| clip(l, 400))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the process is still running (a crashed child stays a zombie until reaped).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn assert_running(b: &Broker, after: &str) {
    assert!(
        running(b.pid()),
        "the broker process died after {after}; log tail:\n{}",
        log_tail(b)
    );
}

/// The next packet, or a panic naming `what` with the broker's state.
fn next_packet(c: &mut RawClient, b: &Broker, what: &str, wait: Duration) -> Vec<u8> {
    match c.next_event(wait) {
        Event::Packet(p) => p,
        other => panic!(
            "{what}: expected a packet, got {other:?}; broker running: {}; log tail:\n{}",
            running(b.pid()),
            log_tail(b)
        ),
    }
}

/// Decode a SUBACK: (packet id, reason codes).
fn parse_suback(p: &[u8], v5: bool) -> (u16, Vec<u8>) {
    assert_eq!(p[0], 0x90, "expected SUBACK, got {}", short_hex(p));
    let mut r = Reader::new(body(p));
    let pid = r.u16("packet identifier").unwrap();
    if v5 {
        r.props().unwrap();
    }
    (pid, r.remaining().to_vec())
}

fn read_suback(c: &mut RawClient, b: &Broker, v5: bool) -> (u16, Vec<u8>) {
    let p = next_packet(c, b, "SUBACK", WAIT);
    parse_suback(&p, v5)
}

/// Decode a v5 UNSUBACK: (packet id, reason codes).
fn read_unsuback_v5(c: &mut RawClient, b: &Broker) -> (u16, Vec<u8>) {
    let p = next_packet(c, b, "UNSUBACK", WAIT);
    assert_eq!(p[0], 0xB0, "expected UNSUBACK, got {}", short_hex(&p));
    let mut r = Reader::new(body(&p));
    let pid = r.u16("packet identifier").unwrap();
    r.props().unwrap();
    (pid, r.remaining().to_vec())
}

/// Decode a PUBACK/PUBREC (`first` = 0x40 / 0x50): (packet id, reason; 0 if absent).
fn parse_ack(p: &[u8], first: u8) -> (u16, u8) {
    assert_eq!(p[0], first, "expected {first:#04x}, got {}", short_hex(p));
    let b = body(p);
    (
        u16::from_be_bytes([b[0], b[1]]),
        b.get(2).copied().unwrap_or(0),
    )
}

/// The next packet must be a PUBLISH (returned decoded).
fn next_publish(c: &mut RawClient, b: &Broker, v5: bool, what: &str) -> Publish {
    let p = next_packet(c, b, what, WAIT);
    assert_eq!(
        p[0] & 0xF0,
        0x30,
        "{what}: expected PUBLISH, got {}",
        short_hex(&p)
    );
    parse_publish(&p, v5)
}

/// A v5 client with a clean start and no properties (a failure reports the broker's state).
fn v5(b: &Broker, client_id: &str) -> RawClient {
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(client_id, flags::CLEAN, 0, &no_props()));
    let p = next_packet(&mut c, b, &format!("CONNACK for {client_id}"), WAIT);
    let ack = parse_connack(&p, true);
    assert_eq!(ack.code, 0, "CONNACK refused for {client_id}: {ack:?}");
    c
}

/// A fresh client can still connect, subscribe, publish and receive: the broker serves.
fn assert_serving(b: &Broker, after: &str) {
    assert_running(b, after);
    let id = format!("probe-{}", unique());
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(&id, flags::CLEAN, 0, &no_props()));
    let ack = parse_connack(&next_packet(&mut c, b, "probe CONNACK", WAIT), true);
    assert_eq!(ack.code, 0, "probe refused after {after}: {ack:?}");
    let topic = format!("probe/{id}");
    c.send(&subscribe(1, Some(&no_props()), &[(&topic, 1)]));
    assert_eq!(read_suback(&mut c, b, true).1, [1], "probe SUBACK");
    c.send(&publish_v5(&topic, 1, 2, &no_props(), b"round trip"));
    let (mut acked, mut received) = (false, false);
    while !(acked && received) {
        let p = next_packet(&mut c, b, &format!("probe round trip after {after}"), WAIT);
        match p[0] & 0xF0 {
            0x40 => {
                assert_eq!(parse_ack(&p, 0x40), (2, 0), "probe PUBACK");
                acked = true;
            }
            0x30 => {
                let m = parse_publish(&p, true);
                assert_eq!(
                    (m.topic.as_str(), &m.payload[..]),
                    (&*topic, &b"round trip"[..])
                );
                if let Some(pid) = m.pid {
                    c.send(&puback(pid));
                }
                received = true;
            }
            _ => panic!("probe: unexpected packet {}", short_hex(&p)),
        }
    }
    c.send(&DISCONNECT);
    assert_running(b, after);
}

/// Publish QoS 1 to `topic` until the broker answers PUBACK 0x10 (No matching subscribers
/// §3.4.2.1): the subscriptions on it are gone (the session that held them ended and
/// was cleaned up). Polls the broker's answers, at most every 50 ms.
fn wait_unrouted(b: &Broker, topic: &str, what: &str) {
    let mut c = v5(b, &format!("unrouted-probe-{}", unique()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pid: u16 = 0;
    loop {
        pid = pid.wrapping_add(1).max(1);
        c.send(&publish_v5(topic, 1, pid, &no_props(), b"probe"));
        let p = next_packet(&mut c, b, &format!("PUBACK while waiting for {what}"), WAIT);
        let (got, reason) = parse_ack(&p, 0x40);
        assert_eq!(got, pid);
        if reason == NO_MATCHING_SUBSCRIBERS {
            return;
        }
        assert_eq!(reason, 0, "probe PUBACK reason while waiting for {what}");
        assert!(
            Instant::now() < deadline,
            "{what}: the subscription was still routed after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A data directory removed when dropped (declare it before the brokers using it).
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// --max-topic-levels
// ---------------------------------------------------------------------------------------

#[test]
fn publish_deeper_than_max_topic_levels_is_refused_and_neither_routed_nor_retained() {
    let Some(b) = start(&[]) else { return };
    let at_limit = levels("deep", DEFAULT_MAX_LEVELS);
    let deep = levels("deep", DEFAULT_MAX_LEVELS + 1);

    let mut s = v5(&b, "levels-sub");
    s.send(&subscribe(
        1,
        Some(&no_props()),
        &[("deep/#", 0), ("barrier", 0)],
    ));
    assert_eq!(read_suback(&mut s, &b, true).1, [0, 0]);

    let mut p = v5(&b, "levels-pub");
    // Exactly at the limit: accepted and routed.
    p.send(&publish_v5(&at_limit, 1, 1, &no_props(), b"at limit"));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40),
        (1, 0),
        "PUBACK at the limit"
    );
    let m = next_publish(&mut s, &b, true, "the message at the limit");
    assert_eq!(m.topic, at_limit);

    // One level more, v5 QoS 1: PUBACK 0x90 (Topic Name invalid), the connection stays.
    p.send(&publish_raw(
        pub_flags(1, false, true),
        deep.as_bytes(),
        Some(2),
        Some(&no_props()),
        b"q1",
    ));
    let ack = parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40);
    assert_eq!(
        ack,
        (2, TOPIC_NAME_INVALID),
        "PUBACK for a topic above --max-topic-levels"
    );
    p.ping();
    // v5 QoS 2: PUBREC 0x90, which ends the exchange [MQTT-4.3.3]; the connection stays.
    p.send(&publish_raw(
        pub_flags(2, false, true),
        deep.as_bytes(),
        Some(3),
        Some(&no_props()),
        b"q2",
    ));
    let rec = parse_ack(&next_packet(&mut p, &b, "PUBREC", WAIT), 0x50);
    assert_eq!(
        rec,
        (3, TOPIC_NAME_INVALID),
        "PUBREC for a topic above --max-topic-levels"
    );
    p.ping();
    // v5 QoS 0 has no acknowledgement: DISCONNECT 0x90 [MQTT-4.13.1-1].
    p.send(&publish_raw(
        pub_flags(0, false, true),
        deep.as_bytes(),
        None,
        Some(&no_props()),
        b"q0",
    ));
    p.expect_disconnect(TOPIC_NAME_INVALID);
    // v3.1.1 has no reason codes: the connection is closed.
    let mut p3 = RawClient::v311(b.addr, "levels-pub-v311");
    p3.send(&publish_raw(
        pub_flags(1, false, true),
        deep.as_bytes(),
        Some(1),
        None,
        b"v3",
    ));
    p3.expect_closed_silently();

    // Not routed: the next message the subscriber gets is the (retained) barrier.
    let mut m3 = RawClient::v311(b.addr, "levels-barrier");
    m3.send(&publish_raw(
        pub_flags(1, false, true),
        b"barrier",
        Some(1),
        None,
        b"b",
    ));
    assert_eq!(
        parse_ack(&next_packet(&mut m3, &b, "PUBACK", WAIT), 0x40).0,
        1
    );
    let m = next_publish(&mut s, &b, true, "barrier");
    assert_eq!(m.topic, "barrier", "a refused deep PUBLISH was routed");

    // Not retained: a new subscriber's retained messages for `deep/#` (none) come before
    // those of its next SUBSCRIBE (the barrier).
    let mut n = v5(&b, "levels-late-sub");
    n.send(&cat(&[
        &subscribe(1, Some(&no_props()), &[("deep/#", 0)]),
        &subscribe(2, Some(&no_props()), &[("barrier", 0)]),
    ]));
    loop {
        let p = next_packet(&mut n, &b, "retained after SUBSCRIBE", WAIT);
        if p[0] == 0x90 {
            continue;
        }
        let m = parse_publish(&p, true);
        assert_eq!(m.topic, "barrier", "a refused deep PUBLISH was retained");
        break;
    }
    assert_serving(&b, "deep PUBLISHes");
}

#[test]
fn subscribe_deeper_than_max_topic_levels_gets_0x8f_v5_and_0x80_v311() {
    let Some(b) = start(&[]) else { return };
    let at_limit = levels("s", DEFAULT_MAX_LEVELS);
    let deep = levels("s", DEFAULT_MAX_LEVELS + 1);
    // For `$share/{group}/{filter}` only the filter part counts.
    let shared_at_limit = format!("$share/g/{at_limit}");
    let shared_deep = format!("$share/g/{deep}");

    // v5: a Reason Code per filter, in order [MQTT-3.8.4-6], [MQTT-3.9.3-1]; the filter
    // above the limit is refused with 0x8F (Topic Filter invalid), the others are granted
    // as if sent in separate SUBSCRIBEs [MQTT-3.8.4-5].
    let mut c = v5(&b, "levels-filters-v5");
    c.send(&subscribe(
        1,
        Some(&no_props()),
        &[
            (&at_limit, 1),
            (&deep, 1),
            (&shared_at_limit, 1),
            (&shared_deep, 1),
            ("ok/#", 2),
        ],
    ));
    let (pid, codes) = read_suback(&mut c, &b, true);
    assert_eq!(pid, 1);
    assert_eq!(
        codes,
        [1, TOPIC_FILTER_INVALID, 1, TOPIC_FILTER_INVALID, 2],
        "SUBACK: filters above --max-topic-levels get 0x8F, the others are granted"
    );
    c.ping();
    // UNSUBSCRIBE: a Reason Code per filter, in order [MQTT-3.11.3-1]; the deep ones 0x8F.
    c.send(&unsubscribe(
        2,
        Some(&no_props()),
        &[&deep, &at_limit, &shared_at_limit, &shared_deep],
    ));
    let (pid, codes) = read_unsuback_v5(&mut c, &b);
    assert_eq!(pid, 2);
    assert_eq!(
        codes,
        [TOPIC_FILTER_INVALID, 0, 0, TOPIC_FILTER_INVALID],
        "UNSUBACK: filters above --max-topic-levels get 0x8F"
    );
    c.ping();

    // v3.1.1: the refused filter gets 0x80 (Failure) [MQTT-3.8.4-5], [MQTT-3.9.3-1].
    let mut c3 = RawClient::v311(b.addr, "levels-filters-v311");
    c3.send(&subscribe(
        1,
        None,
        &[(&at_limit, 1), (&deep, 1), ("ok/#", 2)],
    ));
    let (pid, codes) = read_suback(&mut c3, &b, false);
    assert_eq!(pid, 1);
    assert_eq!(codes, [1, UNSPECIFIED_ERROR, 2], "v3.1.1 SUBACK");
    c3.ping();
}

#[test]
fn will_topic_deeper_than_max_topic_levels_refuses_the_connection() {
    let Some(b) = start(&[]) else { return };
    let deep = levels("w", DEFAULT_MAX_LEVELS + 1);
    let expiry = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 600)]);

    let mut watcher = v5(&b, "will-watcher");
    watcher.send(&subscribe(1, Some(&no_props()), &[("#", 0)]));
    assert_eq!(read_suback(&mut watcher, &b, true).1, [0]);

    // v5: CONNACK 0x90 (Topic Name invalid) with Session Present 0 [MQTT-3.2.2-6], then
    // close [MQTT-3.2.2-7].
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will("deep-will-v5", 0, &expiry, &deep, b"will"));
    let ack = parse_connack(&next_packet(&mut c, &b, "CONNACK", WAIT), true);
    assert_eq!(
        ack.code, TOPIC_NAME_INVALID,
        "CONNACK for a deep will topic: {ack:?}"
    );
    assert!(!ack.session_present);
    c.expect_closed_silently();
    // No session was created.
    let mut again = RawClient::open(b.addr);
    again.send(&connect_v5("deep-will-v5", 0, 0, &expiry));
    let ack = again.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0, false), "{ack:?}");
    again.send(&DISCONNECT);

    // v3.1.1 has no return code for it: the connection is closed, without a session.
    let mut c3 = RawClient::open(b.addr);
    c3.send(&connect_v311_will("deep-will-v311", 0, &deep, b"will"));
    c3.expect_closed_silently();
    let mut again3 = RawClient::open(b.addr);
    again3.send(&connect_v311("deep-will-v311", 0, 0));
    // Session Present 0 [MQTT-3.2.2-3].
    again3.expect_packet(&CONNACK_OK);
    again3.send(&DISCONNECT);

    // At the limit the will is accepted.
    let mut ok = RawClient::open(b.addr);
    let at_limit = levels("w", DEFAULT_MAX_LEVELS);
    ok.send(&connect_v311_will(
        "will-at-limit",
        flags::CLEAN,
        &at_limit,
        b"will",
    ));
    ok.expect_packet(&CONNACK_OK);
    ok.send(&DISCONNECT);

    // No will was published: the watcher's next message is the barrier.
    let mut m = RawClient::v311(b.addr, "will-barrier");
    m.send(&publish_v311("barrier", 0, 0, b"b"));
    let got = next_publish(&mut watcher, &b, true, "barrier");
    assert_eq!(
        got.topic, "barrier",
        "a refused connection's will was published"
    );
    assert_serving(&b, "deep wills");
}

// ---------------------------------------------------------------------------------------
// --max-filters-per-packet
// ---------------------------------------------------------------------------------------

#[test]
fn filters_beyond_max_filters_per_packet_get_0x97_v5_and_0x80_v311() {
    let Some(b) = start(&[]) else { return };
    let n = DEFAULT_MAX_FILTERS;
    let names: Vec<String> = (0..n + 3).map(|i| format!("f/{i}")).collect();
    let all: Vec<(&str, u8)> = names.iter().map(|f| (f.as_str(), 1)).collect();

    let mut s = v5(&b, "many-filters-v5");
    s.send(&subscribe(1, Some(&no_props()), &all));
    let (_, codes) = read_suback(&mut s, &b, true);
    let mut expected = vec![1u8; n];
    expected.extend([QUOTA_EXCEEDED; 3]);
    assert!(
        codes == expected,
        "SUBACK with {} filters: expected {n} granted then 3 × 0x97, got {:02x?} from index {n}",
        n + 3,
        &codes[n.min(codes.len())..]
    );

    // Only the first N were processed: the last ones route nothing.
    let mut p = v5(&b, "many-filters-pub");
    let last = &names[n + 1];
    p.send(&publish_v5(last, 1, 1, &no_props(), b"x"));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40),
        (1, NO_MATCHING_SUBSCRIBERS),
        "{last} must not be subscribed"
    );
    p.send(&publish_v5(&names[n - 1], 1, 2, &no_props(), b"y"));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40),
        (2, 0)
    );
    let m = next_publish(&mut s, &b, true, "message on the last granted filter");
    assert_eq!(m.topic, names[n - 1]);
    s.send(&puback(m.pid.unwrap()));

    // The refused ones can be subscribed in a SUBSCRIBE of their own.
    let rest: Vec<(&str, u8)> = all[n..].to_vec();
    s.send(&subscribe(2, Some(&no_props()), &rest));
    assert_eq!(read_suback(&mut s, &b, true).1, [1, 1, 1]);

    // UNSUBSCRIBE beyond N: 0x80, and those subscriptions stay.
    let filters: Vec<&str> = names.iter().map(String::as_str).collect();
    s.send(&unsubscribe(3, Some(&no_props()), &filters));
    let (_, codes) = read_unsuback_v5(&mut s, &b);
    let mut expected = vec![0u8; n];
    expected.extend([UNSPECIFIED_ERROR; 3]);
    assert!(
        codes == expected,
        "UNSUBACK with {} filters: expected {n} × 0x00 then 3 × 0x80, got {:02x?} from index {n}",
        n + 3,
        &codes[n.min(codes.len())..]
    );
    p.send(&publish_v5(last, 1, 3, &no_props(), b"z"));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40),
        (3, 0),
        "{last} must still be subscribed"
    );
    let m = next_publish(
        &mut s,
        &b,
        true,
        "message on a filter beyond the UNSUBSCRIBE limit",
    );
    assert_eq!(m.topic, *last);
    s.send(&puback(m.pid.unwrap()));
    p.send(&publish_v5(&names[5], 1, 4, &no_props(), b"w"));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40),
        (4, NO_MATCHING_SUBSCRIBERS)
    );

    // v3.1.1: 0x80 (Failure) beyond N.
    let mut s3 = RawClient::v311(b.addr, "many-filters-v311");
    s3.send(&subscribe(1, None, &all));
    let (_, codes) = read_suback(&mut s3, &b, false);
    let mut expected = vec![1u8; n];
    expected.extend([UNSPECIFIED_ERROR; 3]);
    assert!(
        codes == expected,
        "v3.1.1 SUBACK: expected {n} granted then 3 × 0x80, got {:02x?} from index {n}",
        &codes[n.min(codes.len())..]
    );
    s3.ping();

    // The flag sets N.
    let b2 = Broker::start_with(&["--max-filters-per-packet", "2"]);
    let mut c = v5(&b2, "two-filters");
    c.send(&subscribe(
        1,
        Some(&no_props()),
        &[("a", 0), ("b", 0), ("c", 0)],
    ));
    assert_eq!(read_suback(&mut c, &b2, true).1, [0, 0, QUOTA_EXCEEDED]);
}

// ---------------------------------------------------------------------------------------
// Retained messages owed to one SUBSCRIBE
// ---------------------------------------------------------------------------------------

#[test]
fn retained_messages_owed_to_one_subscribe_are_sent_once_in_bounded_memory() {
    const RETAINED: usize = 1000;
    const FILTERS: usize = 10_000;
    let Some(b) = start(&["--max-filters-per-packet", "10000", "--sync", "never"]) else {
        return;
    };
    let mut p = RawClient::v311(b.addr, "dedup-pub");
    let batch: Vec<u8> = (0..RETAINED)
        .flat_map(|i| {
            publish_raw(
                pub_flags(1, false, true),
                format!("r/{i}").as_bytes(),
                Some(i as u16 + 1),
                None,
                b"retained",
            )
        })
        .collect();
    p.send(&batch);
    for _ in 0..RETAINED {
        assert_eq!(p.read_packet()[0], 0x40);
    }

    let mut s = v5(&b, "dedup-sub");
    let before = b.rss_kib();
    let filters = vec![("#", 0u8); FILTERS];
    let id1 = props(&[p_var(prop::SUBSCRIPTION_IDENTIFIER, 1)]);
    s.send(&subscribe(1, Some(&id1), &filters));
    let (_, codes) = read_suback(&mut s, &b, true);
    assert!(
        codes.len() == FILTERS && codes.iter().all(|c| *c == 0),
        "SUBACK: all granted"
    );
    let mut grown = b.rss_kib().saturating_sub(before);
    assert!(
        grown < 40 * 1024,
        "RSS grew by {} MiB for one SUBSCRIBE of {FILTERS} × `#` with {RETAINED} retained messages",
        grown / 1024
    );

    // Each retained message [MQTT-3.3.1-9] once, with RETAIN set (§3.3.1.3) and the
    // subscription identifier [MQTT-3.3.4-3].
    let mut seen = BTreeSet::new();
    while seen.len() < RETAINED {
        let m = next_publish(&mut s, &b, true, "retained message");
        assert!(m.retain, "retained message without RETAIN: {}", m.topic);
        assert_eq!(m.props.all_num(prop::SUBSCRIPTION_IDENTIFIER), [1]);
        assert!(
            seen.insert(m.topic.clone()),
            "retained message {} sent twice for one SUBSCRIBE (after {} distinct)",
            m.topic,
            seen.len()
        );
    }
    grown = grown.max(b.rss_kib().saturating_sub(before));
    // Barrier: the retained message of a second SUBSCRIBE (identifier 2); anything owed to
    // the first one arriving before it is a duplicate.
    let id2 = props(&[p_var(prop::SUBSCRIPTION_IDENTIFIER, 2)]);
    s.send(&subscribe(2, Some(&id2), &[("r/0", 0)]));
    loop {
        let p = next_packet(&mut s, &b, "barrier", WAIT);
        if p[0] == 0x90 {
            assert_eq!(parse_suback(&p, true), (2, vec![0]));
            continue;
        }
        let m = parse_publish(&p, true);
        if m.props.all_num(prop::SUBSCRIPTION_IDENTIFIER) == [2] {
            assert_eq!(m.topic, "r/0");
            break;
        }
        panic!("retained message {} sent twice for one SUBSCRIBE", m.topic);
    }
    eprintln!("one SUBSCRIBE owing retained messages: RSS grew {grown} KiB");
    assert!(grown < 40 * 1024, "RSS grew by {} MiB", grown / 1024);
}

// ---------------------------------------------------------------------------------------
// Pipelining: bytes behind CONNECT
// ---------------------------------------------------------------------------------------

/// CONNECT (with a will) + PUBLISH + DISCONNECT in one write, then close: the PUBLISH is
/// delivered and the will is not [MQTT-3.14.4-3] (3.1.1) / [MQTT-3.1.2-8] (5.0). A client
/// may send packets right after CONNECT without waiting for CONNACK (§3.1.4 in both).
fn pipelined_publish_then_disconnect(b: &Broker, s: &mut RawClient, v5: bool) {
    let tag = if v5 { "v5" } else { "v311" };
    let client_id = format!("pipe-{tag}");
    let topic = format!("pipe/{tag}");
    let will_topic = format!("will/{tag}");
    let (connect, publish) = if v5 {
        (
            connect_v5_will(&client_id, flags::CLEAN, &no_props(), &will_topic, b"will"),
            publish_v5(&topic, 0, 0, &no_props(), b"pipelined"),
        )
    } else {
        (
            connect_v311_will(&client_id, flags::CLEAN, &will_topic, b"will"),
            publish_v311(&topic, 0, 0, b"pipelined"),
        )
    };
    let mut c = RawClient::open(b.addr);
    c.send(&cat(&[&connect, &publish, &DISCONNECT]));
    c.stream.shutdown(Shutdown::Write).unwrap();
    let got = c.expect_closed();
    assert!(
        got.first().is_some_and(|p| p[0] == 0x20),
        "{tag}: expected CONNACK, got {got:02x?}"
    );

    let m = next_publish(s, b, true, &format!("{tag} pipelined PUBLISH"));
    assert_eq!(
        m.topic, topic,
        "{tag}: the subscriber got `{}` instead of the PUBLISH written with CONNECT",
        m.topic
    );
    // Barrier: the same client id again (the broker is done with the first connection once
    // this one is accepted [MQTT-3.1.4-2] (3.1.1) / [MQTT-3.1.4-3] (5.0)), then a marker: a
    // will would have come before it.
    let marker = format!("pipe/{tag}/marker");
    let mut again = RawClient::open(b.addr);
    if v5 {
        again.send(&connect_v5(&client_id, flags::CLEAN, 0, &no_props()));
        assert_eq!(again.expect_connack(true).code, 0);
        again.send(&publish_v5(&marker, 0, 0, &no_props(), b"marker"));
    } else {
        again.send(&connect_v311(&client_id, flags::CLEAN, 0));
        again.expect_packet(&CONNACK_OK);
        again.send(&publish_v311(&marker, 0, 0, b"marker"));
    }
    again.send(&DISCONNECT);
    let m = next_publish(s, b, true, &format!("{tag} marker"));
    assert_eq!(
        m.topic, marker,
        "{tag}: the will was published although DISCONNECT followed CONNECT"
    );
}

#[test]
fn connect_publish_disconnect_in_one_write_delivers_the_publish_and_not_the_will() {
    let Some(b) = start(&[]) else { return };
    let mut s = v5(&b, "pipe-sub");
    s.send(&subscribe(
        1,
        Some(&no_props()),
        &[("pipe/#", 0), ("will/#", 0)],
    ));
    assert_eq!(read_suback(&mut s, &b, true).1, [0, 0]);
    pipelined_publish_then_disconnect(&b, &mut s, false);
    pipelined_publish_then_disconnect(&b, &mut s, true);
}

#[test]
fn connect_and_subscribe_in_one_write_get_connack_then_suback() {
    let Some(b) = start(&[]) else { return };
    let np = no_props();
    for v5 in [false, true] {
        let id = format!("pipe-subscribe-{v5}");
        let connect = if v5 {
            connect_v5(&id, flags::CLEAN, 0, &np)
        } else {
            connect_v311(&id, flags::CLEAN, 0)
        };
        let sub = subscribe(7, v5.then_some(&np[..]), &[("pipe/subscribe", 1)]);
        let mut c = RawClient::open(b.addr);
        c.send(&cat(&[&connect, &sub]));
        let ack = c.expect_connack(v5);
        assert_eq!(ack.code, 0, "{ack:?}");
        // Nothing more is sent: the SUBSCRIBE already in the buffer must be answered.
        let p = next_packet(
            &mut c,
            &b,
            &format!("SUBACK (v5: {v5}) for a SUBSCRIBE written with CONNECT"),
            WAIT,
        );
        assert_eq!(parse_suback(&p, v5), (7, vec![1]), "v5: {v5}");
    }
}

// ---------------------------------------------------------------------------------------
// Log amplification
// ---------------------------------------------------------------------------------------

/// Connect a client named `marker` and wait until the log shows it: everything the broker
/// logged before (for earlier packets) has been read by then.
fn log_barrier(b: &Broker, marker: &str) {
    let _c = RawClient::v311(b.addr, marker);
    assert!(
        b.wait_for_log(marker, Duration::from_secs(60)),
        "the log never showed {marker}"
    );
}

#[test]
fn invalid_filters_cannot_amplify_the_log() {
    const FILTERS: usize = 200_000;
    let Some(b) = start(&["--max-filters-per-packet", "300000"]) else {
        return;
    };
    let mut c = RawClient::v311(b.addr, "log-flood");
    log_barrier(&b, "log-flood-start");
    let before = b.log().len();
    // ~1 MiB: 200,000 × `a#` ('#' not alone in its level [MQTT-4.7.1-1]).
    let filters = vec![("a#", 0u8); FILTERS];
    let packet = subscribe(1, None, &filters);
    assert!(packet.len() < 1024 * 1024);
    c.send(&packet);
    let p = next_packet(&mut c, &b, "SUBACK", Duration::from_secs(120));
    let (_, codes) = parse_suback(&p, false);
    assert!(
        codes.len() == FILTERS && codes.iter().all(|c| *c == UNSPECIFIED_ERROR),
        "every invalid filter gets 0x80 [MQTT-3.8.4-5]"
    );
    c.ping();
    log_barrier(&b, "log-flood-marker");
    let added = b.log().len() - before;
    eprintln!("one SUBSCRIBE of {FILTERS} invalid filters: {added} bytes of log");
    assert!(
        added < 200 * 1024,
        "one SUBSCRIBE of {FILTERS} invalid filters added {added} bytes of log"
    );
}

#[test]
fn a_long_client_id_is_not_logged_whole() {
    // The longest limit the broker allows (an MQTT string's 65,535 bytes; the default is
    // 1,024): a 65,534-byte id is accepted.
    let Some(b) = start(&["--max-client-id-length", "65535"]) else {
        return;
    };
    let id = "c".repeat(65_534);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(&id, flags::CLEAN, 0, &no_props()));
    let ack = c.expect_connack(true);
    assert_eq!(ack.code, 0, "{ack:?}");
    // Things that log within the connection: an invalid filter, a clean DISCONNECT.
    c.send(&subscribe(1, Some(&no_props()), &[("a#", 0)]));
    assert_eq!(read_suback(&mut c, &b, true).1, [TOPIC_FILTER_INVALID]);
    c.send(&DISCONNECT);
    c.expect_closed();
    log_barrier(&b, "long-id-marker");
    let log = b.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        !log.contains(&id),
        "the 65,534-byte client id appears whole in the log"
    );
    assert!(longest <= 4096, "a log line of {longest} bytes");
}

// ---------------------------------------------------------------------------------------
// Stack safety: the depth is the client's to choose, however high the limit
// ---------------------------------------------------------------------------------------

fn deep_broker() -> Option<Broker> {
    start(&["--max-topic-levels", DEEP_LIMIT])
}

#[test]
fn stack_safe_subscribe_to_65535_slashes() {
    let Some(b) = deep_broker() else { return };
    let filter = "/".repeat(65_535);
    let mut c = v5(&b, "deep-subscribe");
    c.send(&subscribe(1, Some(&no_props()), &[(&filter, 0)]));
    assert_eq!(read_suback(&mut c, &b, true).1, [0]);
    assert_serving(&b, "a SUBSCRIBE of 65,535 '/'");
    c.send(&DISCONNECT);
    c.expect_closed();
    wait_unrouted(&b, &filter, "the end of a session subscribed to 65,535 '/'");
    assert_serving(&b, "the end of a session subscribed to 65,535 '/'");
}

#[test]
fn stack_safe_retained_deep_topic_then_wildcard_subscriber() {
    let Some(b) = deep_broker() else { return };
    let topic = "/".repeat(60_000);
    let mut p = v5(&b, "deep-retain-pub");
    p.send(&publish_raw(
        pub_flags(1, false, true),
        topic.as_bytes(),
        Some(1),
        Some(&no_props()),
        b"deep",
    ));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40).0,
        1
    );
    let mut s = v5(&b, "deep-retain-sub");
    s.send(&subscribe(1, Some(&no_props()), &[("#", 0)]));
    assert_eq!(read_suback(&mut s, &b, true).1, [0]);
    let m = next_publish(&mut s, &b, true, "the deep retained message");
    assert!(
        m.retain && m.topic == topic,
        "expected the deep retained message"
    );
    assert_serving(
        &b,
        "a `#` subscriber to a retained message 60,001 levels deep",
    );
}

#[test]
fn stack_safe_retained_will_on_deep_topic() {
    let Some(b) = deep_broker() else { return };
    let topic = "/".repeat(60_000);
    let mut watcher = v5(&b, "deep-will-watcher");
    watcher.send(&subscribe(1, Some(&no_props()), &[("#", 0)]));
    assert_eq!(read_suback(&mut watcher, &b, true).1, [0]);

    let mut w = RawClient::open(b.addr);
    w.send(&connect_v5_will(
        "deep-will",
        flags::CLEAN | flags::WILL_RETAIN,
        &no_props(),
        &topic,
        b"will",
    ));
    assert_eq!(w.expect_connack(true).code, 0);
    // Gone without DISCONNECT: the will is published [MQTT-3.1.2-8], and retained.
    w.stream.shutdown(Shutdown::Both).unwrap();
    drop(w);
    let m = next_publish(&mut watcher, &b, true, "the deep will");
    assert!(
        m.topic == topic && m.payload == b"will",
        "expected the deep will"
    );

    let mut s = v5(&b, "deep-will-late-sub");
    s.send(&subscribe(1, Some(&no_props()), &[("#", 0)]));
    assert_eq!(read_suback(&mut s, &b, true).1, [0]);
    let m = next_publish(&mut s, &b, true, "the deep retained will");
    assert!(
        m.retain && m.topic == topic,
        "expected the deep retained will"
    );
    assert_serving(&b, "a retained will 60,001 levels deep");
}

#[test]
fn stack_safe_clearing_a_deep_retained_topic() {
    let Some(b) = deep_broker() else { return };
    let topic = "/".repeat(60_000);
    let mut p = v5(&b, "deep-clear-pub");
    p.send(&publish_raw(
        pub_flags(1, false, true),
        topic.as_bytes(),
        Some(1),
        Some(&no_props()),
        b"deep",
    ));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40).0,
        1
    );
    // An empty retained payload removes it [MQTT-3.3.1-6] (5.0) / [MQTT-3.3.1-10] (3.1.1).
    p.send(&publish_raw(
        pub_flags(1, false, true),
        topic.as_bytes(),
        Some(2),
        Some(&no_props()),
        b"",
    ));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40).0,
        2
    );
    assert_serving(&b, "clearing a retained message 60,001 levels deep");
    // It is gone: the first retained message a `#` subscriber gets is the barrier.
    p.send(&publish_raw(
        pub_flags(1, false, true),
        b"barrier",
        Some(3),
        Some(&no_props()),
        b"b",
    ));
    assert_eq!(
        parse_ack(&next_packet(&mut p, &b, "PUBACK", WAIT), 0x40).0,
        3
    );
    let mut s = v5(&b, "deep-clear-sub");
    s.send(&subscribe(1, Some(&no_props()), &[("#", 0)]));
    assert_eq!(read_suback(&mut s, &b, true).1, [0]);
    let m = next_publish(&mut s, &b, true, "retained barrier");
    assert_eq!(
        m.topic, "barrier",
        "the cleared deep retained message was sent"
    );
}

#[test]
fn stack_safe_deep_shared_subscription_then_disconnect() {
    let Some(b) = deep_broker() else { return };
    let deep = "/".repeat(65_000);
    let filter = format!("$share/g/{deep}");
    let mut c = v5(&b, "deep-shared");
    c.send(&subscribe(1, Some(&no_props()), &[(&filter, 0)]));
    assert_eq!(read_suback(&mut c, &b, true).1, [0]);
    c.send(&DISCONNECT);
    c.expect_closed();
    wait_unrouted(
        &b,
        &deep,
        "the end of a session with a deep shared subscription",
    );
    assert_serving(&b, "the end of a session with a deep shared subscription");
}

#[test]
fn stack_safe_unsubscribe_of_a_deep_filter() {
    let Some(b) = deep_broker() else { return };
    let filter = "/".repeat(65_000);
    let mut c = v5(&b, "deep-unsubscribe");
    c.send(&subscribe(1, Some(&no_props()), &[(&filter, 0)]));
    assert_eq!(read_suback(&mut c, &b, true).1, [0]);
    c.send(&unsubscribe(2, Some(&no_props()), &[&filter]));
    assert_eq!(read_unsuback_v5(&mut c, &b), (2, vec![0]));
    assert_serving(&b, "an UNSUBSCRIBE of 65,001 levels");
}

#[test]
fn stack_safe_session_expiry_of_a_deep_subscription() {
    let Some(b) = deep_broker() else { return };
    let filter = "/".repeat(8_000);
    let mut c = RawClient::open(b.addr);
    let expiry = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 2)]);
    c.send(&connect_v5("deep-expiry", flags::CLEAN, 0, &expiry));
    assert_eq!(c.expect_connack(true).code, 0);
    c.send(&subscribe(1, Some(&no_props()), &[(&filter, 0)]));
    assert_eq!(read_suback(&mut c, &b, true).1, [0]);
    c.send(&DISCONNECT);
    c.expect_closed();
    // The session expires 2 s later [MQTT-3.1.2-23]; its subscription goes with it.
    wait_unrouted(
        &b,
        &filter,
        "the expiry of a session subscribed 8,001 levels deep",
    );
    assert_serving(&b, "the expiry of a session subscribed 8,001 levels deep");
}

// ---------------------------------------------------------------------------------------
// Deep state in the store
// ---------------------------------------------------------------------------------------

#[test]
fn deep_state_in_the_store_is_quarantined_at_start_up() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = DataDir(edgemq_testkit::broker::fresh_data_dir());
    let dir = data.0.to_str().unwrap().to_string();
    let deep_topic = levels("t", 20_000);
    let deep_filter = levels("f", 20_000);
    {
        // What an older version (no depth limit) could store.
        let mut old = Broker::start_with(&["--data-dir", &dir, "--max-topic-levels", DEEP_LIMIT]);
        let mut p = v5(&old, "store-pub");
        p.send(&publish_raw(
            pub_flags(1, false, true),
            deep_topic.as_bytes(),
            Some(1),
            Some(&no_props()),
            b"deep",
        ));
        assert_eq!(
            parse_ack(&next_packet(&mut p, &old, "PUBACK", WAIT), 0x40).0,
            1
        );
        p.send(&publish_raw(
            pub_flags(1, false, true),
            b"shallow/1",
            Some(2),
            Some(&no_props()),
            b"shallow",
        ));
        assert_eq!(
            parse_ack(&next_packet(&mut p, &old, "PUBACK", WAIT), 0x40).0,
            2
        );
        // A persistent v3.1.1 session (clean session 0) subscribed to a deep filter.
        let mut s = RawClient::open(old.addr);
        s.send(&connect_v311("deep-session", 0, 0));
        s.expect_packet(&CONNACK_OK);
        s.send(&subscribe(1, None, &[(&deep_filter, 1), ("shallow/#", 1)]));
        assert_eq!(read_suback(&mut s, &old, false).1, [1, 1]);
        s.send(&DISCONNECT);
        s.expect_closed();
        old.kill_hard();
    }
    // Restart with the default limit.
    let b = Broker::start_with(&["--data-dir", &dir]);
    assert_running(&b, "a restart over deep stored state");
    let mut s = v5(&b, "restart-sub");
    let id1 = props(&[p_var(prop::SUBSCRIPTION_IDENTIFIER, 1)]);
    let id2 = props(&[p_var(prop::SUBSCRIPTION_IDENTIFIER, 2)]);
    s.send(&subscribe(1, Some(&id1), &[("#", 0)]));
    assert_eq!(read_suback(&mut s, &b, true), (1, vec![0]));
    // What `#` gets (identifier 1) until the shallow message; then a barrier: that message
    // again, for a second SUBSCRIBE (identifier 2). Anything still owed to the first
    // SUBSCRIBE comes before it.
    let mut for_hash = Vec::new();
    let mut barrier_sent = false;
    loop {
        let p = next_packet(&mut s, &b, "retained after restart", WAIT);
        if p[0] == 0x90 {
            assert_eq!(parse_suback(&p, true), (2, vec![0]));
            continue;
        }
        let m = parse_publish(&p, true);
        if m.props.all_num(prop::SUBSCRIPTION_IDENTIFIER) == [2] {
            break;
        }
        assert!(
            m.topic.len() < 1000,
            "the deep retained message was served after a restart with the default limit"
        );
        if m.topic == "shallow/1" && !barrier_sent {
            s.send(&subscribe(2, Some(&id2), &[("shallow/1", 0)]));
            barrier_sent = true;
        }
        for_hash.push(m.topic);
    }
    assert_eq!(for_hash, ["shallow/1"]);
    assert_serving(&b, "a `#` subscriber after the restart");
    // The persistent session can come back.
    let mut again = RawClient::open(b.addr);
    again.send(&connect_v311("deep-session", 0, 0));
    let ack = again.expect_connack(false);
    assert_eq!(ack.code, 0);
    again.ping();
    again.send(&DISCONNECT);
    again.expect_closed();
    assert_serving(&b, "the persistent session's return");
    assert!(
        b.wait_for_log("max-topic-levels", Duration::from_secs(10)),
        "no warning mentioning max-topic-levels for the dropped deep state; log tail:\n{}",
        log_tail(&b)
    );
}

// ---------------------------------------------------------------------------------------
// Subscription identifiers
// ---------------------------------------------------------------------------------------

#[test]
fn one_copy_carries_every_subscription_identifier_of_20000_overlapping_subscriptions() {
    const SUBSCRIPTIONS: u32 = 20_000;
    const CHUNK: u32 = 1000;
    // Above the default 10,000 subscriptions per session (docs/limits.md).
    let Some(b) = start(&["--max-subscriptions-per-session", "20000"]) else {
        return;
    };
    let words: Vec<String> = (b'a'..=b'o').map(|c| char::from(c).to_string()).collect();
    let topic = words.join("/");
    // Filter `mask`: level i is `+` where bit i is set. 20,000 distinct masks of 15 bits:
    // distinct filters, every one matching `topic`.
    let filter = |mask: u32| -> String {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if mask & (1 << i) != 0 {
                    "+"
                } else {
                    w.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut s = v5(&b, "sid-sub");
    // One SUBSCRIBE per filter, each with its own Subscription Identifier (mask + 1);
    // written CHUNK at a time, then their SUBACKs read.
    for start_mask in (0..SUBSCRIPTIONS).step_by(CHUNK as usize) {
        let batch: Vec<u8> = (start_mask..start_mask + CHUNK)
            .flat_map(|mask| {
                let id = props(&[p_var(prop::SUBSCRIPTION_IDENTIFIER, mask + 1)]);
                subscribe((mask % 60_000 + 1) as u16, Some(&id), &[(&filter(mask), 0)])
            })
            .collect();
        s.send(&batch);
        for _ in 0..CHUNK {
            let (_, codes) = read_suback(&mut s, &b, true);
            assert_eq!(codes, [0]);
        }
    }

    let mut bystander = v5(&b, "sid-bystander");
    let mut p = v5(&b, "sid-pub");
    p.send(&publish_v5(&topic, 0, 0, &no_props(), b"first"));
    p.send(&publish_v5(&topic, 0, 0, &no_props(), b"second"));
    // The broker keeps serving others meanwhile. (All waits here are the harness's generous
    // bound for any answer; a broker that needs more for one PUBLISH is broken.)
    bystander.send(&PINGREQ);
    let pong = next_packet(&mut bystander, &b, "bystander PINGRESP", WAIT);
    assert_eq!(pong, PINGRESP);

    // One copy (the broker folds overlapping subscriptions; the specification would allow
    // one per subscription) carrying every identifier [MQTT-3.3.4-3], [MQTT-3.3.4-4], in any
    // order.
    let first = parse_publish(&next_packet(&mut s, &b, "the PUBLISH", WAIT), true);
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        (&*topic, &b"first"[..])
    );
    let ids = first.props.all_num(prop::SUBSCRIPTION_IDENTIFIER);
    let distinct: BTreeSet<u32> = ids.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=SUBSCRIPTIONS).collect::<BTreeSet<u32>>(),
        "the PUBLISH must carry every subscription identifier"
    );
    assert_eq!(ids.len(), distinct.len(), "each identifier once");
    // The next message the subscriber gets is the second one, not another copy.
    let second = parse_publish(&next_packet(&mut s, &b, "the second PUBLISH", WAIT), true);
    assert_eq!(
        &second.payload[..],
        b"second",
        "more than one copy of the first message"
    );
    bystander.ping();
}
