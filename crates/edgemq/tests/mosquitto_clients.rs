//! The real `mosquitto_pub` / `mosquitto_sub` (Debian `mosquitto-clients`) against the real
//! `edgemq` binary, MQTT 3.1.1 (`-V 311`) and 5.0 (`-V 5`). Each test asserts what the
//! subscribing client prints. Waits are for concrete events (SUBACK seen, message printed)
//! with generous bounds, never fixed sleeps for delivery.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;

const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for. Absence can only be shown over a window.
const QUIET: Duration = Duration::from_millis(1500);

/// One message as printed by `mosquitto_sub -F`.
#[derive(Debug, Clone, PartialEq)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
    qos: u8,
    user: String,
    content_type: String,
    response_topic: String,
    correlation: String,
    expiry: String,
}

/// A running `mosquitto_sub`, subscribed (its SUBACK has been seen).
struct Sub {
    child: Child,
    lines: Receiver<String>,
    /// Lines read while waiting for the SUBACK: a resumed session's queued messages can
    /// arrive before it.
    early: RefCell<VecDeque<String>>,
}

const FORMAT: &str = "MSG|%t|%p|%r|%q|%P|%C|%R|%D|%E";

impl Sub {
    fn start(b: &Broker, version: &str, args: &[&str]) -> Sub {
        // Line-buffered: mosquitto_sub block-buffers a pipe, which would hide its SUBACK line.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                &b.host(),
                "-p",
                &b.port().to_string(),
                "-V",
                version,
                "-d",
                "-F",
                FORMAT,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients) must be installed");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut early = VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("received SUBACK") => break,
                Ok(line) => early.push_back(line),
                // `-C 1` may exit on a queued message before the SUBACK.
                Err(RecvTimeoutError::Disconnected)
                    if early.iter().any(|l| l.starts_with("MSG|")) =>
                {
                    break
                }
                Err(_) => {
                    panic!("mosquitto_sub {args:?}: no SUBACK within {WAIT:?}; saw {early:?}")
                }
            }
        }
        Sub {
            child,
            lines: rx,
            early: RefCell::new(early),
        }
    }

    fn next_line(&self, timeout: Duration) -> Option<String> {
        if let Some(line) = self.early.borrow_mut().pop_front() {
            return Some(line);
        }
        self.lines.recv_timeout(timeout).ok()
    }

    /// Everything printed from now until the process exits (bounded).
    fn rest(&self) -> Vec<String> {
        let mut out: Vec<String> = self.early.borrow_mut().drain(..).collect();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            out.push(line);
        }
        out
    }

    /// The next message, or `None` if none arrives within `timeout`.
    fn next(&self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) => {
                    if let Some(rest) = line.strip_prefix("MSG|") {
                        let f: Vec<&str> = rest.split('|').collect();
                        return Some(Msg {
                            topic: f[0].to_string(),
                            payload: f[1].to_string(),
                            retain: f[2] == "1",
                            qos: f[3].parse().unwrap_or(9),
                            user: f.get(4).unwrap_or(&"").to_string(),
                            content_type: f.get(5).unwrap_or(&"").to_string(),
                            response_topic: f.get(6).unwrap_or(&"").to_string(),
                            correlation: f.get(7).unwrap_or(&"").to_string(),
                            expiry: f.get(8).unwrap_or(&"").to_string(),
                        });
                    }
                }
                None => return None,
            }
        }
    }

    fn expect(&self, what: &str) -> Msg {
        self.next(WAIT)
            .unwrap_or_else(|| panic!("expected {what}, nothing arrived"))
    }

    fn expect_nothing(&self, what: &str) {
        if let Some(m) = self.next(QUIET) {
            panic!("expected no message ({what}), got {m:?}");
        }
    }

    /// Wait (bounded) for the process to exit; true if it did.
    fn exited(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `mosquitto_pub` to completion and assert it succeeded.
fn publish(b: &Broker, version: &str, args: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", &b.host(), "-p", &b.port().to_string(), "-V", version])
        .args(args)
        .output()
        .expect("mosquitto_pub must be installed");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publish each line of `lines` as one message (`mosquitto_pub -l`).
fn publish_lines(b: &Broker, version: &str, args: &[&str], lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            &b.host(),
            "-p",
            &b.port().to_string(),
            "-V",
            version,
            "-l",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write");
        }
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "mosquitto_pub -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qos_0_1_2_delivered_in_both_versions() {
    let b = Broker::start();
    for version in ["311", "5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("q/{version}/{qos}");
            let sub = Sub::start(&b, version, &["-t", &topic, "-q", qos]);
            publish(&b, version, &["-t", &topic, "-m", "hello", "-q", qos]);
            let m = sub.expect("the published message");
            assert_eq!(
                (m.topic.as_str(), m.payload.as_str()),
                (topic.as_str(), "hello")
            );
            assert_eq!(
                m.qos.to_string(),
                qos,
                "delivered at min(published, granted) QoS"
            );
            assert!(!m.retain);
        }
    }
}

