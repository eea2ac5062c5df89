//! Retained messages ([MQTT-3.3.1.3]): at most one per topic; a retained PUBLISH with an
//! empty payload deletes it [MQTT-3.3.1-6] (and is not stored [MQTT-3.3.1-7]). Stored in a
//! trie by topic level so a new subscription's filter (wildcards included) finds its
//! matches without scanning every topic; `$`-topics are not matched by filters starting with
//! a wildcard. Messages whose expiry has passed are dropped lazily when met.

use std::sync::Arc;
use std::time::Instant;

use crate::message::Message;

/// The retained-message store. `Send + Sync`; share behind an `Arc`. Writes (retained
/// publishes) take a write lock; lookups (new subscriptions) a read lock: neither is on the
/// ordinary publish path.
pub struct RetainedStore {
    _private: (),
}

impl RetainedStore {
    pub fn new() -> Self {
        todo!("core helper")
    }

    /// Store `message` as the retained message of its topic, or delete the topic's retained
    /// message if the payload is empty.
    pub fn set(&self, message: Arc<Message>) {
        let _ = message;
        todo!("core helper")
    }

    /// Append to `out` every unexpired retained message whose topic matches `filter`.
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        let _ = (filter, now, out);
        todo!("core helper")
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        todo!("core helper")
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
