//! The writer thread: everything submitted meanwhile goes into one transaction and one commit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use redb::{Database, ReadableTable, TableDefinition};

use bytestring::ByteString;
use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, OutgoingState};

use crate::backend::SyncedFile;
use crate::index::Index;
use crate::record::{self, Clock, SessionRecord};
use crate::{recover, state_code, Health, Level, Op, Shared};

/// Client id → session record, with the session's number.
pub(crate) const SESSIONS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("sessions");
/// (session number, store key) → delivery, naming its message: queued, or in flight and not
/// yet acknowledged.
pub(crate) const QUEUE: TableDefinition<'static, (u64, u64), &'static [u8]> =
    TableDefinition::new("queue_v2");
/// (session number, store key) → packet identifier and state, for deliveries sent to the
/// client.
pub(crate) const INFLIGHT: TableDefinition<'static, (u64, u64), &'static [u8]> =
    TableDefinition::new("inflight_v2");
/// (session number, packet identifier): QoS 2 PUBLISHes received, PUBREC sent, PUBREL
/// awaited.
pub(crate) const INCOMING: TableDefinition<'static, (u64, u16), ()> =
    TableDefinition::new("incoming_qos2_v2");
/// Message key → the message, stored once for every session it is queued for.
pub(crate) const MESSAGES: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("messages");
/// Message key → how many queued deliveries name it; at 0 the message is deleted.
pub(crate) const MESSAGE_REFS: TableDefinition<'static, u64, u64> =
    TableDefinition::new("message_refs");
pub(crate) const RETAINED: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("retained");

/// Bytes a record of each fixed-size table takes (key and value), for the usage count.
pub(crate) const QUEUE_KEY: u64 = 16;
pub(crate) const INFLIGHT_RECORD: u64 = 16 + 3;
pub(crate) const INCOMING_RECORD: u64 = 10;
pub(crate) const REFS_RECORD: u64 = 16;
pub(crate) const MESSAGE_KEY: u64 = 8;

/// The first retry after a failed commit; doubled after each failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// While a commit keeps failing, one log line per this period.
const LOG_EVERY: Duration = Duration::from_secs(30);

