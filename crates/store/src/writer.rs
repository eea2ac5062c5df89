//! The writer thread: everything submitted meanwhile goes into one transaction and one commit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use edgemq_core::session::{Delivery, OutgoingState};

use crate::backend::SyncedFile;
use crate::record::{self, Clock};
use crate::{state_code, Op, Shared};

pub(crate) const SESSIONS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("sessions");
/// (client id, store key) → delivery: queued, or in flight and not yet acknowledged.
pub(crate) const QUEUE: TableDefinition<'static, (&'static str, u64), &'static [u8]> =
    TableDefinition::new("queue");
/// (client id, store key) → packet identifier and state, for deliveries sent to the client.
pub(crate) const INFLIGHT: TableDefinition<'static, (&'static str, u64), &'static [u8]> =
    TableDefinition::new("inflight");
/// (client id, packet identifier): QoS 2 PUBLISHes received, PUBREC sent, PUBREL awaited.
pub(crate) const INCOMING: TableDefinition<'static, (&'static str, u16), ()> =
    TableDefinition::new("incoming_qos2");
pub(crate) const RETAINED: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("retained");

type Replies = Vec<(oneshot::Sender<Vec<Delivery>>, Vec<Delivery>)>;

pub(crate) fn run(
    db: Database,
    file: Arc<SyncedFile>,
    ops: Receiver<(u64, Op)>,
    shared: Arc<Shared>,
) {
    let mut scratch = BytesMut::new();
    let mut closing = None;
    let mut frontier = Frontier::default();
    while closing.is_none() {
        // Under `interval-ms`, an idle writer still owes the disk its fsync.
        let first = match file.sync_due_in() {
            Some(wait) => match ops.recv_timeout(wait) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = file.sync_now() {
                        tracing::error!(error = %e, "store: fsync failed");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match ops.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
        };
        let waiting = ops.len();
        let mut batch = Vec::with_capacity(waiting + 1);
        batch.push(first);
        batch.extend(ops.try_iter().take(waiting));
        let numbers: Vec<u64> = batch.iter().map(|(n, _)| *n).collect();
        let mut replies = Replies::new();
        match apply(&db, batch, &mut scratch, &mut replies, &mut closing) {
            Ok(()) => {
                if let Some(committed) = frontier.advance(numbers) {
                    shared.committed.send_replace(committed);
                }
                for (reply, loaded) in replies {
                    let _ = reply.send(loaded);
                }
            }
            Err(e) => {
                // Nothing after this is durable: say so loudly, and let every waiter know
                // (they refuse to acknowledge rather than pretend).
                tracing::error!(error = %e, "store: a write failed; acknowledgements that need the disk are refused from now on");
                shared.failed.store(true, Ordering::Release);
                shared.committed.send_replace(u64::MAX);
                return;
            }
        }
    }
    drop(db);
    if let Err(e) = file.sync_now() {
        tracing::error!(error = %e, "store: final fsync failed");
    }
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// Store keys queued and removed (acknowledged) within this batch: an online subscriber that
/// acknowledges before the commit. They never need to reach the disk. (Keys are unique
/// across clients.)
fn settled_within(batch: &[(u64, Op)]) -> HashSet<u64> {
    let queued: HashSet<u64> = batch
        .iter()
        .filter_map(|(_, op)| match op {
            Op::Enqueue { delivery, .. } => delivery.stored,
            _ => None,
        })
        .collect();
    if queued.is_empty() {
        return queued;
    }
    batch
        .iter()
        .filter_map(|(_, op)| match op {
            Op::Remove { seq, .. } if queued.contains(seq) => Some(*seq),
            _ => None,
        })
        .collect()
}

/// The highest number below which every operation is committed.
#[derive(Default)]
struct Frontier {
    done: u64,
    /// Committed numbers above a gap.
    ahead: BinaryHeap<Reverse<u64>>,
}

impl Frontier {
    /// Record committed numbers; the new frontier if it moved.
    fn advance(&mut self, numbers: Vec<u64>) -> Option<u64> {
        let before = self.done;
        self.ahead.extend(numbers.into_iter().map(Reverse));
        while let Some(&Reverse(next)) = self.ahead.peek() {
            if next > self.done + 1 {
                break;
            }
            self.done = self.done.max(next);
            self.ahead.pop();
        }
        (self.done != before).then_some(self.done)
    }
}

fn apply(
    db: &Database,
    batch: Vec<(u64, Op)>,
    scratch: &mut BytesMut,
    replies: &mut Replies,
    closing: &mut Option<std::sync::mpsc::SyncSender<()>>,
) -> Result<(), redb::Error> {
    let clock = Clock::now();
    let skip = settled_within(&batch);
    let txn = db.begin_write()?;
    {
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let mut inflight = txn.open_table(INFLIGHT)?;
        let mut incoming = txn.open_table(INCOMING)?;
        let mut retained = txn.open_table(RETAINED)?;
        for (_, op) in batch {
            match op {
                Op::Enqueue { delivery, .. }
                    if delivery.stored.is_some_and(|seq| skip.contains(&seq)) => {}
                Op::Remove { seq, .. } | Op::Sent { seq, .. } if skip.contains(&seq) => {}
                Op::Enqueue { client, delivery } => {
                    let seq = delivery.stored.unwrap_or(0);
                    record::encode_delivery(&delivery, clock, scratch);
                    queue.insert((&*client, seq), &scratch[..])?;
                }
                Op::Remove { client, seq } => {
                    queue.remove((&*client, seq))?;
                    inflight.remove((&*client, seq))?;
                }
                Op::Sent {
                    client,
                    seq,
                    packet_id,
                    state,
                } => {
                    let entry = record::encode_inflight(packet_id, state_code(state));
                    inflight.insert((&*client, seq), &entry[..])?;
                    // Awaiting PUBCOMP, only the packet identifier matters [MQTT-4.3.3].
                    if state == OutgoingState::AwaitingPubComp {
                        queue.remove((&*client, seq))?;
                    }
                }
                Op::IncomingAdd { client, packet_id } => {
                    incoming.insert((&*client, packet_id), ())?;
                }
                Op::IncomingRemove { client, packet_id } => {
                    incoming.remove((&*client, packet_id))?;
                }
                Op::PutSession { client, record } => {
                    let raw = record::encode_session(&record, clock);
                    sessions.insert(&*client, &raw[..])?;
                }
                Op::DeleteSession { client } => {
                    sessions.remove(&*client)?;
                    let c: &str = &client;
                    queue.retain_in((c, 0)..=(c, u64::MAX), |_, _| false)?;
                    inflight.retain_in((c, 0)..=(c, u64::MAX), |_, _| false)?;
                    incoming.retain_in((c, 0)..=(c, u16::MAX), |_, ()| false)?;
                }
                Op::PutRetained(message) => {
                    let raw = record::encode_retained(&message, clock);
                    retained.insert(&*message.topic, &raw[..])?;
                }
                Op::DeleteRetained(topic) => {
                    retained.remove(&*topic)?;
                }
                Op::Load {
                    client,
                    seqs,
                    reply,
                } => {
                    let mut loaded = Vec::with_capacity(seqs.len());
                    for seq in seqs {
                        let Some(raw) = queue.get((&*client, seq))? else {
                            continue;
                        };
                        match record::decode_delivery(raw.value(), seq, clock) {
                            Ok(d) => loaded.push(d),
                            Err(e) => {
                                tracing::error!(client_id = %client, key = seq, error = %e, "store: a queued message is damaged and is skipped");
                            }
                        }
                    }
                    replies.push((reply, loaded));
                }
                Op::Close { reply } => *closing = Some(reply),
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytestring::ByteString;
    use edgemq_codec::QoS;
    use edgemq_core::message::Message;
    use edgemq_core::session::Delivery;

    use super::{settled_within, Frontier};
    use crate::Op;

    #[test]
    fn a_delivery_queued_and_acknowledged_in_one_batch_is_skipped() {
        let client = ByteString::from_static("c");
        let enqueue = |seq| Op::Enqueue {
            client: client.clone(),
            delivery: Delivery {
                stored: Some(seq),
                ..Delivery::plain(
                    Arc::new(Message::broker_generated(
                        ByteString::from_static("t"),
                        bytes::Bytes::new(),
                        QoS::AtLeastOnce,
                        false,
                    )),
                    QoS::AtLeastOnce,
                )
            },
        };
        let remove = |seq| Op::Remove {
            client: client.clone(),
            seq,
        };
        let batch = vec![
            (1, enqueue(5)),
            (2, enqueue(6)),
            (3, remove(5)),
            (4, remove(4)),
        ];
        let skipped = settled_within(&batch);
        assert_eq!(skipped.into_iter().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn the_frontier_waits_for_gaps() {
        let mut f = Frontier::default();
        assert_eq!(f.advance(vec![1, 2]), Some(2));
        assert_eq!(f.advance(vec![4, 5]), None, "3 is not committed yet");
        assert_eq!(f.advance(vec![3]), Some(5));
        assert_eq!(f.advance(vec![]), None);
    }
}