#[test]
fn qos_is_downgraded_to_the_subscription() {
    let b = Broker::start();
    let sub = Sub::start(&b, "5", &["-t", "down", "-q", "1"]);
    publish(&b, "5", &["-t", "down", "-m", "x", "-q", "2"]);
    assert_eq!(
        sub.expect("message").qos,
        1,
        "[MQTT-3.8.4-6] min of published and granted QoS"
    );
}

#[test]
fn wildcards_and_dollar_topics() {
    let b = Broker::start();
    let all = Sub::start(&b, "311", &["-t", "#"]);
    let plus = Sub::start(&b, "311", &["-t", "+/x"]);
    let dollar = Sub::start(&b, "311", &["-t", "$app/#"]);
    publish(&b, "311", &["-t", "$app/x", "-m", "system"]);
    publish(&b, "311", &["-t", "a/x", "-m", "plain"]);
    // [MQTT-4.7.2-1]: filters starting with a wildcard do not match `$` topics.
    assert_eq!(all.expect("a/x").topic, "a/x");
    assert_eq!(plus.expect("a/x").topic, "a/x");
    assert_eq!(dollar.expect("$app/x").topic, "$app/x");
    dollar.expect_nothing("a/x does not match $app/#");
    all.expect_nothing("$app/x is not matched by #");
    plus.expect_nothing("$app/x is not matched by +/x");
}

#[test]
fn multi_level_wildcard_matches_the_parent_level() {
    let b = Broker::start();
    let sub = Sub::start(&b, "5", &["-t", "sport/#"]);
    publish(&b, "5", &["-t", "sport", "-m", "1"]);
    publish(&b, "5", &["-t", "sport/tennis/player1", "-m", "2"]);
    publish(&b, "5", &["-t", "sports", "-m", "3"]);
    assert_eq!(
        sub.expect("sport").payload,
        "1",
        "[MQTT-4.7.1.2] sport/# matches sport"
    );
    assert_eq!(sub.expect("deep").payload, "2");
    sub.expect_nothing("sports is another topic");
}

#[test]
fn retained_message_is_stored_replaced_and_deleted() {
    let b = Broker::start();
    for version in ["311", "5"] {
        let topic = format!("r/{version}");
        let live = Sub::start(&b, version, &["-t", &topic]);
        publish(&b, version, &["-t", &topic, "-m", "first", "-r"]);
        let m = live.expect("live delivery");
        assert!(!m.retain, "[MQTT-3.3.1-9] a live delivery has RETAIN 0");
        let late = Sub::start(&b, version, &["-t", &topic]);
        let m = late.expect("retained message on subscribe");
        assert_eq!(
            (m.payload.as_str(), m.retain),
            ("first", true),
            "[MQTT-3.3.1-8]"
        );
        drop(late);
        publish(&b, version, &["-t", &topic, "-m", "second", "-r"]);
        let late = Sub::start(&b, version, &["-t", &topic]);
        assert_eq!(
            late.expect("replacement").payload,
            "second",
            "one retained message per topic"
        );
        drop(late);
        // An empty retained payload deletes [MQTT-3.3.1-6].
        publish(&b, version, &["-t", &topic, "-r", "-n"]);
        let late = Sub::start(&b, version, &["-t", &topic]);
        late.expect_nothing("the retained message was deleted");
    }
}

#[test]
fn persistent_session_queues_qos1_while_offline() {
    let b = Broker::start();
    for (version, extra) in [("311", vec![]), ("5", vec!["-x", "60"])] {
        let id = format!("persist-{version}");
        let topic = format!("p/{version}");
        let mut args = vec![
            "-t",
            topic.as_str(),
            "-q",
            "1",
            "-c",
            "-i",
            id.as_str(),
            "-C",
            "1",
        ];
        args.extend(extra.iter().copied());
        let mut sub = Sub::start(&b, version, &args);
        publish(&b, version, &["-t", &topic, "-m", "online", "-q", "1"]);
        assert_eq!(sub.expect("online message").payload, "online");
        assert!(
            sub.exited(WAIT),
            "mosquitto_sub -C 1 exits after one message"
        );
        // Offline now: QoS 1 is queued for the session, QoS 0 is not.
        publish(&b, version, &["-t", &topic, "-m", "offline-q0", "-q", "0"]);
        publish(&b, version, &["-t", &topic, "-m", "offline-q1", "-q", "1"]);
        let back = Sub::start(&b, version, &args);
        assert_eq!(back.expect("the queued message").payload, "offline-q1");
    }
}

