//! The `SessionStore` seam (cluster stage 0, docs/cluster.md "Seams"): the session, queue
//! and retained-state operations the broker asks of its durable store, as a trait. The
//! single-node implementation is [`Store`] (redb, one writer thread, group commit); a
//! cluster implementation commits the same operations through the session's partition.
//!
//! The contract every implementation keeps is [`Store`]'s: operations are non-blocking and
//! applied in the order one thread submits them; an operation submitted before
//! [`SessionStore::ticket`] is durable once [`SessionStore::committed`] reaches the ticket;
//! nothing is reported committed that is not.

use std::path::Path;
use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::{oneshot, watch};

use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, OutgoingState};

use crate::{Health, Level, SessionRecord, Store};

/// Durable sessions, their queues and in-flight deliveries, and retained messages. The
/// broker holds a concrete implementation (static dispatch on the per-message calls).
pub trait SessionStore: std::fmt::Debug + Send + Sync + 'static {
    // Per message.

    /// Store a delivery for `client`; returns it with its store key set. `shared`: the
    /// message is queued for other sessions too (stored once for all of them).
    fn enqueue(&self, client: &ByteString, delivery: Delivery, shared: bool) -> Delivery;
    /// A stored delivery is settled.
    fn remove(&self, client: &ByteString, seq: u64);
    /// The stored delivery `seq` went out (or moved on to PUBREL) under `packet_id`.
    fn sent(&self, client: &ByteString, seq: u64, packet_id: u16, state: OutgoingState);
    /// A QoS 2 packet identifier from the client is pending (PUBREC sent) or released.
    fn incoming_qos2(&self, client: &ByteString, packet_id: u16, pending: bool);
    /// Store (or, for an empty payload, delete) a retained message.
    fn retain(&self, message: &Arc<Message>);

    // Per session.

    /// Write the session record (with its epoch).
    fn put_session(&self, client: &ByteString, record: SessionRecord);
    /// Forget a session and everything queued for it.
    fn delete_session(&self, client: &ByteString);
    /// Read stored deliveries back (in the order asked; missing ones are skipped). Sees
    /// every operation submitted before it.
    fn load(&self, client: &ByteString, seqs: Vec<u64>) -> oneshot::Receiver<Vec<Delivery>>;

    // Commits.

    /// Operations submitted before this call are durable once [`Self::committed`] reaches
    /// the returned value.
    fn ticket(&self) -> u64;
    /// Commit progress (`u64::MAX` once the store gave up: see [`Self::is_failed`]).
    fn committed(&self) -> watch::Receiver<u64>;
    /// The store gave up: nothing waiting may be acknowledged.
    fn is_failed(&self) -> bool;
    /// Commit what is pending and stop (clean shutdown); blocks the calling thread.
    fn close(&self);

    // For operators.

    fn health(&self) -> Health;
    /// Where the store stands against its budget.
    fn level(&self) -> Level;
    /// Bytes of records held.
    fn usage(&self) -> u64;
    fn budget(&self) -> u64;
    fn set_budget(&self, bytes: u64);
    /// (commits, operations they carried, microseconds they took) since start.
    fn commit_stats(&self) -> (u64, u64, u64);
    fn failed_commits(&self) -> u64;
    /// Operations submitted and not committed yet.
    fn pending(&self) -> u64;
    /// Where the state lives (for logs).
    fn path(&self) -> &Path;
}

/// Single node: redb. Every method is [`Store`]'s own.
impl SessionStore for Store {
    #[inline]
    fn enqueue(&self, client: &ByteString, delivery: Delivery, shared: bool) -> Delivery {
        Store::enqueue(self, client, delivery, shared)
    }
    #[inline]
    fn remove(&self, client: &ByteString, seq: u64) {
        Store::remove(self, client, seq);
    }
    #[inline]
    fn sent(&self, client: &ByteString, seq: u64, packet_id: u16, state: OutgoingState) {
        Store::sent(self, client, seq, packet_id, state);
    }
    #[inline]
    fn incoming_qos2(&self, client: &ByteString, packet_id: u16, pending: bool) {
        Store::incoming_qos2(self, client, packet_id, pending);
    }
    #[inline]
    fn retain(&self, message: &Arc<Message>) {
        Store::retain(self, message);
    }
    fn put_session(&self, client: &ByteString, record: SessionRecord) {
        Store::put_session(self, client, record);
    }
    fn delete_session(&self, client: &ByteString) {
        Store::delete_session(self, client);
    }
    fn load(&self, client: &ByteString, seqs: Vec<u64>) -> oneshot::Receiver<Vec<Delivery>> {
        Store::load(self, client, seqs)
    }
    #[inline]
    fn ticket(&self) -> u64 {
        Store::ticket(self)
    }
    fn committed(&self) -> watch::Receiver<u64> {
        Store::committed(self)
    }
    #[inline]
    fn is_failed(&self) -> bool {
        Store::is_failed(self)
    }
    fn close(&self) {
        Store::close(self);
    }
    fn health(&self) -> Health {
        Store::health(self)
    }
    fn level(&self) -> Level {
        Store::level(self)
    }
    fn usage(&self) -> u64 {
        Store::usage(self)
    }
    fn budget(&self) -> u64 {
        Store::budget(self)
    }
    fn set_budget(&self, bytes: u64) {
        Store::set_budget(self, bytes);
    }
    fn commit_stats(&self) -> (u64, u64, u64) {
        Store::commit_stats(self)
    }
    fn failed_commits(&self) -> u64 {
        Store::failed_commits(self)
    }
    fn pending(&self) -> u64 {
        Store::pending(self)
    }
    fn path(&self) -> &Path {
        Store::path(self)
    }
}