pub(crate) fn run(
    db: Database,
    file: Arc<SyncedFile>,
    path: PathBuf,
    ops: Receiver<(u64, Op)>,
    shared: Arc<Shared>,
    mut index: Index,
) {
    let mut scratch = BytesMut::new();
    let mut closing = None;
    let mut frontier = Frontier::default();
    let mut db = Some(db);
    let mut file = file;
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
        let mut retry: Option<Retry> = None;
        // Until this batch is committed: nothing after it is reported committed before it.
        let loaded = loop {
            let started = Instant::now();
            let attempt = match &db {
                Some(db) => apply(db, &batch, &mut scratch, &mut index).map_err(|e| e.to_string()),
                None => Err("the store file is not open".to_string()),
            };
            let error = match attempt {
                Ok((loaded, usage)) => {
                    count_commit(&shared, batch.len(), started.elapsed());
                    let before = shared.level();
                    index.usage = index.usage.saturating_add_signed(usage);
                    shared.usage.store(index.usage, Ordering::Relaxed);
                    log_level_change(&shared, before);
                    break loaded;
                }
                Err(e) => e,
            };
            shared.failed_commits.fetch_add(1, Ordering::Relaxed);
            let r = match retry.take() {
                Some(mut r) => {
                    r.failed(&error, batch.len());
                    r
                }
                None => Retry::start(&shared, &error, batch.len()),
            };
            let r = retry.insert(r);
            // redb refuses everything after an I/O error until the database is reopened.
            // (Dropping it closes the file and releases its lock.)
            drop(db.take());
            if batch.iter().any(|(_, op)| matches!(op, Op::Close { .. })) {
                give_up(
                    &shared,
                    &format!("shutting down while the disk refuses writes: {error}"),
                    batch.len(),
                );
                return;
            }
            // Back off; meanwhile whatever is submitted joins the batch (within the bound).
            let deadline = Instant::now() + r.wait;
            let mut close_now = false;
            while !close_now {
                match ops.recv_deadline(deadline) {
                    Ok(op) => {
                        close_now = matches!(op.1, Op::Close { .. });
                        r.bytes += weight(&op.1);
                        batch.push(op);
                        batch.extend(ops.try_iter().inspect(|op| {
                            r.bytes += weight(&op.1);
                            close_now |= matches!(op.1, Op::Close { .. });
                        }));
                        let (max_ops, max_bytes) = shared.backlog;
                        if batch.len() > max_ops || r.bytes > max_bytes {
                            give_up(
                                &shared,
                                &format!(
                                    "{} operations ({} bytes) wait for the disk, over the bound of {max_ops} operations or {max_bytes} bytes; last error: {error}",
                                    batch.len(),
                                    r.bytes
                                ),
                                batch.len(),
                            );
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    // The store was dropped without `close`: nobody waits for this any more.
                    Err(RecvTimeoutError::Disconnected) => {
                        give_up(
                            &shared,
                            &format!(
                                "the store was dropped while the disk refuses writes: {error}"
                            ),
                            batch.len(),
                        );
                        return;
                    }
                }
            }
            r.wait = (r.wait * 2).min(RETRY_MAX);
            match recover::reopen(&path, file.policy(), &shared.faults) {
                Ok((reopened, synced)) => {
                    db = Some(reopened);
                    file = synced;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "store: reopening the file failed; retrying");
                }
            }
        };
        if let Some(r) = retry {
            r.recovered(&shared, batch.len());
        }
        let numbers: Vec<u64> = batch.iter().map(|(n, _)| *n).collect();
        if let Some(committed) = frontier.advance(numbers) {
            shared.committed.send_replace(committed);
        }
        let mut loaded = loaded.into_iter();
        for (_, op) in batch {
            match op {
                Op::Load { reply, .. } => {
                    let _ = reply.send(loaded.next().unwrap_or_default());
                }
                Op::Close { reply } => closing = Some(reply),
                _ => {}
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

/// One line when the store crosses a level of its budget (never more than one per commit).
fn log_level_change(shared: &Shared, before: Level) {
    let now = shared.level();
    if now == before {
        return;
    }
    let usage = shared.usage.load(Ordering::Relaxed);
    let budget = shared.budget.load(Ordering::Relaxed);
    match now {
        Level::Full => tracing::warn!(
            usage, budget,
            "store: FULL (max-store-bytes): QoS 1/2 messages for persistent sessions and retained messages are refused (0x97) until clients drain their queues"
        ),
        Level::NearlyFull => tracing::warn!(
            usage, budget,
            "store: at 90% of max-store-bytes: new persistent sessions are refused (CONNACK 0x97)"
        ),
        Level::Ok => tracing::warn!(usage, budget, "store: below 90% of max-store-bytes again: everything is accepted"),
    }
}

/// A failed commit being retried.
struct Retry {
    since: Instant,
    attempts: u64,
    wait: Duration,
    last_log: Instant,
    /// Estimated memory held by the operations that joined the batch.
    bytes: usize,
}

impl Retry {
    fn start(shared: &Shared, error: &str, ops: usize) -> Retry {
        tracing::error!(
            error = %error, operations = ops,
            "store: DEGRADED: a commit failed; acknowledgements that need the disk are held and the commit is retried until the disk takes it"
        );
        shared.set_health(Health::Degraded {
            since: SystemTime::now(),
            error: error.to_string(),
        });
        let now = Instant::now();
        Retry {
            since: now,
            attempts: 1,
            wait: RETRY_FIRST,
            last_log: now,
            bytes: 0,
        }
    }

    fn failed(&mut self, error: &str, ops: usize) {
        self.attempts += 1;
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::error!(
                error = %error, attempts = self.attempts, operations = ops,
                degraded_secs = self.since.elapsed().as_secs(),
                "store: DEGRADED: commits still fail; acknowledgements that need the disk are still held"
            );
        }
    }

    fn recovered(self, shared: &Shared, ops: usize) {
        shared.set_health(Health::Ok);
        tracing::warn!(
            attempts = self.attempts,
            operations = ops,
            degraded_ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            "store: recovered: the held commit succeeded; held acknowledgements are released"
        );
    }
}

/// Stop writing for good: every waiter is told (they refuse to acknowledge rather than
/// pretend). What was not committed was never acknowledged.
fn give_up(shared: &Shared, reason: &str, ops: usize) {
    tracing::error!(
        reason = %reason, operations_not_committed = ops,
        "store: FAILED: the writer gives up; acknowledgements that need the disk are refused until a restart (nothing acknowledged is lost)"
    );
    shared.set_health(Health::Failed {
        since: SystemTime::now(),
        error: reason.to_string(),
    });
    shared.failed.store(true, Ordering::Release);
    shared.committed.send_replace(u64::MAX);
}

/// Memory an operation holds while it waits (an estimate, for the backlog bound).
fn weight(op: &Op) -> usize {
    const BASE: usize = 128;
    BASE + match op {
        Op::Enqueue {
            client, delivery, ..
        } => client.len() + delivery.message.topic.len() + delivery.message.payload.len(),
        Op::PutRetained(m) => m.topic.len() + m.payload.len(),
        Op::PutSession { client, record } => {
            client.len()
                + record
                    .subscriptions
                    .iter()
                    .map(|(f, _)| f.len() + 16)
                    .sum::<usize>()
                + record
                    .will
                    .as_ref()
                    .map_or(0, |(m, _)| m.topic.len() + m.payload.len())
        }
        Op::Load { client, seqs, .. } => client.len() + 8 * seqs.len(),
        Op::DeleteRetained(topic) => topic.len(),
        Op::Remove { client, .. }
        | Op::Sent { client, .. }
        | Op::IncomingAdd { client, .. }
        | Op::IncomingRemove { client, .. }
        | Op::DeleteSession { client } => client.len(),
        Op::Close { .. } => 0,
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

/// The tables of one write transaction, and what the batch changes besides them.
struct Tables<'t> {
    sessions: redb::Table<'t, &'static str, &'static [u8]>,
    queue: redb::Table<'t, (u64, u64), &'static [u8]>,
    inflight: redb::Table<'t, (u64, u64), &'static [u8]>,
    incoming: redb::Table<'t, (u64, u16), ()>,
    /// Messages stored once for several sessions, and their reference counts: opened only
    /// by a batch that touches one (most batches hold deliveries to one session each).
    shared: Option<SharedTables<'t>>,
    txn: &'t redb::WriteTransaction,
    retained: redb::Table<'t, &'static str, &'static [u8]>,
    /// Change in record bytes.
    usage: i64,
    /// Change in each message's reference count, and the message if this batch queued it.
    counts: HashMap<u64, (i64, Option<Arc<Message>>)>,
    /// Sessions whose number was forgotten (restored if the commit fails).
    ended: Vec<(ByteString, u64)>,
}

struct SharedTables<'t> {
    messages: redb::Table<'t, u64, &'static [u8]>,
    refs: redb::Table<'t, u64, u64>,
}

fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn fixed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS)?,
            queue: txn.open_table(QUEUE)?,
            inflight: txn.open_table(INFLIGHT)?,
            incoming: txn.open_table(INCOMING)?,
            shared: None,
            txn,
            retained: txn.open_table(RETAINED)?,
            usage: 0,
            counts: HashMap::new(),
            ended: Vec::new(),
        })
    }

    fn shared(&mut self) -> Result<&mut SharedTables<'t>, redb::Error> {
        let tables = match self.shared.take() {
            Some(tables) => tables,
            None => SharedTables {
                messages: self.txn.open_table(MESSAGES)?,
                refs: self.txn.open_table(MESSAGE_REFS)?,
            },
        };
        Ok(self.shared.insert(tables))
    }

    fn enqueue(
        &mut self,
        index: &mut Index,
        (client, delivery, shared): (&ByteString, &Delivery, bool),
        scratch: &mut BytesMut,
        clock: Clock,
    ) -> Result<(), redb::Error> {
        let session = index.session(client);
        let key = shared.then(|| index.message_key(&delivery.message));
        match key {
            Some(key) => record::encode_queued(delivery, key, scratch),
            None => record::encode_delivery_inline(delivery, clock, scratch),
        }
        let old = self
            .queue
            .insert((session, delivery.stored.unwrap_or(0)), &scratch[..])?;
        self.usage += len(scratch.len()) + fixed(QUEUE_KEY);
        if let Some(old) = old {
            self.usage -= len(old.value().len()) + fixed(QUEUE_KEY);
        }
        let Some(key) = key else {
            return Ok(());
        };
        let entry = self.counts.entry(key).or_insert((0, None));
        entry.0 += 1;
        entry.1 = Some(delivery.message.clone());
        Ok(())
    }

    /// Remove a queued delivery; its message loses a reference.
    fn unqueue(&mut self, session: u64, seq: u64) -> Result<(), redb::Error> {
        let Some(old) = self.queue.remove((session, seq))? else {
            return Ok(());
        };
        self.usage -= len(old.value().len()) + fixed(QUEUE_KEY);
        if let Ok(Some(key)) = record::queued_message(old.value()) {
            self.counts.entry(key).or_insert((0, None)).0 -= 1;
        }
        Ok(())
    }

    fn remove_inflight(&mut self, session: u64, seq: u64) -> Result<(), redb::Error> {
        if self.inflight.remove((session, seq))?.is_some() {
            self.usage -= fixed(INFLIGHT_RECORD);
        }
        Ok(())
    }

    fn delete_session(
        &mut self,
        index: &mut Index,
        client: &ByteString,
    ) -> Result<(), redb::Error> {
        if let Some(old) = self.sessions.remove(&**client)? {
            self.usage -= len(client.len() + old.value().len());
        }
        let Some(ended) = index.end_session(client) else {
            return Ok(());
        };
        let n = ended.1;
        self.ended.push(ended);
        let (mut freed, mut released) = (0i64, Vec::new());
        self.queue.retain_in((n, 0)..=(n, u64::MAX), |_, value| {
            freed += len(value.len()) + fixed(QUEUE_KEY);
            released.extend(record::queued_message(value).ok().flatten());
            false
        })?;
        self.inflight.retain_in((n, 0)..=(n, u64::MAX), |_, _| {
            freed += fixed(INFLIGHT_RECORD);
            false
        })?;
        self.incoming.retain_in((n, 0)..=(n, u16::MAX), |_, ()| {
            freed += fixed(INCOMING_RECORD);
            false
        })?;
        self.usage -= freed;
        for key in released {
            self.counts.entry(key).or_insert((0, None)).0 -= 1;
        }
        Ok(())
    }

    fn put_session(
        &mut self,
        index: &mut Index,
        client: &ByteString,
        session: &SessionRecord,
        clock: Clock,
    ) -> Result<(), redb::Error> {
        let raw = record::encode_session(session, index.session(client), clock);
        self.usage += len(client.len() + raw.len());
        if let Some(old) = self.sessions.insert(&**client, &raw[..])? {
            self.usage -= len(client.len() + old.value().len());
        }
        Ok(())
    }

    fn put_retained(&mut self, message: &Message, clock: Clock) -> Result<(), redb::Error> {
        let raw = record::encode_message(message, clock);
        self.usage += len(message.topic.len() + raw.len());
        if let Some(old) = self.retained.insert(&*message.topic, &raw[..])? {
            self.usage -= len(message.topic.len() + old.value().len());
        }
        Ok(())
    }

    fn delete_retained(&mut self, topic: &str) -> Result<(), redb::Error> {
        if let Some(old) = self.retained.remove(topic)? {
            self.usage -= len(topic.len() + old.value().len());
        }
        Ok(())
    }

    fn load(
        &mut self,
        index: &mut Index,
        client: &ByteString,
        seqs: &[u64],
        clock: Clock,
    ) -> Result<Vec<Delivery>, redb::Error> {
        let session = index.session(client);
        let mut loaded = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            let Some(raw) = self.queue.get((session, seq))? else {
                continue;
            };
            if let Ok(None) = record::queued_message(raw.value()) {
                match record::decode_delivery_inline(raw.value(), seq, clock) {
                    Ok(d) => loaded.push(d),
                    Err(e) => {
                        tracing::error!(client_id = %client, key = seq, error = %e, "store: a queued message is damaged and is skipped");
                    }
                }
                continue;
            }
            let queued = record::decode_queued(raw.value());
            drop(raw);
            let read = match queued {
                Ok(q) => self
                    .shared_message(index, q.message, clock)?
                    .map(|m| q.into_delivery(m, seq)),
                Err(e) => Err(e.0),
            };
            match read {
                Ok(d) => loaded.push(d),
                Err(e) => {
                    tracing::error!(client_id = %client, key = seq, error = %e, "store: a queued message is damaged and is skipped");
                }
            }
        }
        Ok(loaded)
    }

    /// Stored message `key`, shared with the copy in memory if there is one.
    fn shared_message(
        &mut self,
        index: &mut Index,
        key: u64,
        clock: Clock,
    ) -> Result<Result<Arc<Message>, &'static str>, redb::Error> {
        if let Some(m) = index.loaded(key) {
            return Ok(Ok(m));
        }
        let Some(raw) = self.shared()?.messages.get(key)? else {
            return Ok(Err("its message is missing"));
        };
        Ok(record::decode_message(raw.value(), clock)
            .map(|m| {
                let m = Arc::new(m);
                index.remember(key, &m);
                m
            })
            .map_err(|e| e.0))
    }

    /// Apply the batch's reference counts: a message is written when it gains its first
    /// reference and deleted when it loses its last.
    fn settle_messages(&mut self, clock: Clock) -> Result<(), redb::Error> {
        let counts = std::mem::take(&mut self.counts);
        for (key, (delta, message)) in counts.into_iter().filter(|(_, (d, _))| *d != 0) {
            let t = self.shared()?;
            let before = t.refs.get(key)?.map_or(0, |v| v.value());
            let after =
                u64::try_from(i64::try_from(before).unwrap_or(i64::MAX) + delta).unwrap_or(0);
            let mut change = 0;
            if after == 0 {
                t.refs.remove(key)?;
                if let Some(old) = t.messages.remove(key)? {
                    change -= len(old.value().len()) + fixed(MESSAGE_KEY + REFS_RECORD);
                }
            } else {
                t.refs.insert(key, after)?;
                if let (0, Some(message)) = (before, message) {
                    let raw = record::encode_message(&message, clock);
                    t.messages.insert(key, &raw[..])?;
                    change += len(raw.len()) + fixed(MESSAGE_KEY + REFS_RECORD);
                }
            }
            self.usage += change;
        }
        Ok(())
    }
}