#[test]
fn clean_session_discards_the_queue() {
    let b = Broker::start();
    let mut sub = Sub::start(
        &b,
        "311",
        &["-t", "c/t", "-q", "1", "-c", "-i", "cleaner", "-C", "1"],
    );
    publish(&b, "311", &["-t", "c/t", "-m", "one", "-q", "1"]);
    sub.expect("first");
    assert!(sub.exited(WAIT));
    publish(&b, "311", &["-t", "c/t", "-m", "queued", "-q", "1"]);
    // Reconnect with clean session 1 [MQTT-3.1.2-6]: the old session and its queue are gone.
    let fresh = Sub::start(&b, "311", &["-t", "c/t", "-q", "1", "-i", "cleaner"]);
    fresh.expect_nothing("the queued message belonged to the discarded session");
}

/// v5 only: in 3.1.1 the old connection is just closed, and mosquitto_sub then reconnects
/// by itself (fighting the new one); `raw::takeover_v311_old_connection_closed` covers 3.1.1.
#[test]
fn client_id_takeover_sends_0x8e_and_closes_the_first_connection() {
    // Mosquitto 2.0.11 closes the old connection without the DISCONNECT 0x8E that 5.0 §3.1.4
    // describes, so mosquitto_sub reconnects instead of exiting: not comparable there.
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start();
    let mut first = Sub::start(&b, "5", &["-t", "tw", "-i", "twin"]);
    let second = Sub::start(&b, "5", &["-t", "tw", "-i", "twin"]);
    assert!(
        first.exited(WAIT),
        "[MQTT-3.1.4-3] the existing connection is closed"
    );
    let transcript = first.rest();
    assert!(
        transcript
            .iter()
            .any(|l| l.contains("Received DISCONNECT (142)")),
        "v5 DISCONNECT 0x8E session taken over; mosquitto_sub printed {transcript:?}"
    );
    publish(&b, "5", &["-t", "tw", "-m", "to-second"]);
    assert_eq!(
        second.expect("the new connection works").payload,
        "to-second"
    );
}

#[test]
fn will_is_sent_on_abnormal_loss_and_not_on_disconnect() {
    let b = Broker::start();
    for version in ["311", "5"] {
        let watch_topic = format!("will/{version}/#");
        let watcher = Sub::start(&b, version, &["-t", &watch_topic]);
        let will_topic = format!("will/{version}/lost");
        let mut doomed = Sub::start(
            &b,
            version,
            &[
                "-t",
                "x",
                "--will-topic",
                &will_topic,
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
            ],
        );
        doomed.kill(); // SIGKILL: no DISCONNECT reaches the broker
        let m = watcher.expect("the will");
        assert_eq!(
            (m.topic.as_str(), m.payload.as_str()),
            (will_topic.as_str(), "gone")
        );

        let polite_topic = format!("will/{version}/polite");
        let mut polite = Sub::start(
            &b,
            version,
            &[
                "-t",
                "bye",
                "-C",
                "1",
                "--will-topic",
                &polite_topic,
                "--will-payload",
                "no",
            ],
        );
        publish(&b, version, &["-t", "bye", "-m", "leave"]);
        assert!(
            polite.exited(WAIT),
            "exits with DISCONNECT after one message"
        );
        watcher.expect_nothing("[MQTT-3.1.2-10] no will after a normal DISCONNECT");
    }
}

#[test]
fn will_retain_is_kept() {
    let b = Broker::start();
    let mut doomed = Sub::start(
        &b,
        "5",
        &[
            "-t",
            "x",
            "--will-topic",
            "will/retained",
            "--will-payload",
            "offline",
            "--will-retain",
        ],
    );
    doomed.kill();
    // The will was published with RETAIN: a later subscriber gets it as a retained message.
    let deadline = Instant::now() + WAIT;
    loop {
        let late = Sub::start(&b, "5", &["-t", "will/retained"]);
        if let Some(m) = late.next(Duration::from_millis(500)) {
            assert_eq!((m.payload.as_str(), m.retain), ("offline", true));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained will never appeared"
        );
    }
}

