//! Retained messages ([MQTT-3.3.1.3]): at most one per topic; a retained PUBLISH with an
//! empty payload deletes it [MQTT-3.3.1-6] (and is not stored [MQTT-3.3.1-7]). Stored in a
//! trie by topic level so a new subscription's filter (wildcards included) finds its
//! matches without scanning every topic; `$`-topics are not matched by filters starting with
//! a wildcard.
//!
//! Bounded: at most `max_messages` messages and `max_bytes` bytes (topic plus payload of
//! each). A message for a topic that holds none is refused when either budget would be
//! exceeded; one that replaces a topic's message is refused only when it would take the
//! bytes over the budget (the count does not change). A refused message changes nothing:
//! the topic keeps the message it had. Deleting is always allowed.
//!
//! Expired messages are never returned; [`RetainedStore::purge_expired`] (a housekeeping
//! timer) removes them, and a lookup that meets one removes it too, leaving its topic for
//! the next purge to report (so the caller deletes its durable copy).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use crate::message::Message;

/// Which budget refused a retained message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainRefused {
    /// The store holds `max_messages` messages already.
    Messages,
    /// The message would take the stored bytes over `max_bytes`.
    Bytes,
}

/// The retained-message store. `Send + Sync`; share behind an `Arc`. Writes (retained
/// publishes) take a write lock; lookups (new subscriptions) a read lock: neither is on the
/// ordinary publish path.
pub struct RetainedStore {
    root: RwLock<Node>,
    count: AtomicUsize,
    bytes: AtomicUsize,
    max_messages: usize,
    max_bytes: usize,
    /// Topics whose expired message a lookup removed: reported by the next purge.
    purged_on_access: Mutex<Vec<ByteString>>,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

/// Dropped level by level from a heap stack: the default drop recurses once per level, and
/// a client chooses the depth of a topic.
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Node> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

/// What one retained message costs against the byte budget.
pub fn retained_size(message: &Message) -> usize {
    message.topic.len() + message.payload.len()
}

impl RetainedStore {
    /// A store with no limits.
    pub fn new() -> Self {
        Self::with_limits(usize::MAX, usize::MAX)
    }

    /// A store holding at most `max_messages` messages and `max_bytes` bytes.
    pub fn with_limits(max_messages: usize, max_bytes: usize) -> Self {
        RetainedStore {
            root: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_messages,
            max_bytes,
            purged_on_access: Mutex::new(Vec::new()),
        }
    }

    /// Store `message` as the retained message of its topic, or delete the topic's retained
    /// message if the payload is empty. `Err` if a budget refused it (nothing changed).
    pub fn set(&self, message: Arc<Message>) -> Result<(), RetainRefused> {
        self.set_then(message, |_| {})
    }

    /// [`set`](Self::set), calling `then` with the message once it is stored or deleted,
    /// still under the store's lock: what `then` does (a durable write) happens in the same
    /// order as the changes here, whichever thread makes them.
    pub fn set_then(
        &self,
        message: Arc<Message>,
        then: impl FnOnce(&Arc<Message>),
    ) -> Result<(), RetainRefused> {
        self.put(message, true, then)
    }

    /// Store `message` whatever the budgets (state recovered at start-up, accepted under
    /// the limits of its time).
    pub fn restore(&self, message: Arc<Message>) {
        let _ = self.put(message, false, |_| {});
    }

