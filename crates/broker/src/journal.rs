//! A session's durable records: the one place broker code writes a session to the store,
//! and the commit rule that goes with it. A persistent session (expiry > 0, with a store)
//! journals its QoS 1/2 deliveries, the packet identifiers they were sent under, its QoS 2
//! identifiers from the client and its session record; an answer that promises any of it is
//! held until the store's group commit covers [`Journal::ticket`].
//!
//! Both types reach the store only through [`SessionStore`] (the seam of cluster stage 0,
//! docs/cluster.md "Seams"), generic over it with the redb [`Store`] as the default: the
//! broker names them without a parameter, and every call is statically dispatched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::{oneshot, watch};

use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, OutgoingState};
use edgemq_store::{Health, Level, SessionRecord, SessionStore, Store};

/// The broker-wide side of durability: the session journals it hands out, retained
/// messages, the store budget and health, and the clean close. With [`Journal`], the only
/// broker code that reaches the store.
#[derive(Debug)]
pub struct Durability<S: SessionStore = Store> {
    store: Option<Arc<S>>,
}

impl<S: SessionStore> Default for Durability<S> {
    fn default() -> Self {
        Durability { store: None }
    }
}

impl<S: SessionStore> Durability<S> {
    pub fn new(store: Option<Arc<S>>) -> Self {
        Durability { store }
    }

    /// Whether there is a store (`--in-memory`: none).
    pub fn is_on(&self) -> bool {
        self.store.is_some()
    }

    /// A journal for `client_id`'s session.
    pub fn journal(&self, client_id: ByteString) -> Journal<S> {
        Journal::new(self.store.clone(), client_id)
    }

    /// Keep a retained message (or, for an empty payload, delete the topic's).
    pub fn retain(&self, message: &Arc<Message>) {
        if let Some(store) = &self.store {
            store.retain(message);
        }
    }

    /// Where the store stands against its budget (`Ok` without a store).
    pub fn level(&self) -> Level {
        self.store.as_ref().map_or(Level::Ok, |s| s.level())
    }

    /// Successful commits, the operations they carried, and their time in µs (zeros
    /// without a store).
    pub fn commit_stats(&self) -> (u64, u64, u64) {
        self.store.as_ref().map_or((0, 0, 0), |s| s.commit_stats())
    }

    /// Record bytes held, and the budget.
    pub fn usage_and_budget(&self) -> (u64, u64) {
        self.store
            .as_ref()
            .map_or((0, 0), |s| (s.usage(), s.budget()))
    }

    /// How the store is doing, for health checks and metrics: `"in-memory"`, `"ok"`,
    /// `"degraded"` (commits failing, retried) or `"failed"`.
    pub fn state(&self) -> &'static str {
        match self.store.as_ref().map(|s| s.health()) {
            None => "in-memory",
            Some(Health::Ok) => "ok",
            Some(Health::Degraded { .. }) => "degraded",
            Some(Health::Failed { .. }) => "failed",
        }
    }

    /// For the state line: where the store is and how it is doing.
    pub fn summary(&self) -> String {
        let Some(store) = &self.store else {
            return "in-memory".to_string();
        };
        let path = store.path().display();
        match store.health() {
            Health::Ok => format!(
                "{path} usage={} max_store_bytes={} level={:?}",
                store.usage(),
                store.budget(),
                store.level()
            ),
            Health::Degraded { error, .. } => format!(
                "DEGRADED ({path}: {error}; failed_commits={} pending={})",
                store.failed_commits(),
                store.pending()
            ),
            Health::Failed { error, .. } => format!("FAILED ({path}: {error})"),
        }
    }

    /// Commit and fsync what is pending and stop the writer (clean shutdown).
    pub async fn close(&self) {
        if let Some(store) = self.store.clone() {
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

#[derive(Debug)]
pub struct Journal<S: SessionStore = Store> {
    store: Option<Arc<S>>,
    client_id: ByteString,
    /// The session is persistent: its records go to the store from now on.
    durable: AtomicBool,
}

impl<S: SessionStore> Journal<S> {
    /// The journal of `client_id`'s session; it writes nothing until [`Journal::set_durable`].
    pub fn new(store: Option<Arc<S>>, client_id: ByteString) -> Self {
        Journal {
            store,
            client_id,
            durable: AtomicBool::new(false),
        }
    }

    /// Persistent session (expiry > 0): journal it from now on. (Once durable, a session
    /// stays so until it ends: its records are deleted then.)
    pub fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::Release);
    }

    /// Whether this session's records go to the store.
    pub fn is_durable(&self) -> bool {
        self.store.is_some() && self.durable.load(Ordering::Acquire)
    }

    fn durable_store(&self) -> Option<&Arc<S>> {
        self.store.as_ref().filter(|_| self.is_durable())
    }

    /// Journal a delivery queued for this session; it comes back with its store key.
    /// `shared`: the same message is queued for other persistent sessions (stored once).
    pub fn enqueue(&self, delivery: Delivery, shared: bool) -> Delivery {
        match self.durable_store() {
            Some(store) => store.enqueue(&self.client_id, delivery, shared),
            None => delivery,
        }
    }

    /// A journaled delivery is settled (acknowledged, dropped or moved to another session).
    pub fn forget(&self, seq: Option<u64>) {
        if let (Some(seq), Some(store)) = (seq, &self.store) {
            store.remove(&self.client_id, seq);
        }
    }

    /// Delivery `seq` went out (or moved on to PUBREL) under `packet_id`.
    pub fn sent(&self, seq: u64, packet_id: u16, state: OutgoingState) {
        if let Some(store) = self.durable_store() {
            store.sent(&self.client_id, seq, packet_id, state);
        }
    }

    /// A QoS 2 packet identifier from the client is pending (PUBREC sent) or released.
    pub fn incoming_qos2(&self, packet_id: u16, pending: bool) {
        if let Some(store) = self.durable_store() {
            store.incoming_qos2(&self.client_id, packet_id, pending);
        }
    }

    /// Write the session record; true if it was (a persistent session with a store).
    pub fn put(&self, record: SessionRecord) -> bool {
        let Some(store) = self.durable_store() else {
            return false;
        };
        store.put_session(&self.client_id, record);
        true
    }

    /// The session ended: its records go.
    pub fn delete(&self) {
        if let Some(store) = self.durable_store() {
            store.delete_session(&self.client_id);
        }
    }

    /// Read journaled deliveries back (`None` without a store).
    pub fn load(&self, seqs: Vec<u64>) -> Option<oneshot::Receiver<Vec<Delivery>>> {
        self.store
            .as_ref()
            .map(|store| store.load(&self.client_id, seqs))
    }

    /// Output from here on promises what was journaled: it waits until the store's commit
    /// reaches this ticket (`None` without a store: nothing to wait for).
    pub fn ticket(&self) -> Option<u64> {
        self.store.as_ref().map(|s| s.ticket())
    }

    /// The store's commit progress, to release held output (`None` without a store).
    pub fn commits(&self) -> Option<watch::Receiver<u64>> {
        self.store.as_ref().map(|s| s.committed())
    }

    /// The store gave up: nothing held may be released as if committed.
    pub fn failed(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.is_failed())
    }
}
