//! A session's mailbox: the bounded queue publishers push deliveries into and the session's
//! connection task drains. It is the only state a publisher touches on another session, and
//! its lock is per session, so fan-out runs in parallel on every core.
//!
//! Back-pressure: a connected subscriber whose queue passes [`CONGESTED_AT`] reports itself
//! congested to the publisher that pushed, which stops reading its socket until the queue is
//! back under a quarter of that (see `Connection::run`). So a fast publisher slows to its
//! slowest live subscriber instead of growing the queue until the overflow policy drops
//! messages. A subscriber that stays congested past the publisher's patience is marked
//! stalled and stops holding publishers back until it recovers; the queue limit and its
//! overflow policy then apply as before.
//!
//! Durability: the QoS 1/2 deliveries of a persistent session are written to the store as
//! they are queued (see [`Mailbox::set_durable`]). While the session is offline only their
//! store keys stay in memory ([`Entry::Stored`]); its connection reads them back in batches
//! when the client returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::Notify;

use edgemq_codec::QoS;
use edgemq_core::limits::{Limits, OverflowPolicy};

use crate::memory::Held;
use edgemq_core::logtext::Short;
use edgemq_core::session::Delivery;
use edgemq_core::subscriptions::{SessionKey, SubscriberHandle};

use crate::journal::Journal;

use crate::stats::{DropReason, Stats};

/// Queue depth at which a connected subscriber holds back its publishers.
pub const CONGESTED_AT: usize = 1024;

/// Shared between the subscription index (as [`MailboxHandle`]) and the owning connection.
#[derive(Debug)]
pub struct Mailbox {
    pub key: SessionKey,
    pub client_id: ByteString,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Wakes publishers held back by this queue (see [`Mailbox::relieved`]).
    relief: Notify,
    connected: AtomicBool,
    /// Set when the Disconnect overflow policy fires; the connection task closes.
    overflowed: AtomicBool,
    /// Messages dropped for this session (all reasons but offline QoS 0), for rate-limited
    /// warnings and operators.
    drops: AtomicU64,
    /// QoS 0 messages dropped because no client was connected (not warned about: normal).
    offline_qos0_drops: AtomicU64,
    /// Messages the connection dropped instead of sending: expired, or larger than the
    /// client's Maximum Packet Size.
    unsendable_drops: AtomicU64,
    /// The session's durable records.
    journal: Journal,
}

/// What one session lost, by cause.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionDrops {
    /// The queue was full (its overflow policy dropped one).
    pub queue_full: u64,
    /// QoS 0 while no client was connected.
    pub offline_qos0: u64,
    /// Expired before it could be sent, or larger than the client's Maximum Packet Size.
    pub unsendable: u64,
}

/// A queued delivery: in memory, or only on disk (an offline persistent session's).
#[derive(Debug)]
pub enum Entry {
    Ready(Delivery),
    Stored { seq: u64, qos: QoS },
}

impl Entry {
    /// Bytes it holds in memory (an entry only on disk holds none).
    fn bytes(&self) -> usize {
        match self {
            Entry::Ready(d) => d.message.size(),
            Entry::Stored { .. } => 0,
        }
    }

    fn qos(&self) -> QoS {
        match self {
            Entry::Ready(d) => d.qos,
            Entry::Stored { qos, .. } => *qos,
        }
    }

    pub fn seq(&self) -> Option<u64> {
        match self {
            Entry::Ready(d) => d.stored,
            Entry::Stored { seq, .. } => Some(*seq),
        }
    }
}

/// A session queue's bounds and what to do past them.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub messages: usize,
    /// Bytes of the messages held in memory ([`edgemq_core::message::Message::size`]).
    pub bytes: usize,
    pub policy: OverflowPolicy,
    /// The broker-wide account the queue's bytes are added to (the memory budget).
    pub held: Option<Arc<Held>>,
}

