//! A session's mailbox: the bounded queue publishers push deliveries into and the session's
//! connection task drains. It is the only state a publisher touches on another session, and
//! its lock is per session, so fan-out runs in parallel on every core.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::Notify;

use edgemq_codec::QoS;
use edgemq_core::limits::OverflowPolicy;
use edgemq_core::session::Delivery;
use edgemq_core::subscriptions::{SessionKey, SubscriberHandle};

use crate::stats::{DropReason, Stats};

/// Shared between the subscription index (as [`MailboxHandle`]) and the owning connection.
#[derive(Debug)]
pub struct Mailbox {
    pub key: SessionKey,
    pub client_id: ByteString,
    queue: Mutex<Queue>,
    notify: Notify,
    connected: AtomicBool,
    /// Set when the Disconnect overflow policy fires; the connection task closes.
    overflowed: AtomicBool,
    /// Messages dropped for this session (all reasons), for rate-limited warnings.
    drops: AtomicU64,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Delivery>,
    capacity: usize,
    policy: OverflowPolicy,
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// Queued after dropping the oldest message.
    QueuedDroppedOldest,
    Dropped(DropReason),
}

impl Mailbox {
    pub fn new(
        key: SessionKey,
        client_id: ByteString,
        capacity: usize,
        policy: OverflowPolicy,
    ) -> Self {
        Mailbox {
            key,
            client_id,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                policy,
            }),
            notify: Notify::new(),
            connected: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            drops: AtomicU64::new(0),
        }
    }

    /// Queue a delivery under the overflow policy, counting every drop in `stats`.
    /// QoS 0 messages are not kept for an offline session (as Mosquitto's default).
    pub fn push(&self, delivery: Delivery, stats: &Stats) -> PushOutcome {
        let connected = self.is_connected();
        if !connected && delivery.qos == QoS::AtMostOnce {
            stats.dropped(DropReason::OfflineQos0);
            return PushOutcome::Dropped(DropReason::OfflineQos0);
        }
        let outcome = {
            let mut q = self.queue.lock();
            if q.items.len() < q.capacity {
                q.items.push_back(delivery);
                PushOutcome::Queued
            } else {
                match q.policy {
                    OverflowPolicy::DropOldest => {
                        q.items.pop_front();
                        q.items.push_back(delivery);
                        PushOutcome::QueuedDroppedOldest
                    }
                    OverflowPolicy::DropNew => PushOutcome::Dropped(DropReason::QueueFullDropNew),
                    OverflowPolicy::Disconnect => {
                        if connected {
                            self.overflowed.store(true, Ordering::Release);
                        }
                        PushOutcome::Dropped(DropReason::QueueFullDisconnect)
                    }
                }
            }
        };
        match outcome {
            PushOutcome::QueuedDroppedOldest => {
                self.count_drop(DropReason::QueueFullDropOldest, stats)
            }
            PushOutcome::Dropped(reason) => self.count_drop(reason, stats),
            PushOutcome::Queued => {}
        }
        if connected && outcome != PushOutcome::Dropped(DropReason::QueueFullDropNew) {
            self.notify.notify_one();
        }
        outcome
    }

    /// Count a drop broker-wide and warn about it: the first one per session and then every
    /// thousandth, so a flood of drops cannot flood the log.
    fn count_drop(&self, reason: DropReason, stats: &Stats) {
        stats.dropped(reason);
        let n = self.drops.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(client_id = %self.client_id, reason = reason.as_str(), dropped_total = n, "message dropped for subscriber");
        }
    }

    /// Put deliveries back at the front (oldest first), e.g. messages taken for sending that
    /// could not be sent. Not subject to the overflow policy: they were already admitted.
    pub fn requeue_front(&self, deliveries: impl DoubleEndedIterator<Item = Delivery>) {
        let mut q = self.queue.lock();
        for d in deliveries.rev() {
            q.items.push_front(d);
        }
    }

    /// Take up to `max` deliveries from the front.
    pub fn pop_batch(&self, max: usize, out: &mut Vec<Delivery>) {
        let mut q = self.queue.lock();
        let n = max.min(q.items.len());
        out.extend(q.items.drain(..n));
    }

    /// Take the next delivery whose QoS is 0, or any delivery if `allow_qos12`.
    pub fn pop(&self, allow_qos12: bool) -> Option<Delivery> {
        let mut q = self.queue.lock();
        match q.items.front() {
            Some(d) if allow_qos12 || d.qos == QoS::AtMostOnce => q.items.pop_front(),
            _ => None,
        }
    }

    /// Remove every queued delivery for which `take` is true (shared-group redistribution).
    pub fn take_where(&self, mut take: impl FnMut(&Delivery) -> bool) -> Vec<Delivery> {
        let mut q = self.queue.lock();
        let mut taken = Vec::new();
        q.items.retain(|d| {
            if take(d) {
                taken.push(d.clone());
                false
            } else {
                true
            }
        });
        taken
    }

    pub fn len(&self) -> usize {
        self.queue.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        if connected {
            self.overflowed.store(false, Ordering::Release);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn take_overflowed(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }

    /// Resolves when something was pushed since the last call (a stored permit makes a push
    /// between two waits wake the next wait, so no wake-up is lost).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Wake the owner (e.g. to re-check the overflow flag).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// The index's handle on a mailbox.
#[derive(Debug, Clone)]
pub struct MailboxHandle(pub std::sync::Arc<Mailbox>);

impl SubscriberHandle for MailboxHandle {
    fn key(&self) -> SessionKey {
        self.0.key
    }

    fn is_available(&self) -> bool {
        self.0.is_connected()
    }
}
