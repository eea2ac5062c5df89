//! The Mosquitto-compatible `$SYS` topics (docs/observability.md), read by the real
//! `mosquitto_sub` from the real binary with `--sys-interval 1`. Waits are for concrete
//! events (SUBACK, a value seen), bounded; only absence is watched over a window.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::{edgemq, free_port, Broker};
use edgemq_testkit::fixtures::{
    is_debug_line, listener, plain_port, run_mosquitto_pub, Dirs, Sub, V1, WAIT,
};

/// Every topic the broker publishes under `$SYS/broker/` (the loads are added by [`all`]).
const TOPICS: &[&str] = &[
    "version",
    "uptime",
    "bytes/received",
    "bytes/sent",
    "clients/connected",
    "clients/active",
    "clients/disconnected",
    "clients/inactive",
    "clients/expired",
    "clients/maximum",
    "clients/total",
    "connections/socket/count",
    "heap/current",
    "heap/maximum",
    "messages/received",
    "messages/sent",
    "messages/stored",
    "publish/messages/dropped",
    "publish/messages/received",
    "publish/messages/sent",
    "publish/bytes/received",
    "publish/bytes/sent",
    "retained messages/count",
    "store/messages/count",
    "store/messages/bytes",
    "subscriptions/count",
    "shared_subscriptions/count",
];

const LOADS: &[&str] = &[
    "connections",
    "bytes/received",
    "bytes/sent",
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "sockets",
];

/// Every full topic name, loads included.
fn all() -> Vec<String> {
    let mut topics: Vec<String> = TOPICS.iter().map(|t| format!("$SYS/broker/{t}")).collect();
    for load in LOADS {
        for window in ["1min", "5min", "15min"] {
            topics.push(format!("$SYS/broker/load/{load}/{window}"));
        }
    }
    topics
}

/// A `mosquitto_sub -d` printing `topic|payload` lines for its filters.
struct Reader {
    child: Child,
    lines: Receiver<String>,
}

impl Reader {
    /// Subscribed (SUBACK seen) to every filter.
    fn start(broker: &Broker, filters: &[&str]) -> Reader {
        let port = broker.port().to_string();
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub", "-d", "-V", "311", "-h", "127.0.0.1"])
            .args(["-p", &port, "-F", "%t|%p"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)");
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let reader = Reader { child, lines };
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match reader.lines.recv_timeout(left) {
                Ok(line) if line.contains("SUBACK") => return reader,
                Ok(_) => {}
                Err(_) => panic!("mosquitto_sub {filters:?}: no SUBACK"),
            }
        }
    }

