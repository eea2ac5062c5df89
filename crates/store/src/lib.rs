//! edgemq's durable state, in one redb file in the data dir: persistent sessions (their
//! subscriptions, expiry and will), the messages queued for them and in flight to them (with
//! the packet identifiers the client saw), QoS 2 packet identifiers received and not yet
//! released, and retained messages.
//!
//! **Group commit.** Callers never touch redb. They submit operations to one writer thread,
//! which applies everything waiting in one transaction and commits once; a caller that must
//! not answer before its operations are durable (a PUBACK, a PUBREC) takes a [`Store::ticket`]
//! after submitting and waits until [`Store::committed`] reaches it. A publisher therefore
//! waits for one commit, shared with everything else submitted meanwhile.
//!
//! Every operation is numbered as it is submitted; the writer reports the highest number
//! below which all operations are committed. (Numbers may reach the writer slightly out of
//! order when threads race between numbering and sending; the reported frontier waits for
//! the gap, which the racing thread fills at once.)
//!
//! **A failed write is retried, not fatal.** When a commit fails (disk full, I/O error) the
//! writer keeps the batch, reports the store [`Health::Degraded`], reopens the file and
//! retries the same batch with back-off (100 ms doubling to 5 s) until it commits; whatever
//! is submitted meanwhile joins it. Nothing waiting on [`Store::committed`] is released
//! before its commit, so an acknowledgement is held, never given for data that is not on
//! disk. Only a backlog beyond [`BACKLOG_OPS`] operations or [`BACKLOG_BYTES`] bytes (or a
//! shutdown while degraded) makes the store give up: [`Store::is_failed`], as before.
//!
//! **Sync policy.** Every batch is a complete redb commit written to the file, so a killed
//! broker loses nothing it acknowledged under any policy. The policy decides when `fsync`
//! runs, which is what a power loss tests ([`SyncPolicy`]).

mod backend;
mod index;
mod migrate;
pub mod record;
mod recover;
mod session_store;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use bytestring::ByteString;
use tokio::sync::{oneshot, watch};

use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, OutgoingState};

pub use record::SessionRecord;
pub use recover::{Recovered, RecoveredSession};
pub use session_store::SessionStore;

/// The store's file inside the data dir.
pub const FILE_NAME: &str = "state.redb";

/// When the store's file is flushed to the disk (`fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before any acknowledgement that depends on it: nothing acknowledged is lost on power
    /// loss.
    Always,
    /// At most every N milliseconds: a power loss may lose the last N ms of acknowledged
    /// messages (a killed process loses nothing).
    IntervalMs(u64),
    /// Left to the operating system (and done at a clean shutdown): a power loss may lose
    /// whatever the OS had not written yet.
    Never,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    /// `always`, `never`, `interval-ms=N` (also `interval-ms:N`, `interval-ms N`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "always" => return Ok(SyncPolicy::Always),
            "never" => return Ok(SyncPolicy::Never),
            _ => {}
        }
        let n = s
            .strip_prefix("interval-ms")
            .map(|rest| rest.trim_start_matches([' ', '=', ':']))
            .ok_or_else(|| {
                format!("unknown sync policy {s:?}: use always, never or interval-ms=N")
            })?;
        match n.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(SyncPolicy::IntervalMs(ms)),
            _ => Err(format!(
                "interval-ms needs a number of milliseconds above 0, not {n:?}"
            )),
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => write!(f, "always"),
            SyncPolicy::IntervalMs(ms) => write!(f, "interval-ms={ms}"),
            SyncPolicy::Never => write!(f, "never"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {path} is in use by another process (is another edgemq running with this data dir?)")]
    InUse { path: PathBuf },
    #[error("the store {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot use the store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Engine(String),
}

/// How start-up treats a damaged store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Move it aside, log it loudly and start empty.
    Quarantine,
    /// Refuse to start (`--strict-recovery`).
    Strict,
}