#[test]
fn v5_properties_pass_through_unchanged() {
    let b = Broker::start();
    let sub = Sub::start(&b, "5", &["-t", "props"]);
    publish(
        &b,
        "5",
        &[
            "-t",
            "props",
            "-m",
            "body",
            "-q",
            "1",
            "-D",
            "publish",
            "user-property",
            "site",
            "north",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "reply/here",
            "-D",
            "publish",
            "correlation-data",
            "req-42",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
        ],
    );
    let m = sub.expect("the message with its properties");
    assert_eq!(m.payload, "body");
    assert_eq!(
        m.user, "site:north",
        "[MQTT-3.3.2-17] user properties forwarded"
    );
    assert_eq!(
        m.content_type, "text/plain",
        "[MQTT-3.3.2-20] content type forwarded"
    );
    assert_eq!(
        m.response_topic, "reply/here",
        "[MQTT-3.3.2-15] response topic forwarded"
    );
    assert_eq!(
        m.correlation, "req-42",
        "[MQTT-3.3.2-16] correlation data forwarded"
    );
}

#[test]
fn message_expiry_drops_stale_queued_messages_and_forwards_the_remainder() {
    let b = Broker::start();
    let args = [
        "-t", "exp", "-q", "1", "-c", "-i", "expiring", "-x", "60", "-C", "1",
    ];
    let mut sub = Sub::start(&b, "5", &args);
    publish(&b, "5", &["-t", "exp", "-m", "first", "-q", "1"]);
    sub.expect("first");
    assert!(sub.exited(WAIT));
    publish(
        &b,
        "5",
        &[
            "-t",
            "exp",
            "-m",
            "short",
            "-q",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "1",
        ],
    );
    publish(
        &b,
        "5",
        &[
            "-t",
            "exp",
            "-m",
            "long",
            "-q",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "100",
        ],
    );
    // Let the 1-second message expire while the subscriber is offline (2.5 s leaves a wide
    // margin; this is the one wait that is about time itself).
    std::thread::sleep(Duration::from_millis(2500));
    let back = Sub::start(&b, "5", &args);
    let m = back.expect("the unexpired message");
    assert_eq!(
        m.payload, "long",
        "[MQTT-3.3.2-5] the expired message is not delivered"
    );
    let left: u32 = m.expiry.parse().expect("message-expiry-interval forwarded");
    assert!(
        (90..100).contains(&left),
        "[MQTT-3.3.2-6] remaining time forwarded, got {left}"
    );
}

#[test]
fn shared_subscription_delivers_each_message_to_one_member() {
    let b = Broker::start();
    let a = Sub::start(&b, "5", &["-t", "$share/workers/jobs", "-q", "1"]);
    let c = Sub::start(&b, "5", &["-t", "$share/workers/jobs", "-q", "1"]);
    let plain = Sub::start(&b, "5", &["-t", "jobs", "-q", "1"]);
    let jobs: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
    publish_lines(&b, "5", &["-t", "jobs", "-q", "1"], &jobs);
    let mut got_a = Vec::new();
    let mut got_c = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got_a.len() + got_c.len() < jobs.len() && Instant::now() < deadline {
        if let Some(m) = a.next(Duration::from_millis(50)) {
            got_a.push(m.payload);
        }
        if let Some(m) = c.next(Duration::from_millis(50)) {
            got_c.push(m.payload);
        }
    }
    let mut all: Vec<String> = got_a.iter().chain(&got_c).cloned().collect();
    all.sort();
    let mut want = jobs.clone();
    want.sort();
    assert_eq!(
        all, want,
        "[MQTT-4.8.2] every message reaches exactly one member"
    );
    assert!(
        !got_a.is_empty() && !got_c.is_empty(),
        "both members get work: {got_a:?} / {got_c:?}"
    );
    for job in &jobs {
        assert_eq!(
            &plain.expect("every message").payload,
            job,
            "a plain subscriber gets all, in order"
        );
    }
}

#[test]
fn burst_of_2000_qos1_messages_arrives_complete_and_in_order() {
    let b = Broker::start();
    let sub = Sub::start(&b, "311", &["-t", "burst", "-q", "1"]);
    let lines: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    publish_lines(&b, "311", &["-t", "burst", "-q", "1"], &lines);
    for want in &lines {
        assert_eq!(&sub.expect(want).payload, want, "[MQTT-4.6.0] order kept");
    }
}
