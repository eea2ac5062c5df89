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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytestring::ByteString;
use parking_lot::RwLock;
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

const SHARDS: usize = 16;

/// The sharded subscription trie. `Send + Sync`; share it behind an `Arc`.
pub struct SubscriptionIndex<T: SubscriberHandle> {
    /// Filters whose first level is literal, by hash of that level.
    shards: [RwLock<Node<T>>; SHARDS],
    /// Filters whose first level is `+` or `#`.
    wildcard: RwLock<Node<T>>,
    count: AtomicUsize,
}

/// One trie level. `+` and `#` are ordinary child keys; matching treats them specially.
struct Node<T> {
    children: HashMap<Box<str>, Node<T>>,
    /// Non-shared subscriptions whose filter ends at this node.
    subscribers: Vec<(T, StoredOptions)>,
    /// Shared groups whose filter ends at this node.
    groups: Vec<SharedGroup<T>>,
}

struct SharedGroup<T> {
    name: ByteString,
    members: Vec<(T, StoredOptions)>,
    /// Round-robin position.
    cursor: AtomicUsize,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            subscribers: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

type Levels<'a> = SmallVec<[&'a str; 16]>;

impl<T: SubscriberHandle> SubscriptionIndex<T> {
    pub fn new() -> Self {
        SubscriptionIndex {
            shards: std::array::from_fn(|_| RwLock::new(Node::default())),
            wildcard: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
        }
    }

    fn shard_for(&self, first_level: &str) -> &RwLock<Node<T>> {
        if first_level == "+" || first_level == "#" {
            return &self.wildcard;
        }
        &self.shards[fnv1a(first_level.as_bytes()) % SHARDS]
    }

