//! What one client can make the broker hold, measured from outside: broker RSS from
//! /proc/PID/status while a client does what the hostile-input probe did (issue 17), with
//! the limits that bound it. Each case printed hundreds of MB of growth before; the bounds
//! asserted here leave room for allocator slack and transient decoding, far below that.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;

const MB: usize = 1_000_000;

fn grew_mib(b: &Broker, before_kib: u64) -> u64 {
    b.rss_kib().saturating_sub(before_kib) / 1024
}

/// Publish `n` QoS 1 messages of `size` bytes on `topic` and wait for every PUBACK: the
/// broker has then routed (queued, sent or dropped) all of them.
fn publish_acked(publisher: &mut RawClient, topic: &str, n: u16, size: usize) {
    let payload = vec![0x5a; size];
    for id in 1..=n {
        publisher.send(&publish_v5(topic, 1, id, &no_props(), &payload));
    }
    let mut acked = 0;
    while acked < n {
        let p = publisher.read_packet();
        if p[0] >> 4 == 4 {
            acked += 1;
        }
    }
}

/// Read and discard everything the broker sends, counting PUBLISH packets; never
/// acknowledges.
fn drain_without_acking(mut c: RawClient) -> Arc<AtomicUsize> {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    c.stream.set_read_timeout(None).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    total += n;
                    counter.store(total / MB, Ordering::Relaxed);
                }
            }
        }
    });
    seen
}

/// A subscriber that reads but never PUBACKs, with no Receive Maximum (65,535): today each
/// message stayed in flight (300 × 1 MB took RSS from 9 to 301 MB). In-flight bytes are
/// now bounded by --max-inflight-bytes and the count by --max-inflight-messages.
#[test]
fn a_subscriber_that_never_acknowledges_holds_bounded_in_flight_bytes() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&[
        "--in-memory",
        "--max-packet-size",
        "2000000",
        "--max-queued-messages",
        "10",
        "--max-inflight-bytes",
        "4000000",
    ]);
    let (mut sub, _) = RawClient::v5(b.addr, "never-acks");
    sub.send(&subscribe(1, Some(&no_props()), &[("big/#", 1)]));
    assert_eq!(sub.read_packet()[0], 0x90, "SUBACK");
    let received_mb = drain_without_acking(sub);
    let (mut publisher, _) = RawClient::v5(b.addr, "big-publisher");
    let before = b.rss_kib();
    publish_acked(&mut publisher, "big/x", 300, MB);
    let grew = grew_mib(&b, before);
    eprintln!(
        "in flight: RSS +{grew} MiB; subscriber received {} MB",
        received_mb.load(Ordering::Relaxed)
    );
    assert!(
        grew < 60,
        "RSS grew {grew} MiB for a subscriber that never acknowledges"
    );
    // At most the in-flight budget (4 MB, plus the one that opened it) was sent.
    assert!(received_mb.load(Ordering::Relaxed) <= 6);
    let (_fresh, _) = RawClient::v5(b.addr, "fresh-after-inflight");
}

/// A subscriber that does not read: its queue is bounded in bytes (--max-queued-bytes), not
/// only in messages (1,000 × 1 MB leveled off at 1,563 MB before).
#[test]
fn a_stalled_subscriber_queue_is_bounded_in_bytes() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&[
        "--in-memory",
        "--max-packet-size",
        "2000000",
        "--max-queued-bytes",
        "20000000",
    ]);
    let (mut sub, _) = RawClient::v5(b.addr, "stalled");
    sub.send(&subscribe(1, Some(&no_props()), &[("flood/#", 1)]));
    assert_eq!(sub.read_packet()[0], 0x90, "SUBACK");
    let (mut publisher, _) = RawClient::v5(b.addr, "flooder");
    let before = b.rss_kib();
    publish_acked(&mut publisher, "flood/x", 200, MB);
    let grew = grew_mib(&b, before);
    eprintln!("stalled subscriber: RSS +{grew} MiB");
    assert!(
        grew < 70,
        "RSS grew {grew} MiB for a subscriber that does not read"
    );
    drop(sub);
    let (_fresh, _) = RawClient::v5(b.addr, "fresh-after-stall");
}

/// ~1 MB of empty user properties: 200,000 × (0x26, "", "").
fn padding() -> Vec<u8> {
    let mut p = Vec::with_capacity(MB);
    while p.len() < MB - 5 {
        p.extend_from_slice(&[0x26, 0, 0, 0, 0]);
    }
    p
}

fn props_with(extra: &[u8], padding: &[u8]) -> Vec<u8> {
    let mut body = extra.to_vec();
    body.extend_from_slice(padding);
    let mut out = varint(body.len() as u32);
    out.extend_from_slice(&body);
    out
}

