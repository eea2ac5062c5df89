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
use crossbeam_utils::sync::{ShardedLock as RwLock, ShardedLockReadGuard, ShardedLockWriteGuard};
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

/// Where a publish finds its subscribers: the seam between the broker and subscription
/// matching (cluster stage 0, docs/cluster.md "Seams"). The single-node implementation is
/// [`SubscriptionIndex`]; a cluster implementation matches against its partitions'
/// indexes. The broker holds a concrete router type and calls it through this trait, so
/// a publish costs no dynamic dispatch.
pub trait Router<T: SubscriberHandle>: Send + Sync + 'static {
    /// Add or replace `subscriber`'s subscription to `filter`. Returns true if it already
    /// existed (Retain Handling 1).
    fn subscribe(&self, filter: &SubscriptionFilter, subscriber: T, options: StoredOptions)
        -> bool;
    /// Remove the subscription; true if it existed.
    fn unsubscribe(&self, filter: &SubscriptionFilter, key: SessionKey) -> bool;
    /// Append to `out` the routes for a message on `topic` (a valid topic name), one per
    /// subscriber and one per matching shared group; `publisher`'s own No Local
    /// subscriptions are skipped.
    fn route(&self, topic: &str, publisher: Option<SessionKey>, out: &mut Vec<Route<T>>);
    /// One other member of shared group `group` matching `topic`, `excluded` left out.
    fn route_shared_excluding(
        &self,
        group: &str,
        topic: &str,
        excluded: SessionKey,
    ) -> Option<Route<T>>;
    /// Subscriptions held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Of [`len`](Self::len), the subscriptions in a shared group.
    fn shared_len(&self) -> usize;
}

const SHARDS: usize = 16;

/// The sharded subscription trie. `Send + Sync`; share it behind an `Arc`.
///
/// Its locks are reader-sharded (`crossbeam_utils::sync::ShardedLock`): a read locks only
/// the calling thread's slot, so publishers on different cores do not bounce one lock word
/// between them on every message; a (rare) subscribe or unsubscribe locks every slot.
pub struct SubscriptionIndex<T: SubscriberHandle> {
    /// Filters whose first level is literal, by hash of that level.
    shards: [RwLock<Node<T>>; SHARDS],
    /// Filters whose first level is `+` or `#`.
    wildcard: RwLock<Node<T>>,
    /// Of `count`, those in `wildcard`: a publish skips its lock while there are none.
    wildcard_count: AtomicUsize,
    count: AtomicUsize,
    /// Of `count`, those in a shared group (for `$SYS`; not on the publish path).
    shared: AtomicUsize,
}

/// One trie level. `+` and `#` are ordinary child keys; matching treats them specially.
struct Node<T> {
    children: HashMap<Box<str>, Node<T>>,
    /// Which of `+` and `#` are among `children` ([`PLUS`], [`HASH`]): matching looks them up
    /// only where they exist, one hash per level instead of three on the publish path.
    wild: u8,
    /// Non-shared subscriptions whose filter ends at this node.
    subscribers: Vec<(T, StoredOptions)>,
    /// Shared groups whose filter ends at this node, by name (found without a scan: one
    /// client can create thousands of groups on one filter).
    groups: HashMap<ByteString, SharedGroup<T>>,
}

struct SharedGroup<T> {
    members: Vec<(T, StoredOptions)>,
    /// Round-robin position.
    cursor: AtomicUsize,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            wild: 0,
            subscribers: Vec::new(),
            groups: HashMap::new(),
        }
    }
}

/// A read lock; a panic while it was held cannot have left a node half-changed that matters
/// to matching (the trie is changed by `insert`/`remove` only), so poisoning is ignored.
fn read<T>(lock: &RwLock<T>) -> ShardedLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> ShardedLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const PLUS: u8 = 1;
const HASH: u8 = 2;