/// While the store is degraded, at most this many operations wait behind the failed batch;
/// beyond it the store gives up ([`Health::Failed`], restart needed). Nothing acknowledged is
/// lost then either: what waits was never acknowledged.
pub const BACKLOG_OPS: usize = 1_000_000;
/// The same bound in (estimated) bytes of memory held by the waiting operations.
pub const BACKLOG_BYTES: usize = 256 * 1024 * 1024;

/// Whether the store is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// A commit failed (since then, with this error): acknowledgements that need the disk are
    /// held while the writer retries; it recovers by itself once the disk takes writes again.
    Degraded {
        since: SystemTime,
        error: String,
    },
    /// The store gave up (backlog over its bound, or shutdown while degraded): nothing more is
    /// written until a restart. See [`Store::is_failed`].
    Failed {
        since: SystemTime,
        error: String,
    },
}

/// An operation for the writer thread.
pub(crate) enum Op {
    Enqueue {
        client: ByteString,
        delivery: Delivery,
        /// Queued for more than one session: the message is stored once, by key.
        shared: bool,
    },
    Remove {
        client: ByteString,
        seq: u64,
    },
    /// A queued message was sent under `packet_id`.
    Sent {
        client: ByteString,
        seq: u64,
        packet_id: u16,
        state: OutgoingState,
    },
    IncomingAdd {
        client: ByteString,
        packet_id: u16,
    },
    IncomingRemove {
        client: ByteString,
        packet_id: u16,
    },
    PutSession {
        client: ByteString,
        record: SessionRecord,
    },
    DeleteSession {
        client: ByteString,
    },
    PutRetained(Arc<Message>),
    DeleteRetained(ByteString),
    Load {
        client: ByteString,
        seqs: Vec<u64>,
        reply: oneshot::Sender<Vec<Delivery>>,
    },
    Close {
        reply: std::sync::mpsc::SyncSender<()>,
    },
}

/// State shared with the writer thread.
pub(crate) struct Shared {
    /// Operations numbered so far (see [`Store::ticket`]).
    pub(crate) submitted: AtomicU64,
    /// Every operation numbered up to this value is committed.
    pub(crate) committed: watch::Sender<u64>,
    pub(crate) failed: AtomicBool,
    pub(crate) health: Mutex<Health>,
    /// Commits that failed (each retry counts).
    pub(crate) failed_commits: AtomicU64,
    /// Injected I/O errors (tests).
    pub(crate) faults: Arc<AtomicBool>,
    /// The backlog bound while degraded: operations, bytes.
    pub(crate) backlog: (usize, usize),
    /// Record bytes (keys and values) as of the last commit: see [`Store::usage`].
    pub(crate) usage: AtomicU64,
    /// See [`Store::set_budget`]; 0 = none.
    pub(crate) budget: AtomicU64,
    /// Commits that succeeded, the operations they carried, and the time they took (µs,
    /// from the transaction's start to its commit): see [`Store::commit_stats`].
    pub(crate) commits: AtomicU64,
    pub(crate) committed_ops: AtomicU64,
    pub(crate) commit_micros: AtomicU64,
}

impl Shared {
    pub(crate) fn level(&self) -> Level {
        Level::of(
            self.usage.load(Ordering::Relaxed),
            self.budget.load(Ordering::Relaxed),
        )
    }
}

/// Where the store stands against its budget (`--max-store-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// At 90 % of the budget: no new persistent session is accepted.
    NearlyFull,
    /// At the budget: nothing new is stored (QoS 1/2 messages for persistent sessions and
    /// retained messages are refused); what is stored drains as clients acknowledge.
    Full,
}

impl Level {
    fn of(usage: u64, budget: u64) -> Level {
        if budget == 0 {
            Level::Ok
        } else if usage >= budget {
            Level::Full
        } else if usage >= budget / 10 * 9 {
            Level::NearlyFull
        } else {
            Level::Ok
        }
    }
}

impl Shared {
    pub(crate) fn set_health(&self, health: Health) {
        if let Ok(mut h) = self.health.lock() {
            *h = health;
        }
    }
}