/// An offline session whose CONNECT was padded to 1 MB kept the whole packet (its client id
/// was a slice of it): 1.4 MB per session instead of 1.7 KB. What a session keeps is now
/// copied out of the packet.
///
/// Measured as the growth over the second 30 sessions: pinning grows with every session
/// (30 × 1.4 MB), while the allocator keeping freed 1 MB read buffers for reuse is a one-off
/// that the first 30 pay (and that grows with the number of connection threads, each with
/// its own malloc arena).
#[test]
fn padded_connects_do_not_pin_their_packets_in_offline_sessions() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&["--in-memory", "--max-packet-size", "2000000"]);
    let pad = padding();
    let before = b.rss_kib();
    let mut halfway = 0;
    for i in 0..60 {
        if i == 30 {
            halfway = b.rss_kib();
        }
        let mut c = RawClient::open(b.addr);
        // Session Expiry Interval 3600: the session stays after the connection.
        let props = props_with(&p_u32(0x11, 3600), &pad);
        c.send(&connect_raw_v5(&format!("padded-{i}"), &props));
        let ack = c.expect_connack(true);
        assert_eq!(ack.code, 0);
        c.send(&[0xE0, 0x00]);
        c.expect_closed();
    }
    let (grew, second_half) = (grew_mib(&b, before), grew_mib(&b, halfway));
    eprintln!(
        "60 offline sessions from padded CONNECTs: RSS +{grew} MiB, +{second_half} MiB over the last 30"
    );
    assert!(
        second_half < 20,
        "RSS grew {second_half} MiB for 30 more offline sessions (pinned packets: ~42 MiB)"
    );
    let (_fresh, _) = RawClient::v5(b.addr, "fresh-after-padded");
}

/// A v5 CONNECT with properties given as a whole block (length included), clean start.
fn connect_raw_v5(client_id: &str, props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags::CLEAN, 0, 0];
    body.extend_from_slice(props);
    body.extend_from_slice(&lp(client_id.as_bytes()));
    packet(0x10, &body)
}

/// 64 topic aliases each set by a PUBLISH padded to 1 MB kept 64 MB per connection (the
/// alias topic was a slice of the packet).
#[test]
fn topic_aliases_do_not_pin_their_packets() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&["--in-memory", "--max-packet-size", "2000000"]);
    let (mut c, _) = RawClient::v5(b.addr, "aliaser");
    let pad = padding();
    let before = b.rss_kib();
    for alias in 1..=64u16 {
        let props = props_with(&p_u16(0x23, alias), &pad);
        c.send(&publish_v5(
            &format!("alias/{alias}"),
            1,
            alias,
            &props,
            b"x",
        ));
        let ack = c.read_packet();
        assert_eq!(ack[0] >> 4, 4, "PUBACK");
    }
    let grew = grew_mib(&b, before);
    eprintln!("64 aliases set by 1 MB PUBLISHes: RSS +{grew} MiB");
    assert!(grew < 40, "RSS grew {grew} MiB for 64 aliases");
    let (_fresh, _) = RawClient::v5(b.addr, "fresh-after-aliases");
}

/// 100,000 subscriptions from one client cost 151 MB: a session holds at most
/// --max-subscriptions-per-session; beyond, SUBACK 0x97 (v5) / 0x80 (v3). Re-subscribing to a
/// filter it holds replaces it [MQTT-3.8.4-3] and is allowed at the limit.
#[test]
fn subscriptions_per_session_are_bounded() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&["--in-memory", "--max-subscriptions-per-session", "100"]);
    let names: Vec<String> = (0..150).map(|i| format!("s/{i}")).collect();
    let filters: Vec<(&str, u8)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    for (v5, id) in [(true, "many-subs-v5"), (false, "many-subs-v3")] {
        let mut c = if v5 {
            RawClient::v5(b.addr, id).0
        } else {
            RawClient::v311(b.addr, id)
        };
        let props = no_props();
        c.send(&subscribe(1, v5.then_some(&props[..]), &filters));
        let suback = c.read_packet();
        let codes = &suback[suback.len() - 150..];
        assert!(codes[..100].iter().all(|c| *c == 1), "{codes:?}");
        let refused = if v5 { 0x97 } else { 0x80 };
        assert!(codes[100..].iter().all(|c| *c == refused), "{codes:?}");
        // At the limit, an existing filter can be subscribed again.
        c.send(&subscribe(2, v5.then_some(&props[..]), &[("s/0", 0)]));
        let again = c.read_packet();
        assert_eq!(
            *again.last().unwrap(),
            0,
            "re-subscribe at the limit: {again:?}"
        );
    }
    let (_fresh, _) = RawClient::v5(b.addr, "fresh-after-subs");
}

/// Subscriptions in the whole broker are bounded too (--max-subscriptions): a second client
/// gets 0x97 for what is beyond; both refusals are counted (SIGUSR1 state line).
#[test]
fn subscriptions_in_the_broker_are_bounded_and_counted() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&[
        "--in-memory",
        "--max-subscriptions",
        "150",
        "--max-subscriptions-per-session",
        "100",
    ]);
    let props = no_props();
    let mut granted = Vec::new();
    // Kept connected: their subscriptions stay while the second client subscribes.
    let mut clients = Vec::new();
    for id in ["total-a", "total-b"] {
        let (mut c, _) = RawClient::v5(b.addr, id);
        let names: Vec<String> = (0..120).map(|i| format!("{id}/{i}")).collect();
        let filters: Vec<(&str, u8)> = names.iter().map(|n| (n.as_str(), 0)).collect();
        c.send(&subscribe(1, Some(&props[..]), &filters));
        let suback = c.read_packet();
        let codes = suback[suback.len() - 120..].to_vec();
        granted.push(codes.iter().filter(|c| **c == 0).count());
        assert!(codes.iter().all(|c| *c == 0 || *c == 0x97), "{codes:?}");
        clients.push(c);
    }
    // a: 100 (its own limit), b: the 50 left in the broker.
    assert_eq!(granted, [100, 50]);
    std::process::Command::new("kill")
        .args(["-USR1", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(
        b.wait_for_log("max_subscriptions_per_session=20", Duration::from_secs(20))
            && b.wait_for_log("max_subscriptions=70", Duration::from_secs(20)),
        "{}",
        b.log()
    );
}