/// The [`Node::wild`] bit of a filter level.
fn wild_bit(level: &str) -> u8 {
    match level {
        "+" => PLUS,
        "#" => HASH,
        _ => 0,
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// Dropped level by level from a heap stack: the default drop recurses once per level, and
/// a client controls the depth.
impl<T> Drop for Node<T> {
    fn drop(&mut self) {
        let mut stack: Vec<Node<T>> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

type Levels<'a> = SmallVec<[&'a str; 16]>;

impl<T: SubscriberHandle> SubscriptionIndex<T> {
    pub fn new() -> Self {
        SubscriptionIndex {
            shards: std::array::from_fn(|_| RwLock::new(Node::default())),
            wildcard: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
            wildcard_count: AtomicUsize::new(0),
            shared: AtomicUsize::new(0),
        }
    }

    fn shard_for(&self, first_level: &str) -> &RwLock<Node<T>> {
        if first_level == "+" || first_level == "#" {
            return &self.wildcard;
        }
        &self.shards[fnv1a(first_level.as_bytes()) % SHARDS]
    }
}

impl<T: SubscriberHandle> Router<T> for SubscriptionIndex<T> {
    /// Add or replace `subscriber`'s subscription to `filter`. Returns true if it already
    /// existed (the runtime uses this for Retain Handling 1).
    fn subscribe(
        &self,
        filter: &SubscriptionFilter,
        subscriber: T,
        options: StoredOptions,
    ) -> bool {
        let levels: Levels<'_> = filter.filter.split('/').collect();
        let mut root = write(self.shard_for(levels[0]));
        let mut node = &mut *root;
        for level in &levels {
            node.wild |= wild_bit(level);
            node = node.children.entry(Box::from(*level)).or_default();
        }
        let key = subscriber.key();
        let list = match &filter.share_group {
            None => &mut node.subscribers,
            Some(name) => {
                &mut node
                    .groups
                    .entry(name.clone())
                    .or_insert_with(|| SharedGroup {
                        members: Vec::new(),
                        cursor: AtomicUsize::new(0),
                    })
                    .members
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
                if wild_bit(levels[0]) != 0 {
                    self.wildcard_count.fetch_add(1, Ordering::Relaxed);
                }
                if filter.share_group.is_some() {
                    self.shared.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// Remove the subscription; true if it existed. Empty trie nodes are pruned.
    fn unsubscribe(&self, filter: &SubscriptionFilter, key: SessionKey) -> bool {
        let levels: Levels<'_> = filter.filter.split('/').collect();
        let mut root = write(self.shard_for(levels[0]));
        let removed = remove(&mut root, &levels, filter.share_group.as_ref(), key);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if wild_bit(levels[0]) != 0 {
                self.wildcard_count.fetch_sub(1, Ordering::Relaxed);
            }
            if filter.share_group.is_some() {
                self.shared.fetch_sub(1, Ordering::Relaxed);
            }
        }
        removed
    }

    /// Append to `out` the routes for a message on `topic` (a valid topic name).
    /// `publisher` is the publishing session's key: non-shared subscriptions of that same
    /// session with No Local set are skipped [MQTT-3.8.3-3]. `out` is reused by the caller to
    /// avoid allocation per publish.
    fn route(&self, topic: &str, publisher: Option<SessionKey>, out: &mut Vec<Route<T>>) {
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
            for (name, g) in &node.groups {
                if let Some((s, o)) = pick_member(g, None) {
                    out.push(Route {
                        subscriber: s.clone(),
                        qos: o.options.qos,
                        retain_as_published: o.options.retain_as_published,
                        subscription_ids: o.subscription_id.into_iter().collect(),
                        share_group: Some(name.clone()),
                    });
                }
            }
        };
        {
            let shard = read(self.shard_for(levels[0]));
            walk(&shard, &levels, &mut visit);
        }
        // Filters starting with a wildcard never match `$` topics [MQTT-4.7.2-1].
        if !topic.starts_with('$') && self.wildcard_count.load(Ordering::Relaxed) > 0 {
            let shard = read(&self.wildcard);
            walk(&shard, &levels, &mut visit);
        }
        merge_per_subscriber(out, start);
    }

    /// Like `route` but only for one shared group's filter, excluding one member: used to
    /// re-deliver a message whose chosen member left. Returns `None` if no other member exists.
    fn route_shared_excluding(
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
            if let Some((name, g)) = node.groups.get_key_value(group) {
                if let Some((s, o)) = pick_member(g, Some(excluded)) {
                    found = Some(Route {
                        subscriber: s.clone(),
                        qos: o.options.qos,
                        retain_as_published: o.options.retain_as_published,
                        subscription_ids: o.subscription_id.into_iter().collect(),
                        share_group: Some(name.clone()),
                    });
                }
            }
        };
        {
            let shard = read(self.shard_for(levels[0]));
            walk(&shard, &levels, &mut visit);
        }
        if !topic.starts_with('$') {
            let shard = read(&self.wildcard);
            walk(&shard, &levels, &mut visit);
        }
        found
    }

    /// Number of stored subscriptions (for metrics and tests).
    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Of [`len`](Self::len), the subscriptions in a shared group.
    fn shared_len(&self) -> usize {
        self.shared.load(Ordering::Relaxed)
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

/// Visit every node whose filter matches `levels` ([MQTT-4.7.1]). Iterative, with the
/// pending branches on a heap stack: the depth is the client's to choose.
fn walk<T>(root: &Node<T>, levels: &[&str], visit: &mut impl FnMut(&Node<T>)) {
    let mut pending: SmallVec<[(&Node<T>, usize); 16]> = SmallVec::new();
    pending.push((root, 0));
    while let Some((node, depth)) = pending.pop() {
        // `#` matches this level and everything below, including the parent itself
        // (`sport/#` matches `sport`).
        if node.wild & HASH != 0 {
            if let Some(hash) = node.children.get("#") {
                visit(hash);
            }
        }
        let Some(level) = levels.get(depth) else {
            visit(node);
            continue;
        };
        if node.wild & PLUS != 0 {
            if let Some(plus) = node.children.get("+") {
                pending.push((plus, depth + 1));
            }
        }
        if let Some(child) = node.children.get(*level) {
            pending.push((child, depth + 1));
        }
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
/// [MQTT-3.3.4-3]. Shared routes are separate deliveries and stay as they are. Identifiers
/// are sorted once per folded route, so the work is O(n log n) in the matches.
fn merge_per_subscriber<T: SubscriberHandle>(out: &mut Vec<Route<T>>, start: usize) {
    if out.len() - start < 2 {
        return;
    }
    out[start..].sort_by_key(|r| (r.share_group.is_some(), r.subscriber.key()));
    let mut write = start;
    let mut folded = false;
    for read in start + 1..out.len() {
        let mergeable = out[read].share_group.is_none()
            && out[write].share_group.is_none()
            && out[read].subscriber.key() == out[write].subscriber.key();
        if mergeable {
            let (kept, rest) = out.split_at_mut(read);
            let (into, from) = (&mut kept[write], &mut rest[0]);
            into.qos = into.qos.max(from.qos);
            into.retain_as_published |= from.retain_as_published;
            into.subscription_ids.append(&mut from.subscription_ids);
            folded = true;
        } else {
            finish_ids(&mut out[write], folded);
            folded = false;
            write += 1;
            out.swap(write, read);
        }
    }
    finish_ids(&mut out[write], folded);
    out.truncate(write + 1);
}

fn finish_ids<T>(route: &mut Route<T>, folded: bool) {
    if folded && route.subscription_ids.len() > 1 {
        route.subscription_ids.sort_unstable();
        route.subscription_ids.dedup();
    }
}

/// Remove a subscription below `root`, pruning the nodes it leaves empty. True if it
/// existed. Iterative: one read-only descent finds the subscription and the highest node
/// that would be left empty, a second removes the entry and cuts that branch off (its drop
/// is iterative too).
fn remove<T: SubscriberHandle>(
    root: &mut Node<T>,
    levels: &[&str],
    group: Option<&ByteString>,
    key: SessionKey,
) -> bool {
    // `cut`: the depth of the deepest node on the path that stays non-empty; everything
    // below it along the path holds nothing but the path itself.
    let mut cut = 0;
    let mut node: &Node<T> = root;
    for (depth, level) in levels.iter().enumerate() {
        let Some(child) = node.children.get(*level) else {
            return false;
        };
        if depth > 0
            && (node.children.len() > 1 || !node.subscribers.is_empty() || !node.groups.is_empty())
        {
            cut = depth;
        }
        node = child;
    }
    let found = match group {
        None => node.subscribers.iter().any(|(s, _)| s.key() == key),
        Some(name) => node
            .groups
            .get(name)
            .is_some_and(|g| g.members.iter().any(|(s, _)| s.key() == key)),
    };
    if !found {
        return false;
    }
    let mut leaf: &mut Node<T> = root;
    for level in levels {
        let Some(child) = leaf.children.get_mut(*level) else {
            return false;
        };
        leaf = child;
    }
    match group {
        None => take_member(&mut leaf.subscribers, key),
        Some(name) => {
            if let Some(g) = leaf.groups.get_mut(name) {
                take_member(&mut g.members, key);
                if g.members.is_empty() {
                    leaf.groups.remove(name);
                }
            }
        }
    }
    if leaf.is_empty() {
        let mut parent: &mut Node<T> = root;
        for level in &levels[..cut] {
            let Some(child) = parent.children.get_mut(*level) else {
                return true;
            };
            parent = child;
        }
        parent.children.remove(levels[cut]);
        parent.wild &= !wild_bit(levels[cut]);
    }
    true
}

fn take_member<T: SubscriberHandle>(list: &mut Vec<(T, StoredOptions)>, key: SessionKey) {
    if let Some(i) = list.iter().position(|(s, _)| s.key() == key) {
        list.swap_remove(i);
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