/// The open store. Cheap to share (`Arc<Store>`); every method is non-blocking.
pub struct Store {
    ops: crossbeam_channel::Sender<(u64, Op)>,
    shared: Arc<Shared>,
    next_seq: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    policy: SyncPolicy,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in `dir`, read back what it holds, and start the writer.
    /// A damaged file is quarantined or refused according to `recovery`.
    pub fn open(
        dir: &Path,
        policy: SyncPolicy,
        recovery: Recovery,
    ) -> Result<(Store, Recovered), StoreError> {
        Self::open_with(dir, policy, recovery, (BACKLOG_OPS, BACKLOG_BYTES))
    }

    fn open_with(
        dir: &Path,
        policy: SyncPolicy,
        recovery: Recovery,
        backlog: (usize, usize),
    ) -> Result<(Store, Recovered), StoreError> {
        let path = dir.join(FILE_NAME);
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let faults = Arc::new(AtomicBool::new(false));
        let (db, file, recovered) = recover::open(&path, policy, recovery, &faults)?;
        let shared = Arc::new(Shared {
            submitted: AtomicU64::new(0),
            committed: watch::Sender::new(0),
            failed: AtomicBool::new(false),
            health: Mutex::new(Health::Ok),
            failed_commits: AtomicU64::new(0),
            faults,
            backlog,
            usage: AtomicU64::new(0),
            budget: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed_ops: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
        });
        Self::start(db, file, path, policy, shared, recovered)
    }

