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

pub use edgemq_core::limits::Limit;

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
