//! The memory budget the broker defends (--memory-budget), under four floods, with broker
//! RSS sampled throughout from /proc/PID/status. Every per-client limit that would bound the
//! flood on its own is raised out of the way, so the budget is what holds: without it each
//! flood grows the broker by hundreds of MB. After each, the load is released and a fresh
//! client is served.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;

const MB: usize = 1_000_000;
const BUDGET: &str = "50000000";

/// The per-client limits raised, so only the budget bounds what a flood holds.
fn start(budget: &str) -> Broker {
    Broker::start_with(&[
        "--in-memory",
        "--memory-budget",
        budget,
        "--max-packet-size",
        "2000000",
        "--max-queued-messages",
        "1000000",
        "--max-queued-bytes",
        "100000000000",
        "--max-inflight-messages",
        "65535",
        "--max-inflight-bytes",
        "100000000000",
        "--max-retained-bytes",
        "100000000000",
        "--max-connect-rate-per-address",
        "1000000",
        "--max-connections-per-address",
        "100000",
        // Session churn from one address must meet the budget, not this limit.
        "--max-sessions-per-address",
        "1000000",
    ])
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the broker's RSS every 10 ms until stopped; the peak in KiB.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak_kib(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Publish `n` QoS 1 messages and wait for every acknowledgement; their reason codes.
fn publish_all(
    c: &mut RawClient,
    topic: impl Fn(u16) -> String,
    n: u16,
    size: usize,
    retain: bool,
) -> Vec<u8> {
    let payload = vec![0x42; size];
    let flags = pub_flags(1, false, retain);
    for id in 1..=n {
        c.send(&publish_raw(
            flags,
            topic(id).as_bytes(),
            Some(id),
            Some(&no_props()),
            &payload,
        ));
    }
    let mut codes = Vec::new();
    while codes.len() < usize::from(n) {
        let p = c.read_packet();
        if p[0] >> 4 == 4 {
            codes.push(if p.len() > 4 { p[4] } else { 0 });
        }
    }
    codes
}

fn subscribed(b: &Broker, id: &str, filter: &str) -> RawClient {
    let (mut c, _) = RawClient::v5(b.addr, id);
    c.send(&subscribe(1, Some(&no_props()), &[(filter, 1)]));
    assert_eq!(c.read_packet()[0], 0x90, "SUBACK");
    c
}

/// A fresh client is served within 20 s (the pressure eases once the load is released).
fn fresh_client_is_served(b: &Broker, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = RawClient::open(b.addr);
        c.send(&connect_v5(id, flags::CLEAN, 0, &no_props()));
        if c.expect_connack(true).code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no fresh client served:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bounded well below what each flood reaches without a budget (+188 to +307 MiB measured),
/// with room for the monitor thread being scheduled late on a busy machine.
fn assert_bounded(b: &Broker, what: &str, base: u64, peak: u64) {
    let grew = peak.saturating_sub(base) / 1024;
    eprintln!(
        "{what}: RSS base {} MiB, peak {} MiB (+{grew} MiB), budget 50 MB",
        base / 1024,
        peak / 1024
    );
    assert!(
        grew < 150,
        "{what}: RSS grew {grew} MiB against a 50 MB budget:\n{}",
        b.log()
    );
    assert!(
        b.log().contains("memory budget: shedding load"),
        "{what}: the budget acted"
    );
}

/// Flood 1: a subscriber that does not read; one publisher sends 300 × 1 MB.
#[test]
fn a_non_reading_subscriber_cannot_take_the_broker_past_its_budget() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(BUDGET);
    let sub = subscribed(&b, "budget-stalled", "stall/#");
    let (mut p, _) = RawClient::v5(b.addr, "budget-pub");
    let base = rss_kib(b.pid());
    let sampler = Sampler::start(b.pid());
    publish_all(&mut p, |_| "stall/x".into(), 300, MB, false);
    assert_bounded(&b, "non-reading subscriber", base, sampler.peak_kib());
    drop(sub);
    fresh_client_is_served(&b, "after-stall");
}

/// Flood 2: four publishers, 4 × 80 × 1 MB, to a subscriber that reads but never
/// acknowledges (in-flight limits raised: only the budget stops messages going in flight).
#[test]
fn a_publisher_flood_to_a_non_acknowledging_subscriber_stays_within_the_budget() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(BUDGET);
    let sub = subscribed(&b, "budget-never-acks", "flood/#");
    sub.stream.set_read_timeout(None).unwrap();
    let mut reader = sub.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 18];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let base = rss_kib(b.pid());
    let sampler = Sampler::start(b.pid());
    let publishers: Vec<_> = (0..4)
        .map(|i| {
            let (mut p, _) = RawClient::v5(b.addr, &format!("budget-flood-{i}"));
            std::thread::spawn(move || {
                publish_all(&mut p, |_| format!("flood/{i}"), 80, MB, false);
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    assert_bounded(&b, "publisher flood", base, sampler.peak_kib());
    // The reading thread holds a clone of the socket: shut it down to end the session.
    sub.stream.shutdown(std::net::Shutdown::Both).unwrap();
    fresh_client_is_served(&b, "after-flood");
}

/// Flood 3: 400 retained messages of 500 kB on distinct topics; beyond the budget they
/// are refused with PUBACK 0x97.
#[test]
fn a_retained_flood_is_refused_at_the_budget() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start(BUDGET);
    let (mut p, _) = RawClient::v5(b.addr, "budget-retainer");
    let base = rss_kib(b.pid());
    let sampler = Sampler::start(b.pid());
    let codes = publish_all(&mut p, |i| format!("kept/{i}"), 400, MB / 2, true);
    assert_bounded(&b, "retained flood", base, sampler.peak_kib());
    assert!(
        codes.contains(&0x97),
        "refused with 0x97 Quota exceeded: {codes:?}"
    );
    // Deleting the retained messages releases the budget.
    for i in 1..=400u16 {
        p.send(&publish_raw(
            pub_flags(0, false, true),
            format!("kept/{i}").as_bytes(),
            None,
            Some(&no_props()),
            b"",
        ));
    }
    p.send(&[0xC0, 0x00]);
    while p.read_packet()[0] != 0xD0 {}
    fresh_client_is_served(&b, "after-retained");
}

/// Flood 4: session churn: clients that leave persistent sessions behind (expiry 2 s)
/// until new connections are refused (CONNACK 0x89 Server busy) at 80 % of an 8 MB budget;
/// once the sessions expire, a fresh client is served again.
#[test]
fn session_churn_is_refused_at_the_budget_until_sessions_expire() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = start("8000000");
    let base = rss_kib(b.pid());
    let sampler = Sampler::start(b.pid());
    let expiry = props(&[p_u32(0x11, 2)]);
    let mut refused_at = None;
    for i in 0..20_000 {
        let mut c = RawClient::open(b.addr);
        c.send(&connect_v5(&format!("churn-{i}"), flags::CLEAN, 0, &expiry));
        let ack = c.expect_connack(true);
        if ack.code != 0 {
            assert_eq!(ack.code, 0x89, "Server busy");
            refused_at = Some(i);
            break;
        }
        c.send(&subscribe(1, Some(&no_props()), &[("churn/#", 1)]));
        c.read_packet();
        c.send(&[0xE0, 0x00]);
    }
    let peak = sampler.peak_kib();
    let refused_at = refused_at.expect("session churn was never refused");
    eprintln!(
        "session churn: refused after {refused_at} sessions; RSS +{} MiB",
        peak.saturating_sub(base) / 1024
    );
    assert!(peak.saturating_sub(base) / 1024 < 60);
    fresh_client_is_served(&b, "after-churn");
}
