//! A history checker for message delivery, on Jepsen's `total-queue` model
//! (`shared/spec/cluster.md` §5.4).
//!
//! A test records what its clients did and saw into a [`History`]:
//!
//! - [`History::subscribed`]: a SUBACK granted a subscription (filter, QoS);
//! - [`History::session_lost`]: a subscriber's session ended (expired, or replaced by a clean
//!   start), so nothing published before it is owed any more;
//! - [`History::publish`] when a PUBLISH is *invoked* (its place in the history is its place in
//!   publish order), then [`History::resolve`] once its outcome is known: PUBACK/PUBCOMP with
//!   success ([`Outcome::Acked`], the broker promised it), an error reason code
//!   ([`Outcome::Refused`]), or never known ([`Outcome::Unknown`], Jepsen's `info`);
//! - [`History::deliver`]: a PUBLISH arrived at a subscriber (topic, payload, QoS, DUP).
//!
//! [`History::to_json_lines`] and [`History::from_json_lines`] keep a history in a file (the
//! design's JSON lines) to check it offline.
//!
//! Every published payload carries a unique [`PayloadId`] (publisher name and sequence
//! number), encoded into the payload bytes with [`PayloadId::encode`] and read back with
//! [`PayloadId::decode`].
//!
//! [`History::check`] then classifies the history, per subscriber:
//!
//! - **lost**: an acknowledged QoS ≥ 1 publish, invoked after the subscriber's subscription was
//!   granted (at an effective QoS ≥ 1) and with no session loss since, never delivered to it
//!   ([MQTT-4.3.2-*], [MQTT-4.3.3-*]: the broker owns the message once it acknowledged it);
//! - **duplicated**: a QoS 2 message delivered more than once (exactly once, [MQTT-4.3.3-*]) or a
//!   QoS 0 message more than once (at most once, [MQTT-4.3.1-*]). QoS 1 duplicates are allowed
//!   (at least once, [MQTT-4.3.2-*]) and counted apart, in `allowed_duplicates`;
//! - **unexpected**: a delivery that no publish explains: the payload carries no id, no publish
//!   has that id, the publish was refused, the topic differs, the subscriber holds no
//!   subscription matching it, or it arrived before it was published;
//! - **recovered**: a publish whose outcome was unknown and that was delivered (not a failure);
//! - **reordered**: per (subscriber, publisher, topic, QoS ≥ 1), *first receipts* that do not
//!   follow publish order (MQTT 5 §4.6, [MQTT-4.6.0-*]: an ordered topic keeps the order of
//!   messages from one publisher at the same QoS). Redeliveries (a second copy, e.g. DUP=1 after
//!   a reconnect [MQTT-4.4.0-1]) are not first receipts, so they never count as reordering.
//!
//! Simplifications (a single node, one subscription per subscriber and topic): shared
//! subscriptions (`$share/…`) are ignored; a subscriber holding two overlapping subscriptions
//! may legitimately get two copies [MQTT-3.3.4-2], which this checker would count as
//! duplicates; unsubscribing is not modelled.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The unique identity of one published payload: who published it and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadId {
    pub publisher: String,
    pub seq: u64,
}

/// What [`PayloadId::encode`] puts first, so foreign payloads are told apart.
const MAGIC: &[u8] = b"hist:";

impl PayloadId {
    pub fn new(publisher: &str, seq: u64) -> PayloadId {
        PayloadId {
            publisher: publisher.to_string(),
            seq,
        }
    }

    /// The payload bytes: `hist:<publisher>:<seq>;`. The publisher name must not contain
    /// `;`.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(!self.publisher.contains(';'));
        format!("hist:{}:{};", self.publisher, self.seq).into_bytes()
    }

    /// [`PayloadId::encode`] followed by `.` up to `len` bytes (for payloads of a given size).
    pub fn encode_padded(&self, len: usize) -> Vec<u8> {
        let mut bytes = self.encode();
        if bytes.len() < len {
            bytes.resize(len, b'.');
        }
        bytes
    }

    /// The id in a payload made by [`PayloadId::encode`] (padding allowed); `None` for any
    /// other payload.
    pub fn decode(payload: &[u8]) -> Option<PayloadId> {
        let rest = payload.strip_prefix(MAGIC)?;
        let end = rest.iter().position(|b| *b == b';')?;
        let text = std::str::from_utf8(&rest[..end]).ok()?;
        let (publisher, seq) = text.rsplit_once(':')?;
        Some(PayloadId {
            publisher: publisher.to_string(),
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for PayloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.publisher, self.seq)
    }
}

