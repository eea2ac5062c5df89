//! Broker-wide counters. Relaxed atomics: they are reported, never used for control.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a message did not reach a subscriber. Every drop is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// QoS 0 message for a session with no connection.
    OfflineQos0,
    /// Queue full, policy drop-oldest: the oldest queued message was dropped.
    QueueFullDropOldest,
    /// Queue full, policy drop-new: the new message was dropped.
    QueueFullDropNew,
    /// Queue full, policy disconnect: the message was dropped and the client disconnected.
    QueueFullDisconnect,
    /// The message expired before it could be sent.
    Expired,
    /// Larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    PacketTooLarge,
    /// The session ended with messages still queued.
    SessionEnded,
    /// A will or broker message for a persistent session while the store is full
    /// (`max_store_bytes`).
    StoreFull,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::OfflineQos0,
        DropReason::QueueFullDropOldest,
        DropReason::QueueFullDropNew,
        DropReason::QueueFullDisconnect,
        DropReason::Expired,
        DropReason::PacketTooLarge,
        DropReason::SessionEnded,
        DropReason::StoreFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::OfflineQos0 => "offline_qos0",
            DropReason::QueueFullDropOldest => "queue_full_drop_oldest",
            DropReason::QueueFullDropNew => "queue_full_drop_new",
            DropReason::QueueFullDisconnect => "queue_full_disconnect",
            DropReason::Expired => "expired",
            DropReason::PacketTooLarge => "packet_too_large",
            DropReason::SessionEnded => "session_ended",
            DropReason::StoreFull => "store_full",
        }
    }
}

pub use edgemq_core::limits::Limit;

/// Why a TLS handshake failed: a small fixed set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The client does not trust the server certificate's CA (alert UnknownCA), or the
    /// server could not chain a client certificate.
    UnknownCa,
    /// A certificate was refused for another reason (bad, expired, wrong name, missing).
    BadCertificate,
    /// Not TLS, or no common version, cipher suite or signature scheme.
    Protocol,
    /// Not completed within the handshake timeout.
    Timeout,
    /// Anything else, e.g. the client closed the connection mid-handshake.
    Other,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 5] = [
        TlsFailure::UnknownCa,
        TlsFailure::BadCertificate,
        TlsFailure::Protocol,
        TlsFailure::Timeout,
        TlsFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::UnknownCa => "unknown_ca",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Other => "other",
        }
    }
}

/// What the broker counts. Monotonic counters except the `clients_connected` gauge; what
/// other parts already know (sessions, subscriptions, retained messages, the store) is read
/// from them when reported, not counted twice.
#[derive(Debug, Default)]
pub struct Stats {
    drops: [AtomicU64; DropReason::ALL.len()],
    refusals: [AtomicU64; Limit::ALL.len()],
    tls_failures: [AtomicU64; TlsFailure::ALL.len()],
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// Application messages routed: PUBLISHes from clients, wills, the broker's own.
    pub messages_received: AtomicU64,
    /// PUBLISHes from clients routed (AIO's `publishes_received`), and their payload bytes.
    pub publishes_received: AtomicU64,
    /// PUBLISHes written to clients.
    pub messages_sent: AtomicU64,
    /// Payload bytes of `publishes_received` / `messages_sent`.
    pub payload_bytes_received: AtomicU64,
    pub payload_bytes_sent: AtomicU64,
    /// Bytes read from and written to client connections (every packet).
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Connections accepted by a listener (before the handshake).
    pub connections: AtomicU64,
    /// Clients past CONNACK now, and the most there have been at once.
    clients_connected: AtomicU64,
    clients_maximum: AtomicU64,
    /// Offline sessions ended by their expiry.
    pub sessions_expired: AtomicU64,
    /// Authentication decisions (CONNECT and re-authentication): admitted, refused, and
    /// failures (the verifier could not answer: 0x88 / 0x89), as AIO counts them.
    pub authentication_successes: AtomicU64,
    pub authentication_deny: AtomicU64,
    pub authentication_failures: AtomicU64,
    /// Authorization decisions (connect, publish, subscribe, wills, re-checks).
    pub authorization_allow: AtomicU64,
    pub authorization_deny: AtomicU64,
    /// From a client's PUBLISH arriving to each delivery of it being written for a
    /// subscriber (live deliveries only: not retained messages, re-sends or stored ones).
    pub delivery_latency: Histogram,
    /// Traffic by AIO metric category (the CONNECT user property `metriccategory`).
    pub categories: Categories,
}

