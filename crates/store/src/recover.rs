//! Start-up: open the file, quarantine it if it is damaged, and read back what it holds,
//! dropping what expired while the broker was down.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytestring::ByteString;
use redb::{
    Database, DatabaseError, ReadableTable, ReadableTableMetadata, StorageError, WriteTransaction,
};

use edgemq_codec::QoS;
use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, OutgoingState};

use crate::backend::{Backend, SyncedFile};
use crate::index::Index;
use crate::record::{self, Clock, SessionRecord};
use crate::writer::{
    INCOMING, INCOMING_RECORD, INFLIGHT, INFLIGHT_RECORD, MESSAGES, MESSAGE_KEY, MESSAGE_REFS,
    QUEUE, QUEUE_KEY, REFS_RECORD, RETAINED, SESSIONS,
};
use crate::{state_from_code, Recovery, StoreError, SyncPolicy};

/// redb's page cache.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Session Expiry Interval meaning "never expires" [MQTT-3.1.2-11].
const NEVER_EXPIRES: u32 = u32::MAX;

/// One persistent session as it was at the last commit.
#[derive(Debug)]
pub struct RecoveredSession {
    pub client_id: ByteString,
    pub record: SessionRecord,
    /// When the session expires (`None`: never).
    pub expires_at: Option<Instant>,
    /// Its will and when it is due (the earlier of its delay and the session's end).
    pub will: Option<(Arc<Message>, Instant)>,
    /// Queued deliveries still on disk, oldest first: store key and QoS.
    pub queued: Vec<(u64, QoS)>,
    /// Deliveries in flight to the client, under the packet identifiers it saw, oldest first.
    pub inflight: Vec<(u16, OutgoingState, Delivery)>,
    /// QoS 2 packet identifiers received from the client and not yet released.
    pub incoming_qos2: Vec<u16>,
}

/// What start-up found in the store.
#[derive(Debug, Default)]
pub struct Recovered {
    pub sessions: Vec<RecoveredSession>,
    pub retained: Vec<Message>,
    /// Wills of sessions that expired while the broker was down: due now.
    pub due_wills: Vec<Arc<Message>>,
    /// The next free store key.
    pub next_seq: u64,
    pub expired_sessions: usize,
    pub expired_messages: usize,
    /// Records that could not be read (each was logged and removed).
    pub damaged_records: usize,
    /// Where a damaged store file was moved, if it was.
    pub quarantined: Option<PathBuf>,
    /// Handed to the writer.
    pub(crate) index: Index,
}

/// Why opening failed.
pub(crate) enum Failure {
    Fatal(StoreError),
    Damaged(String),
}

impl From<redb::Error> for Failure {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
                Failure::Fatal(StoreError::Engine(e.to_string()))
            }
            other => Failure::Damaged(other.to_string()),
        }
    }
}

macro_rules! damaged_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::from(redb::Error::from(e))
            }
        }
    )*};
}
damaged_from!(
    redb::TransactionError,
    redb::TableError,
    StorageError,
    redb::CommitError
);

pub(crate) fn open(
    path: &Path,
    policy: SyncPolicy,
    recovery: Recovery,
    faults: &Arc<AtomicBool>,
) -> Result<(Database, Arc<SyncedFile>, Recovered), StoreError> {
    match open_and_read(path, policy, recovery, faults) {
        Ok(opened) => Ok(opened),
        Err(Failure::Fatal(e)) => Err(e),
        Err(Failure::Damaged(reason)) if recovery == Recovery::Strict => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            reason,
        }),
        Err(Failure::Damaged(reason)) => {
            let aside = quarantine_path(path);
            std::fs::rename(path, &aside).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            tracing::error!(
                store = %path.display(), moved_to = %aside.display(), reason = %reason,
                "STORE DAMAGED: the store could not be read; it was moved aside and the broker starts EMPTY (sessions, queued and retained messages of the old store are not restored; use --strict-recovery to refuse to start instead)"
            );
            match open_and_read(path, policy, recovery, faults) {
                Ok((db, file, mut recovered)) => {
                    recovered.quarantined = Some(aside);
                    Ok((db, file, recovered))
                }
                Err(Failure::Fatal(e)) => Err(e),
                Err(Failure::Damaged(reason)) => Err(StoreError::Damaged {
                    path: path.to_path_buf(),
                    reason,
                }),
            }
        }
    }
}

