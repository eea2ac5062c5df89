//! The bus: what every listener shares. It owns the subscription index, the retained store,
//! the session registry and the counters, and routes each publish straight from the
//! publisher's task into the matching sessions' mailboxes (no router thread, no global lock:
//! the index takes per-shard read locks and each mailbox its own lock).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use edgemq_core::limits::Limits;
use edgemq_core::logtext::LogLimiter;
use edgemq_core::message::Message;
use edgemq_core::retained::{RetainRefused, RetainedStore};
use edgemq_core::session::Delivery;
use edgemq_core::subscriptions::{Route, Router, SubscriptionIndex};
use edgemq_store::Store;

use crate::journal::Durability;

use crate::mailbox::{Mailbox, MailboxHandle, PushOutcome};
use crate::sessions::Registry;
use crate::stats::{Limit, Stats};

/// Where a publish went.
#[derive(Debug)]
pub struct Routed {
    /// How many sessions it was routed to.
    pub matched: usize,
    /// A connected subscriber whose queue is deep: the publisher should pause reading until
    /// it drains (back-pressure; see [`Mailbox::relieved`]).
    pub congested: Option<Arc<Mailbox>>,
    /// Something was written to the store for it (a persistent subscriber's copy, or the
    /// retained message): its acknowledgement waits for the commit.
    pub durable: bool,
    /// A retained message that was not kept: `max_retained_messages` or
    /// `max_retained_bytes` refused it (it was still routed to subscribers). A v5 publisher
    /// learns it from PUBACK/PUBREC 0x97 Quota exceeded.
    pub retain_refused: bool,
    /// A client's QoS 1/2 message refused whole because a persistent subscriber would store
    /// it and the store is full (`max_store_bytes`): v5 0x97; v3 is disconnected unacknowledged.
    pub store_refused: bool,
}

impl Routed {
    /// A client's PUBLISH refused whole by a budget: not routed, not kept.
    fn refused(retain_refused: bool, store_refused: bool) -> Routed {
        Routed {
            matched: 0,
            congested: None,
            durable: false,
            retain_refused,
            store_refused,
        }
    }
}

/// A broker-wide warning about a limit: a [`LogLimiter`] shared by every connection.
#[derive(Debug, Default)]
pub struct LimitWarning {
    limiter: parking_lot::Mutex<LogLimiter>,
}

impl LimitWarning {
    /// Count one refusal; `Some(refusals since the last line, this one included)` if a line
    /// may be written at `now`.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        self.limiter.lock().admit(now)
    }
}

/// The router the bus matches publishes with (the `Router` seam, docs/cluster.md "Seams"):
/// a concrete type, so every call is statically dispatched. Single node: the subscription
/// index. Callers reach it only through [`Router`]'s methods, so another implementation
/// replaces this alias (or becomes a type parameter of [`Bus`]) without touching them.
pub type BusRouter = SubscriptionIndex<MailboxHandle>;

/// Shared broker state. One per process; every connection holds an `Arc<Bus>`.
pub struct Bus {
    pub index: BusRouter,
    pub retained: RetainedStore,
    /// The `$SYS` tree ([`crate::sys`]), retained apart: outside the retained budgets, the
    /// store and the operator's counts, as Mosquitto does not persist it either.
    pub sys_retained: RetainedStore,
    pub sessions: Registry,
    pub stats: Arc<Stats>,
    pub limits: Limits,
    /// Durable state (none with `--in-memory`): reached only through it.
    pub durable: Durability,
    next_id: AtomicU64,
    retain_warning: LimitWarning,
    store_warning: LimitWarning,
    /// CONNECTs refused by a limit (client identifier length, will topic depth).
    pub(crate) connect_refusal_warning: LimitWarning,
    /// Where the broker stands against its memory budget, and what it accounts.
    pub pressure: crate::memory::Pressure,
    pub held: Arc<crate::memory::Held>,
    /// When the bus was made (the broker's start), on the broker's clock.
    started: Instant,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

thread_local! {
    // Reused per thread so routing a publish does not allocate.
    static ROUTES: RefCell<Vec<Route<MailboxHandle>>> = const { RefCell::new(Vec::new()) };
}

impl Bus {
    pub fn new(limits: Limits, store: Option<Arc<Store>>) -> Arc<Bus> {
        let limits_budget = limits.memory_budget;
        Arc::new(Bus {
            durable: Durability::new(store),
            index: BusRouter::new(),
            retained: RetainedStore::with_limits(
                limits.max_retained_messages,
                limits.max_retained_bytes,
            ),
            sys_retained: RetainedStore::new(),
            sessions: Registry::default(),
            stats: Arc::default(),
            limits,
            next_id: AtomicU64::new(1),
            retain_warning: LimitWarning::default(),
            store_warning: LimitWarning::default(),
            connect_refusal_warning: LimitWarning::default(),
            pressure: crate::memory::Pressure::new(limits_budget),
            held: Arc::default(),
            started: now(),
        })
    }

