//! Durable state: what the broker acknowledged survives `kill -9`; a damaged store is moved
//! aside; retained messages stream to a `#` subscriber in bounded memory.
//!
//! The clients are hand-built packets (see `edgemq_testkit::raw`) so the test knows exactly which
//! PUBACK/PUBREC the broker sent before it died.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::{run_with_timeout, Broker};
use edgemq_testkit::raw::*;

fn start(data: &Path, extra: &[&str]) -> Broker {
    let mut args = vec!["--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

/// A new persistent session (clean start) subscribed to `filter` at `qos`.
fn subscribed(addr: SocketAddr, client_id: &str, filter: &str, qos: u8) -> RawClient {
    let (mut c, ack) = persistent_v5_session(addr, client_id, true);
    assert!(!ack.session_present);
    c.send(&subscribe(1, Some(&no_props()), &[(filter, qos)]));
    suback(&mut c);
    c
}

fn suback(c: &mut RawClient) -> Vec<u8> {
    let p = c.read_packet();
    assert_eq!(p[0], 0x90, "expected SUBACK, got {}", hex(&p));
    p
}

fn expect_puback(c: &mut RawClient, pid: u16, broker: &Broker) {
    match c.next_event(WAIT) {
        Event::Packet(p) => assert_eq!(p, puback(pid), "{}", hex(&p)),
        other => panic!("no PUBACK: {other:?}; log:\n{}", broker.log()),
    }
}

/// What the publisher learnt before the broker died.
#[derive(Default)]
struct Acked {
    qos1: BTreeSet<String>,
    qos2: BTreeSet<String>,
}

/// Publish `n` QoS 1 and `n` QoS 2 messages to `crash/…` as fast as the broker takes them
/// (v3.1.1, clean session), and SIGKILL the broker once `kill_after` of them were
/// acknowledged. Returns which were acknowledged (PUBACK / PUBREC) before it died.
fn publish_until_killed(broker: &mut Broker, n: u16, kill_after: usize) -> Acked {
    let c = RawClient::v311(broker.addr, "crash-publisher");
    let stream = c.stream.try_clone().unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let count = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let reader = {
        let (acked, count, closed) = (acked.clone(), count.clone(), closed.clone());
        let mut writer = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            read_packets(stream, |p| {
                let pid = u16::from_be_bytes([p[2], p[3]]);
                match p[0] {
                    0x40 => {
                        acked.lock().unwrap().qos1.insert(format!("q1-{pid}"));
                    }
                    0x50 => {
                        acked.lock().unwrap().qos2.insert(format!("q2-{}", pid - n));
                        let _ = writer.write_all(&pubrel(pid));
                    }
                    _ => return,
                }
                count.fetch_add(1, Ordering::SeqCst);
            });
            closed.store(true, Ordering::SeqCst);
        })
    };
    // Like a client library: at most WINDOW messages unacknowledged, so the stream spans
    // many commits and the kill lands in the middle of it.
    const WINDOW: usize = 16;
    let writer = {
        let mut stream = c.stream.try_clone().unwrap();
        let (count, closed) = (count.clone(), closed.clone());
        std::thread::spawn(move || {
            for i in 1..=n {
                let sent = 2 * usize::from(i - 1);
                while sent > count.load(Ordering::SeqCst) + WINDOW {
                    if closed.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let mut burst = publish_v311("crash/q1", 1, i, format!("q1-{i}").as_bytes());
                burst.extend(publish_v311(
                    "crash/q2",
                    2,
                    n + i,
                    format!("q2-{i}").as_bytes(),
                ));
                if stream.write_all(&burst).is_err() {
                    return;
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < kill_after {
        assert!(
            Instant::now() < deadline,
            "the broker acknowledged too little"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    broker.kill_hard();
    writer.join().unwrap();
    reader.join().unwrap();
    drop(c);
    Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap()
}

/// Take messages on a resumed session until every one of `expected` arrived (acknowledging
/// each, completing QoS 2 exchanges), then until the broker is quiet; returns how often
/// each payload arrived.
fn drain_session(c: &mut RawClient, expected: &BTreeSet<String>) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all_in = expected.iter().all(|p| seen.contains_key(p));
        let wait = if all_in {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let packet = match c.next_event(wait) {
            Event::Packet(p) => p,
            Event::TimedOut if all_in => return seen,
            other => {
                let missing: Vec<_> = expected.iter().filter(|p| !seen.contains_key(*p)).collect();
                panic!("{other:?} with acknowledged messages missing: {missing:?}");
            }
        };
        match packet[0] & 0xF0 {
            0x30 => {
                let publish = parse_publish(&packet, true);
                *seen
                    .entry(String::from_utf8(publish.payload).unwrap())
                    .or_default() += 1;
                match publish.qos {
                    1 => c.send(&puback(publish.pid.unwrap())),
                    2 => c.send(&pubrec(publish.pid.unwrap())),
                    _ => {}
                }
            }
            0x60 => c.send(&pubcomp(u16::from_be_bytes([packet[2], packet[3]]))),
            _ => panic!("unexpected packet {}", hex(&packet)),
        }
    }
}

/// The crash test: a persistent subscriber is offline, a publisher streams QoS 1 and
/// QoS 2 messages, the broker is SIGKILLed mid-stream (at several points, under each sync
/// policy: a killed process loses nothing committed under any of them), restarted, and the
/// subscriber resumes: every acknowledged message arrives, QoS 2 exactly once
/// [MQTT-4.3.3]; the retained message and the subscription are back.
#[test]
fn acknowledged_messages_survive_kill_9_at_several_points() {
    if !Broker::edgemq_only() {
        return;
    }
    const N: u16 = 300;
    for (kill_after, sync) in [(1, "always"), (250, "interval-ms=10"), (520, "never")] {
        let data = tempfile::tempdir().unwrap();
        let flags: &[&str] = &["--receive-maximum", "1000", "--sync", sync];
        let mut broker = start(data.path(), flags);

        let mut sub = subscribed(broker.addr, "crash-sub", "crash/#", 2);
        sub.send(&DISCONNECT);
        sub.expect_closed();

        let mut retainer = RawClient::v311(broker.addr, "retainer");
        retainer.send(&publish_raw(
            pub_flags(1, false, true),
            b"crash/retained",
            Some(1),
            None,
            b"kept",
        ));
        expect_puback(&mut retainer, 1, &broker);
        drop(retainer);

        let acked = publish_until_killed(&mut broker, N, kill_after);
        assert!(acked.qos1.len() + acked.qos2.len() >= kill_after);

        let broker = start(data.path(), flags);
        assert!(
            broker.log().contains("store: state recovered"),
            "{}",
            broker.log()
        );
        let (mut sub, ack) = persistent_v5_session(broker.addr, "crash-sub", false);
        assert!(ack.session_present, "the session is back [MQTT-3.2.2-2]");
        let mut expected: BTreeSet<String> = acked.qos1.union(&acked.qos2).cloned().collect();
        expected.insert("kept".into());
        let seen = drain_session(&mut sub, &expected);
        for (payload, times) in &seen {
            if payload.starts_with("q2-") {
                assert_eq!(*times, 1, "QoS 2 message {payload} delivered {times} times (kill after {kill_after}, sync {sync})");
            }
        }

        // The subscription itself is back: a message published now arrives.
        let mut p = RawClient::v311(broker.addr, "after");
        p.send(&publish_v311("crash/after", 1, 1, b"after-restart"));
        expect_puback(&mut p, 1, &broker);
        let after = sub.expect_publish(true);
        assert_eq!(after.payload, b"after-restart");
        sub.send(&puback(after.pid.unwrap()));

        // And the retained message, for a new subscriber.
        let (mut fresh, _) = RawClient::v5(broker.addr, "fresh");
        fresh.send(&subscribe(1, Some(&no_props()), &[("crash/retained", 1)]));
        suback(&mut fresh);
        let retained = fresh.expect_publish(true);
        assert!(retained.retain, "[MQTT-3.3.1-8]");
        assert_eq!(retained.payload, b"kept");
        eprintln!(
            "kill after {kill_after} acks (sync {sync}): {} QoS 1 and {} QoS 2 acknowledged; {} distinct messages delivered after the restart",
            acked.qos1.len(),
            acked.qos2.len(),
            seen.len()
        );
    }
}

/// QoS 2 state in both directions is on disk: after a crash the publisher's re-sent PUBLISH
/// is recognised (not routed twice) [MQTT-4.3.3-9], the subscriber gets the message again
/// under the same packet identifier with DUP [MQTT-4.4.0-1], and once it has answered
/// PUBREC it gets only the PUBREL, never the message again [MQTT-4.3.3].
#[test]
fn qos2_exchanges_resume_after_kill_9_without_duplicates() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut broker = start(data.path(), &[]);
    let mut sub = subscribed(broker.addr, "q2-sub", "x/#", 2);
    let (mut publisher, _) = persistent_v5_session(broker.addr, "q2-pub", true);
    publisher.send(&publish_v5("x/1", 2, 10, &no_props(), b"one"));
    publisher.expect_packet(&[0x50, 0x02, 0x00, 0x0A]);
    let first = sub.expect_publish(true);
    assert_eq!(first.payload, b"one");
    let pid = first.pid.unwrap();
    broker.kill_hard();
    drop((sub, publisher));

    let mut broker = start(data.path(), &[]);
    let (mut publisher, ack) = persistent_v5_session(broker.addr, "q2-pub", false);
    assert!(ack.session_present);
    publisher.send(&publish_raw(
        pub_flags(2, true, false),
        b"x/1",
        Some(10),
        Some(&no_props()),
        b"one",
    ));
    publisher.expect_packet(&[0x50, 0x02, 0x00, 0x0A]);
    publisher.send(&pubrel(10));
    publisher.expect_packet(&[0x70, 0x02, 0x00, 0x0A]);

    let (mut sub, ack) = persistent_v5_session(broker.addr, "q2-sub", false);
    assert!(ack.session_present);
    let again = sub.expect_publish(true);
    assert_eq!(again.payload, b"one");
    assert_eq!(
        again.pid,
        Some(pid),
        "re-sent under the identifier the client saw"
    );
    assert!(again.dup, "[MQTT-4.4.0-1] re-sent with DUP");
    sub.send(&pubrec(pid));
    sub.expect_packet(&pubrel(pid));
    sub.expect_nothing(Duration::from_millis(500));
    broker.kill_hard();
    drop((sub, publisher));

    let broker = start(data.path(), &[]);
    let (mut sub, ack) = persistent_v5_session(broker.addr, "q2-sub", false);
    assert!(ack.session_present);
    sub.expect_packet(&pubrel(pid));
    sub.send(&pubcomp(pid));
    sub.expect_nothing(Duration::from_millis(500));
}

/// A store file that cannot be read is moved aside with a loud log line and the broker
/// starts empty; with --strict-recovery it refuses to start instead.
#[test]
fn a_damaged_store_is_quarantined_and_the_broker_starts_empty() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut broker = start(data.path(), &[]);
    let sub = subscribed(broker.addr, "before-damage", "d/#", 1);
    drop(sub);
    assert_eq!(broker.terminate(), Some(0));

    // Damage the file where redb keeps its header (what a torn write on a bad disk does).
    let file = data.path().join("state.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 4096);
    bytes[..4096].fill(0xFF);
    std::fs::write(&file, &bytes).unwrap();

    // --strict-recovery: refuse, exit 2, say why, leave the file where it is.
    let (code, _out, err) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_edgemq")).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--strict-recovery",
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("damaged") && err.contains("state.redb"),
        "{err}"
    );
    assert!(file.exists());

    // Default: quarantine and start empty.
    let broker = start(data.path(), &[]);
    assert!(
        broker.wait_for_log("STORE DAMAGED", Duration::from_secs(5)),
        "{}",
        broker.log()
    );
    let aside: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.redb.damaged-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the damaged file is kept aside for inspection"
    );
    assert!(
        broker.log().contains(&aside[0]),
        "the log names where it went"
    );
    assert_eq!(std::fs::read(data.path().join(&aside[0])).unwrap(), bytes);
    let (_c, ack) = persistent_v5_session(broker.addr, "before-damage", false);
    assert!(!ack.session_present, "started empty");
}

/// 100,000 retained messages and a `#` subscriber: all arrive, streamed within the client's
/// Receive Maximum, and the broker's memory does not grow by a copy of them.
#[test]
fn a_wildcard_subscriber_gets_100k_retained_messages_in_bounded_memory() {
    if !Broker::edgemq_only() {
        return;
    }
    const COUNT: u32 = 100_000;
    const PAYLOAD: usize = 256;
    let data = tempfile::tempdir().unwrap();
    let broker = start(data.path(), &["--sync", "never"]);
    let mut publisher = RawClient::v311(broker.addr, "retainer");
    let payload = vec![b'r'; PAYLOAD];
    let mut batch = Vec::new();
    for i in 0..COUNT {
        let topic = format!("fleet/{}/{}/state", i / 1000, i % 1000);
        batch.extend(publish_raw(
            pub_flags(0, false, true),
            topic.as_bytes(),
            None,
            None,
            &payload,
        ));
        if batch.len() > 256 * 1024 {
            publisher.send(&batch);
            batch.clear();
        }
    }
    publisher.send(&batch);
    // A QoS 1 message after them: its PUBACK means all of them were taken in.
    publisher.send(&publish_raw(
        pub_flags(1, false, true),
        b"fleet/last",
        Some(1),
        None,
        &payload,
    ));
    publisher.expect_packet(&puback(1));
    let before = broker.rss_kib();

    let (mut sub, _) = RawClient::v5_with(
        broker.addr,
        "everything",
        &props(&[p_u16(prop::RECEIVE_MAXIMUM, 50)]),
    );
    sub.send(&subscribe(1, Some(&no_props()), &[("#", 1)]));
    suback(&mut sub);
    let mut received = 0u32;
    let mut peak = before;
    while received < COUNT + 1 {
        let p = sub.expect_publish(true);
        assert!(p.retain);
        assert_eq!(p.payload.len(), PAYLOAD);
        if let Some(pid) = p.pid {
            sub.send(&puback(pid));
        }
        received += 1;
        if received.is_multiple_of(5_000) {
            peak = peak.max(broker.rss_kib());
        }
    }
    sub.expect_nothing(Duration::from_millis(200));
    let grown = peak.saturating_sub(before);
    let copy_kib = u64::from(COUNT) * PAYLOAD as u64 / 1024;
    eprintln!("RSS before subscribing {before} KiB, peak while streaming {peak} KiB (+{grown} KiB); one copy of the payloads is {copy_kib} KiB");
    assert!(
        grown < copy_kib / 2,
        "memory grew by {grown} KiB streaming {COUNT} retained messages (a copy of their payloads is {copy_kib} KiB)"
    );
}

/// An offline persistent session's queue is on disk, not in memory: 60,000 QoS 1 messages of
/// 2 KiB (117 MiB) queued for it grow the broker by far less than their size (what remains is
/// the store's bounded page cache and 16 bytes per queued message), and all of them arrive,
/// in order, when the client comes back.
#[test]
fn an_offline_sessions_queue_lives_on_disk() {
    if !Broker::edgemq_only() {
        return;
    }
    const COUNT: u16 = 60_000;
    const PAYLOAD: usize = 2048;
    let data = tempfile::tempdir().unwrap();
    let broker = start(data.path(), &["--max-queued-messages", "100000"]);
    let mut sub = subscribed(broker.addr, "offline-queue", "q/#", 1);
    sub.send(&DISCONNECT);
    sub.expect_closed();
    let before = broker.rss_kib();

    // The publisher keeps at most 100 messages unacknowledged, as client libraries do.
    let mut publisher = RawClient::v311(broker.addr, "queue-filler");
    let payload = |i: u16| {
        let mut p = format!("{i:05}-").into_bytes();
        p.resize(PAYLOAD, b'q');
        p
    };
    let mut acked = 0u16;
    for i in 1..=COUNT {
        publisher.send(&publish_v311("q/data", 1, i, &payload(i)));
        if i > 100 {
            acked += 1;
            expect_puback(&mut publisher, acked, &broker);
        }
    }
    while acked < COUNT {
        acked += 1;
        expect_puback(&mut publisher, acked, &broker);
    }
    let after = broker.rss_kib();
    let grown = after.saturating_sub(before);
    let total_kib = u64::from(COUNT) * PAYLOAD as u64 / 1024;
    eprintln!("RSS {before} KiB before, {after} KiB with {COUNT} messages ({total_kib} KiB of payload) queued offline (+{grown} KiB)");
    assert!(
        grown < total_kib / 2,
        "queued messages held in memory: +{grown} KiB for {total_kib} KiB of payload"
    );

    let (mut sub, ack) = persistent_v5_session(broker.addr, "offline-queue", false);
    assert!(ack.session_present);
    for i in 1..=COUNT {
        let p = sub.expect_publish(true);
        assert_eq!(p.payload, payload(i), "message {i} in order");
        sub.send(&puback(p.pid.unwrap()));
    }
    sub.expect_nothing(Duration::from_millis(200));
}

/// A QoS 1 message in flight when its client disconnected is re-sent after a broker crash
/// under its original packet identifier with DUP set [MQTT-4.4.0-1].
#[test]
fn qos1_in_flight_at_disconnect_keeps_its_packet_id_across_kill_9() {
    if !Broker::edgemq_only() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut broker = start(data.path(), &[]);
    let mut sub = subscribed(broker.addr, "q1-sub", "y/#", 1);
    let mut publisher = RawClient::v311(broker.addr, "q1-pub");
    publisher.send(&publish_v311("y/1", 1, 1, b"unacked"));
    expect_puback(&mut publisher, 1, &broker);
    let first = sub.expect_publish(true);
    assert_eq!(first.payload, b"unacked");
    sub.send(&DISCONNECT);
    sub.expect_closed();
    // The session is handed back after the socket closes: once the broker has logged the
    // disconnect, a PUBACKed message queued behind it means its records are committed.
    assert!(broker.wait_for_log("client_id=q1-sub", WAIT));
    assert!(broker.wait_for_log("client disconnected", WAIT));
    publisher.send(&publish_v311("y/2", 1, 2, b"queued"));
    expect_puback(&mut publisher, 2, &broker);
    broker.kill_hard();

    let broker = start(data.path(), &[]);
    let (mut sub, ack) = persistent_v5_session(broker.addr, "q1-sub", false);
    assert!(ack.session_present);
    let again = sub.expect_publish(true);
    assert_eq!(again.payload, b"unacked");
    assert_eq!(again.pid, first.pid, "the original packet identifier");
    assert!(again.dup, "[MQTT-4.4.0-1] re-sent with DUP");
    sub.send(&puback(again.pid.unwrap()));
    let queued = sub.expect_publish(true);
    assert_eq!(queued.payload, b"queued");
    assert_ne!(queued.pid, first.pid);
    sub.send(&puback(queued.pid.unwrap()));
    sub.expect_nothing(Duration::from_millis(300));
}