fn quarantine_path(path: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{secs}"));
    let mut aside = path.with_file_name(&name);
    let mut n = 1;
    while aside.exists() {
        let mut numbered = name.clone();
        numbered.push(format!("-{n}"));
        aside = path.with_file_name(numbered);
        n += 1;
    }
    aside
}

fn open_and_read(
    path: &Path,
    policy: SyncPolicy,
    recovery: Recovery,
    faults: &Arc<AtomicBool>,
) -> Result<(Database, Arc<SyncedFile>, Recovered), Failure> {
    let io = |source| {
        Failure::Fatal(StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let synced =
        SyncedFile::new(file, policy, faults.clone()).map_err(|e| classify_open(path, e))?;
    let db = database(&synced).map_err(|e| classify_open(path, e))?;
    let recovered = read_back(&db, recovery)?;
    Ok((db, synced, recovered))
}

fn database(synced: &Arc<SyncedFile>) -> Result<Database, DatabaseError> {
    // redb's default page cache (1 GiB) is sized for a server, not for an edge gateway:
    // the broker keeps what it serves in memory already, and reads the store back only at
    // start-up and for offline sessions' queues.
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(Backend(synced.clone()))
}

/// Open the file again after a failed commit (redb refuses every operation after an I/O
/// error until the database is reopened; reopening repairs what the failed commit left).
/// Nothing is read back: the broker's memory is still the truth.
pub(crate) fn reopen(
    path: &Path,
    policy: SyncPolicy,
    faults: &Arc<AtomicBool>,
) -> Result<(Database, Arc<SyncedFile>), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let synced = SyncedFile::new(file, policy, faults.clone()).map_err(|e| e.to_string())?;
    let db = database(&synced).map_err(|e| e.to_string())?;
    Ok((db, synced))
}

fn classify_open(path: &Path, e: DatabaseError) -> Failure {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Failure::Fatal(StoreError::InUse {
                path: path.to_path_buf(),
            })
        }
        DatabaseError::Storage(StorageError::Io(io))
            if !matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Failure::Fatal(StoreError::Io {
                path: path.to_path_buf(),
                source: io,
            })
        }
        other => Failure::Damaged(other.to_string()),
    }
}

/// A damaged record: logged and removed, or (strict) the whole store is refused.
pub(crate) fn damaged_record(
    recovery: Recovery,
    recovered: &mut Recovered,
    what: &str,
    key: &str,
    error: &record::RecordError,
) -> Result<(), Failure> {
    if recovery == Recovery::Strict {
        return Err(Failure::Damaged(format!("{what} {key:?}: {error}")));
    }
    tracing::error!(record = what, key, error = %error, "store: a damaged record was removed");
    recovered.damaged_records += 1;
    Ok(())
}

fn read_back(db: &Database, recovery: Recovery) -> Result<Recovered, Failure> {
    let clock = Clock::now();
    let now_ms = record::unix_ms(clock.wall);
    let mut recovered = Recovered::default();
    let txn = db.begin_write()?;
    crate::migrate::to_v2(&txn, clock)?;
    let mut sessions = read_sessions(&txn, clock, recovery, &mut recovered)?;
    let mut messages = read_messages(&txn, recovery, &mut recovered)?;
    read_queue(
        &txn,
        clock,
        now_ms,
        recovery,
        &mut sessions,
        &mut messages,
        &mut recovered,
    )?;
    let next_message = messages.next_key;
    messages.settle(&txn, &mut recovered)?;
    read_incoming(&txn, &mut sessions, &mut recovered)?;
    read_retained(&txn, clock, recovery, &mut recovered)?;
    txn.commit()?;
    let numbers = sessions
        .iter()
        .map(|(n, s)| (s.client_id.clone(), *n))
        .collect();
    let usage = recovered.index.usage;
    recovered.index = Index::recovered(numbers, next_message);
    recovered.index.usage = usage;
    recovered.sessions = sessions.into_values().collect();
    if recovered.damaged_records > 0 || recovered.expired_sessions > 0 {
        tracing::warn!(
            damaged_records = recovered.damaged_records,
            expired_sessions = recovered.expired_sessions,
            expired_messages = recovered.expired_messages,
            "store: some records were dropped at start-up"
        );
    }
    Ok(recovered)
}