    fn start(
        db: redb::Database,
        file: Arc<backend::SyncedFile>,
        path: PathBuf,
        policy: SyncPolicy,
        shared: Arc<Shared>,
        mut recovered: Recovered,
    ) -> Result<(Store, Recovered), StoreError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let index = std::mem::take(&mut recovered.index);
        shared.usage.store(index.usage, Ordering::Relaxed);
        let thread_shared = shared.clone();
        let thread_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("edgemq-store".into())
            .spawn(move || writer::run(db, file, thread_path, rx, thread_shared, index))
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let store = Store {
            ops: tx,
            shared,
            next_seq: AtomicU64::new(recovered.next_seq),
            writer: Mutex::new(Some(writer)),
            path,
            policy,
        };
        Ok((store, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    fn submit(&self, op: Op) {
        let number = self.shared.submitted.fetch_add(1, Ordering::SeqCst) + 1;
        // Fails only after `close`: nothing is written any more then.
        let _ = self.ops.send((number, op));
    }

    /// Operations submitted (by this thread) before this call are durable once
    /// [`Store::committed`] reaches the returned value. (It also covers whatever other
    /// threads submitted meanwhile: they share the commit.)
    pub fn ticket(&self) -> u64 {
        self.shared.submitted.load(Ordering::SeqCst)
    }

    /// The last batch committed (`u64::MAX` after a write failure: see [`Store::is_failed`]).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// The store gave up: nothing more is durable and nothing that waits should be
    /// acknowledged (until a restart). A store that is only [`Health::Degraded`] is not
    /// failed: what waits is acknowledged once the retried commit succeeds.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Whether the store is writing, retrying a failed commit, or gave up.
    pub fn health(&self) -> Health {
        self.shared.health.lock().map_or(Health::Ok, |h| h.clone())
    }

    /// The bytes the store's records take (keys and values of every session, queued
    /// delivery, stored message and retained message), as of the last commit. The file is
    /// larger by redb's pages and tree; space freed inside it is reused.
    pub fn usage(&self) -> u64 {
        self.shared.usage.load(Ordering::Relaxed)
    }

    /// Defend a budget of `bytes` of records (0 = none): see [`Level`].
    pub fn set_budget(&self, bytes: u64) {
        self.shared.budget.store(bytes, Ordering::Relaxed);
    }

    pub fn budget(&self) -> u64 {
        self.shared.budget.load(Ordering::Relaxed)
    }

    /// Where the store stands against its budget, as of the last commit.
    pub fn level(&self) -> Level {
        self.shared.level()
    }

    /// Successful commits since start: (commits, operations they carried, microseconds they
    /// took). Batch size and commit latency are their ratios.
    pub fn commit_stats(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (
            s.commits.load(Ordering::Relaxed),
            s.committed_ops.load(Ordering::Relaxed),
            s.commit_micros.load(Ordering::Relaxed),
        )
    }

    /// Commits that failed since start (every failed retry counts).
    pub fn failed_commits(&self) -> u64 {
        self.shared.failed_commits.load(Ordering::Relaxed)
    }

    /// Tests: make every write and fsync fail (ENOSPC) while `on`.
    #[cfg(test)]
    pub(crate) fn inject_write_errors(&self, on: bool) {
        self.shared.faults.store(on, Ordering::Relaxed);
    }

    /// Operations submitted and not committed yet.
    pub fn pending(&self) -> u64 {
        let committed = *self.shared.committed.borrow();
        self.ticket().saturating_sub(committed)
    }

    /// Store a delivery for `client`; returns it with its store key set. `shared`: the
    /// message is being queued for other sessions too, and is stored once for all of them;
    /// otherwise the delivery carries its own copy (one record to write and to delete).
    pub fn enqueue(&self, client: &ByteString, mut delivery: Delivery, shared: bool) -> Delivery {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        delivery.stored = Some(seq);
        self.submit(Op::Enqueue {
            client: client.clone(),
            delivery: delivery.clone(),
            shared,
        });
        delivery
    }

    pub fn remove(&self, client: &ByteString, seq: u64) {
        self.submit(Op::Remove {
            client: client.clone(),
            seq,
        });
    }

    /// The stored delivery `seq` went out (or moved on to PUBREL) under `packet_id`.
    pub fn sent(&self, client: &ByteString, seq: u64, packet_id: u16, state: OutgoingState) {
        self.submit(Op::Sent {
            client: client.clone(),
            seq,
            packet_id,
            state,
        });
    }

    pub fn incoming_qos2(&self, client: &ByteString, packet_id: u16, pending: bool) {
        let client = client.clone();
        self.submit(if pending {
            Op::IncomingAdd { client, packet_id }
        } else {
            Op::IncomingRemove { client, packet_id }
        });
    }

    pub fn put_session(&self, client: &ByteString, record: SessionRecord) {
        self.submit(Op::PutSession {
            client: client.clone(),
            record,
        });
    }

    /// Forget a session and everything queued for it.
    pub fn delete_session(&self, client: &ByteString) {
        self.submit(Op::DeleteSession {
            client: client.clone(),
        });
    }

    /// Store (or, for an empty payload, delete) a retained message.
    pub fn retain(&self, message: &Arc<Message>) {
        self.submit(if message.payload.is_empty() {
            Op::DeleteRetained(message.topic.clone())
        } else {
            Op::PutRetained(message.clone())
        });
    }

    /// Read stored deliveries back (in the order asked; missing ones are skipped). Sees every
    /// operation submitted before it.
    pub fn load(&self, client: &ByteString, seqs: Vec<u64>) -> oneshot::Receiver<Vec<Delivery>> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Load {
            client: client.clone(),
            seqs,
            reply,
        });
        rx
    }

    /// Commit and fsync what is pending and stop the writer (clean shutdown). Blocks the
    /// calling thread for that one commit.
    pub fn close(&self) {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(Op::Close { reply });
        let _ = rx.recv();
        if let Ok(mut writer) = self.writer.lock() {
            if let Some(handle) = writer.take() {
                let _ = handle.join();
            }
        }
    }
}

/// Inflight state as stored.
pub(crate) fn state_code(state: OutgoingState) -> u8 {
    match state {
        OutgoingState::AwaitingPubAck => 0,
        OutgoingState::AwaitingPubRec => 1,
        OutgoingState::AwaitingPubComp => 2,
    }
}

pub(crate) fn state_from_code(code: u8) -> OutgoingState {
    match code {
        0 => OutgoingState::AwaitingPubAck,
        1 => OutgoingState::AwaitingPubRec,
        _ => OutgoingState::AwaitingPubComp,
    }
}

#[cfg(test)]
mod tests;