    /// Add or replace `subscriber`'s subscription to `filter`. Returns true if it already
    /// existed (the runtime uses this for Retain Handling 1).
    pub fn subscribe(
        &self,
        filter: &SubscriptionFilter,
        subscriber: T,
        options: StoredOptions,
    ) -> bool {
        let levels: Levels<'_> = filter.filter.split('/').collect();
        let mut root = self.shard_for(levels[0]).write();
        let mut node = &mut *root;
        for level in &levels {
            node = node.children.entry(Box::from(*level)).or_default();
        }
        let key = subscriber.key();
        let list = match &filter.share_group {
            None => &mut node.subscribers,
            Some(name) => {
                let idx = match node.groups.iter().position(|g| g.name == *name) {
                    Some(i) => i,
                    None => {
                        node.groups.push(SharedGroup {
                            name: name.clone(),
                            members: Vec::new(),
                            cursor: AtomicUsize::new(0),
                        });
                        node.groups.len() - 1
                    }
                };
                &mut node.groups[idx].members
            }
        };
        match list.iter_mut().find(|(s, _)| s.key() == key) {
            Some(entry) => {
                *entry = (subscriber, options);
                true
            }
            None => {
                list.push((subscriber, options));
                self.count.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Remove the subscription; true if it existed. Empty trie nodes are pruned.
    pub fn unsubscribe(&self, filter: &SubscriptionFilter, key: SessionKey) -> bool {
        let levels: Levels<'_> = filter.filter.split('/').collect();
        let mut root = self.shard_for(levels[0]).write();
        let removed = remove(&mut root, &levels, filter.share_group.as_deref(), key);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Append to `out` the routes for a message on `topic` (a valid topic name).
    /// `publisher` is the publishing session's key: non-shared subscriptions of that same
    /// session with No Local set are skipped [MQTT-3.8.3-3]. `out` is reused by the caller to
    /// avoid allocation per publish.
    pub fn route(&self, topic: &str, publisher: Option<SessionKey>, out: &mut Vec<Route<T>>) {
        let levels: Levels<'_> = topic.split('/').collect();
        let start = out.len();
        let mut visit = |node: &Node<T>| {
            for (s, o) in &node.subscribers {
                if o.options.no_local && Some(s.key()) == publisher {
                    continue;
                }
                out.push(Route {
                    subscriber: s.clone(),
                    qos: o.options.qos,
                    retain_as_published: o.options.retain_as_published,
                    subscription_ids: o.subscription_id.into_iter().collect(),
                    share_group: None,
                });
            }
            for g in &node.groups {
                if let Some((s, o)) = pick_member(g, None) {
                    out.push(Route {
                        subscriber: s.clone(),
                        qos: o.options.qos,
                        retain_as_published: o.options.retain_as_published,
                        subscription_ids: o.subscription_id.into_iter().collect(),
                        share_group: Some(g.name.clone()),
                    });
                }
            }
        };
        {
            let shard = self.shard_for(levels[0]).read();
            walk(&shard, &levels, &mut visit);
        }
        // Filters starting with a wildcard never match `$` topics [MQTT-4.7.2-1].
        if !topic.starts_with('$') {
            let shard = self.wildcard.read();
            walk(&shard, &levels, &mut visit);
        }
        merge_per_subscriber(out, start);
    }

    /// Like `route` but only for one shared group's filter, excluding one member: used to
    /// re-deliver a message whose chosen member left. Returns `None` if no other member exists.
    pub fn route_shared_excluding(
        &self,
        group: &str,
        topic: &str,
        excluded: SessionKey,
    ) -> Option<Route<T>> {
        let levels: Levels<'_> = topic.split('/').collect();
        let mut found = None;
        let mut visit = |node: &Node<T>| {
            if found.is_some() {
                return;
            }
            for g in node.groups.iter().filter(|g| &*g.name == group) {
                if let Some((s, o)) = pick_member(g, Some(excluded)) {
                    found = Some(Route {
                        subscriber: s.clone(),
                        qos: o.options.qos,
                        retain_as_published: o.options.retain_as_published,
                        subscription_ids: o.subscription_id.into_iter().collect(),
                        share_group: Some(g.name.clone()),
                    });
                    return;
                }
            }
        };
        {
            let shard = self.shard_for(levels[0]).read();
            walk(&shard, &levels, &mut visit);
        }
        if !topic.starts_with('$') {
            let shard = self.wildcard.read();
            walk(&shard, &levels, &mut visit);
        }
        found
    }

    /// Number of stored subscriptions (for metrics and tests).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
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

impl<T: SubscriberHandle> std::fmt::Debug for SubscriptionIndex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("subscriptions", &self.len())
            .finish()
    }
}

/// Visit every node whose filter matches the remaining `levels` ([MQTT-4.7.1]).
fn walk<T>(node: &Node<T>, levels: &[&str], visit: &mut impl FnMut(&Node<T>)) {
    // `#` matches this level and everything below, including the parent itself
    // (`sport/#` matches `sport`).
    if let Some(hash) = node.children.get("#") {
        visit(hash);
    }
    let Some((first, rest)) = levels.split_first() else {
        visit(node);
        return;
    };
    if let Some(child) = node.children.get(*first) {
        walk(child, rest, visit);
    }
    if let Some(plus) = node.children.get("+") {
        walk(plus, rest, visit);
    }
}

/// Choose a group member round-robin, preferring available ones; never `excluded`.
fn pick_member<T: SubscriberHandle>(
    group: &SharedGroup<T>,
    excluded: Option<SessionKey>,
) -> Option<&(T, StoredOptions)> {
    let n = group.members.len();
    if n == 0 {
        return None;
    }
    let start = group.cursor.fetch_add(1, Ordering::Relaxed);
    let eligible = |m: &&(T, StoredOptions)| Some(m.0.key()) != excluded;
    let candidates = (0..n).map(|i| &group.members[(start + i) % n]);
    candidates
        .clone()
        .filter(eligible)
        .find(|m| m.0.is_available())
        .or_else(|| candidates.clone().find(eligible))
}

/// Sort the routes appended after `start` by subscriber and fold each subscriber's
/// non-shared routes into one: max QoS [MQTT-3.3.4-2], all subscription identifiers
/// [MQTT-3.3.4-3]. Shared routes are separate deliveries and stay as they are.
fn merge_per_subscriber<T: SubscriberHandle>(out: &mut Vec<Route<T>>, start: usize) {
    if out.len() - start < 2 {
        return;
    }
    out[start..].sort_by_key(|r| (r.share_group.is_some(), r.subscriber.key()));
    let mut write = start;
    for read in start + 1..out.len() {
        let mergeable = out[read].share_group.is_none()
            && out[write].share_group.is_none()
            && out[read].subscriber.key() == out[write].subscriber.key();
        if mergeable {
            let (kept, rest) = out.split_at_mut(read);
            let (into, from) = (&mut kept[write], &mut rest[0]);
            into.qos = into.qos.max(from.qos);
            into.retain_as_published |= from.retain_as_published;
            into.subscription_ids
                .extend(from.subscription_ids.drain(..));
            into.subscription_ids.sort_unstable();
            into.subscription_ids.dedup();
        } else {
            write += 1;
            out.swap(write, read);
        }
    }
    out.truncate(write + 1);
}

/// Remove a subscription below `node`, pruning nodes left empty. True if it existed.
fn remove<T: SubscriberHandle>(
    node: &mut Node<T>,
    levels: &[&str],
    group: Option<&str>,
    key: SessionKey,
) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => take_member(&mut node.subscribers, key),
            Some(name) => match node.groups.iter().position(|g| &*g.name == name) {
                Some(i) => {
                    let removed = take_member(&mut node.groups[i].members, key);
                    if node.groups[i].members.is_empty() {
                        node.groups.swap_remove(i);
                    }
                    removed
                }
                None => false,
            },
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove(child, rest, group, key);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn take_member<T: SubscriberHandle>(list: &mut Vec<(T, StoredOptions)>, key: SessionKey) -> bool {
    match list.iter().position(|(s, _)| s.key() == key) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

/// FNV-1a: a fast, stable hash for choosing a shard.
fn fnv1a(bytes: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

#[cfg(test)]
mod tests;