/// Sessions by number.
type Sessions = BTreeMap<u64, RecoveredSession>;

fn read_sessions(
    txn: &WriteTransaction,
    clock: Clock,
    recovery: Recovery,
    recovered: &mut Recovered,
) -> Result<Sessions, Failure> {
    let mut table = txn.open_table(SESSIONS)?;
    let mut sessions = BTreeMap::new();
    let mut gone: Vec<String> = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let client_id = key.value().to_owned();
        let (record, number) = match record::decode_session(value.value(), clock) {
            Ok((r, Some(n))) => (r, n),
            Ok((_, None)) => {
                let e = record::RecordError("a session without a number after migration");
                damaged_record(recovery, recovered, "session", &client_id, &e)?;
                gone.push(client_id);
                continue;
            }
            Err(e) => {
                damaged_record(recovery, recovered, "session", &client_id, &e)?;
                gone.push(client_id);
                continue;
            }
        };
        // A session connected when the broker stopped lost its connection then: its clock
        // starts at this start-up (the time of the crash is not known).
        let since = record
            .disconnected_at
            .map_or(clock.now, |ms| clock.from_unix_ms(ms));
        let expires_at = (record.expiry_interval != NEVER_EXPIRES)
            .then(|| since + Duration::from_secs(u64::from(record.expiry_interval)));
        let will = record.will.as_ref().map(|(message, delay)| {
            let delay = (*delay).min(record.expiry_interval);
            (
                message.clone(),
                since + Duration::from_secs(u64::from(delay)),
            )
        });
        if expires_at.is_some_and(|at| at <= clock.now) {
            recovered.expired_sessions += 1;
            if let Some((will, _)) = will {
                recovered.due_wills.push(will);
            }
            gone.push(client_id);
            continue;
        }
        recovered.index.usage += (client_id.len() + value.value().len()) as u64;
        let client_id = ByteString::from(client_id);
        sessions.insert(
            number,
            RecoveredSession {
                client_id,
                record,
                expires_at,
                will,
                queued: Vec::new(),
                inflight: Vec::new(),
                incoming_qos2: Vec::new(),
            },
        );
    }
    for client in gone {
        table.remove(client.as_str())?;
    }
    Ok(sessions)
}

/// The stored messages: what start-up needs of each, and how many deliveries name it.
struct Messages {
    /// Key → expiry (Unix ms) and the record's size.
    found: HashMap<u64, (Option<u64>, usize)>,
    /// Key → queued deliveries that name it (counted while the queue is read).
    refs: HashMap<u64, u64>,
    /// Messages decoded for in-flight deliveries, shared between sessions.
    decoded: HashMap<u64, Arc<Message>>,
    next_key: u64,
}

fn read_messages(
    txn: &WriteTransaction,
    recovery: Recovery,
    recovered: &mut Recovered,
) -> Result<Messages, Failure> {
    let table = txn.open_table(MESSAGES)?;
    let mut found = HashMap::new();
    let mut next_key = 1;
    for entry in table.iter()? {
        let (key, value) = entry?;
        let key = key.value();
        next_key = next_key.max(key + 1);
        match record::message_expiry(value.value()) {
            Ok(expires) => {
                found.insert(key, (expires, value.value().len()));
            }
            // Not counted as found: settling removes it.
            Err(e) => damaged_record(recovery, recovered, "message", &key.to_string(), &e)?,
        }
    }
    Ok(Messages {
        found,
        refs: HashMap::new(),
        decoded: HashMap::new(),
        next_key,
    })
}

impl Messages {
    /// The message of an in-flight delivery, decoded once however many sessions hold it.
    fn decode(
        &mut self,
        txn: &WriteTransaction,
        key: u64,
        clock: Clock,
    ) -> Result<Result<Arc<Message>, record::RecordError>, Failure> {
        if let Some(m) = self.decoded.get(&key) {
            return Ok(Ok(m.clone()));
        }
        let table = txn.open_table(MESSAGES)?;
        let Some(raw) = table.get(key)? else {
            return Ok(Err(record::RecordError("its message is missing")));
        };
        Ok(record::decode_message(raw.value(), clock).map(|m| {
            let m = Arc::new(m);
            self.decoded.insert(key, m.clone());
            m
        }))
    }