    /// How long the broker has run.
    pub fn uptime(&self) -> std::time::Duration {
        now().saturating_duration_since(self.started)
    }

    /// A process-unique id for sessions and connections.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Route a message to every matching subscription (and store it if retained, within
    /// the retained budgets: a refused one is still routed, see [`Routed::retain_refused`]):
    /// wills and the broker's own messages.
    pub fn publish(&self, message: Arc<Message>) -> Routed {
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        self.publish_with(message, true, true)
    }

    /// A `$SYS` message ([`crate::sys`]): kept in [`Bus::sys_retained`] and routed, not
    /// counted as received (Mosquitto counts only what clients send).
    pub fn publish_sys(&self, message: Arc<Message>) -> Routed {
        if message.retain {
            // Unlimited store: never refused.
            let _ = self.sys_retained.set(message.clone());
        }
        self.publish_with(message, true, false)
    }

    /// A client's PUBLISH: all or nothing. A retained message the retained budgets refuse
    /// is not routed either, so the publisher's 0x97 means "not accepted" and a retry cannot
    /// deliver it twice.
    /// The caller counts it (`stats::Tally`: once per batch, not per message).
    pub fn publish_from_client(&self, message: Arc<Message>) -> Routed {
        self.publish_with(message, false, true)
    }

    /// Whether the store is at its budget (`max_store_bytes`): nothing new is stored.
    fn store_full(&self) -> bool {
        self.durable.level() == edgemq_store::Level::Full
    }

    /// Route `message`; with `retain`, keep it in the retained store if it is retained.
    fn publish_with(
        &self,
        message: Arc<Message>,
        route_when_refused: bool,
        retain: bool,
    ) -> Routed {
        let mut durable = false;
        let mut retain_refused = false;
        let store_full = self.store_full();
        if retain && message.retain && self.limits.retain_available {
            // The durable write under the retained store's lock: the store sees the changes
            // to one topic in the order memory does.
            // At the memory or store budget, nothing new is retained (deleting still is).
            let kept = if self.pressure.sheds() && !message.payload.is_empty() {
                self.stats.refused(crate::stats::Limit::MemoryBudget, 1);
                Err(None)
            } else if store_full && !message.payload.is_empty() {
                self.store_refused(&message, "retained message");
                Err(None)
            } else {
                let kept = self.retained.set_then(message.clone(), |message| {
                    if self.durable.is_on() {
                        self.durable.retain(message);
                        durable = true;
                    }
                });
                kept.map_err(Some)
            };
            if let Err(refused) = kept {
                retain_refused = true;
                if let Some(refused) = refused {
                    self.retain_refused(&message, refused);
                }
                if !route_when_refused {
                    return Routed::refused(true, false);
                }
            }
        }
        ROUTES.with(|routes| {
            // A re-entrant publish on this thread (not expected) falls back to a fresh Vec.
            let mut fresh = Vec::new();
            let mut borrowed = routes.try_borrow_mut();
            let routes = match borrowed {
                Ok(ref mut r) => &mut **r,
                Err(_) => &mut fresh,
            };
            self.index.route(&message.topic, message.publisher, routes);
            // Copies the store will write: one message queued for several persistent
            // sessions is stored once for all of them.
            let storing = match self.durable.is_on() {
                true => routes
                    .iter()
                    .filter(|r| r.subscriber.0.stores(message.qos.min(r.qos)))
                    .count(),
                false => 0,
            };
            if store_full && !route_when_refused && storing > 0 {
                // All or nothing, as for the retained budgets: the publisher may retry.
                routes.clear();
                self.store_refused(&message, "QoS 1/2 message for a persistent session");
                return Routed::refused(retain_refused, true);
            }
            let mut routed = Routed {
                matched: routes.len(),
                congested: None,
                durable,
                retain_refused,
                store_refused: false,
            };
            // Near the memory budget, queues stop growing (overflow policy): read once.
            let shed = self.pressure.sheds();
            for route in routes.drain(..) {
                let delivery = Delivery {
                    qos: message.qos.min(route.qos),
                    retain: route.retain_as_published && message.retain,
                    subscription_ids: route.subscription_ids,
                    share_group: route.share_group,
                    message: message.clone(),
                    stored: None,
                };
                let stored = route.subscriber.0.stores(delivery.qos);
                if stored && store_full {
                    // A will or the broker's own message: the others still get it.
                    self.stats.dropped(crate::stats::DropReason::StoreFull);
                    continue;
                }
                routed.durable |= stored;
                let outcome =
                    route
                        .subscriber
                        .0
                        .push_with(delivery, &self.stats, shed, storing > 1);
                // The publisher's own queue never holds it back: it drains only while the
                // publisher's connection reads (its acknowledgements).
                if outcome == PushOutcome::QueuedCongested
                    && routed.congested.is_none()
                    && message.publisher != Some(route.subscriber.0.key)
                {
                    routed.congested = Some(route.subscriber.0.clone());
                }
            }
            routed
        })
    }