/// How a publish ended, as its publisher saw it (Jepsen's `ok` / `fail` / `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) with a success code: the broker owns the message.
    /// A QoS 0 publish is never acknowledged; it may be marked `Acked` once written, which
    /// promises nothing.
    Acked,
    /// An error reason code: the broker refused it, so nobody may receive it.
    Refused,
    /// Not known (the connection died first): receiving it is allowed ("recovered").
    Unknown,
}

/// One recorded event. Its index in [`History::events`] is its place in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A SUBACK granted `filter` at `qos` to `subscriber` (a client id).
    Subscribed {
        subscriber: String,
        filter: String,
        qos: u8,
    },
    /// `subscriber`'s session ended (expired, or a clean start replaced it): its
    /// subscriptions and what it was owed are gone.
    SessionLost { subscriber: String },
    /// A PUBLISH was invoked; `outcome` is filled in by [`History::resolve`].
    Publish {
        publisher: String,
        topic: String,
        payload_id: PayloadId,
        qos: u8,
        outcome: Outcome,
    },
    /// A PUBLISH arrived at `subscriber`. `payload_id` is `None` if its payload carried none.
    Delivery {
        subscriber: String,
        topic: String,
        payload_id: Option<PayloadId>,
        qos: u8,
        dup: bool,
    },
}

/// Refers to a [`Event::Publish`] recorded by [`History::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef(usize);

/// The recorded history. Not thread-safe by itself: share it as `Arc<Mutex<History>>`, and
/// record a publish *before* writing it to the socket and a delivery *after* reading it.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Everything recorded, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Record a granted subscription.
    pub fn subscribed(&mut self, subscriber: &str, filter: &str, qos: u8) {
        self.events.push(Event::Subscribed {
            subscriber: subscriber.into(),
            filter: filter.into(),
            qos,
        });
    }

    /// Record that `subscriber`'s session ended.
    pub fn session_lost(&mut self, subscriber: &str) {
        self.events.push(Event::SessionLost {
            subscriber: subscriber.into(),
        });
    }

    /// Record that a publish was invoked (its outcome [`Outcome::Unknown`] until
    /// [`History::resolve`]). Re-sending the same message after a reconnect is the same
    /// publish: do not record it again.
    pub fn publish(&mut self, publisher: &str, topic: &str, id: PayloadId, qos: u8) -> PublishRef {
        self.events.push(Event::Publish {
            publisher: publisher.into(),
            topic: topic.into(),
            payload_id: id,
            qos,
            outcome: Outcome::Unknown,
        });
        PublishRef(self.events.len() - 1)
    }

    /// Set the outcome of a recorded publish.
    pub fn resolve(&mut self, publish: PublishRef, to: Outcome) {
        if let Some(Event::Publish { outcome, .. }) = self.events.get_mut(publish.0) {
            *outcome = to;
        } else {
            panic!("{publish:?} is not a recorded publish");
        }
    }

    /// Record a received PUBLISH; its payload id is decoded from `payload`.
    pub fn deliver(&mut self, subscriber: &str, topic: &str, payload: &[u8], qos: u8, dup: bool) {
        self.events.push(Event::Delivery {
            subscriber: subscriber.into(),
            topic: topic.into(),
            payload_id: PayloadId::decode(payload),
            qos,
            dup,
        });
    }

    /// Record any event as is (for hand-built histories).
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// The history as JSON lines, one event a line, on the model of the design's format
    /// (`{t, process, type, f, value}`), for keeping a failed run's history and checking it
    /// offline. A publish is one line at its invocation, its `type` the final outcome (`ok`,
    /// `fail`, `info`), instead of Jepsen's invoke/complete pair.
    pub fn to_json_lines(&self) -> String {
        use serde_json::json;
        let id = |id: &PayloadId| json!({"publisher": id.publisher, "seq": id.seq});
        let mut out = String::new();
        for (t, event) in self.events.iter().enumerate() {
            let line = match event {
                Event::Subscribed {
                    subscriber,
                    filter,
                    qos,
                } => json!({"t": t, "process": subscriber, "type": "ok", "f": "subscribe",
                            "value": {"filter": filter, "qos": qos}}),
                Event::SessionLost { subscriber } => {
                    json!({"t": t, "process": subscriber, "type": "info", "f": "session-lost"})
                }
                Event::Publish {
                    publisher,
                    topic,
                    payload_id,
                    qos,
                    outcome,
                } => {
                    let kind = match outcome {
                        Outcome::Acked => "ok",
                        Outcome::Refused => "fail",
                        Outcome::Unknown => "info",
                    };
                    json!({"t": t, "process": publisher, "type": kind, "f": "publish",
                           "value": {"topic": topic, "id": id(payload_id), "qos": qos}})
                }
                Event::Delivery {
                    subscriber,
                    topic,
                    payload_id,
                    qos,
                    dup,
                } => json!({"t": t, "process": subscriber, "type": "ok", "f": "receive",
                            "value": {"topic": topic, "id": payload_id.as_ref().map(id),
                                      "qos": qos, "dup": dup}}),
            };
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }

    /// Read back what [`History::to_json_lines`] wrote (the `t` fields are ignored: lines are
    /// taken in order).
    pub fn from_json_lines(text: &str) -> Result<History, String> {
        fn field<'v>(
            v: &'v serde_json::Value,
            path: &[&str],
        ) -> Result<&'v serde_json::Value, String> {
            path.iter()
                .try_fold(v, |v, k| v.get(k))
                .ok_or_else(|| format!("no {} in {v}", path.join(".")))
        }
        fn string(v: &serde_json::Value, path: &[&str]) -> Result<String, String> {
            field(v, path)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{} is not a string in {v}", path.join(".")))
        }
        fn number(v: &serde_json::Value, path: &[&str]) -> Result<u64, String> {
            field(v, path)?
                .as_u64()
                .ok_or_else(|| format!("{} is not a number in {v}", path.join(".")))
        }
        fn qos(v: &serde_json::Value) -> Result<u8, String> {
            u8::try_from(number(v, &["value", "qos"])?).map_err(|e| e.to_string())
        }
        fn id(v: &serde_json::Value) -> Result<PayloadId, String> {
            Ok(PayloadId {
                publisher: string(v, &["publisher"])?,
                seq: number(v, &["seq"])?,
            })
        }
        let mut history = History::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
            let process = string(&v, &["process"])?;
            let event = match string(&v, &["f"])?.as_str() {
                "subscribe" => Event::Subscribed {
                    subscriber: process,
                    filter: string(&v, &["value", "filter"])?,
                    qos: qos(&v)?,
                },
                "session-lost" => Event::SessionLost {
                    subscriber: process,
                },
                "publish" => Event::Publish {
                    publisher: process,
                    topic: string(&v, &["value", "topic"])?,
                    payload_id: id(field(&v, &["value", "id"])?)?,
                    qos: qos(&v)?,
                    outcome: match string(&v, &["type"])?.as_str() {
                        "ok" => Outcome::Acked,
                        "fail" => Outcome::Refused,
                        _ => Outcome::Unknown,
                    },
                },
                "receive" => {
                    let payload_id = field(&v, &["value", "id"])?;
                    Event::Delivery {
                        subscriber: process,
                        topic: string(&v, &["value", "topic"])?,
                        payload_id: if payload_id.is_null() {
                            None
                        } else {
                            Some(id(payload_id)?)
                        },
                        qos: qos(&v)?,
                        dup: field(&v, &["value", "dup"])?.as_bool().unwrap_or(false),
                    }
                }
                other => return Err(format!("unknown f {other:?} in {line}")),
            };
            history.push(event);
        }
        Ok(history)
    }

    /// Classify the history (see the module documentation).
    pub fn check(&self, expectations: &Expectations) -> Report {
        Checker::new(self, expectations).run()
    }
}

