//! The history checker (`edgemq_testkit::history`, `docs/cluster.md`) driven by a crash: a
//! QoS 1 stream is published while a persistent subscriber is online (and another one is
//! offline), the broker is
//! SIGKILLed mid-stream and restarted on the same data dir and port, both clients resume
//! their sessions, and the recorded history must show no loss, nothing unexpected and no
//! reordering.
//!
//! The clients are raw (see `edgemq_testkit::raw`) so the test records exactly which
//! PUBACKs it got and every PUBLISH it was sent.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::{free_port, Broker};
use edgemq_testkit::history::{Event as HEvent, Expectations, History, Outcome, PayloadId};
use edgemq_testkit::raw::*;

const TOPIC: &str = "hist/stream";
const FILTER: &str = "hist/#";
const PUBLISHER: &str = "hist-pub";
/// Online through the crash.
const SUBSCRIBER: &str = "hist-sub";
/// Offline from before the stream until after the restart: everything reaches it from its
/// queue.
const OFFLINE: &str = "hist-offline";
/// Messages in the stream, and how many must be acknowledged before the kill.
const N: u64 = 400;
const KILL_AFTER: usize = 150;
/// Unacknowledged messages the publisher keeps in flight (below the broker's Receive
/// Maximum), so the kill lands with some written but not acknowledged.
const WINDOW: usize = 16;
/// Failure bound for the whole run; a correct broker needs a few seconds.
const DEADLINE: Duration = Duration::from_secs(90);

fn start(data: &Path, port: u16) -> Broker {
    // The default sync policy (`always`): a PUBACK waits for the commit.
    Broker::start_listening(
        &format!("127.0.0.1:{port}"),
        &["--data-dir", data.to_str().unwrap()],
    )
}

