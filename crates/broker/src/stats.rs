//! Broker-wide counters. Relaxed atomics: they are reported, never used for control.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// A limit that refused something a client sent. Every refusal is counted under one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A topic name or filter deeper than `max_topic_levels`.
    TopicLevels,
    /// A SUBSCRIBE or UNSUBSCRIBE filter beyond `max_filters_per_packet`.
    FiltersPerPacket,
    /// A connection closed at accept: `max_connections` were open.
    Connections,
    /// A connection closed at accept: `max_connections_per_address` were open from its
    /// source address.
    ConnectionsPerAddress,
    /// A connection closed at accept: its source address had used its
    /// `max_connect_rate_per_address` connections for this second.
    ConnectRate,
    /// A retained message not kept: `max_retained_messages` were held.
    RetainedMessages,
    /// A retained message not kept: it would take the retained bytes over
    /// `max_retained_bytes`.
    RetainedBytes,
    /// A new session refused at CONNECT: `max_sessions` existed.
    Sessions,
    /// A SUBSCRIBE filter refused: the session held `max_subscriptions_per_session`.
    SubscriptionsPerSession,
    /// A connection refused at CONNECT: the broker was near its memory budget.
    MemoryBudget,
    /// A SUBSCRIBE filter refused: the broker held `max_subscriptions`.
    Subscriptions,
    /// The store is at `max_store_bytes`: a QoS 1/2 PUBLISH for a persistent session or a
    /// retained PUBLISH refused; or at 90 % of it, a new persistent session refused.
    StoreBudget,
    /// A connection closed at accept: its listener (port) had its
    /// `max_connections_per_listener` (or the port's `maxConnections`) open.
    ConnectionsPerListener,
    /// A new session refused at CONNECT: its source address had created
    /// `max_sessions_per_address` sessions that still exist.
    SessionsPerAddress,
    /// A CONNECT refused: its client identifier was longer than `max_client_id_len` bytes.
    ClientIdLength,
}

impl Limit {
    pub const ALL: [Limit; 15] = [
        Limit::TopicLevels,
        Limit::FiltersPerPacket,
        Limit::Connections,
        Limit::ConnectionsPerAddress,
        Limit::ConnectRate,
        Limit::RetainedMessages,
        Limit::RetainedBytes,
        Limit::Sessions,
        Limit::SubscriptionsPerSession,
        Limit::MemoryBudget,
        Limit::Subscriptions,
        Limit::StoreBudget,
        Limit::ConnectionsPerListener,
        Limit::SessionsPerAddress,
        Limit::ClientIdLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TopicLevels => "max_topic_levels",
            Limit::FiltersPerPacket => "max_filters_per_packet",
            Limit::Connections => "max_connections",
            Limit::ConnectionsPerAddress => "max_connections_per_address",
            Limit::ConnectRate => "max_connect_rate_per_address",
            Limit::RetainedMessages => "max_retained_messages",
            Limit::RetainedBytes => "max_retained_bytes",
            Limit::Sessions => "max_sessions",
            Limit::SubscriptionsPerSession => "max_subscriptions_per_session",
            Limit::MemoryBudget => "memory_budget",
            Limit::Subscriptions => "max_subscriptions",
            Limit::StoreBudget => "max_store_bytes",
            Limit::ConnectionsPerListener => "max_connections_per_listener",
            Limit::SessionsPerAddress => "max_sessions_per_address",
            Limit::ClientIdLength => "max_client_id_length",
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    drops: [AtomicU64; DropReason::ALL.len()],
    refusals: [AtomicU64; Limit::ALL.len()],
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub connections: AtomicU64,
}

impl Stats {
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// Count `n` things a client sent that `limit` refused.
    pub fn refused(&self, limit: Limit, n: u64) {
        self.refusals[limit as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn refusals(&self, limit: Limit) -> u64 {
        self.refusals[limit as usize].load(Ordering::Relaxed)
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