/// What [`History::check`] is told beyond the history.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Examples kept per kind of anomaly.
    pub max_examples: usize,
    /// Subscriptions held from before the first event, as (subscriber, filter, granted QoS),
    /// in addition to the recorded [`Event::Subscribed`] ones.
    pub initial_subscriptions: Vec<(String, String, u8)>,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            max_examples: 10,
            initial_subscriptions: Vec::new(),
        }
    }
}

impl Expectations {
    /// Add a subscription held from the start.
    pub fn subscription(mut self, subscriber: &str, filter: &str, qos: u8) -> Self {
        self.initial_subscriptions
            .push((subscriber.into(), filter.into(), qos));
        self
    }
}

/// One anomaly, kept as an example in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    Lost {
        subscriber: String,
        topic: String,
        payload_id: PayloadId,
    },
    Duplicated {
        subscriber: String,
        payload_id: PayloadId,
        qos: u8,
        times: usize,
    },
    Unexpected {
        subscriber: String,
        topic: String,
        payload_id: Option<PayloadId>,
        why: &'static str,
    },
    Reordered {
        subscriber: String,
        topic: String,
        /// Received first...
        payload_id: PayloadId,
        /// ...after this later-published one had already been received.
        after: PayloadId,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::Lost {
                subscriber,
                topic,
                payload_id,
            } => write!(
                f,
                "lost: {payload_id} on {topic} never reached {subscriber}"
            ),
            Anomaly::Duplicated {
                subscriber,
                payload_id,
                qos,
                times,
            } => write!(
                f,
                "duplicated: {payload_id} (QoS {qos}) reached {subscriber} {times} times"
            ),
            Anomaly::Unexpected {
                subscriber,
                topic,
                payload_id,
                why,
            } => {
                let id = payload_id
                    .as_ref()
                    .map_or_else(|| "(no id)".to_string(), PayloadId::to_string);
                write!(f, "unexpected: {id} on {topic} at {subscriber}: {why}")
            }
            Anomaly::Reordered {
                subscriber,
                topic,
                payload_id,
                after,
            } => write!(
                f,
                "reordered: {subscriber} first got {payload_id} on {topic} after {after}"
            ),
        }
    }
}