    /// The next message (topic, payload) before `deadline`.
    fn next(&self, deadline: Instant) -> Option<(String, String)> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if is_debug_line(&line) {
                continue;
            }
            if let Some((topic, payload)) = line.split_once('|') {
                return Some((topic.to_string(), payload.to_string()));
            }
        }
    }

    /// Wait (bounded) until `$SYS/broker/<name>` carries a payload `ok` accepts.
    fn until(&self, name: &str, ok: impl Fn(&str) -> bool) -> String {
        let topic = format!("$SYS/broker/{name}");
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while let Some((t, payload)) = self.next(deadline) {
            if t == topic {
                if ok(&payload) {
                    return payload;
                }
                last = Some(payload);
            }
        }
        panic!("{topic}: never as expected (last seen: {last:?})");
    }

    /// Wait (bounded) for `$SYS/broker/<name>` to read at least `n`.
    fn at_least(&self, name: &str, n: u64) -> u64 {
        let v = self.until(name, |p| p.parse::<u64>().is_ok_and(|v| v >= n));
        v.parse().unwrap()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(broker: &Broker, args: &[&str]) {
    let (code, out) = run_mosquitto_pub(broker.port(), "5", "sys-pub", args);
    assert_eq!(code, Some(0), "mosquitto_pub failed: {out}");
}

#[test]
fn every_topic_is_published_with_a_plain_text_payload() {
    if !Broker::edgemq_only() {
        return;
    }
    let broker = Broker::start_with(&["--sys-interval", "1"]);
    let reader = Reader::start(&broker, &["$SYS/#"]);
    let wanted = all();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < wanted.len() {
        let Some((topic, payload)) = reader.next(deadline) else {
            let missing: Vec<_> = wanted.iter().filter(|t| !seen.contains_key(*t)).collect();
            panic!("never published: {missing:?}");
        };
        if wanted.contains(&topic) {
            seen.insert(topic, payload);
        }
    }
    for (topic, payload) in &seen {
        let name = topic.trim_start_matches("$SYS/broker/");
        match name {
            "version" => assert!(payload.starts_with("edgemq "), "{payload}"),
            "uptime" => {
                let secs = payload.strip_suffix(" seconds").unwrap();
                secs.parse::<u64>().unwrap();
            }
            _ if name.starts_with("load/") => {
                let (_, decimals) = payload.split_once('.').unwrap();
                assert_eq!(decimals.len(), 2, "{topic}: {payload}");
                assert!(payload.parse::<f64>().unwrap() >= 0.0, "{topic}: {payload}");
            }
            _ => assert!(payload.parse::<u64>().is_ok(), "{topic}: {payload}"),
        }
    }
    // The uptime moves on every interval.
    let first: u64 = seen["$SYS/broker/uptime"]
        .trim_end_matches(" seconds")
        .parse()
        .unwrap();
    reader.until("uptime", |p| {
        p.trim_end_matches(" seconds")
            .parse::<u64>()
            .is_ok_and(|s| s > first)
    });
}

#[test]
fn counters_follow_clients_publishes_and_subscriptions() {
    if !Broker::edgemq_only() {
        return;
    }
    let broker = Broker::start_with(&["--sys-interval", "1"]);
    let reader = Reader::start(&broker, &["$SYS/#"]);
    // The reader and one more subscriber, with a shared subscription.
    let _sub = Sub::start(broker.addr, "$share/g/t/#", &[]);
    assert!(reader.at_least("clients/connected", 2) >= 2);
    reader.until("subscriptions/count", |p| p == "2");
    reader.until("shared_subscriptions/count", |p| p == "1");
    reader.at_least("clients/maximum", 2);
    reader.at_least("connections/socket/count", 2);

    for i in 0..3 {
        publish(&broker, &["-t", "t/x", "-m", &format!("m{i}"), "-q", "1"]);
    }
    reader.at_least("messages/received", 3);
    reader.at_least("publish/messages/received", 3);
    reader.at_least("publish/bytes/received", 6);
    reader.at_least("messages/sent", 3);
    reader.at_least("bytes/received", 1);

    // A retained message is counted; the `$SYS` tree itself is not.
    reader.until("retained messages/count", |p| p == "0");
    publish(&broker, &["-t", "r/1", "-m", "kept", "-r"]);
    reader.until("retained messages/count", |p| p == "1");
    reader.until("messages/stored", |p| p == "1");
    reader.until("store/messages/count", |p| p == "1");
}

#[test]
fn interval_zero_publishes_nothing() {
    if !Broker::edgemq_only() {
        return;
    }
    let started = Instant::now();
    let broker = Broker::start_with(&["--sys-interval", "0"]);
    let reader = Reader::start(&broker, &["$SYS/#", "marker"]);
    // Past the second an interval of 1 would have published at (absence needs a window).
    while started.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    publish(&broker, &["-t", "marker", "-m", "m"]);
    let deadline = Instant::now() + WAIT;
    let (topic, _) = reader.next(deadline).expect("the marker");
    assert_eq!(topic, "marker", "nothing under $SYS with --sys-interval 0");
}

#[test]
fn a_hash_subscriber_receives_none_of_them() {
    if !Broker::edgemq_only() {
        return;
    }
    let broker = Broker::start_with(&["--sys-interval", "1"]);
    let everything = Reader::start(&broker, &["#"]);
    // Once the uptime changes, the tree was published after `#` was subscribed.
    let uptime = Reader::start(&broker, &["$SYS/broker/uptime"]);
    let first = uptime.until("uptime", |_| true);
    uptime.until("uptime", |p| p != first);
    publish(&broker, &["-t", "marker", "-m", "m"]);
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while let Some((topic, _)) = everything.next(deadline) {
        if topic == "marker" {
            break;
        }
        got.push(topic);
    }
    // "The Server MUST NOT match Topic Filters starting with a wildcard character (# or +)
    // with Topic Names beginning with a $ character" [MQTT-4.7.2-1].
    assert!(got.iter().all(|t| !t.starts_with('$')), "{got:?}");
}

#[test]
fn the_broker_resource_sets_the_interval_and_check_accepts_it() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    d.write(
        "l.yaml",
        &listener("l", "ClusterIp", &plain_port(free_port())),
    );
    d.write(
        "broker.yaml",
        &format!("apiVersion: {V1}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  advanced:\n    sysIntervalSeconds: 1\n"),
    );
    let (code, out, err) = edgemq(&["check", "--config", d.config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("sysIntervalSeconds"),
        "{out}{err}"
    );
    // The resource overrides the command line.
    let broker = Broker::start_config(&d.config, &d.data, 1, &["--sys-interval", "0"]);
    let reader = Reader::start(&broker, &["$SYS/broker/uptime"]);
    let first = reader.until("uptime", |_| true);
    reader.until("uptime", |p| p != first);
}