/// A successful commit of `ops` operations that took `took`.
fn count_commit(shared: &Shared, ops: usize, took: std::time::Duration) {
    shared.commits.fetch_add(1, Ordering::Relaxed);
    (shared.committed_ops).fetch_add(ops as u64, Ordering::Relaxed);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    shared.commit_micros.fetch_add(micros, Ordering::Relaxed);
}

/// Apply `batch` in one transaction and commit it; what each `Load` read, in order, and the
/// change in record bytes.
fn apply(
    db: &Database,
    batch: &[(u64, Op)],
    scratch: &mut BytesMut,
    index: &mut Index,
) -> Result<(Vec<Vec<Delivery>>, i64), redb::Error> {
    let clock = Clock::now();
    let txn = db.begin_write()?;
    let mut t = Tables::open(&txn)?;
    let applied = apply_ops(&mut t, batch, scratch, index, clock)
        .and_then(|replies| t.settle_messages(clock).map(|()| replies));
    let (usage, ended) = (t.usage, std::mem::take(&mut t.ended));
    drop(t);
    let committed = applied.and_then(|replies| {
        txn.commit()?;
        Ok(replies)
    });
    match committed {
        Ok(replies) => Ok((replies, usage)),
        Err(e) => {
            // The numbers forgotten by this attempt still key records on disk.
            for session in ended {
                index.restore_session(session);
            }
            Err(e)
        }
    }
}