    /// Rewrite the reference counts from what the queue names; delete the messages nothing
    /// names (left by a damaged record, or by an older version).
    fn settle(self, txn: &WriteTransaction, recovered: &mut Recovered) -> Result<(), Failure> {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut refs = txn.open_table(MESSAGE_REFS)?;
        refs.retain(|_, _| false)?;
        messages.retain(|key, _| self.refs.contains_key(&key))?;
        for (key, count) in &self.refs {
            refs.insert(*key, *count)?;
            let size = self.found.get(key).map_or(0, |(_, size)| *size);
            recovered.index.usage += (size as u64) + MESSAGE_KEY + REFS_RECORD;
        }
        Ok(())
    }
}

fn read_queue(
    txn: &WriteTransaction,
    clock: Clock,
    now_ms: u64,
    recovery: Recovery,
    sessions: &mut Sessions,
    messages: &mut Messages,
    recovered: &mut Recovered,
) -> Result<(), Failure> {
    let mut sent = read_inflight(txn, recovery, sessions, recovered)?;
    let mut queue = txn.open_table(QUEUE)?;
    let mut drop_queued: Vec<(u64, u64)> = Vec::new();
    let mut next_seq = 1;
    for entry in queue.iter()? {
        let (key, value) = entry?;
        let (number, seq) = key.value();
        next_seq = next_seq.max(seq + 1);
        let Some(session) = sessions.get_mut(&number) else {
            drop_queued.push((number, seq));
            continue;
        };
        let row = match queued_row(value.value(), messages) {
            Ok(row) => row,
            Err(e) => {
                damaged_record(
                    recovery,
                    recovered,
                    "queued message",
                    &session.client_id,
                    &e,
                )?;
                drop_queued.push((number, seq));
                continue;
            }
        };
        match sent.remove(&(number, seq)) {
            // Once sent, a message is delivered even if it expires meanwhile.
            Some((packet_id, state)) => {
                match row.delivery(value.value(), seq, txn, messages, clock)? {
                    Ok(d) => session.inflight.push((packet_id, state, d)),
                    Err(e) => {
                        damaged_record(
                            recovery,
                            recovered,
                            "in-flight message",
                            &session.client_id,
                            &e,
                        )?;
                        drop_queued.push((number, seq));
                        continue;
                    }
                }
            }
            None if row.expires.is_some_and(|at| at <= now_ms) => {
                recovered.expired_messages += 1;
                drop_queued.push((number, seq));
                continue;
            }
            None => session.queued.push((seq, row.qos)),
        }
        if let Some(q) = &row.shared {
            *messages.refs.entry(q.message).or_default() += 1;
        }
        recovered.index.usage += value.value().len() as u64 + QUEUE_KEY;
    }
    let mut inflight_table = txn.open_table(INFLIGHT)?;
    // What is left in `sent` awaits PUBCOMP: its message is gone, its identifier is not.
    for ((number, seq), (packet_id, state)) in sent {
        next_seq = next_seq.max(seq + 1);
        let session = sessions.get_mut(&number);
        match session {
            Some(session) if state == OutgoingState::AwaitingPubComp => {
                session
                    .inflight
                    .push((packet_id, state, placeholder_delivery(seq)));
            }
            _ => {
                inflight_table.remove((number, seq))?;
            }
        }
    }
    for (number, seq) in &drop_queued {
        queue.remove((*number, *seq))?;
        inflight_table.remove((*number, *seq))?;
    }
    let inflight_left = inflight_table.len()?;
    recovered.index.usage += inflight_left * INFLIGHT_RECORD;
    for session in sessions.values_mut() {
        session.inflight.sort_by_key(|(_, _, d)| d.stored);
    }
    recovered.next_seq = next_seq;
    Ok(())
}

/// What start-up needs of a queued record.
struct Row {
    qos: QoS,
    /// Unix ms.
    expires: Option<u64>,
    /// The shared message it names (`None`: it carries its own copy).
    shared: Option<record::Queued>,
}