/// The traffic of the clients of one metric category.
#[derive(Debug)]
pub struct Category {
    pub name: Arc<str>,
    pub publishes_received: AtomicU64,
    pub payload_bytes_received: AtomicU64,
    pub publishes_sent: AtomicU64,
    pub payload_bytes_sent: AtomicU64,
}

/// The categories clients named, at most [`Categories::MAX`] (`uncategorized` included) and
/// then `other`: a client chooses the name,
/// so later ones share `other` (bounded label cardinality). Clients that name none are
/// `uncategorized`, as AIO tags them.
#[derive(Debug, Default)]
pub struct Categories {
    known: parking_lot::Mutex<Vec<Arc<Category>>>,
}

impl Categories {
    pub const MAX: usize = 32;
    pub const NONE: &'static str = "uncategorized";
    pub const OTHER: &'static str = "other";

    /// The counters of category `name` (`None`: uncategorized). Taken once per connection.
    pub fn get(&self, name: Option<&str>) -> Arc<Category> {
        let mut known = self.known.lock();
        let name = name.filter(|n| !n.is_empty()).unwrap_or(Self::NONE);
        if let Some(c) = known.iter().find(|c| &*c.name == name) {
            return c.clone();
        }
        let name = if known.len() >= Self::MAX {
            Self::OTHER
        } else {
            name
        };
        if let Some(c) = known.iter().find(|c| &*c.name == name) {
            return c.clone();
        }
        let category = Arc::new(Category {
            name: Arc::from(name),
            publishes_received: AtomicU64::new(0),
            payload_bytes_received: AtomicU64::new(0),
            publishes_sent: AtomicU64::new(0),
            payload_bytes_sent: AtomicU64::new(0),
        });
        known.push(category.clone());
        category
    }

    /// Every category so far, `uncategorized` included once a client was.
    pub fn all(&self) -> Vec<Arc<Category>> {
        self.known.lock().clone()
    }
}

/// One connection's traffic, counted locally and added to [`Stats`] once per wake-up of its
/// task ([`Stats::add`]): the shared counters are touched once per batch rather than once
/// per message, so fewer cache lines bounce between cores under load.
#[derive(Debug, Default)]
pub struct Tally {
    pub publishes_in: u32,
    /// Actions the authorization policy allowed (denials are counted at once: rare).
    pub authorized: u32,
    pub payload_in: u64,
    pub sent: u32,
    pub payload_out: u64,
}

impl Stats {
    /// Add `tally` to the shared counters and to its connection's `category`, and clear it.
    pub fn add(&self, tally: &mut Tally, category: &Category) {
        if tally.publishes_in > 0 {
            let n = u64::from(tally.publishes_in);
            self.publishes_received.fetch_add(n, Ordering::Relaxed);
            self.messages_received.fetch_add(n, Ordering::Relaxed);
            (self.payload_bytes_received).fetch_add(tally.payload_in, Ordering::Relaxed);
            category.publishes_received.fetch_add(n, Ordering::Relaxed);
            (category.payload_bytes_received).fetch_add(tally.payload_in, Ordering::Relaxed);
        }
        if tally.authorized > 0 {
            let n = u64::from(tally.authorized);
            self.authorization_allow.fetch_add(n, Ordering::Relaxed);
        }
        if tally.sent > 0 {
            let n = u64::from(tally.sent);
            self.messages_sent.fetch_add(n, Ordering::Relaxed);
            (self.payload_bytes_sent).fetch_add(tally.payload_out, Ordering::Relaxed);
            category.publishes_sent.fetch_add(n, Ordering::Relaxed);
            (category.payload_bytes_sent).fetch_add(tally.payload_out, Ordering::Relaxed);
        }
        *tally = Tally::default();
    }
}

/// A fixed-bucket latency histogram: relaxed increments per observation, read when
/// reported. Bucket upper bounds in microseconds, the last one open.
///
/// Spread over shards, one per thread (by a thread-local index): observed once per delivery
/// by every connection thread, a single set of counters bounced its cache lines between
/// cores on every message.
#[derive(Debug, Default)]
pub struct Histogram {
    shards: [HistogramShard; HISTOGRAM_SHARDS],
}