fn apply_ops(
    t: &mut Tables<'_>,
    batch: &[(u64, Op)],
    scratch: &mut BytesMut,
    index: &mut Index,
    clock: Clock,
) -> Result<Vec<Vec<Delivery>>, redb::Error> {
    let skip = settled_within(batch);
    let mut replies = Vec::new();
    for (_, op) in batch {
        match op {
            Op::Enqueue { delivery, .. }
                if delivery.stored.is_some_and(|seq| skip.contains(&seq)) => {}
            Op::Remove { seq, .. } | Op::Sent { seq, .. } if skip.contains(seq) => {}
            Op::Enqueue {
                client,
                delivery,
                shared,
            } => t.enqueue(index, (client, delivery, *shared), scratch, clock)?,
            Op::Remove { client, seq } => {
                let session = index.session(client);
                t.unqueue(session, *seq)?;
                t.remove_inflight(session, *seq)?;
            }
            Op::Sent {
                client,
                seq,
                packet_id,
                state,
            } => {
                let session = index.session(client);
                let entry = record::encode_inflight(*packet_id, state_code(*state));
                if t.inflight.insert((session, *seq), &entry[..])?.is_none() {
                    t.usage += fixed(INFLIGHT_RECORD);
                }
                // Awaiting PUBCOMP, only the packet identifier matters [MQTT-4.3.3].
                if *state == OutgoingState::AwaitingPubComp {
                    t.unqueue(session, *seq)?;
                }
            }
            Op::IncomingAdd { client, packet_id } => {
                let session = index.session(client);
                if t.incoming.insert((session, *packet_id), ())?.is_none() {
                    t.usage += fixed(INCOMING_RECORD);
                }
            }
            Op::IncomingRemove { client, packet_id } => {
                let session = index.session(client);
                if t.incoming.remove((session, *packet_id))?.is_some() {
                    t.usage -= fixed(INCOMING_RECORD);
                }
            }
            Op::PutSession { client, record } => t.put_session(index, client, record, clock)?,
            Op::DeleteSession { client } => t.delete_session(index, client)?,
            Op::PutRetained(message) => t.put_retained(message, clock)?,
            Op::DeleteRetained(topic) => t.delete_retained(topic)?,
            Op::Load { client, seqs, .. } => replies.push(t.load(index, client, seqs, clock)?),
            Op::Close { .. } => {}
        }
    }
    Ok(replies)
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
            shared: false,
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