/// Anomaly counts (for the whole history or one subscriber).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// (subscriber, acknowledged publish) pairs that had to be delivered.
    pub owed: usize,
    /// Deliveries recorded.
    pub deliveries: usize,
    /// First receipts on ordered streams (QoS ≥ 1), the denominator of `reordered`.
    pub ordered_receipts: usize,
    pub lost: usize,
    /// Copies beyond the first of QoS 0 and QoS 2 messages.
    pub duplicated: usize,
    /// Copies beyond the first of QoS 1 messages (allowed).
    pub allowed_duplicates: usize,
    pub unexpected: usize,
    /// Deliveries of publishes whose outcome is unknown (distinct messages).
    pub recovered: usize,
    pub reordered: usize,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.owed += o.owed;
        self.deliveries += o.deliveries;
        self.ordered_receipts += o.ordered_receipts;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.allowed_duplicates += o.allowed_duplicates;
        self.unexpected += o.unexpected;
        self.recovered += o.recovered;
        self.reordered += o.reordered;
    }
}

/// The result of [`History::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Publishes recorded, and how many were acknowledged / refused / unknown.
    pub publishes: usize,
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    /// Totals over all subscribers.
    pub total: Counts,
    /// Per subscriber.
    pub per_subscriber: BTreeMap<String, Counts>,
    /// Up to [`Expectations::max_examples`] examples of each kind, in history order.
    pub examples: Vec<Anomaly>,
}

impl Report {
    /// No loss, no forbidden duplicate, nothing unexpected, nothing reordered.
    pub fn is_clean(&self) -> bool {
        let t = &self.total;
        t.lost == 0 && t.duplicated == 0 && t.unexpected == 0 && t.reordered == 0
    }
}

fn fraction(n: usize, of: usize) -> String {
    if of == 0 {
        format!("{n}/0")
    } else {
        let pct = 100.0 * n as f64 / of as f64;
        format!("{n}/{of} ({pct:.2}%)")
    }
}

fn write_counts(f: &mut fmt::Formatter<'_>, c: &Counts) -> fmt::Result {
    write!(
        f,
        "lost {}, duplicated {}, allowed QoS 1 duplicates {}, unexpected {}, recovered {}, reordered {}",
        fraction(c.lost, c.owed),
        fraction(c.duplicated, c.deliveries),
        fraction(c.allowed_duplicates, c.deliveries),
        fraction(c.unexpected, c.deliveries),
        c.recovered,
        fraction(c.reordered, c.ordered_receipts),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} publishes ({} acknowledged, {} refused, {} unknown), {} deliveries: {}",
            self.publishes,
            self.acked,
            self.refused,
            self.unknown,
            self.total.deliveries,
            if self.is_clean() {
                "clean"
            } else {
                "ANOMALIES"
            }
        )?;
        write!(f, "  total: ")?;
        write_counts(f, &self.total)?;
        writeln!(f)?;
        for (subscriber, counts) in &self.per_subscriber {
            write!(f, "  {subscriber}: ")?;
            write_counts(f, counts)?;
            writeln!(f)?;
        }
        for example in &self.examples {
            writeln!(f, "  {example}")?;
        }
        Ok(())
    }
}

/// Does the topic filter `filter` match the topic name `topic` (MQTT §4.7)? Wildcards at the
/// first level do not match topics starting with `$` [MQTT-4.7.2-1].
///
/// Written again here rather than taken from `edgemq_core::topic::matches` on purpose: the
/// checker is an oracle for the broker, and a matcher it shared with the broker could not
/// catch that matcher's mistakes.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

struct Sub {
    filter: String,
    qos: u8,
    /// Index of the SUBACK event (`None` for initial ones, before everything).
    at: Option<usize>,
}

struct Checker<'a> {
    history: &'a History,
    max_examples: usize,
    /// Per subscriber: subscriptions granted and the indexes of its session losses.
    subs: BTreeMap<String, Vec<Sub>>,
    losses: HashMap<String, Vec<usize>>,
    /// Publishes by id: (event index, topic, publisher, qos, outcome).
    publishes: HashMap<PayloadId, (usize, &'a str, &'a str, u8, Outcome)>,
    report: Report,
    examples_per_kind: [usize; 4],
}