/// Connect a v5 client with a persistent session (expiry 1 h), retrying while the broker
/// is down (being restarted) until `deadline`.
fn connect(
    addr: SocketAddr,
    client_id: &str,
    clean: bool,
    deadline: Instant,
) -> (RawClient, Connack) {
    loop {
        assert!(
            Instant::now() < deadline,
            "{client_id}: could not reconnect"
        );
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let mut c = RawClient::from_stream(stream);
        c.send_lenient(&connect_v5(
            client_id,
            if clean { flags::CLEAN } else { 0 },
            0,
            &props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 3600)]),
        ));
        match c.next_event_or_crash(WAIT) {
            Event::Packet(p) => {
                let ack = parse_connack(&p, true);
                assert_eq!(ack.code, 0, "{client_id}: CONNACK refused: {ack:?}");
                return (c, ack);
            }
            // Accepted by a listener that was going away: try again.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The publisher: `N` QoS 1 messages on `TOPIC`, at most `WINDOW` unacknowledged. When the
/// connection dies it reconnects with its session and re-sends every unacknowledged
/// PUBLISH, in order, with the same packet identifier and DUP set [MQTT-4.4.0-1]
/// [MQTT-4.6.0-1]. Each message is recorded once, when first invoked (before it is written).
fn publish_stream(addr: SocketAddr, history: Arc<Mutex<History>>, deadline: Instant) {
    let (mut c, _) = connect(addr, PUBLISHER, true, deadline);
    // Packet identifier -> (sequence number, history reference), in sending order.
    let mut inflight = BTreeMap::new();
    let mut next = 1u64;
    let packet = |seq: u64, dup: bool| {
        let pid = u16::try_from(seq).unwrap();
        publish_raw(
            pub_flags(1, dup, false),
            TOPIC.as_bytes(),
            Some(pid),
            Some(&no_props()),
            &PayloadId::new(PUBLISHER, seq).encode_padded(64),
        )
    };
    while next <= N || !inflight.is_empty() {
        while inflight.len() < WINDOW && next <= N {
            let r = history.lock().unwrap().publish(
                PUBLISHER,
                TOPIC,
                PayloadId::new(PUBLISHER, next),
                1,
            );
            inflight.insert(u16::try_from(next).unwrap(), (next, r));
            c.send_lenient(&packet(next, false));
            next += 1;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match c.next_event_or_crash(remaining) {
            Event::Packet(p) if p[0] == 0x40 => {
                let pid = u16::from_be_bytes([p[2], p[3]]);
                let code = p.get(4).copied().unwrap_or(0);
                let (_, r) = inflight
                    .remove(&pid)
                    .unwrap_or_else(|| panic!("PUBACK for {pid}, not in flight"));
                let outcome = if code < 0x80 {
                    Outcome::Acked
                } else {
                    Outcome::Refused
                };
                history.lock().unwrap().resolve(r, outcome);
            }
            Event::Packet(p) => panic!("publisher got {}", hex(&p)),
            Event::Closed => {
                let (fresh, ack) = connect(addr, PUBLISHER, false, deadline);
                assert!(ack.session_present, "the publisher's session is back");
                c = fresh;
                for (seq, _) in inflight.values() {
                    c.send_lenient(&packet(*seq, true));
                }
            }
            Event::TimedOut => panic!("publisher: no PUBACK before the deadline"),
        }
    }
    c.send_lenient(&DISCONNECT);
}

/// The subscriber: acknowledges every PUBLISH after recording it; when the connection dies
/// it resumes its session (clean start 0) [MQTT-3.2.2-2]. Stops once `done` is set, every
/// message of the stream arrived, and the broker stayed quiet for a second (so late
/// duplicates are seen); or at the deadline (then the checker reports what is missing).
fn subscribe_until_drained(
    name: &str,
    mut c: RawClient,
    addr: SocketAddr,
    history: Arc<Mutex<History>>,
    done: Arc<AtomicBool>,
    deadline: Instant,
) {
    let mut seen = BTreeSet::new();
    loop {
        if Instant::now() >= deadline {
            return;
        }
        let all_in = done.load(Ordering::SeqCst) && seen.len() as u64 == N;
        let wait = if all_in {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        };
        match c.next_event_or_crash(wait) {
            Event::Packet(p) if p[0] & 0xF0 == 0x30 => {
                let publish = parse_publish(&p, true);
                history.lock().unwrap().deliver(
                    name,
                    &publish.topic,
                    &publish.payload,
                    publish.qos,
                    publish.dup,
                );
                if let Some(id) = PayloadId::decode(&publish.payload) {
                    seen.insert(id.seq);
                }
                if let Some(pid) = publish.pid {
                    c.send_lenient(&puback(pid));
                }
            }
            Event::Packet(p) => panic!("subscriber got {}", hex(&p)),
            Event::Closed => {
                let (fresh, ack) = connect(addr, name, false, deadline);
                assert!(
                    ack.session_present,
                    "the subscriber's session survives the crash [MQTT-3.2.2-2]"
                );
                c = fresh;
            }
            Event::TimedOut if all_in => {
                c.send_lenient(&DISCONNECT);
                return;
            }
            Event::TimedOut => {}
        }
    }
}

/// A new persistent session (clean start) subscribed to `FILTER` at QoS 1, recorded.
fn subscribed(
    addr: SocketAddr,
    name: &str,
    history: &Mutex<History>,
    deadline: Instant,
) -> RawClient {
    let (mut c, ack) = connect(addr, name, true, deadline);
    assert!(!ack.session_present);
    c.send(&subscribe(1, Some(&no_props()), &[(FILTER, 1)]));
    let suback = c.read_packet();
    assert_eq!(suback[0], 0x90, "expected SUBACK, got {}", hex(&suback));
    let granted = *suback.last().unwrap();
    assert_eq!(granted, 1, "QoS 1 granted");
    history.lock().unwrap().subscribed(name, FILTER, granted);
    c
}

fn acked(history: &Mutex<History>) -> usize {
    let h = history.lock().unwrap();
    h.events()
        .iter()
        .filter(|e| {
            matches!(
                e,
                HEvent::Publish {
                    outcome: Outcome::Acked,
                    ..
                }
            )
        })
        .count()
}

/// A persistent QoS 1 subscriber is online (and another offline, its messages queued) while
/// a publisher streams QoS 1 messages; the
/// broker is SIGKILLed once `KILL_AFTER` are acknowledged and restarted on the same data dir
/// and port. After the clients resumed and the stream drained, the history shows:
/// - no acknowledged message lost: a PUBACK means the broker accepted ownership
///   [MQTT-4.3.2-4], and under the default sync policy that it is committed; the
///   subscriber's session, with its queued and in-flight messages, comes back
///   [MQTT-3.2.2-2] and its unacknowledged deliveries are re-sent [MQTT-4.4.0-1];
/// - nothing unexpected (no payload that was never published, none on another topic);
/// - no reordering of first receipts: the publisher re-sends in order [MQTT-4.6.0-1] and the
///   broker forwards one publisher's messages on a topic and QoS in the order it received
///   them [MQTT-4.6.0-6]. Redelivered copies after the restart are QoS 1 duplicates, allowed
///   and counted [MQTT-4.3.2-*];
/// - no forbidden duplicate (the checker counts QoS 0 and QoS 2 copies; here everything is
///   QoS 1, so this only guards the checker's bookkeeping).
#[test]
fn a_qos1_stream_survives_kill_9_without_loss_or_reordering() {
    if !Broker::edgemq_only() {
        return;
    }
    let deadline = Instant::now() + DEADLINE;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start(data.path(), port);
    let addr = broker.addr;
    let history = Arc::new(Mutex::new(History::new()));

    let sub = subscribed(addr, SUBSCRIBER, &history, deadline);
    let mut offline = subscribed(addr, OFFLINE, &history, deadline);
    // A normal DISCONNECT keeps the session (expiry 1 h) [MQTT-3.1.2-23].
    offline.send(&DISCONNECT);
    offline.expect_closed();

    let done = Arc::new(AtomicBool::new(false));
    let subscriber = {
        let (history, done) = (history.clone(), done.clone());
        std::thread::spawn(move || {
            subscribe_until_drained(SUBSCRIBER, sub, addr, history, done, deadline);
        })
    };
    let publisher = {
        let history = history.clone();
        std::thread::spawn(move || publish_stream(addr, history, deadline))
    };

    // Mid-stream: SIGKILL once KILL_AFTER messages are acknowledged (the wait is a failure
    // bound, not an assertion about timing).
    while acked(&history) < KILL_AFTER {
        assert!(
            Instant::now() < deadline && !publisher.is_finished(),
            "the broker acknowledged too little; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    broker.kill_hard();
    let acked_at_kill = acked(&history);
    let broker = start(data.path(), port);
    assert_eq!(broker.addr, addr);
    assert!(
        broker.log().contains("store: state recovered"),
        "{}",
        broker.log()
    );

    // The offline subscriber comes back to the restarted broker: its session and queue
    // survived the crash [MQTT-3.2.2-2].
    let (offline, ack) = connect(addr, OFFLINE, false, deadline);
    assert!(
        ack.session_present,
        "{OFFLINE}'s session survives the crash"
    );
    let offline = {
        let (history, done) = (history.clone(), done.clone());
        std::thread::spawn(move || {
            subscribe_until_drained(OFFLINE, offline, addr, history, done, deadline);
        })
    };

    let published = publisher.join();
    done.store(true, Ordering::SeqCst);
    let subscribed = [subscriber.join(), offline.join()];
    if published.is_err() || subscribed.iter().any(Result::is_err) {
        panic!(
            "a client failed (publisher ok: {}, subscribers ok: {:?}); log:\n{}",
            published.is_ok(),
            subscribed.iter().map(Result::is_ok).collect::<Vec<_>>(),
            broker.log()
        );
    }

    let history = history.lock().unwrap();
    let report = history.check(&Expectations::default());
    eprintln!("killed after {acked_at_kill} acknowledgements\n{report}");
    if !report.is_clean() {
        // Kept for checking offline (History::from_json_lines).
        let path = std::env::temp_dir().join(format!("history_kill9-{}.jsonl", std::process::id()));
        std::fs::write(&path, history.to_json_lines()).unwrap();
        eprintln!("history kept in {}", path.display());
    }
    assert_eq!(report.publishes, N as usize);
    assert_eq!(
        report.acked, N as usize,
        "every message acknowledged in the end"
    );
    assert_eq!(
        report.total.owed,
        2 * N as usize,
        "both subscribers owed everything"
    );
    assert_eq!(report.total.lost, 0, "{report}");
    assert_eq!(report.total.unexpected, 0, "{report}");
    assert_eq!(report.total.reordered, 0, "{report}");
    assert_eq!(report.total.duplicated, 0, "{report}");
    assert!(report.is_clean(), "{report}");
}