impl QueueLimits {
    pub fn of(limits: &Limits, held: &Arc<Held>) -> Self {
        QueueLimits {
            messages: limits.max_queued_messages,
            bytes: limits.max_queued_bytes,
            policy: limits.overflow_policy,
            held: Some(held.clone()),
        }
    }
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Entry>,
    capacity: usize,
    /// Bytes of the in-memory entries, and their bound.
    bytes: usize,
    max_bytes: usize,
    held: Option<Arc<Held>>,
    policy: OverflowPolicy,
    /// Depth at which pushers are told to wait: [`CONGESTED_AT`], or half a smaller capacity
    /// so back-pressure starts before the overflow policy does.
    congested_at: usize,
    /// Depth under which held-back publishers resume: a quarter of `congested_at`.
    relieved_at: usize,
    /// A publisher waits for the queue to drain: the consumer wakes it at `relieved_at`.
    relief_wanted: bool,
    /// Congested for longer than a publisher would wait: no longer holds publishers back.
    stalled: bool,
}

impl Queue {
    fn push_back(&mut self, entry: Entry) {
        self.grow(entry.bytes());
        self.items.push_back(entry);
    }

    fn push_front(&mut self, entry: Entry) {
        self.grow(entry.bytes());
        self.items.push_front(entry);
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.items.pop_front()?;
        self.shrink(entry.bytes());
        Some(entry)
    }

    fn grow(&mut self, n: usize) {
        self.bytes += n;
        if let Some(held) = &self.held {
            Held::add(&held.queued, n);
        }
    }

    fn shrink(&mut self, n: usize) {
        self.bytes -= n;
        if let Some(held) = &self.held {
            Held::sub(&held.queued, n);
        }
    }

    /// Room for one more message of `size` bytes (`shed`: the broker is at its memory
    /// budget, and only an empty queue takes one).
    fn has_room(&self, size: usize, shed: bool) -> bool {
        if shed && !self.items.is_empty() {
            return false;
        }
        self.items.len() < self.capacity && self.bytes + size <= self.max_bytes
    }
}

/// A queue dropped with messages in it takes their bytes off the broker's account.
impl Drop for Queue {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            Held::sub(&held.queued, self.bytes);
        }
    }
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// Queued, and the queue is deep: the publisher should wait for [`Mailbox::relieved`].
    QueuedCongested,
    /// Queued after dropping the oldest message.
    QueuedDroppedOldest,
    Dropped(DropReason),
}