const HISTOGRAM_SHARDS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct HistogramShard {
    buckets: [AtomicU64; Histogram::BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// This thread's shard of every [`Histogram`].
fn histogram_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % HISTOGRAM_SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl Histogram {
    pub const BOUNDS_US: [u64; 15] = [
        50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 5_000_000,
    ];

    pub fn observe(&self, elapsed: std::time::Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::BOUNDS_US.partition_point(|bound| *bound < us);
        let shard = &self.shards[histogram_shard()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// (upper bound in µs, count in this bucket) per bucket, the open one last as
    /// `u64::MAX`; and the sum in µs.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64) {
        let bounds = Self::BOUNDS_US.iter().copied().chain([u64::MAX]);
        let counts = bounds
            .enumerate()
            .map(|(i, bound)| {
                let n = self
                    .shards
                    .iter()
                    .map(|s| s.buckets[i].load(Ordering::Relaxed));
                (bound, n.sum())
            })
            .collect();
        let sum = self.shards.iter().map(|s| s.sum_us.load(Ordering::Relaxed));
        (counts, sum.sum())
    }
}

impl Stats {
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    pub fn tls_failed(&self, reason: TlsFailure) {
        self.tls_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_failures(&self, reason: TlsFailure) -> u64 {
        self.tls_failures[reason as usize].load(Ordering::Relaxed)
    }

    /// Count `n` things a client sent that `limit` refused.
    pub fn refused(&self, limit: Limit, n: u64) {
        self.refusals[limit as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn refusals(&self, limit: Limit) -> u64 {
        self.refusals[limit as usize].load(Ordering::Relaxed)
    }

    /// Every drop, whatever its reason.
    pub fn drops_total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.drops(*r)).sum()
    }

    /// A client got its CONNACK; the returned guard counts it until dropped.
    pub fn client_connected(self: &std::sync::Arc<Self>) -> ConnectedClient {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
        ConnectedClient(self.clone())
    }

    pub fn clients_connected(&self) -> u64 {
        self.clients_connected.load(Ordering::Relaxed)
    }

    pub fn clients_maximum(&self) -> u64 {
        self.clients_maximum.load(Ordering::Relaxed)
    }

    /// Count one authorization decision; returns it.
    pub fn authorization(&self, allowed: bool) -> bool {
        let counter = if allowed {
            &self.authorization_allow
        } else {
            &self.authorization_deny
        };
        counter.fetch_add(1, Ordering::Relaxed);
        allowed
    }

    /// Count one authentication decision.
    pub fn authentication(&self, decision: &edgemq_core::auth::AuthDecision) {
        use edgemq_codec::ReasonCode;
        use edgemq_core::auth::AuthDecision;
        let counter = match decision {
            AuthDecision::Allow(_) => &self.authentication_successes,
            AuthDecision::Deny(ReasonCode::ServerUnavailable | ReasonCode::ServerBusy) => {
                &self.authentication_failures
            }
            AuthDecision::Deny(_) => &self.authentication_deny,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `reason=count` pairs for the non-zero drop counters, for log lines.
    pub fn drop_summary(&self) -> String {
        DropReason::ALL
            .iter()
            .filter(|r| self.drops(**r) > 0)
            .map(|r| format!("{}={}", r.as_str(), self.drops(*r)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `limit=count` pairs for the non-zero refusal counters, for log lines.
    pub fn refusal_summary(&self) -> String {
        Limit::ALL
            .iter()
            .filter(|l| self.refusals(**l) > 0)
            .map(|l| format!("{}={}", l.as_str(), self.refusals(*l)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A connected client on [`Stats::clients_connected`], for as long as it lives.
#[derive(Debug)]
pub struct ConnectedClient(std::sync::Arc<Stats>);

impl Drop for ConnectedClient {
    fn drop(&mut self) {
        self.0.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client chooses its `metriccategory`: the label's values stay bounded.
    #[test]
    fn categories_are_bounded_and_later_names_share_other() {
        let categories = Categories::default();
        assert_eq!(&*categories.get(None).name, Categories::NONE);
        assert_eq!(&*categories.get(Some("")).name, Categories::NONE);
        for i in 0..10 * Categories::MAX {
            categories.get(Some(&format!("c{i}")));
        }
        // `uncategorized`, then names until the cap, then one `other` for everything else.
        assert_eq!(categories.all().len(), Categories::MAX + 1);
        assert_eq!(
            &*categories.get(Some("yet-another")).name,
            Categories::OTHER
        );
        assert_eq!(
            &*categories.get(Some("c1")).name,
            "c1",
            "known names keep theirs"
        );
    }
}
