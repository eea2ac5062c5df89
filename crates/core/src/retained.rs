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

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
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
        collect(&root, &levels, true, now, out);
    }

    /// Drop every expired message (called from housekeeping, not on a hot path).
    pub fn purge_expired(&self, now: Instant) -> usize {
        let mut root = self.root.write();
        let purged = purge(&mut root, now);
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

/// Collect messages below `node` matching the filter `levels`. At the root, wildcards skip
/// `$` topics [MQTT-4.7.2-1].
fn collect(node: &Node, levels: &[&str], at_root: bool, now: Instant, out: &mut Vec<Arc<Message>>) {
    let Some((first, rest)) = levels.split_first() else {
        push_live(node, now, out);
        return;
    };
    let skip_dollar = |name: &str| at_root && name.starts_with('$');
    match *first {
        "#" => {
            // `a/#` matches `a` itself too.
            if !at_root {
                push_live(node, now, out);
            }
            for (name, child) in &node.children {
                if !skip_dollar(name) {
                    collect_all(child, now, out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if !skip_dollar(name) {
                    collect(child, rest, false, now, out);
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                collect(child, rest, false, now, out);
            }
        }
    }
}

fn collect_all(node: &Node, now: Instant, out: &mut Vec<Arc<Message>>) {
    push_live(node, now, out);
    for child in node.children.values() {
        collect_all(child, now, out);
    }
}

fn push_live(node: &Node, now: Instant, out: &mut Vec<Arc<Message>>) {
    if let Some(m) = &node.message {
        if !m.is_expired(now) {
            out.push(m.clone());
        }
    }
}

fn remove(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove(child, rest);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn purge(node: &mut Node, now: Instant) -> usize {
    let mut purged = 0;
    if node.message.as_ref().is_some_and(|m| m.is_expired(now)) {
        node.message = None;
        purged += 1;
    }
    node.children.retain(|_, child| {
        purged += purge(child, now);
        !child.is_empty()
    });
    purged
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