    fn put(
        &self,
        message: Arc<Message>,
        enforce: bool,
        then: impl FnOnce(&Arc<Message>),
    ) -> Result<(), RetainRefused> {
        let topic = message.topic.clone();
        let levels: SmallVec<[&str; 16]> = topic.split('/').collect();
        let mut root = self.root.write();
        if message.payload.is_empty() {
            if let Some(old) = take(&mut root, &levels) {
                self.forget(&old);
            }
            then(&message);
            return Ok(());
        }
        let size = retained_size(&message);
        if enforce {
            let old = find(&root, &levels).map(|m| retained_size(m));
            let bytes = self.bytes.load(Ordering::Relaxed) - old.unwrap_or(0);
            if old.is_none() && self.count.load(Ordering::Relaxed) >= self.max_messages {
                return Err(RetainRefused::Messages);
            }
            if size > self.max_bytes.saturating_sub(bytes) {
                return Err(RetainRefused::Bytes);
            }
        }
        let mut node = &mut *root;
        for level in &levels {
            node = node.children.entry(Box::from(*level)).or_default();
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        match node.message.replace(message.clone()) {
            Some(old) => {
                self.bytes.fetch_sub(retained_size(&old), Ordering::Relaxed);
            }
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        then(&message);
        Ok(())
    }

    /// Account for a message taken out of the trie.
    fn forget(&self, old: &Message) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(retained_size(old), Ordering::Relaxed);
    }

    /// Append to `out` every unexpired retained message whose topic matches `filter`. An
    /// expired one met on the way is removed (its topic is reported by the next
    /// [`purge_expired`](Self::purge_expired)).
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        let levels: SmallVec<[&str; 16]> = filter.split('/').collect();
        let mut expired = Vec::new();
        {
            let root = self.root.read();
            collect(&root, &levels, now, out, &mut expired);
        }
        if expired.is_empty() {
            return;
        }
        let mut root = self.root.write();
        let mut purged = self.purged_on_access.lock();
        for topic in expired {
            if self.remove_if_expired(&mut root, &topic, now) {
                purged.push(topic);
            }
        }
    }

    /// Remove `topic`'s message if it is (still) expired.
    fn remove_if_expired(&self, root: &mut Node, topic: &str, now: Instant) -> bool {
        let levels: SmallVec<[&str; 16]> = topic.split('/').collect();
        // Replaced by a live message meanwhile: kept.
        if find(root, &levels).is_some_and(|m| m.is_expired(now)) {
            if let Some(old) = take(root, &levels) {
                self.forget(&old);
                return true;
            }
        }
        false
    }

    /// Drop every expired message (called from housekeeping, not on a hot path). `purged` is
    /// called with the topic of each, and of each removed by a lookup since the last purge
    /// that has no message now, under the store's lock (see [`set_then`](Self::set_then)).
    /// Returns how many topics were reported.
    pub fn purge_expired(&self, now: Instant, mut purged: impl FnMut(&ByteString)) -> usize {
        let mut expired = Vec::new();
        {
            let root = self.root.read();
            let mut stack = vec![&*root];
            while let Some(node) = stack.pop() {
                if let Some(m) = node.message.as_ref().filter(|m| m.is_expired(now)) {
                    expired.push(m.topic.clone());
                }
                stack.extend(node.children.values());
            }
        }
        let mut root = self.root.write();
        let mut reported = 0;
        let on_access = std::mem::take(&mut *self.purged_on_access.lock());
        for topic in on_access {
            let levels: SmallVec<[&str; 16]> = topic.split('/').collect();
            if find(&root, &levels).is_none() {
                purged(&topic);
                reported += 1;
            }
        }
        for topic in expired {
            if self.remove_if_expired(&mut root, &topic, now) {
                purged(&topic);
                reported += 1;
            }
        }
        reported
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (topic plus payload of each message).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Default for RetainedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RetainedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedStore")
            .field("messages", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Collect messages matching the filter `levels`. Iterative, with pending branches on a heap
/// stack: the depth of the trie and of the filter is the clients' to choose. Wildcards at
/// the root skip `$` topics [MQTT-4.7.2-1].
/// Expired messages met are not collected; their topics go to `expired`.
fn collect(
    root: &Node,
    levels: &[&str],
    now: Instant,
    out: &mut Vec<Arc<Message>>,
    expired: &mut Vec<ByteString>,
) {
    let mut pending: Vec<(&Node, usize)> = vec![(root, 0)];
    while let Some((node, depth)) = pending.pop() {
        let Some(level) = levels.get(depth) else {
            push_live(node, now, out, expired);
            continue;
        };
        let at_root = depth == 0;
        let children = node
            .children
            .iter()
            .filter(|(name, _)| !(at_root && name.starts_with('$')));
        match *level {
            "#" => {
                // `a/#` matches `a` itself too.
                if !at_root {
                    push_live(node, now, out, expired);
                }
                for (_, child) in children {
                    collect_all(child, now, out, expired);
                }
            }
            "+" => pending.extend(children.map(|(_, child)| (child, depth + 1))),
            literal => {
                if let Some(child) = node.children.get(literal) {
                    pending.push((child, depth + 1));
                }
            }
        }
    }
}

/// Every live message at or below `node`.
fn collect_all(
    node: &Node,
    now: Instant,
    out: &mut Vec<Arc<Message>>,
    expired: &mut Vec<ByteString>,
) {
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        push_live(node, now, out, expired);
        stack.extend(node.children.values());
    }
}

fn push_live(
    node: &Node,
    now: Instant,
    out: &mut Vec<Arc<Message>>,
    expired: &mut Vec<ByteString>,
) {
    if let Some(m) = &node.message {
        if m.is_expired(now) {
            expired.push(m.topic.clone());
        } else {
            out.push(m.clone());
        }
    }
}

/// The message stored at exactly `levels`.
fn find<'a>(root: &'a Node, levels: &[&str]) -> Option<&'a Arc<Message>> {
    let mut node = root;
    for level in levels {
        node = node.children.get(*level)?;
    }
    node.message.as_ref()
}

/// Take the message at `levels` out of the trie (see [`remove`]).
fn take(root: &mut Node, levels: &[&str]) -> Option<Arc<Message>> {
    let old = find(root, levels)?.clone();
    remove(root, levels).then_some(old)
}

/// Remove the message at `levels`, pruning the nodes it leaves empty; true if there was one.
/// Iterative: a read-only descent finds the deepest node that stays non-empty, and the
/// branch below it is cut off in one step (its drop is iterative too).
fn remove(root: &mut Node, levels: &[&str]) -> bool {
    let mut cut = 0;
    let mut node: &Node = root;
    for (depth, level) in levels.iter().enumerate() {
        let Some(child) = node.children.get(*level) else {
            return false;
        };
        if depth > 0 && (node.children.len() > 1 || node.message.is_some()) {
            cut = depth;
        }
        node = child;
    }
    if node.message.is_none() {
        return false;
    }
    let prune = node.children.is_empty();
    let mut target: &mut Node = root;
    let stop = if prune { cut } else { levels.len() };
    for level in &levels[..stop] {
        let Some(child) = target.children.get_mut(*level) else {
            return false;
        };
        target = child;
    }
    if prune {
        target.children.remove(levels[cut]);
    } else {
        target.message = None;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn msg(topic: &str, payload: &'static [u8], expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            expires_at,
            ..Message::broker_generated(
                ByteString::from(topic),
                Bytes::from_static(payload),
                edgemq_codec::QoS::AtMostOnce,
                true,
            )
        })
    }