    fn store_refused(&self, message: &Message, what: &str) {
        self.stats.refused(Limit::StoreBudget, 1);
        self.warn_store_budget(&message.topic, what);
    }

    /// One line a second at most, broker-wide, for everything the store budget refuses
    /// (`name`: the topic or client id it refused).
    pub fn warn_store_budget(&self, name: &str, what: &str) {
        if let Some(refusals) = self.store_warning.admit(self.now()) {
            let (usage, max_store_bytes) = self.durable.usage_and_budget();
            tracing::warn!(
                name = %edgemq_core::logtext::Short(name),
                what,
                usage,
                max_store_bytes,
                refusals,
                "refused: the store is at its budget (max-store-bytes)"
            );
        }
    }

    fn retain_refused(&self, message: &Message, refused: RetainRefused) {
        let (limit, max) = match refused {
            RetainRefused::Messages => (Limit::RetainedMessages, self.limits.max_retained_messages),
            RetainRefused::Bytes => (Limit::RetainedBytes, self.limits.max_retained_bytes),
        };
        self.stats.refused(limit, 1);
        if let Some(refusals) = self.retain_warning.admit(self.now()) {
            tracing::warn!(
                topic = %edgemq_core::logtext::Short(&message.topic),
                limit = limit.as_str(),
                max,
                retained = self.retained.len(),
                retained_bytes = self.retained.bytes(),
                refusals,
                "retained message not kept: the retained store is full (delivered to current subscribers only)"
            );
        }
    }

    /// Remove expired retained messages, from memory and from the store (housekeeping).
    /// Returns how many were removed.
    pub fn purge_expired_retained(&self) -> usize {
        self.retained.purge_expired(self.now(), |topic| {
            if self.durable.is_on() {
                self.durable.retain(&Arc::new(Message::broker_generated(
                    topic.clone(),
                    Bytes::new(),
                    edgemq_codec::QoS::AtMostOnce,
                    true,
                )));
            }
        })
    }

    /// Re-route a shared-subscription delivery whose member left to another member of the
    /// same group. Returns it back if no other member exists.
    pub fn redistribute(&self, delivery: Delivery, excluded: u64) -> Option<Delivery> {
        let Some(group) = delivery.share_group.clone() else {
            return Some(delivery);
        };
        match self
            .index
            .route_shared_excluding(&group, &delivery.message.topic, excluded)
        {
            Some(route) => {
                let d = Delivery {
                    qos: delivery.message.qos.min(route.qos),
                    retain: route.retain_as_published && delivery.message.retain,
                    subscription_ids: route.subscription_ids,
                    share_group: route.share_group,
                    message: delivery.message,
                    stored: None,
                };
                route.subscriber.0.push(d, &self.stats);
                None
            }
            None => Some(delivery),
        }
    }

    /// One line for operators (SIGUSR1): sessions, subscriptions, retained messages,
    /// traffic, drops and refusals since start.
    pub fn state_summary(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        format!(
            "sessions={} subscriptions={} retained={} retained_bytes={} connections_accepted={} messages_received={} messages_sent={} drops=[{}] refusals=[{}] memory=[accounted={} budget={} level={:?}] store={}",
            self.sessions.len(),
            self.index.len(),
            self.retained.len(),
            self.retained.bytes(),
            s.connections.load(Relaxed),
            s.messages_received.load(Relaxed),
            s.messages_sent.load(Relaxed),
            s.drop_summary(),
            s.refusal_summary(),
            crate::memory::accounted(self),
            self.pressure.budget(),
            self.pressure.level(),
            self.durable.summary(),
        )
    }

    /// Current time, from [`now`].
    pub fn now(&self) -> Instant {
        now()
    }
}

/// The broker's clock: tokio's, so that a test on a paused runtime controls every deadline
/// the broker sets (keep-alive, session expiry, will delay, back-pressure); in production
/// it is the monotonic clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
