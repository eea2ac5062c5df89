//! The subscription index.
//!
//! A trie over topic levels, sharded so that publishes take only read locks on the shards
//! they touch: filters whose first level is literal live in the shard chosen by hashing that
//! level; filters starting with `+` or `#` live in one wildcard shard. A publish therefore
//! reads at most two shards; subscribes and unsubscribes write one. No global lock.
//!
//! Subscribers are identified by [`SubscriberHandle::key`]; one subscriber holds at most one
//! subscription per (share group, filter) — subscribing again replaces the options
//! [MQTT-3.8.4-3]. Matching de-duplicates per subscriber across overlapping non-shared
//! filters: one [`Route`] per subscriber with the maximum QoS [MQTT-3.3.4-2] and every
//! matching subscription identifier [MQTT-3.3.4-3]. Each shared group that matches yields one
//! route to one member, chosen round-robin among members that report
//! [`SubscriberHandle::is_available`] (falling back to any member) [MQTT-4.8.2-3].

use smallvec::SmallVec;

use edgemq_codec::{QoS, SubscriptionOptions};

use crate::topic::SubscriptionFilter;

/// Identity of a session (unique for the broker's lifetime; a new session after clean start
/// gets a new key).
pub type SessionKey = u64;

/// What the index stores per subscriber: a cheap clonable handle (in the runtime, an `Arc`
/// to the session's mailbox).
pub trait SubscriberHandle: Clone + Send + Sync + 'static {
    fn key(&self) -> SessionKey;
    /// For shared groups: prefer members for which this is true (connected, queue not full).
    fn is_available(&self) -> bool {
        true
    }
}

/// The options stored with one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredOptions {
    pub options: SubscriptionOptions,
    /// Subscription Identifier from the SUBSCRIBE's properties, if any.
    pub subscription_id: Option<u32>,
}

/// One delivery decision for a matched publish.
#[derive(Debug, Clone)]
pub struct Route<T> {
    pub subscriber: T,
    /// Maximum granted QoS over the subscriber's matching subscriptions (the runtime then
    /// takes min(this, message QoS)).
    pub qos: QoS,
    /// True if any matching subscription has Retain As Published.
    pub retain_as_published: bool,
    /// All subscription identifiers of the matching subscriptions, ascending, deduplicated.
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// `Some(group)` when this route came from a shared subscription (the runtime needs it to
    /// redistribute unacknowledged messages when the member leaves).
    pub share_group: Option<bytestring::ByteString>,
}

/// The sharded subscription trie. `Send + Sync`; share it behind an `Arc`.
pub struct SubscriptionIndex<T: SubscriberHandle> {
    _marker: std::marker::PhantomData<T>,
}

impl<T: SubscriberHandle> SubscriptionIndex<T> {
    pub fn new() -> Self {
        todo!("core helper")
    }

    /// Add or replace `subscriber`'s subscription to `filter`. Returns true if it already
    /// existed (the runtime uses this for Retain Handling 1).
    pub fn subscribe(&self, filter: &SubscriptionFilter, subscriber: T, options: StoredOptions) -> bool {
        let _ = (filter, subscriber, options);
        todo!("core helper")
    }

    /// Remove the subscription; true if it existed. Empty trie nodes are pruned.
    pub fn unsubscribe(&self, filter: &SubscriptionFilter, key: SessionKey) -> bool {
        let _ = (filter, key);
        todo!("core helper")
    }

    /// Append to `out` the routes for a message on `topic` (a valid topic name).
    /// `publisher` is the publishing session's key: non-shared subscriptions of that same
    /// session with No Local set are skipped [MQTT-3.8.3-3]. `out` is reused by the caller to
    /// avoid allocation per publish.
    pub fn route(&self, topic: &str, publisher: Option<SessionKey>, out: &mut Vec<Route<T>>) {
        let _ = (topic, publisher, out);
        todo!("core helper")
    }

    /// Like `route` but only for one shared group's filter, excluding one member: used to
    /// re-deliver a message whose chosen member left. Returns `None` if no other member exists.
    pub fn route_shared_excluding(
        &self,
        group: &str,
        topic: &str,
        excluded: SessionKey,
    ) -> Option<Route<T>> {
        let _ = (group, topic, excluded);
        todo!("core helper")
    }

    /// Number of stored subscriptions (for metrics and tests).
    pub fn len(&self) -> usize {
        todo!("core helper")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: SubscriberHandle> Default for SubscriptionIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}