impl<'a> Checker<'a> {
    fn new(history: &'a History, expectations: &Expectations) -> Checker<'a> {
        let mut subs: BTreeMap<String, Vec<Sub>> = BTreeMap::new();
        for (subscriber, filter, qos) in &expectations.initial_subscriptions {
            subs.entry(subscriber.clone()).or_default().push(Sub {
                filter: filter.clone(),
                qos: *qos,
                at: None,
            });
        }
        let mut losses: HashMap<String, Vec<usize>> = HashMap::new();
        let mut publishes = HashMap::new();
        let mut report = Report::default();
        for (i, event) in history.events.iter().enumerate() {
            match event {
                Event::Subscribed {
                    subscriber,
                    filter,
                    qos,
                } if !filter.starts_with("$share/") => {
                    subs.entry(subscriber.clone()).or_default().push(Sub {
                        filter: filter.clone(),
                        qos: *qos,
                        at: Some(i),
                    });
                }
                Event::SessionLost { subscriber } => {
                    losses.entry(subscriber.clone()).or_default().push(i);
                }
                Event::Publish {
                    publisher,
                    topic,
                    payload_id,
                    qos,
                    outcome,
                } => {
                    report.publishes += 1;
                    match outcome {
                        Outcome::Acked => report.acked += 1,
                        Outcome::Refused => report.refused += 1,
                        Outcome::Unknown => report.unknown += 1,
                    }
                    publishes.entry(payload_id.clone()).or_insert((
                        i,
                        topic.as_str(),
                        publisher.as_str(),
                        *qos,
                        *outcome,
                    ));
                }
                _ => {}
            }
        }
        // Every subscriber that subscribed or received something gets a row.
        for event in &history.events {
            if let Event::Delivery { subscriber, .. } = event {
                subs.entry(subscriber.clone()).or_default();
            }
        }
        Checker {
            history,
            max_examples: expectations.max_examples,
            subs,
            losses,
            publishes,
            report,
            examples_per_kind: [0; 4],
        }
    }

    fn example(&mut self, kind: usize, anomaly: Anomaly) {
        if self.examples_per_kind[kind] < self.max_examples {
            self.examples_per_kind[kind] += 1;
            self.report.examples.push(anomaly);
        }
    }

    /// Was a session loss of `subscriber` recorded after event `from`?
    fn lost_after(&self, subscriber: &str, from: Option<usize>) -> bool {
        self.losses
            .get(subscriber)
            .is_some_and(|l| l.iter().any(|&i| from.is_none_or(|from| i > from)))
    }

    /// The highest QoS granted to `subscriber` by a subscription matching `topic` that was
    /// granted before event `before` and is still alive at the end of the history.
    fn owed_qos(&self, subscriber: &str, topic: &str, before: usize) -> Option<u8> {
        self.subs
            .get(subscriber)?
            .iter()
            .filter(|s| s.at.is_none_or(|at| at < before))
            .filter(|s| topic_matches(&s.filter, topic))
            .filter(|s| !self.lost_after(subscriber, s.at))
            .map(|s| s.qos)
            .max()
    }

    /// Any subscription matching `topic` granted before event `before`?
    fn holds(&self, subscriber: &str, topic: &str, before: usize) -> bool {
        self.subs.get(subscriber).is_some_and(|subs| {
            subs.iter()
                .any(|s| s.at.is_none_or(|at| at < before) && topic_matches(&s.filter, topic))
        })
    }

    fn run(mut self) -> Report {
        let subscribers: Vec<String> = self.subs.keys().cloned().collect();
        for subscriber in subscribers {
            let counts = self.check_subscriber(&subscriber);
            self.report.total.add(&counts);
            self.report.per_subscriber.insert(subscriber, counts);
        }
        self.report
    }

    fn check_subscriber(&mut self, subscriber: &str) -> Counts {
        let mut counts = Counts::default();
        // Copies received per payload id, and the highest delivered QoS among them.
        let mut copies: HashMap<&'a PayloadId, (usize, u8)> = HashMap::new();
        // Ordered streams: (publisher, topic, qos) -> highest publish index first-received.
        let mut streams: HashMap<(&'a str, &'a str, u8), (usize, &'a PayloadId)> = HashMap::new();
        let history = self.history;
        for (i, event) in history.events.iter().enumerate() {
            let Event::Delivery {
                subscriber: to,
                topic,
                payload_id,
                qos,
                ..
            } = event
            else {
                continue;
            };
            if to != subscriber {
                continue;
            }
            counts.deliveries += 1;
            let unexpected = |why| Anomaly::Unexpected {
                subscriber: subscriber.into(),
                topic: topic.clone(),
                payload_id: payload_id.clone(),
                why,
            };
            let Some(id) = payload_id else {
                counts.unexpected += 1;
                self.example(2, unexpected("the payload carries no id"));
                continue;
            };
            let Some(&(at, p_topic, publisher, p_qos, outcome)) = self.publishes.get(id) else {
                counts.unexpected += 1;
                self.example(2, unexpected("never published"));
                continue;
            };
            let why = if outcome == Outcome::Refused {
                Some("the publish was refused")
            } else if p_topic != topic {
                Some("published on another topic")
            } else if at > i {
                Some("received before it was published")
            } else if !self.holds(subscriber, topic, i) {
                Some("no subscription matches it")
            } else {
                None
            };
            if let Some(why) = why {
                counts.unexpected += 1;
                self.example(2, unexpected(why));
                continue;
            }
            let entry = copies.entry(id).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(*qos);
            if entry.0 > 1 {
                continue; // not a first receipt: never counts as reordering
            }
            if outcome == Outcome::Unknown {
                counts.recovered += 1;
            }
            // [MQTT-4.6.0-*]: same publisher, same topic, same QoS (≥ 1) keep their order.
            if p_qos >= 1 && *qos >= 1 {
                counts.ordered_receipts += 1;
                let stream = streams
                    .entry((publisher, p_topic, p_qos))
                    .or_insert((at, id));
                if at < stream.0 {
                    counts.reordered += 1;
                    let after = stream.1.clone();
                    self.example(
                        3,
                        Anomaly::Reordered {
                            subscriber: subscriber.into(),
                            topic: topic.clone(),
                            payload_id: id.clone(),
                            after,
                        },
                    );
                } else {
                    *stream = (at, id);
                }
            }
        }
        // Duplicates, in publish order for stable examples.
        let mut dups: Vec<(&PayloadId, usize, u8)> = copies
            .iter()
            .filter(|(_, (n, _))| *n > 1)
            .map(|(id, (n, q))| (*id, *n, *q))
            .collect();
        dups.sort_by_key(|(id, _, _)| self.publishes.get(*id).map(|p| p.0));
        for (id, times, qos) in dups {
            if qos == 1 {
                counts.allowed_duplicates += times - 1;
            } else {
                counts.duplicated += times - 1;
                self.example(
                    1,
                    Anomaly::Duplicated {
                        subscriber: subscriber.into(),
                        payload_id: id.clone(),
                        qos,
                        times,
                    },
                );
            }
        }
        // Loss: every acknowledged QoS >= 1 publish this subscriber was owed.
        for (i, event) in history.events.iter().enumerate() {
            let Event::Publish {
                topic,
                payload_id,
                qos,
                outcome: Outcome::Acked,
                ..
            } = event
            else {
                continue;
            };
            if *qos == 0 || self.publishes.get(payload_id).map(|p| p.0) != Some(i) {
                continue;
            }
            let Some(granted) = self.owed_qos(subscriber, topic, i) else {
                continue;
            };
            if granted.min(*qos) == 0 {
                continue; // delivered at QoS 0: may be lost
            }
            counts.owed += 1;
            if !copies.contains_key(payload_id) {
                counts.lost += 1;
                self.example(
                    0,
                    Anomaly::Lost {
                        subscriber: subscriber.into(),
                        topic: topic.clone(),
                        payload_id: payload_id.clone(),
                    },
                );
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(p: &str, n: u64) -> PayloadId {
        PayloadId::new(p, n)
    }

    /// `sub` subscribed to `t/#` at `qos`, then `pubs` acknowledged publishes from `p` on
    /// `t/a` at `pub_qos`.
    fn published(qos: u8, pub_qos: u8, pubs: u64) -> History {
        let mut h = History::new();
        h.subscribed("sub", "t/#", qos);
        for n in 1..=pubs {
            let r = h.publish("p", "t/a", id("p", n), pub_qos);
            h.resolve(r, Outcome::Acked);
        }
        h
    }

    fn deliver(h: &mut History, n: u64, qos: u8, dup: bool) {
        h.deliver("sub", "t/a", &id("p", n).encode(), qos, dup);
    }

    fn check(h: &History) -> Report {
        h.check(&Expectations::default())
    }

    #[test]
    fn payload_ids_round_trip() {
        let a = id("pub:1", 42);
        assert_eq!(PayloadId::decode(&a.encode()), Some(a.clone()));
        let padded = a.encode_padded(100);
        assert_eq!(padded.len(), 100);
        assert_eq!(PayloadId::decode(&padded), Some(a));
        assert_eq!(PayloadId::decode(b"hello"), None);
        assert_eq!(PayloadId::decode(b"hist:p:x;"), None);
    }

    #[test]
    fn topic_filters_match_as_mqtt_says() {
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn a_clean_history_is_clean() {
        let mut h = published(1, 1, 3);
        for n in 1..=3 {
            deliver(&mut h, n, 1, false);
        }
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.owed, 3);
        assert_eq!(r.acked, 3);
    }

    #[test]
    fn an_acknowledged_message_never_delivered_is_lost() {
        let mut h = published(1, 1, 3);
        deliver(&mut h, 1, 1, false);
        deliver(&mut h, 3, 1, false);
        let r = check(&h);
        assert_eq!(r.total.lost, 1, "{r}");
        assert_eq!(
            r.examples,
            vec![Anomaly::Lost {
                subscriber: "sub".into(),
                topic: "t/a".into(),
                payload_id: id("p", 2)
            }]
        );
        assert!(r.to_string().contains("lost 1/3"), "{r}");
    }

    #[test]
    fn unacknowledged_qos0_and_unsubscribed_messages_are_not_owed() {
        let mut h = History::new();
        // Published before the subscription existed: not owed.
        let early = h.publish("p", "t/a", id("p", 1), 1);
        h.resolve(early, Outcome::Acked);
        h.subscribed("sub", "t/#", 1);
        // Unknown outcome, refused, QoS 0: none owed.
        h.publish("p", "t/a", id("p", 2), 1);
        let refused = h.publish("p", "t/a", id("p", 3), 1);
        h.resolve(refused, Outcome::Refused);
        let q0 = h.publish("p", "t/a", id("p", 4), 0);
        h.resolve(q0, Outcome::Acked);
        // Another topic: not owed.
        let other = h.publish("p", "u/a", id("p", 5), 1);
        h.resolve(other, Outcome::Acked);
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.owed, 0);
    }

    #[test]
    fn a_subscription_granted_at_qos0_owes_nothing() {
        let h = published(0, 1, 3);
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.owed, 0);
    }

    #[test]
    fn a_lost_session_owes_nothing() {
        let mut h = published(1, 1, 2);
        h.session_lost("sub");
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        // A new subscription after the loss is owed what follows it.
        h.subscribed("sub", "t/#", 1);
        let late = h.publish("p", "t/a", id("p", 3), 1);
        h.resolve(late, Outcome::Acked);
        let r = check(&h);
        assert_eq!(r.total.lost, 1, "{r}");
        assert_eq!(r.total.owed, 1);
    }

    #[test]
    fn qos1_duplicates_are_allowed_and_counted() {
        let mut h = published(1, 1, 2);
        deliver(&mut h, 1, 1, false);
        deliver(&mut h, 1, 1, true);
        deliver(&mut h, 2, 1, false);
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.allowed_duplicates, 1);
        assert_eq!(r.total.duplicated, 0);
    }

    #[test]
    fn qos2_and_qos0_duplicates_are_anomalies() {
        let mut h = published(2, 2, 1);
        deliver(&mut h, 1, 2, false);
        deliver(&mut h, 1, 2, true);
        let r = check(&h);
        assert_eq!(r.total.duplicated, 1, "{r}");
        assert!(matches!(
            r.examples[..],
            [Anomaly::Duplicated {
                qos: 2,
                times: 2,
                ..
            }]
        ));

        let mut h = published(0, 0, 1);
        deliver(&mut h, 1, 0, false);
        deliver(&mut h, 1, 0, false);
        let r = check(&h);
        assert_eq!(r.total.duplicated, 1, "{r}");
    }

    #[test]
    fn deliveries_nothing_explains_are_unexpected() {
        let mut h = published(1, 1, 1);
        // Never published.
        deliver(&mut h, 9, 1, false);
        // No id at all.
        h.deliver("sub", "t/a", b"foreign", 1, false);
        // Wrong topic.
        h.deliver("sub", "t/b", &id("p", 1).encode(), 1, false);
        // Refused publish.
        let refused = h.publish("p", "t/a", id("p", 2), 1);
        h.resolve(refused, Outcome::Refused);
        deliver(&mut h, 2, 1, false);
        // A subscriber without a subscription.
        h.deliver("stranger", "t/a", &id("p", 1).encode(), 1, false);
        deliver(&mut h, 1, 1, false);
        let r = check(&h);
        assert_eq!(r.total.unexpected, 5, "{r}");
        assert_eq!(r.per_subscriber["stranger"].unexpected, 1);
        assert_eq!(r.total.lost, 0);
    }

    #[test]
    fn a_delivered_unknown_publish_is_recovered() {
        let mut h = History::new();
        h.subscribed("sub", "t/#", 1);
        h.publish("p", "t/a", id("p", 1), 1);
        deliver(&mut h, 1, 1, false);
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.recovered, 1);
    }

    #[test]
    fn first_receipts_out_of_publish_order_are_reordered() {
        let mut h = published(1, 1, 4);
        deliver(&mut h, 1, 1, false);
        deliver(&mut h, 3, 1, false);
        deliver(&mut h, 2, 1, false);
        deliver(&mut h, 4, 1, false);
        let r = check(&h);
        assert_eq!(r.total.reordered, 1, "{r}");
        assert_eq!(
            r.examples,
            vec![Anomaly::Reordered {
                subscriber: "sub".into(),
                topic: "t/a".into(),
                payload_id: id("p", 2),
                after: id("p", 3),
            }]
        );
    }

    #[test]
    fn redeliveries_after_a_reconnect_are_not_reordering() {
        // 1, 2, 3 arrive; the connection dies before the PUBACKs; the broker re-sends 2 and 3
        // with DUP [MQTT-4.4.0-1], then 4.
        let mut h = published(1, 1, 4);
        for n in 1..=3 {
            deliver(&mut h, n, 1, false);
        }
        deliver(&mut h, 2, 1, true);
        deliver(&mut h, 3, 1, true);
        deliver(&mut h, 4, 1, false);
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.allowed_duplicates, 2);
    }