impl Mailbox {
    pub fn new(
        key: SessionKey,
        client_id: ByteString,
        limits: QueueLimits,
        journal: Journal,
    ) -> Self {
        let capacity = limits.messages.max(1);
        Mailbox {
            key,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                capacity,
                bytes: 0,
                max_bytes: limits.bytes.max(1),
                policy: limits.policy,
                held: limits.held,
                congested_at: CONGESTED_AT.min(capacity / 2).max(1),
                relieved_at: CONGESTED_AT.min(capacity / 2) / 4,
                relief_wanted: false,
                stalled: false,
            }),
            notify: Notify::new(),
            relief: Notify::new(),
            connected: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            drops: AtomicU64::new(0),
            offline_qos0_drops: AtomicU64::new(0),
            unsendable_drops: AtomicU64::new(0),
            journal,
            client_id,
        }
    }

    /// The session's durable records.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Whether a delivery of this QoS pushed now is written to the store (the publisher's
    /// acknowledgement then waits for the commit).
    pub fn stores(&self, qos: QoS) -> bool {
        qos != QoS::AtMostOnce && self.journal.is_durable()
    }

    /// Forget a stored delivery (acknowledged, dropped or moved to another session).
    pub fn forget(&self, seq: Option<u64>) {
        self.journal.forget(seq);
    }

    /// A stored delivery recovered at start-up, oldest first (admitted before the restart:
    /// no overflow policy).
    pub fn restore_stored(&self, seq: u64, qos: QoS) {
        self.queue.lock().push_back(Entry::Stored { seq, qos });
    }

    /// The connection ended: deliveries already on disk leave memory.
    pub fn spill(&self) {
        let mut q = self.queue.lock();
        let mut freed = 0;
        for entry in q.items.iter_mut() {
            if let Entry::Ready(Delivery {
                stored: Some(seq),
                qos,
                message,
                ..
            }) = entry
            {
                freed += message.size();
                *entry = Entry::Stored {
                    seq: *seq,
                    qos: *qos,
                };
            }
        }
        q.shrink(freed);
    }

    /// Queue a delivery under the overflow policy, counting every drop in `stats`.
    /// QoS 0 messages are not kept for an offline session (as Mosquitto's default).
    pub fn push(&self, delivery: Delivery, stats: &Stats) -> PushOutcome {
        self.push_with(delivery, stats, false, false)
    }

    /// [`push`](Self::push); with `shed`, a non-empty queue is treated as full (the broker
    /// is at its memory budget, see `crate::memory`). `shared`: the message is being
    /// queued for other persistent sessions too (the store keeps one copy for all).
    pub fn push_with(
        &self,
        mut delivery: Delivery,
        stats: &Stats,
        shed: bool,
        shared: bool,
    ) -> PushOutcome {
        let connected = self.is_connected();
        // A delivery moved from another session keeps no key of that session's.
        delivery.stored = None;
        let store = self.stores(delivery.qos).then_some(shared);
        if !connected && delivery.qos == QoS::AtMostOnce {
            stats.dropped(DropReason::OfflineQos0);
            self.offline_qos0_drops.fetch_add(1, Ordering::Relaxed);
            return PushOutcome::Dropped(DropReason::OfflineQos0);
        }
        let size = delivery.message.size();
        let was_empty;
        let outcome = {
            let mut q = self.queue.lock();
            was_empty = q.items.is_empty();
            if q.has_room(size, shed) {
                let entry = self.admit(store, delivery, connected);
                q.push_back(entry);
                if connected && !q.stalled && q.items.len() >= q.congested_at {
                    PushOutcome::QueuedCongested
                } else {
                    PushOutcome::Queued
                }
            } else {
                match q.policy {
                    // One message larger than the whole byte budget can never be queued.
                    OverflowPolicy::DropOldest if size <= q.max_bytes => {
                        // Under memory pressure the queue keeps its length: one in, one out.
                        let mut dropped = false;
                        while !(q.has_room(size, false) && (dropped || !shed)) {
                            let Some(oldest) = q.pop_front() else { break };
                            self.forget(oldest.seq());
                            self.count_drop(DropReason::QueueFullDropOldest, stats);
                            dropped = true;
                        }
                        let entry = self.admit(store, delivery, connected);
                        q.push_back(entry);
                        PushOutcome::QueuedDroppedOldest
                    }
                    OverflowPolicy::DropOldest | OverflowPolicy::DropNew => {
                        PushOutcome::Dropped(DropReason::QueueFullDropNew)
                    }
                    OverflowPolicy::Disconnect => {
                        if connected {
                            self.overflowed.store(true, Ordering::Release);
                        }
                        PushOutcome::Dropped(DropReason::QueueFullDisconnect)
                    }
                }
            }
        };
        if let PushOutcome::Dropped(reason) = outcome {
            self.count_drop(reason, stats);
        }
        // Only the first message into an empty queue wakes the owner: it drains the queue
        // until empty (or until its window or write buffer is full, each of which wakes it
        // again), so later pushes would be wasted cross-core wake-ups. An overflow that
        // disconnects must wake it to act.
        if connected
            && (was_empty || outcome == PushOutcome::Dropped(DropReason::QueueFullDisconnect))
        {
            self.notify.notify_one();
        }
        outcome
    }

    /// The queue entry for an admitted delivery, written to the store first if durable.
    /// (Called under the queue lock, so store keys follow queue order.)
    fn admit(&self, store: Option<bool>, delivery: Delivery, connected: bool) -> Entry {
        match store {
            Some(shared) => {
                let delivery = self.journal.enqueue(delivery, shared);
                match (connected, delivery.stored) {
                    (false, Some(seq)) => Entry::Stored {
                        seq,
                        qos: delivery.qos,
                    },
                    _ => Entry::Ready(delivery),
                }
            }
            None => Entry::Ready(delivery),
        }
    }

    /// Messages dropped for this session, for operators.
    pub fn drops(&self) -> SessionDrops {
        SessionDrops {
            queue_full: self.drops.load(Ordering::Relaxed),
            offline_qos0: self.offline_qos0_drops.load(Ordering::Relaxed),
            unsendable: self.unsendable_drops.load(Ordering::Relaxed),
        }
    }

    /// The connection dropped a delivery instead of sending it (expired, too large).
    pub fn dropped_unsendable(&self, reason: DropReason, stats: &Stats) {
        stats.dropped(reason);
        self.unsendable_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a drop broker-wide and warn about it: the first one per session and then every
    /// thousandth, so a flood of drops cannot flood the log.
    fn count_drop(&self, reason: DropReason, stats: &Stats) {
        stats.dropped(reason);
        let n = self.drops.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(client_id = %Short(&self.client_id), reason = reason.as_str(), dropped_total = n, "message dropped for subscriber");
        }
    }

    /// Put deliveries back at the front (oldest first), e.g. messages taken for sending that
    /// could not be sent. Not subject to the overflow policy: they were already admitted.
    pub fn requeue_front(&self, deliveries: impl DoubleEndedIterator<Item = Delivery>) {
        let mut q = self.queue.lock();
        for d in deliveries.rev() {
            q.push_front(Entry::Ready(d));
        }
    }

    /// Take stored-only entries from the front until `out` holds `max`, to be read back
    /// from the store.
    pub fn pop_stored(&self, max: usize, out: &mut Vec<Entry>) {
        let mut q = self.queue.lock();
        while out.len() < max && matches!(q.items.front(), Some(Entry::Stored { .. })) {
            out.extend(q.pop_front());
        }
        self.relieve_if_drained(q);
    }

    /// Put taken entries back at the front, in their order (a read-back that did not
    /// finish).
    pub fn unpop(&self, entries: Vec<Entry>) {
        let mut q = self.queue.lock();
        for entry in entries.into_iter().rev() {
            q.push_front(entry);
        }
    }

    /// Take the next entry whose QoS is 0, or any entry if `allow_qos12`.
    pub fn pop(&self, allow_qos12: bool) -> Option<Entry> {
        let mut q = self.queue.lock();
        let popped = match q.items.front() {
            Some(e) if allow_qos12 || e.qos() == QoS::AtMostOnce => q.pop_front(),
            _ => None,
        };
        if popped.is_some() {
            self.relieve_if_drained(q);
        }
        popped
    }

    /// Wake the publishers waiting on this queue once it is back under `relieved_at`.
    fn relieve_if_drained(&self, mut q: parking_lot::MutexGuard<'_, Queue>) {
        if q.items.len() <= q.relieved_at && (q.relief_wanted || q.stalled) {
            q.relief_wanted = false;
            q.stalled = false;
            drop(q);
            self.relief.notify_waiters();
        }
    }

    /// Resolves when the queue is back under `relieved_at` or the session disconnected:
    /// what a held-back publisher waits for.
    pub async fn relieved(&self) {
        loop {
            let notified = self.relief.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain between the check and the await wakes it.
            notified.as_mut().enable();
            {
                let mut q = self.queue.lock();
                if q.items.len() <= q.relieved_at || !self.is_connected() {
                    return;
                }
                q.relief_wanted = true;
            }
            notified.await;
        }
    }

    /// The consumer has not drained this queue within a publisher's patience: stop holding
    /// publishers back until it does.
    pub fn mark_stalled(&self) {
        let mut q = self.queue.lock();
        if q.items.len() > q.relieved_at {
            if !q.stalled {
                tracing::warn!(client_id = %Short(&self.client_id), queued = q.items.len(), "subscriber is not keeping up; publishers are no longer held back for it");
            }
            q.stalled = true;
        }
    }

    /// Remove every in-memory delivery for which `take` is true (shared-group
    /// redistribution). Stored-only entries stay.
    pub fn take_where(&self, mut take: impl FnMut(&Delivery) -> bool) -> Vec<Delivery> {
        let mut q = self.queue.lock();
        let mut taken = Vec::new();
        q.items.retain(|e| match e {
            Entry::Ready(d) if take(d) => {
                taken.push(d.clone());
                false
            }
            _ => true,
        });
        taken
    }

    /// Empty the queue (the session ended); returns how many entries there were.
    pub fn clear(&self) -> usize {
        let mut q = self.queue.lock();
        let n = q.items.len();
        q.items.clear();
        n
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
        } else {
            // An offline session holds no publisher back.
            self.relief.notify_waiters();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use edgemq_core::message::Message;

    fn delivery(qos: QoS) -> Delivery {
        let message = Message::broker_generated(
            ByteString::from_static("t"),
            bytes::Bytes::new(),
            qos,
            false,
        );
        Delivery::plain(Arc::new(message), qos)
    }

    fn mailbox(capacity: usize) -> Mailbox {
        let limits = QueueLimits {
            messages: capacity,
            bytes: usize::MAX,
            policy: OverflowPolicy::DropOldest,
            held: None,
        };
        let c = ByteString::from_static("c");
        let m = Mailbox::new(1, c.clone(), limits, Journal::new(None, c));
        m.set_connected(true);
        m
    }

    fn is_ready(f: std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        f.poll(&mut Context::from_waker(Waker::noop())) == Poll::Ready(())
    }

    #[test]
    fn congestion_is_reported_at_the_mark_and_relieved_at_a_quarter() {
        let m = mailbox(1_000_000);
        let stats = Stats::default();
        for _ in 1..CONGESTED_AT {
            assert_eq!(
                m.push(delivery(QoS::AtLeastOnce), &stats),
                PushOutcome::Queued
            );
        }
        assert_eq!(
            m.push(delivery(QoS::AtLeastOnce), &stats),
            PushOutcome::QueuedCongested
        );
        let mut relieved = pin!(m.relieved());
        assert!(
            !is_ready(relieved.as_mut()),
            "still deep: the publisher waits"
        );
        for _ in 0..CONGESTED_AT - CONGESTED_AT / 4 - 1 {
            assert!(m.pop(true).is_some());
        }
        assert!(!is_ready(relieved.as_mut()), "one above the quarter mark");
        assert!(m.pop(true).is_some());
        assert!(
            is_ready(relieved.as_mut()),
            "at a quarter: the publisher resumes"
        );
    }

    #[test]
    fn a_small_queue_congests_at_half_its_limit() {
        let m = mailbox(100);
        let stats = Stats::default();
        let outcomes: Vec<_> = (0..50)
            .map(|_| m.push(delivery(QoS::AtMostOnce), &stats))
            .collect();
        assert_eq!(outcomes[48], PushOutcome::Queued);
        assert_eq!(outcomes[49], PushOutcome::QueuedCongested);
    }

    #[test]
    fn a_stalled_or_offline_subscriber_holds_nobody_back() {
        let m = mailbox(10_000);
        let stats = Stats::default();
        for _ in 0..CONGESTED_AT {
            m.push(delivery(QoS::AtLeastOnce), &stats);
        }
        m.mark_stalled();
        assert_eq!(
            m.push(delivery(QoS::AtLeastOnce), &stats),
            PushOutcome::Queued
        );

        let offline = mailbox(10_000);
        for _ in 0..CONGESTED_AT {
            offline.push(delivery(QoS::AtLeastOnce), &stats);
        }
        let mut relieved = pin!(offline.relieved());
        assert!(!is_ready(relieved.as_mut()));
        offline.set_connected(false);
        assert!(
            is_ready(relieved.as_mut()),
            "a disconnect releases waiting publishers"
        );
        assert_eq!(
            offline.push(delivery(QoS::AtLeastOnce), &stats),
            PushOutcome::Queued,
            "an offline session's queue is bounded by its limit, not by back-pressure"
        );
    }
}