    fn topics(store: &RetainedStore, filter: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, now, &mut out);
        let mut t: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_delete() {
        let s = RetainedStore::new();
        let now = Instant::now();
        s.set(msg("a/b", b"1", None)).unwrap();
        s.set(msg("a/b", b"2", None)).unwrap();
        assert_eq!(s.len(), 1);
        let mut out = Vec::new();
        s.matching("a/b", now, &mut out);
        assert_eq!(&out[0].payload[..], b"2");
        // An empty retained payload deletes [MQTT-3.3.1-6] and is not stored [MQTT-3.3.1-7].
        s.set(msg("a/b", b"", None)).unwrap();
        assert_eq!(s.len(), 0);
        assert!(topics(&s, "#", now).is_empty());
        s.set(msg("x", b"", None)).unwrap();
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn wildcard_lookup_and_dollar_rule() {
        let s = RetainedStore::new();
        let now = Instant::now();
        for t in ["a", "a/b", "a/b/c", "a/c", "b", "/x", "$SYS/up", "a/$x"] {
            s.set(msg(t, b"v", None)).unwrap();
        }
        assert_eq!(
            topics(&s, "#", now),
            ["/x", "a", "a/$x", "a/b", "a/b/c", "a/c", "b"]
        );
        assert_eq!(topics(&s, "a/#", now), ["a", "a/$x", "a/b", "a/b/c", "a/c"]);
        assert_eq!(topics(&s, "a/+", now), ["a/$x", "a/b", "a/c"]);
        assert_eq!(topics(&s, "+", now), ["a", "b"]);
        assert_eq!(topics(&s, "+/x", now), ["/x"]);
        assert_eq!(topics(&s, "+/+/c", now), ["a/b/c"]);
        assert_eq!(topics(&s, "$SYS/#", now), ["$SYS/up"]);
        assert_eq!(topics(&s, "+/up", now), Vec::<String>::new());
        assert_eq!(topics(&s, "a/b", now), ["a/b"]);
    }

    /// No operation recurses once per level: 100,000 levels on a test thread's 2 MiB stack.
    #[test]
    fn deep_topics_are_stack_safe() {
        let s = RetainedStore::new();
        let now = Instant::now();
        let deep = "/".repeat(99_999);
        let deeper = format!("{deep}/x");
        s.set(msg(&deep, b"v", None)).unwrap();
        s.set(msg(&deeper, b"w", Some(now))).unwrap();
        assert_eq!(topics(&s, "#", now).len(), 1);
        let mut out = Vec::new();
        s.matching(&format!("{deep}/#"), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.purge_expired(now, |_| {}), 1);
        s.set(msg(&deep, b"", None)).unwrap();
        assert!(s.is_empty());
        s.set(msg(&deeper, b"w", None)).unwrap();
        drop(s);
    }

    #[test]
    fn expiry() {
        let s = RetainedStore::new();
        let now = Instant::now();
        s.set(msg("old", b"v", Some(now + Duration::from_secs(5))))
            .unwrap();
        s.set(msg("new", b"v", None)).unwrap();
        assert_eq!(topics(&s, "#", now), ["new", "old"]);
        let later = now + Duration::from_secs(6);
        assert_eq!(topics(&s, "#", later), ["new"]);
        assert_eq!(s.purge_expired(later, |_| {}), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn count_and_byte_budgets() {
        // 2 messages, 10 bytes (topic plus payload).
        let s = RetainedStore::with_limits(2, 10);
        s.set(msg("a", b"1234", None)).unwrap(); // 5 bytes
        s.set(msg("b", b"12", None)).unwrap(); // 3 bytes
        assert_eq!((s.len(), s.bytes()), (2, 8));
        assert_eq!(
            s.set(msg("c", b"", None)),
            Ok(()),
            "deleting is always allowed"
        );
        assert_eq!(s.set(msg("c", b"1", None)), Err(RetainRefused::Messages));
        // Replacing: the count does not grow; the bytes may, within the budget.
        s.set(msg("b", b"1234", None)).unwrap(); // 5 bytes: 10 in all
        assert_eq!(s.bytes(), 10);
        assert_eq!(s.set(msg("b", b"12345", None)), Err(RetainRefused::Bytes));
        // A refused message changes nothing.
        let mut out = Vec::new();
        s.matching("b", Instant::now(), &mut out);
        assert_eq!(&out[0].payload[..], b"1234");
        s.set(msg("a", b"", None)).unwrap();
        assert_eq!((s.len(), s.bytes()), (1, 5));
        assert_eq!(s.set(msg("cc", b"123456", None)), Err(RetainRefused::Bytes));
        s.set(msg("cc", b"123", None)).unwrap();
        assert_eq!((s.len(), s.bytes()), (2, 10));
        // Restored state is loaded whatever the budgets.
        s.restore(msg("d", b"123456789", None));
        assert_eq!((s.len(), s.bytes()), (3, 20));
    }

    #[test]
    fn expired_met_by_a_lookup_is_removed_and_reported_once() {
        let s = RetainedStore::with_limits(1, usize::MAX);
        let now = Instant::now();
        s.set(msg("old", b"v", Some(now))).unwrap();
        assert_eq!(s.set(msg("new", b"v", None)), Err(RetainRefused::Messages));
        assert!(topics(&s, "#", now).is_empty());
        // Removed when met: its place is free.
        assert_eq!((s.len(), s.bytes()), (0, 0));
        s.set(msg("new", b"v", None)).unwrap();
        let mut purged = Vec::new();
        assert_eq!(s.purge_expired(now, |t| purged.push(t.to_string())), 1);
        assert_eq!(purged, ["old"]);
        assert_eq!(s.purge_expired(now, |_| {}), 0);
        // A topic set again after the lookup removed it is not reported.
        s.set(msg("new", b"", None)).unwrap();
        s.set(msg("x", b"v", Some(now))).unwrap();
        assert!(topics(&s, "x", now).is_empty());
        s.set(msg("x", b"w", None)).unwrap();
        assert_eq!(s.purge_expired(now, |_| {}), 0);
        assert_eq!(topics(&s, "x", now), ["x"]);
    }
}