    #[test]
    fn order_is_per_publisher_topic_and_qos() {
        let mut h = History::new();
        h.subscribed("sub", "t/#", 2);
        for (p, topic, qos) in [
            ("p", "t/a", 1),
            ("q", "t/a", 1),
            ("p", "t/b", 1),
            ("p", "t/a", 2),
        ] {
            let r = h.publish(p, topic, id(&format!("{p}{topic}{qos}"), 1), qos);
            h.resolve(r, Outcome::Acked);
        }
        // Received in the reverse order: different streams, no reordering (§4.6).
        for (p, topic, qos) in [
            ("p", "t/a", 2),
            ("p", "t/b", 1),
            ("q", "t/a", 1),
            ("p", "t/a", 1),
        ] {
            h.deliver(
                "sub",
                topic,
                &id(&format!("{p}{topic}{qos}"), 1).encode(),
                qos,
                false,
            );
        }
        let r = check(&h);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.total.ordered_receipts, 4);
    }

    #[test]
    fn json_lines_round_trip() {
        let mut h = published(1, 2, 2);
        h.publish("p", "t/a", id("p", 3), 1);
        let refused = h.publish("p", "t/a", id("p", 4), 1);
        h.resolve(refused, Outcome::Refused);
        deliver(&mut h, 1, 1, false);
        deliver(&mut h, 1, 1, true);
        h.deliver("sub", "t/a", b"foreign", 0, false);
        h.session_lost("sub");
        let text = h.to_json_lines();
        assert_eq!(text.lines().count(), h.events().len());
        let back = History::from_json_lines(&text).unwrap();
        assert_eq!(back.events(), h.events());
        assert_eq!(check(&back), check(&h));
        assert!(History::from_json_lines("{\"f\": \"dance\", \"process\": \"x\"}").is_err());
    }

    #[test]
    fn examples_are_bounded() {
        let h = published(1, 1, 50);
        let r = h.check(&Expectations {
            max_examples: 3,
            ..Expectations::default()
        });
        assert_eq!(r.total.lost, 50);
        assert_eq!(r.examples.len(), 3);
    }

    #[test]
    fn initial_subscriptions_count_from_the_start() {
        let mut h = History::new();
        let r = h.publish("p", "t/a", id("p", 1), 1);
        h.resolve(r, Outcome::Acked);
        let report = h.check(&Expectations::default().subscription("sub", "t/a", 1));
        assert_eq!(report.total.lost, 1, "{report}");
    }

    proptest! {
        /// Any interleaving of publishers, topics and QoS, delivered in publish order to
        /// every subscriber (QoS 1 sometimes twice in a row), is clean.
        #[test]
        fn a_clean_in_order_history_reports_nothing(
            pubs in proptest::collection::vec((0..3usize, 0..3usize, 0..3u8, any::<bool>()), 0..60),
            subscribers in 1..4usize,
        ) {
            let mut h = History::new();
            for s in 0..subscribers {
                h.subscribed(&format!("s{s}"), "t/#", 2);
            }
            let mut seqs = [0u64; 3];
            let mut sent = Vec::new();
            for (p, t, qos, twice) in pubs {
                seqs[p] += 1;
                let pid = id(&format!("p{p}"), seqs[p]);
                let topic = format!("t/{t}");
                let r = h.publish(&format!("p{p}"), &topic, pid.clone(), qos);
                h.resolve(r, Outcome::Acked);
                sent.push((topic, pid, qos, twice));
            }
            for s in 0..subscribers {
                for (topic, pid, qos, twice) in &sent {
                    h.deliver(&format!("s{s}"), topic, &pid.encode(), *qos, false);
                    if *twice && *qos == 1 {
                        h.deliver(&format!("s{s}"), topic, &pid.encode(), *qos, true);
                    }
                }
            }
            let r = check(&h);
            prop_assert!(r.is_clean(), "{}", r);
            prop_assert_eq!(r.total.recovered, 0);
            prop_assert!(r.examples.is_empty());
        }
    }
}
