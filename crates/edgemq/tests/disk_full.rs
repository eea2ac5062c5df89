//! A full disk is not fatal: the store holds the acknowledgements it cannot back, retries,
//! and recovers by itself once space returns, with nothing acknowledged lost and no restart.
//!
//! The disk is a real one: an 8 MiB tmpfs mounted by the test (root, as here and in CI),
//! almost filled by a file the test writes, holding the broker's data dir.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not allowed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (not root, or no CAP_SYS_ADMIN?): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a broker still holding a file in it does not keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `path` with a file at `path`, then give `leave` bytes back.
fn fill(path: &Path, leave: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5A_u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    f.set_len(written.saturating_sub(leave)).unwrap();
    f.sync_all().unwrap();
}

fn payload(i: u16) -> Vec<u8> {
    let mut p = format!("m-{i}:").into_bytes();
    p.resize(8 * 1024, b'.');
    p
}

fn name_of(p: &[u8]) -> String {
    let end = p.iter().position(|b| *b == b':').unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// A QoS 1 publisher (3.1.1, keep-alive 0) with at most `WINDOW` messages unacknowledged,
/// sending until told to stop; what was PUBACKed is recorded.
struct Publisher {
    sent: Arc<AtomicUsize>,
    acked: Arc<Mutex<BTreeSet<u16>>>,
    stop: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    stream: TcpStream,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

const WINDOW: usize = 16;

impl Publisher {
    fn start(addr: SocketAddr, limit: u16) -> Publisher {
        let c = RawClient::v311(addr, "df-pub");
        let sent = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (acked, closed) = (acked.clone(), closed.clone());
            let stream = c.stream.try_clone().unwrap();
            std::thread::spawn(move || {
                read_packets(stream, |p| {
                    assert_eq!(p[0], 0x40, "expected PUBACK, got {}", hex(p));
                    acked
                        .lock()
                        .unwrap()
                        .insert(u16::from_be_bytes([p[2], p[3]]));
                });
                closed.store(true, Ordering::SeqCst);
            })
        };
        let writer = {
            let (sent, acked, stop, closed) =
                (sent.clone(), acked.clone(), stop.clone(), closed.clone());
            let mut stream = c.stream.try_clone().unwrap();
            std::thread::spawn(move || {
                for i in 1..=limit {
                    loop {
                        if stop.load(Ordering::SeqCst) || closed.load(Ordering::SeqCst) {
                            return;
                        }
                        if usize::from(i - 1) < acked.lock().unwrap().len() + WINDOW {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if stream
                        .write_all(&publish_v311("df/x", 1, i, &payload(i)))
                        .is_err()
                    {
                        return;
                    }
                    sent.store(usize::from(i), Ordering::SeqCst);
                }
            })
        };
        Publisher {
            sent,
            acked,
            stop,
            closed,
            stream: c.stream.try_clone().unwrap(),
            threads: vec![reader, writer],
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Take messages on a resumed session until every one of `expected` arrived (acknowledging
/// each), then until the broker is quiet; returns how often each arrived.
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
        assert_eq!(packet[0] & 0xF0, 0x30, "unexpected {}", hex(&packet));
        let publish = parse_publish(&packet, true);
        *seen.entry(name_of(&publish.payload)).or_default() += 1;
        if let Some(pid) = publish.pid {
            c.send(&puback(pid));
        }
    }
}

fn sigusr1(broker: &Broker) {
    let _ = Command::new("kill")
        .args(["-USR1", &broker.pid().to_string()])
        .status();
}

/// The disk-full case: a persistent subscriber is offline, a publisher sends QoS 1
/// messages until the disk is full (the PUBACKs stop), the filler is deleted, and then —
/// without a restart — the held PUBACKs arrive, the publisher goes on being acknowledged,
/// and the subscriber receives every message that was acknowledged.
#[test]
fn a_full_disk_holds_acknowledgements_and_the_broker_recovers_when_space_returns() {
    if !Broker::edgemq_only() {
        return;
    }
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let data: PathBuf = fs.path().join("data");
    let broker = Broker::start_with(&["--data-dir", data.to_str().unwrap()]);
    let pid = broker.pid();

    let (mut sub, ack) = persistent_v5_session(broker.addr, "df-sub", true);
    assert!(!ack.session_present);
    sub.send(&subscribe(1, Some(&no_props()), &[("df/#", 1)]));
    let p = sub.read_packet();
    assert_eq!(p[0], 0x90, "SUBACK: {}", hex(&p));
    sub.send(&DISCONNECT);
    sub.expect_closed();

    // The disk fills: a filler leaves 512 KiB, the queued messages take the rest.
    let filler = fs.path().join("filler");
    fill(&filler, 512 * 1024);

    let publisher = Publisher::start(broker.addr, 2_000);
    assert!(
        broker.wait_for_log("store: DEGRADED", Duration::from_secs(60)),
        "the disk never filled (sent {}, acknowledged {}); log:\n{}",
        publisher.sent(),
        publisher.acked(),
        broker.log()
    );
    // The acknowledgements stop: the window fills and stays full.
    let stalled_at = publisher.acked();
    std::thread::sleep(Duration::from_secs(2));
    let (sent, acked) = (publisher.sent(), publisher.acked());
    assert!(
        acked < sent,
        "every PUBLISH was acknowledged ({acked}) though the disk is full"
    );
    assert!(acked <= stalled_at + WINDOW);
    assert!(
        !publisher.closed.load(Ordering::SeqCst),
        "the publisher was disconnected"
    );
    assert!(
        stalled_at > 0,
        "nothing was acknowledged before the disk filled"
    );
    // The state is visible to an operator.
    sigusr1(&broker);
    assert!(
        broker.wait_for_log("store=DEGRADED (", Duration::from_secs(10)),
        "{}",
        broker.log()
    );

    // A client whose SUBACK waits for the store still gets its PINGRESP at once: keep-alive
    // answers are not held behind acknowledgements [MQTT-3.12.4-1].
    let (mut pinger, _) = persistent_v5_session(broker.addr, "pings-while-held", true);
    pinger.send(&subscribe(1, Some(&no_props()), &[("held/#", 1)]));
    pinger.send(&[0xC0, 0x00]);
    assert_eq!(
        pinger.read_packet(),
        [0xD0, 0x00],
        "PINGRESP first, while the SUBACK waits for the disk"
    );

    // Space returns: no restart, the held commit goes through, the held PUBACKs arrive and
    // the publisher carries on being acknowledged.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        broker.wait_for_log("store: recovered", Duration::from_secs(30)),
        "{}",
        broker.log()
    );
    // The held SUBACK follows once the commit is through.
    assert_eq!(pinger.read_packet()[0], 0x90, "SUBACK after the recovery");
    let deadline = Instant::now() + Duration::from_secs(30);
    while publisher.acked() < sent + 50 {
        assert!(
            Instant::now() < deadline,
            "the publisher is not acknowledged again (sent {}, acknowledged {}); log:\n{}",
            publisher.sent(),
            publisher.acked(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    publisher.stop.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    let acked: BTreeSet<u16> = publisher.acked.lock().unwrap().clone();
    assert!(!publisher.closed.load(Ordering::SeqCst));
    drop(publisher);

    // A new client is acknowledged too, with a retained message (stored as well).
    let mut fresh = RawClient::v311(broker.addr, "df-fresh");
    fresh.send(&publish_raw(
        pub_flags(1, false, true),
        b"df/retained",
        Some(1),
        None,
        b"m-retained:",
    ));
    match fresh.next_event(Duration::from_secs(10)) {
        Event::Packet(p) => assert_eq!(p, puback(1), "{}", hex(&p)),
        other => panic!(
            "no PUBACK after recovery: {other:?}; log:\n{}",
            broker.log()
        ),
    }
    drop(fresh);

    // The subscriber gets every acknowledged message.
    let (mut sub, ack) = persistent_v5_session(broker.addr, "df-sub", false);
    assert!(ack.session_present, "the session is still there");
    let mut expected: BTreeSet<String> = acked.iter().map(|i| format!("m-{i}")).collect();
    expected.insert("m-retained".into());
    let seen = drain_session(&mut sub, &expected);
    assert_eq!(broker.pid(), pid, "same broker process");
    let log = broker.log();
    let failures = log.matches("store: DEGRADED").count();
    eprintln!(
        "acknowledged {} (stalled at {stalled_at}, {sent} sent when full), delivered {} distinct; {failures} DEGRADED log lines",
        acked.len(),
        seen.len()
    );
    for line in log
        .lines()
        .filter(|l| l.contains("store: ") || l.contains("store=D"))
    {
        eprintln!("  {line}");
    }
    assert!(failures <= 3, "the error is rate-limited: {failures} lines");
    drop(sub);
    drop(broker);
}
