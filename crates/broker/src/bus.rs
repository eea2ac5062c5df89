//! The bus: what every listener shares. It owns the subscription index, the retained store,
//! the session registry and the counters, and routes each publish straight from the
//! publisher's task into the matching sessions' mailboxes (no router thread, no global lock:
//! the index takes per-shard read locks and each mailbox its own lock).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use edgemq_core::limits::Limits;
use edgemq_core::message::Message;
use edgemq_core::retained::RetainedStore;
use edgemq_core::session::Delivery;
use edgemq_core::subscriptions::{Route, SubscriptionIndex};
use edgemq_store::Store;

use crate::mailbox::{Mailbox, MailboxHandle, PushOutcome};
use crate::sessions::Registry;
use crate::stats::Stats;

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
}

/// Shared broker state. One per process; every connection holds an `Arc<Bus>`.
pub struct Bus {
    pub index: SubscriptionIndex<MailboxHandle>,
    pub retained: RetainedStore,
    pub sessions: Registry,
    pub stats: Stats,
    pub limits: Limits,
    /// Durable state; `None` runs in memory only (`--in-memory`).
    pub store: Option<Arc<Store>>,
    next_id: AtomicU64,
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
        Arc::new(Bus {
            store,
            index: SubscriptionIndex::new(),
            retained: RetainedStore::new(),
            sessions: Registry::default(),
            stats: Stats::default(),
            limits,
            next_id: AtomicU64::new(1),
        })
    }

    /// A process-unique id for sessions and connections.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Route a message to every matching subscription (and store it if retained).
    pub fn publish(&self, message: Arc<Message>) -> Routed {
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        let mut durable = false;
        if message.retain && self.limits.retain_available {
            self.retained.set(message.clone());
            if let Some(store) = &self.store {
                store.retain(&message);
                durable = true;
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
            let mut routed = Routed {
                matched: routes.len(),
                congested: None,
                durable,
            };
            for route in routes.drain(..) {
                let delivery = Delivery {
                    qos: message.qos.min(route.qos),
                    retain: route.retain_as_published && message.retain,
                    subscription_ids: route.subscription_ids,
                    share_group: route.share_group,
                    message: message.clone(),
                    stored: None,
                };
                routed.durable |= route.subscriber.0.stores(delivery.qos);
                let outcome = route.subscriber.0.push(delivery, &self.stats);
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
            "sessions={} subscriptions={} retained={} connections_accepted={} messages_received={} messages_sent={} drops=[{}] refusals=[{}] store={}",
            self.sessions.len(),
            self.index.len(),
            self.retained.len(),
            s.connections.load(Relaxed),
            s.messages_received.load(Relaxed),
            s.messages_sent.load(Relaxed),
            s.drop_summary(),
            s.refusal_summary(),
            match &self.store {
                None => "in-memory".to_string(),
                Some(store) if store.is_failed() => format!("FAILED ({})", store.path().display()),
                Some(store) => store.path().display().to_string(),
            },
        )
    }

    /// Current time. One place, so a future clock abstraction has one seam.
    pub fn now(&self) -> Instant {
        Instant::now()
    }
}
