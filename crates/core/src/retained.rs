//! Retained messages ([MQTT-3.3.1.3]): at most one per topic; a retained PUBLISH with an
//! empty payload deletes it [MQTT-3.3.1-6] (and is not stored [MQTT-3.3.1-7]). Stored in a
//! trie by topic level so a new subscription's filter (wildcards included) finds its
//! matches without scanning every topic; `$`-topics are not matched by filters starting with
//! a wildcard. Messages whose expiry has passed are dropped lazily when met.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::message::Message;

/// The retained-message store. `Send + Sync`; share behind an `Arc`. Writes (retained
/// publishes) take a write lock; lookups (new subscriptions) a read lock: neither is on the
/// ordinary publish path.
pub struct RetainedStore {
    root: RwLock<Node>,
    count: AtomicUsize,
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

impl RetainedStore {
    pub fn new() -> Self {
        RetainedStore {
            root: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
        }
    }

    /// Store `message` as the retained message of its topic, or delete the topic's retained
    /// message if the payload is empty.
    pub fn set(&self, message: Arc<Message>) {
        let topic = message.topic.clone();
        let levels: SmallVec<[&str; 16]> = topic.split('/').collect();
        let mut root = self.root.write();
        if message.payload.is_empty() {
            if remove(&mut root, &levels) {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let mut node = &mut *root;
        for level in &levels {
            node = node.children.entry(Box::from(*level)).or_default();
        }
        if node.message.replace(message).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Append to `out` every unexpired retained message whose topic matches `filter`.
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        let levels: SmallVec<[&str; 16]> = filter.split('/').collect();
        let root = self.root.read();
        collect(&root, &levels, now, out);
    }

    /// Drop every expired message (called from housekeeping, not on a hot path).
    pub fn purge_expired(&self, now: Instant) -> usize {
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
        let mut purged = 0;
        for topic in expired {
            let levels: SmallVec<[&str; 16]> = topic.split('/').collect();
            // Replaced by a live message meanwhile: kept.
            if let Some(true) = find(&root, &levels).map(|m| m.is_expired(now)) {
                if remove(&mut root, &levels) {
                    purged += 1;
                }
            }
        }
        self.count.fetch_sub(purged, Ordering::Relaxed);
        purged
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            .finish()
    }
}

/// Collect messages matching the filter `levels`. Iterative, with pending branches on a heap
/// stack: the depth of the trie and of the filter is the clients' to choose. Wildcards at
/// the root skip `$` topics [MQTT-4.7.2-1].
fn collect(root: &Node, levels: &[&str], now: Instant, out: &mut Vec<Arc<Message>>) {
    let mut pending: Vec<(&Node, usize)> = vec![(root, 0)];
    while let Some((node, depth)) = pending.pop() {
        let Some(level) = levels.get(depth) else {
            push_live(node, now, out);
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
                    push_live(node, now, out);
                }
                for (_, child) in children {
                    collect_all(child, now, out);
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
fn collect_all(node: &Node, now: Instant, out: &mut Vec<Arc<Message>>) {
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        push_live(node, now, out);
        stack.extend(node.children.values());
    }
}

fn push_live(node: &Node, now: Instant, out: &mut Vec<Arc<Message>>) {
    if let Some(m) = &node.message {
        if !m.is_expired(now) {
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
    use bytestring::ByteString;

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
        s.set(msg("a/b", b"1", None));
        s.set(msg("a/b", b"2", None));
        assert_eq!(s.len(), 1);
        let mut out = Vec::new();
        s.matching("a/b", now, &mut out);
        assert_eq!(&out[0].payload[..], b"2");
        // An empty retained payload deletes [MQTT-3.3.1-6] and is not stored [MQTT-3.3.1-7].
        s.set(msg("a/b", b"", None));
        assert_eq!(s.len(), 0);
        assert!(topics(&s, "#", now).is_empty());
        s.set(msg("x", b"", None));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn wildcard_lookup_and_dollar_rule() {
        let s = RetainedStore::new();
        let now = Instant::now();
        for t in ["a", "a/b", "a/b/c", "a/c", "b", "/x", "$SYS/up", "a/$x"] {
            s.set(msg(t, b"v", None));
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
        s.set(msg(&deep, b"v", None));
        s.set(msg(&deeper, b"w", Some(now)));
        assert_eq!(topics(&s, "#", now).len(), 1);
        let mut out = Vec::new();
        s.matching(&format!("{deep}/#"), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.purge_expired(now), 1);
        s.set(msg(&deep, b"", None));
        assert!(s.is_empty());
        s.set(msg(&deeper, b"w", None));
        drop(s);
    }

    #[test]
    fn expiry() {
        let s = RetainedStore::new();
        let now = Instant::now();
        s.set(msg("old", b"v", Some(now + Duration::from_secs(5))));
        s.set(msg("new", b"v", None));
        assert_eq!(topics(&s, "#", now), ["new", "old"]);
        let later = now + Duration::from_secs(6);
        assert_eq!(topics(&s, "#", later), ["new"]);
        assert_eq!(s.purge_expired(later), 1);
        assert_eq!(s.len(), 1);
    }
}