fn queued_row(raw: &[u8], messages: &Messages) -> Result<Row, record::RecordError> {
    if record::queued_message(raw)?.is_none() {
        let (qos, expires) = record::inline_summary(raw)?;
        return Ok(Row {
            qos,
            expires,
            shared: None,
        });
    }
    let q = record::decode_queued(raw)?;
    let Some((expires, _)) = messages.found.get(&q.message) else {
        return Err(record::RecordError("its message is missing"));
    };
    Ok(Row {
        qos: q.qos,
        expires: *expires,
        shared: Some(q),
    })
}

impl Row {
    /// The whole delivery (for one in flight: it goes back into the window).
    fn delivery(
        &self,
        raw: &[u8],
        seq: u64,
        txn: &WriteTransaction,
        messages: &mut Messages,
        clock: Clock,
    ) -> Result<Result<Delivery, record::RecordError>, Failure> {
        let Some(q) = &self.shared else {
            return Ok(record::decode_delivery_inline(raw, seq, clock));
        };
        Ok(messages
            .decode(txn, q.message, clock)?
            .map(|m| q.clone().into_delivery(m, seq)))
    }
}

/// In-flight entries: (session number, store key) → packet identifier and state.
type Sent = HashMap<(u64, u64), (u16, OutgoingState)>;

/// The in-flight entries of live sessions (a queued delivery with one is in the window, not
/// the queue); the others are removed.
fn read_inflight(
    txn: &WriteTransaction,
    recovery: Recovery,
    sessions: &Sessions,
    recovered: &mut Recovered,
) -> Result<Sent, Failure> {
    let mut table = txn.open_table(INFLIGHT)?;
    let mut sent = HashMap::new();
    let mut gone = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (number, seq) = key.value();
        match record::decode_inflight(value.value()) {
            Ok((packet_id, code)) if sessions.contains_key(&number) => {
                sent.insert((number, seq), (packet_id, state_from_code(code)));
            }
            Ok(_) => gone.push((number, seq)),
            Err(e) => {
                damaged_record(recovery, recovered, "in-flight", &number.to_string(), &e)?;
                gone.push((number, seq));
            }
        }
    }
    for key in gone {
        table.remove(key)?;
    }
    Ok(sent)
}

/// A QoS 2 delivery awaiting PUBCOMP needs only its identifier [MQTT-4.3.3]; this stands in
/// for the message, which is no longer stored.
fn placeholder_delivery(seq: u64) -> Delivery {
    let message = Message::broker_generated(
        ByteString::new(),
        bytes::Bytes::new(),
        QoS::ExactlyOnce,
        false,
    );
    Delivery {
        stored: Some(seq),
        ..Delivery::plain(Arc::new(message), QoS::ExactlyOnce)
    }
}

fn read_incoming(
    txn: &WriteTransaction,
    sessions: &mut Sessions,
    recovered: &mut Recovered,
) -> Result<(), Failure> {
    let mut table = txn.open_table(INCOMING)?;
    let mut orphans = Vec::new();
    for entry in table.iter()? {
        let (key, _) = entry?;
        let (number, packet_id) = key.value();
        match sessions.get_mut(&number) {
            Some(session) => {
                session.incoming_qos2.push(packet_id);
                recovered.index.usage += INCOMING_RECORD;
            }
            None => orphans.push((number, packet_id)),
        }
    }
    for key in orphans {
        table.remove(key)?;
    }
    Ok(())
}

fn read_retained(
    txn: &WriteTransaction,
    clock: Clock,
    recovery: Recovery,
    recovered: &mut Recovered,
) -> Result<(), Failure> {
    let mut table = txn.open_table(RETAINED)?;
    let mut gone = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let topic = key.value();
        match record::decode_message(value.value(), clock) {
            Ok(m) if m.is_expired(clock.now) => {
                recovered.expired_messages += 1;
                gone.push(topic.to_owned());
            }
            Ok(m) => {
                recovered.index.usage += (topic.len() + value.value().len()) as u64;
                recovered.retained.push(m);
            }
            Err(e) => {
                damaged_record(recovery, recovered, "retained message", topic, &e)?;
                gone.push(topic.to_owned());
            }
        }
    }
    for topic in gone {
        table.remove(topic.as_str())?;
    }
    Ok(())
}
