//! What the writer keeps in memory to lay records out compactly: the number of each
//! persistent session (its queued and in-flight records are keyed by it, so a client id is
//! stored once, in the session record) and the key of each stored message (a message queued
//! for many sessions is stored once and counted).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytestring::ByteString;

use edgemq_core::message::Message;

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Client id → session number.
    sessions: HashMap<ByteString, u64>,
    next_session: u64,
    /// A message in memory (by address) → its key. The `Weak` keeps the address from being
    /// reused while the entry exists.
    keys: HashMap<usize, (Weak<Message>, u64)>,
    /// A stored message's key → the copy in memory, so loads share one copy.
    loaded: HashMap<u64, Weak<Message>>,
    next_message: u64,
    /// Entries when dead ones were last pruned.
    pruned_at: usize,
    /// Record bytes on disk (keys and values), as the last commit left them.
    pub(crate) usage: u64,
}

impl Index {
    /// Start from what recovery found.
    pub(crate) fn recovered(sessions: HashMap<ByteString, u64>, next_message: u64) -> Self {
        let next_session = sessions.values().max().map_or(1, |n| n + 1);
        Index {
            sessions,
            next_session,
            next_message: next_message.max(1),
            ..Index::default()
        }
    }

    /// The session's number, given one if it has none.
    pub(crate) fn session(&mut self, client: &ByteString) -> u64 {
        if let Some(&n) = self.sessions.get(client) {
            return n;
        }
        let n = self.next_session.max(1);
        self.next_session = n + 1;
        self.sessions.insert(client.clone(), n);
        n
    }

    /// Forget a session's number (its records are being deleted); what to restore if the
    /// commit fails.
    pub(crate) fn end_session(&mut self, client: &ByteString) -> Option<(ByteString, u64)> {
        self.sessions.remove_entry(client)
    }

    pub(crate) fn restore_session(&mut self, (client, n): (ByteString, u64)) {
        self.sessions.insert(client, n);
    }

    /// The key of a message being queued, given one if it has none.
    pub(crate) fn message_key(&mut self, message: &Arc<Message>) -> u64 {
        let address = Arc::as_ptr(message) as usize;
        if let Some((_, key)) = self.keys.get(&address) {
            return *key;
        }
        let key = self.next_message;
        self.next_message += 1;
        self.remember(key, message);
        key
    }

    /// The copy in memory of stored message `key`, if one is still alive.
    pub(crate) fn loaded(&self, key: u64) -> Option<Arc<Message>> {
        self.loaded.get(&key).and_then(Weak::upgrade)
    }

    /// A message read back from the store, or queued: loads (even within the same batch,
    /// before its record is written) and enqueues share it.
    pub(crate) fn remember(&mut self, key: u64, message: &Arc<Message>) {
        self.loaded.insert(key, Arc::downgrade(message));
        let address = Arc::as_ptr(message) as usize;
        self.keys.insert(address, (Arc::downgrade(message), key));
        self.prune();
    }

    /// Drop entries for messages no longer in memory: no operation can name them again.
    /// (Amortised: only when the maps have doubled since the last pass.)
    fn prune(&mut self) {
        let size = self.keys.len() + self.loaded.len();
        if size < 1024 || size < 2 * self.pruned_at {
            return;
        }
        self.keys.retain(|_, (weak, _)| weak.strong_count() > 0);
        self.loaded.retain(|_, weak| weak.strong_count() > 0);
        self.pruned_at = self.keys.len() + self.loaded.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Arc<Message> {
        Arc::new(Message::broker_generated(
            ByteString::from_static("t"),
            bytes::Bytes::from_static(b"p"),
            edgemq_codec::QoS::AtLeastOnce,
            false,
        ))
    }

    #[test]
    fn one_message_one_key_and_sessions_keep_their_number() {
        let mut index = Index::recovered(HashMap::new(), 1);
        let (a, b) = (message(), message());
        let ka = index.message_key(&a);
        assert_eq!(index.message_key(&a.clone()), ka);
        assert_ne!(index.message_key(&b), ka);
        let c = ByteString::from_static("c");
        let n = index.session(&c);
        assert_eq!(index.session(&c), n);
        let ended = index.end_session(&c).unwrap();
        assert_ne!(index.session(&c), n, "a new session gets a new number");
        index.restore_session(ended);
        assert_eq!(index.session(&c), n);
    }

    #[test]
    fn dead_messages_are_pruned() {
        let mut index = Index::recovered(HashMap::new(), 1);
        for _ in 0..5000 {
            index.message_key(&message());
        }
        assert!(index.keys.len() < 1100, "{}", index.keys.len());
    }
}
