//! The session registry: client identifier → session, online or offline.
//!
//! An online session is owned by its connection task (no lock is taken to change its state);
//! the registry only holds a control channel to it. When the connection ends, the task hands
//! the [`SessionData`] back here to wait offline (persistent sessions) or be discarded.
//! Takeover: the new connection replaces the registry entry and sends `TakeOver` to the old
//! task under the registry lock; the old task answers with the session data. Because both the
//! replacement and the send happen under the lock, an old task that is exiting at the same
//! time always finds the request in its channel (see [`Registry::close`]).
//!
//! Offline sessions' deadlines (a delayed will, the session's expiry) are kept in one
//! ordered map beside the slots, served by one timer task per registry: an entry leaves the
//! map when the session reconnects or ends, and the task sleeps until the earliest one (a
//! new earlier deadline wakes it).
//!
//! At most `max_sessions` sessions (online and offline) exist, and at most
//! `max_sessions_per_address` created from one source address: a CONNECT that would create
//! another is refused ([`OpenRefused`]); resuming or taking over an existing one is not.
//! A session counts against the address of the connection that created it (a clean start
//! replacing a session creates a new one, counted against the new connection's address)
//! until it ends; sessions restored from the store at start-up count against none.

use std::collections::{hash_map, BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use edgemq_core::lifetime::{self, WillTiming};
use edgemq_core::logtext::Short;
use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, IncomingQos2, Inflight, OutgoingState, OutgoingWindow};
use edgemq_core::subscriptions::{Router, SessionKey, StoredOptions};
use edgemq_core::topic::{parse_subscription_filter, SubscriptionFilter};
use edgemq_store::record::unix_ms;
use edgemq_store::{RecoveredSession, SessionRecord};

use crate::bus::{Bus, LimitWarning};
use crate::inspect::{
    ClientInfo, ClientSnapshot, OfflineView, Outcome, SessionView, SubscriptionView,
};
use crate::mailbox::{Mailbox, MailboxHandle};
use crate::stats::{DropReason, Limit};

pub use edgemq_core::lifetime::NEVER_EXPIRES;

/// Everything a session keeps across connections.
#[derive(Debug)]
pub struct SessionData {
    pub key: SessionKey,
    pub mailbox: Arc<Mailbox>,
    /// Keyed by the filter as the client wrote it (`$share/g/f` included).
    pub subscriptions: HashMap<ByteString, (SubscriptionFilter, StoredOptions)>,
    pub outgoing: OutgoingWindow,
    pub incoming_qos2: IncomingQos2,
    /// Seconds the session outlives its connection; 0 = ends with it.
    pub expiry_interval: u32,
    /// Bumped by every connection that takes the session ([`Registry::open`]): a later
    /// owner always holds a higher epoch, also across restarts (it is stored with the
    /// session). A session that ended and is created again starts over at 1. The fencing
    /// token of cluster mode (docs/cluster.md, "Seams").
    pub epoch: u64,
}

impl SessionData {
    /// The session as the store keeps it.
    pub fn record(
        &self,
        disconnected_at: Option<u64>,
        will: Option<(Arc<Message>, u32)>,
    ) -> SessionRecord {
        SessionRecord {
            expiry_interval: self.expiry_interval,
            disconnected_at,
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(raw, (_, options))| (raw.clone(), *options))
                .collect(),
            will,
            epoch: self.epoch,
        }
    }

    /// Record the packet identifiers of QoS 1 messages in flight, so that after a restart
    /// they are re-sent under them [MQTT-4.4.0-1]. (Done when the connection ends rather than
    /// per send: a QoS 1 message in flight when the broker is killed is re-sent under a new
    /// identifier, which at-least-once delivery allows.)
    fn record_inflight_qos1(&self) {
        let journal = self.mailbox.journal();
        for inflight in self.outgoing.iter() {
            if let (OutgoingState::AwaitingPubAck, Some(seq)) =
                (inflight.state, inflight.delivery.stored)
            {
                journal.sent(seq, inflight.packet_id, inflight.state);
            }
        }
    }

    /// Write the session to the store, if it is a persistent one and there is a store;
    /// true if it was written.
    pub fn persist(&self, disconnected_at: Option<u64>, will: Option<(Arc<Message>, u32)>) -> bool {
        let journal = self.mailbox.journal();
        journal.is_durable() && journal.put(self.record(disconnected_at, will))
    }
}

/// Messages to a connection task from outside.
#[derive(Debug)]
pub enum Control {
    /// Another connection with the same client identifier arrived [MQTT-3.1.4-3]. Send the
    /// session data on `reply` and close (v5: DISCONNECT 0x8E).
    TakeOver {
        new_clean_start: bool,
        reply: oneshot::Sender<SessionData>,
    },
    /// An operator ends the connection (v5: DISCONNECT 0x98 Administrative action), and
    /// the session with it when `end_session`.
    Disconnect { end_session: bool },
    /// An operator asks what the connection holds.
    Inspect(oneshot::Sender<ClientSnapshot>),
}

impl Control {
    /// Ends the connection (an inspection does not).
    fn ends(&self) -> bool {
        !matches!(self, Control::Inspect(_))
    }
}

/// How the registry reaches an online session's connection task: at most one request and a
/// wake-up (a few dozen bytes, where a channel would cost every idle connection a
/// kilobyte), and what CONNECT settled about the client, for operators.
#[derive(Debug)]
pub struct ControlSlot {
    request: Mutex<Option<Control>>,
    wake: Notify,
    pub info: Arc<ClientInfo>,
    /// The session's queue, once the connection has its session (for queue depths).
    mailbox: std::sync::OnceLock<Arc<Mailbox>>,
    /// Messages in flight to the client, as of its task's last wake-up (for the metrics).
    inflight: std::sync::atomic::AtomicU32,
}

impl ControlSlot {
    pub fn new(info: Arc<ClientInfo>) -> ControlSlot {
        ControlSlot {
            request: Mutex::new(None),
            wake: Notify::new(),
            info,
            mailbox: std::sync::OnceLock::new(),
            inflight: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The task's in-flight count now (a relaxed store, once per wake-up).
    pub fn set_inflight(&self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        (self.inflight).store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The connection has its session: its queue can be measured from now on.
    pub fn attach(&self, mailbox: Arc<Mailbox>) {
        let _ = self.mailbox.set(mailbox);
    }

    /// Leave `request` for the task. A request that ends the connection is never replaced
    /// by an inspection (which is then dropped: its asker sees the client closing).
    pub fn send(&self, request: Control) {
        let mut slot = self.request.lock();
        if slot.as_ref().is_some_and(Control::ends) && !request.ends() {
            return;
        }
        *slot = Some(request);
        drop(slot);
        self.wake.notify_one();
    }

    pub fn try_recv(&self) -> Option<Control> {
        self.request.lock().take()
    }

    /// The next request. (A `send` before the wait leaves a stored permit: never missed.)
    pub async fn recv(&self) -> Control {
        loop {
            if let Some(request) = self.try_recv() {
                return request;
            }
            self.wake.notified().await;
        }
    }
}

#[derive(Debug)]
enum Slot {
    Online {
        conn_id: u64,
        control: Arc<ControlSlot>,
        /// The epoch this connection took the session at (known here even if the session
        /// data never comes back from a task that is taken over).
        epoch: u64,
    },
    /// Boxed: most slots are online, and the map's entries are as large as its largest.
    Offline(Box<Offline>),
}

#[derive(Debug)]
struct Offline {
    data: SessionData,
    /// Identifies this offline period: with `deadline`, its key in [`State::deadlines`].
    generation: u64,
    /// When its timer fires (the earlier of the pending will and the expiry), if it has one.
    deadline: Option<Instant>,
    expires_at: Option<Instant>,
    will: Option<(Arc<Message>, Instant)>,
    /// When the connection ended (Unix ms), as stored.
    disconnected_at: u64,
}

/// How a session was obtained at CONNECT.
#[derive(Debug)]
pub struct Opened {
    pub data: SessionData,
    /// CONNACK Session Present [MQTT-3.2.2-2].
    pub session_present: bool,
}

/// A new session was refused at CONNECT (v5: CONNACK 0x97 Quota exceeded; v3: 3 Server
/// unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenRefused {
    /// `max_sessions` sessions exist.
    MaxSessions,
    /// The connection's source address created `max_sessions_per_address` sessions that
    /// still exist.
    MaxSessionsPerAddress,
}

#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<State>,
    timers: Timers,
    limit_warning: LimitWarning,
    address_warning: LimitWarning,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<ByteString, Slot>,
    /// Offline sessions' deadlines, earliest first: (when, generation) → client id.
    deadlines: Deadlines,
    /// The source address that created each session, where known (not for sessions
    /// restored from the store), and the sessions each such address created.
    origins: HashMap<ByteString, IpAddr>,
    per_address: HashMap<IpAddr, usize>,
}

impl State {
    /// Sessions created from `ip` that still exist.
    fn created_from(&self, ip: IpAddr) -> usize {
        self.per_address.get(&ip).copied().unwrap_or(0)
    }

    /// `client_id`'s session was created from `ip` (replacing what it counted against).
    fn attach(&mut self, client_id: &ByteString, ip: IpAddr) {
        self.detach(client_id);
        *self.per_address.entry(ip).or_default() += 1;
        self.origins.insert(client_id.clone(), ip);
    }

    /// `client_id`'s session ended: it no longer counts against its address.
    fn detach(&mut self, client_id: &ByteString) {
        let Some(ip) = self.origins.remove(client_id) else {
            return;
        };
        if let hash_map::Entry::Occupied(mut count) = self.per_address.entry(ip) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

type Deadlines = BTreeMap<(Instant, u64), ByteString>;

/// Arm `offline`'s timer for `at`; true if it is now the earliest deadline.
fn schedule(
    deadlines: &mut Deadlines,
    client_id: &ByteString,
    offline: &mut Offline,
    at: Instant,
) -> bool {
    unschedule(deadlines, offline);
    offline.deadline = Some(at);
    let key = (at, offline.generation);
    deadlines.insert(key, client_id.clone());
    deadlines
        .first_key_value()
        .is_some_and(|(first, _)| *first == key)
}

impl Slot {
    fn view(&self, client_id: &ByteString, now: Instant) -> SessionView {
        let (client, offline) = match self {
            Slot::Online { control, .. } => (Some(control.info.clone()), None),
            Slot::Offline(offline) => (None, Some(offline.view(now))),
        };
        let epoch = match self {
            Slot::Online { epoch, .. } => *epoch,
            Slot::Offline(offline) => offline.data.epoch,
        };
        SessionView {
            client_id: client_id.clone(),
            client,
            offline,
            epoch,
        }
    }
}

impl Offline {
    fn view(&self, now: Instant) -> OfflineView {
        OfflineView {
            queued: self.data.mailbox.len(),
            inflight: self.data.outgoing.len(),
            subscriptions: self.data.subscription_views(),
            session_expiry: self.data.expiry_interval,
            expires_in_secs: self
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_secs()),
            will_pending: self.will.is_some(),
            drops: self.data.mailbox.drops(),
        }
    }
}

impl SessionData {
    /// The subscriptions as the client made them, in filter order.
    pub fn subscription_views(&self) -> Vec<SubscriptionView> {
        let mut views: Vec<SubscriptionView> = self
            .subscriptions
            .iter()
            .map(|(filter, (_, stored))| SubscriptionView {
                filter: filter.clone(),
                qos: stored.options.qos,
                no_local: stored.options.no_local,
                retain_as_published: stored.options.retain_as_published,
                subscription_id: stored.subscription_id,
            })
            .collect();
        views.sort_by(|a, b| a.filter.cmp(&b.filter));
        views
    }
}

fn unschedule(deadlines: &mut Deadlines, offline: &mut Offline) {
    if let Some(at) = offline.deadline.take() {
        deadlines.remove(&(at, offline.generation));
    }
}

/// The registry's one timer task, started with the first deadline.
#[derive(Debug, Default)]
struct Timers {
    wake: Arc<Notify>,
    /// The task; `stopped` once [`Registry::stop_timers`] ran (none is started again).
    task: Mutex<(Option<JoinHandle<()>>, bool)>,
}

enum Previous {
    None,
    Offline(SessionData, Option<Arc<Message>>),
    TakeOver(oneshot::Receiver<SessionData>),
}

impl Registry {
    /// Attach a new connection from `origin` (its source address) to the session for
    /// `client_id`, creating, resuming or taking it over. `new_session` builds a fresh
    /// session when one is needed. A client id with no session when `max_sessions` exist, or
    /// when `origin` created `max_sessions_per_address` that still exist, is refused
    /// (counted and logged, rate-limited).
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        &self,
        bus: &Arc<Bus>,
        client_id: &ByteString,
        origin: IpAddr,
        clean_start: bool,
        conn_id: u64,
        control: Arc<ControlSlot>,
        new_session: impl FnOnce() -> SessionData,
    ) -> Result<Opened, OpenRefused> {
        let epoch;
        let previous = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let origin = origin.to_canonical();
            let sessions = state.slots.len();
            let exists = state.slots.contains_key(client_id);
            if sessions >= bus.limits.max_sessions && !exists {
                drop(guard);
                bus.stats.refused(Limit::Sessions, 1);
                if let Some(refusals) = self.limit_warning.admit(bus.now()) {
                    tracing::warn!(
                        client_id = %Short(client_id),
                        max_sessions = bus.limits.max_sessions,
                        sessions,
                        refusals,
                        "new session refused: the broker holds max-sessions sessions"
                    );
                }
                return Err(OpenRefused::MaxSessions);
            }
            let created = state.created_from(origin);
            if created >= bus.limits.max_sessions_per_address && !exists {
                drop(guard);
                bus.stats.refused(Limit::SessionsPerAddress, 1);
                if let Some(refusals) = self.address_warning.admit(bus.now()) {
                    tracing::warn!(
                        client_id = %Short(client_id),
                        address = %origin,
                        max_sessions_per_address = bus.limits.max_sessions_per_address,
                        sessions = created,
                        refusals,
                        "new session refused: its source address created max-sessions-per-address sessions"
                    );
                }
                return Err(OpenRefused::MaxSessionsPerAddress);
            }
            // A new session, or a clean start that replaces one: created from `origin`.
            // (Resuming or taking over keeps the address that created the session.)
            if !exists || clean_start {
                state.attach(client_id, origin);
            }
            let previous_epoch = match state.slots.get(client_id) {
                Some(Slot::Online { epoch, .. }) => *epoch,
                Some(Slot::Offline(offline)) => offline.data.epoch,
                None => 0,
            };
            epoch = previous_epoch + 1;
            let old = state.slots.insert(
                client_id.clone(),
                Slot::Online {
                    conn_id,
                    control,
                    epoch,
                },
            );
            match old {
                None => Previous::None,
                Some(Slot::Offline(mut offline)) => {
                    unschedule(&mut state.deadlines, &mut offline);
                    let Offline { data, will, .. } = *offline;
                    Previous::Offline(data, will.map(|(w, _)| w))
                }
                Some(Slot::Online { control, .. }) => {
                    let (reply, rx) = oneshot::channel();
                    // The old task may already be gone; then the request (and `reply`) drops
                    // with the last reference to the slot, `rx` fails and we start fresh.
                    control.send(Control::TakeOver {
                        new_clean_start: clean_start,
                        reply,
                    });
                    Previous::TakeOver(rx)
                }
            }
        };
        let old = match previous {
            Previous::None => None,
            Previous::Offline(data, pending_will) => {
                if let Some(will) =
                    pending_will.filter(|_| lifetime::pending_will_goes(clean_start))
                {
                    bus.publish(will);
                }
                Some(data)
            }
            Previous::TakeOver(rx) => tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .ok()
                .and_then(Result::ok),
        };
        let mut opened = match old {
            Some(data) if lifetime::resumes(clean_start, Some(data.expiry_interval)) => Opened {
                data,
                session_present: true,
            },
            Some(data) => {
                end_session(bus, data);
                Opened {
                    data: new_session(),
                    session_present: false,
                }
            }
            None => Opened {
                data: new_session(),
                session_present: false,
            },
        };
        opened.data.epoch = epoch;
        Ok(opened)
    }

    /// The connection `conn_id` ended. Keeps the session offline (with its delayed will) or
    /// ends it. Returns the data back if another connection has taken the session over
    /// meanwhile: the caller then answers the `TakeOver` waiting in its control slot.
    pub fn close(
        &self,
        bus: &Arc<Bus>,
        client_id: &ByteString,
        conn_id: u64,
        data: SessionData,
        will: Option<(Arc<Message>, WillTiming)>,
    ) -> Result<(), Box<SessionData>> {
        let now = bus.now();
        let mut guard = self.state.lock();
        let state = &mut *guard;
        match state.slots.get(client_id) {
            Some(Slot::Online { conn_id: owner, .. }) if *owner == conn_id => {}
            _ => return Err(Box::new(data)),
        }
        let expiry = data.expiry_interval;
        if expiry == 0 {
            state.slots.remove(client_id);
            state.detach(client_id);
            drop(guard);
            if let Some((will, _)) = will {
                bus.publish(will);
            }
            end_session(bus, data);
            return Ok(());
        }
        // A delayed will waits with the session (`lifetime::will_timing`).
        let (mut pending_will, mut will_now) = (None, None);
        match will {
            Some((will, WillTiming::Now)) => will_now = Some(will),
            Some((will, WillTiming::After(delay))) => {
                pending_will = Some((will, now + Duration::from_secs(u64::from(delay))));
            }
            Some((_, WillTiming::Never)) | None => {}
        }
        let expires_at = lifetime::session_ends(now, expiry);
        let disconnected_at = unix_ms(std::time::SystemTime::now());
        let stored_will = pending_will
            .as_ref()
            .map(|(w, at): &(Arc<Message>, Instant)| {
                let delay = at.saturating_duration_since(now).as_secs();
                (w.clone(), u32::try_from(delay).unwrap_or(u32::MAX))
            });
        data.persist(Some(disconnected_at), stored_will);
        data.record_inflight_qos1();
        data.mailbox.spill();
        let next = next_deadline(expires_at, pending_will.as_ref().map(|(_, at)| *at));
        let mut offline = Box::new(Offline {
            data,
            generation: bus.next_id(),
            deadline: None,
            expires_at,
            will: pending_will,
            disconnected_at,
        });
        let earliest =
            next.is_some_and(|at| schedule(&mut state.deadlines, client_id, &mut offline, at));
        state
            .slots
            .insert(client_id.clone(), Slot::Offline(offline));
        drop(guard);
        if next.is_some() {
            self.arm(bus, earliest);
        }
        if let Some(will) = will_now {
            bus.publish(will);
        }
        Ok(())
    }

    /// A deadline was added: make sure the timer task runs, and wake it if the deadline is
    /// the earliest (it sleeps until the one it knew).
    fn arm(&self, bus: &Arc<Bus>, earliest: bool) {
        let mut task = self.timers.task.lock();
        match &mut *task {
            (_, true) => {}
            (Some(_), false) => {
                if earliest {
                    self.timers.wake.notify_one();
                }
            }
            (none, false) => {
                *none = Some(tokio::spawn(run_timers(
                    Arc::downgrade(bus),
                    self.timers.wake.clone(),
                )));
            }
        }
    }

    /// Stop the timer task (server shutdown): no will is published and no session ends from
    /// now on, so what the store holds at close is what a restart resumes from.
    pub fn stop_timers(&self) {
        let mut task = self.timers.task.lock();
        task.1 = true;
        if let Some(handle) = task.0.take() {
            handle.abort();
        }
    }

    /// Fire every deadline that is due: publish due wills, end expired sessions. Returns
    /// the next deadline.
    fn fire_due(&self, bus: &Arc<Bus>) -> Option<Instant> {
        let now = bus.now();
        let mut due_wills = Vec::new();
        let mut ended = Vec::new();
        let next = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            while let Some(entry) = state.deadlines.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, generation), client_id) = entry.remove_entry();
                let Some(Slot::Offline(offline)) = state.slots.get_mut(&client_id) else {
                    continue;
                };
                if offline.generation != generation {
                    continue;
                }
                offline.deadline = None;
                if offline.will.as_ref().is_some_and(|(_, at)| *at <= now) {
                    due_wills.extend(offline.will.take().map(|(w, _)| w));
                    // Sent: a restart must not send it again.
                    offline.data.persist(Some(offline.disconnected_at), None);
                }
                if offline.expires_at.is_some_and(|at| at <= now) {
                    if let Some(Slot::Offline(offline)) = state.slots.remove(&client_id) {
                        state.detach(&client_id);
                        let Offline { data, will, .. } = *offline;
                        due_wills.extend(will.map(|(w, _)| w));
                        ended.push((client_id, data));
                    }
                } else if let Some(at) =
                    next_deadline(offline.expires_at, offline.will.as_ref().map(|(_, at)| *at))
                {
                    // Later than now: not met again by this loop.
                    schedule(&mut state.deadlines, &client_id, offline, at);
                }
            }
            state.deadlines.first_key_value().map(|((at, _), _)| *at)
        };
        for will in due_wills {
            bus.publish(will);
        }
        for (client_id, data) in ended {
            tracing::debug!(client_id = %Short(&client_id), "session expired");
            bus.stats
                .sessions_expired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            end_session(bus, data);
        }
        next
    }

    /// Bring back the persistent sessions the store held at start-up, offline, with their
    /// subscriptions, queued and in-flight messages, expiry and pending will.
    pub fn restore(&self, bus: &Arc<Bus>, sessions: Vec<RecoveredSession>) {
        let now = bus.now();
        let restarted_at = unix_ms(std::time::SystemTime::now());
        let mut armed = false;
        for recovered in sessions {
            let key = bus.next_id();
            let client_id = recovered.client_id;
            let mailbox = Arc::new(Mailbox::new(
                key,
                client_id.clone(),
                crate::mailbox::QueueLimits::of(&bus.limits, &bus.held),
                bus.durable.journal(client_id.clone()),
            ));
            mailbox.journal().set_durable(true);
            for (seq, qos) in recovered.queued {
                mailbox.restore_stored(seq, qos);
            }
            let mut subscriptions = HashMap::new();
            for (raw, options) in recovered.record.subscriptions {
                match parse_subscription_filter(&raw) {
                    Ok(filter) => {
                        bus.index
                            .subscribe(&filter, MailboxHandle(mailbox.clone()), options);
                        subscriptions.insert(raw, (filter, options));
                    }
                    Err(e) => {
                        tracing::warn!(client_id = %Short(&client_id), filter = %Short(&raw), error = %e, "store: a stored subscription is invalid and was dropped");
                    }
                }
            }
            let mut outgoing = OutgoingWindow::default();
            outgoing.account(bus.held.inflight.clone());
            for (packet_id, state, delivery) in recovered.inflight {
                if let Err(d) = outgoing.restore(packet_id, state, delivery) {
                    mailbox.forget(d.stored);
                }
            }
            let mut incoming_qos2 = IncomingQos2::default();
            for packet_id in recovered.incoming_qos2 {
                incoming_qos2.receive(packet_id);
            }
            let data = SessionData {
                key,
                mailbox,
                subscriptions,
                outgoing,
                incoming_qos2,
                expiry_interval: recovered.record.expiry_interval,
                epoch: recovered.record.epoch,
            };
            let disconnected_at = recovered.record.disconnected_at.unwrap_or(restarted_at);
            // Not yet marked disconnected (the broker stopped while it was connected): from now.
            if recovered.record.disconnected_at.is_none() {
                data.persist(Some(disconnected_at), recovered.record.will.clone());
            }
            let next = next_deadline(
                recovered.expires_at,
                recovered.will.as_ref().map(|(_, at)| *at),
            );
            let mut offline = Box::new(Offline {
                data,
                generation: bus.next_id(),
                deadline: None,
                expires_at: recovered.expires_at,
                will: recovered.will,
                disconnected_at,
            });
            let mut guard = self.state.lock();
            let state = &mut *guard;
            if let Some(at) = next {
                schedule(&mut state.deadlines, &client_id, &mut offline, at.max(now));
                armed = true;
            }
            state.slots.insert(client_id, Slot::Offline(offline));
        }
        if armed {
            self.arm(bus, true);
        }
        let sessions = self.len();
        if sessions > bus.limits.max_sessions {
            tracing::warn!(
                sessions,
                max_sessions = bus.limits.max_sessions,
                "store: more sessions recovered than max-sessions: all kept; new sessions are refused until enough end"
            );
        }
    }

    /// Sessions (online and offline) created from `ip` that still exist.
    pub fn created_from(&self, ip: IpAddr) -> usize {
        self.state.lock().created_from(ip.to_canonical())
    }

    /// Up to `limit` sessions whose client id contains `search`, in client id order.
    pub fn list(&self, search: &str, limit: usize) -> Vec<SessionView> {
        let now = crate::bus::now();
        let state = self.state.lock();
        let mut views: Vec<SessionView> = state
            .slots
            .iter()
            .filter(|(id, _)| id.contains(search))
            .map(|(id, slot)| slot.view(id, now))
            .collect();
        drop(state);
        views.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        views.truncate(limit);
        views
    }

    /// `client_id`'s session, if it has one.
    pub fn get(&self, client_id: &str) -> Option<SessionView> {
        let now = crate::bus::now();
        let state = self.state.lock();
        let (id, slot) = state.slots.get_key_value(client_id)?;
        Some(slot.view(id, now))
    }

    /// The control slot of `client_id`'s connection, if one is connected.
    pub fn control(&self, client_id: &str) -> Option<Arc<ControlSlot>> {
        match self.state.lock().slots.get(client_id)? {
            Slot::Online { control, .. } => Some(control.clone()),
            Slot::Offline(_) => None,
        }
    }

    /// An operator disconnects `client_id` (and ends its session when `end_session`; an
    /// offline session is then ended at once).
    pub fn disconnect(&self, bus: &Bus, client_id: &str, end: bool) -> Outcome {
        let mut state = self.state.lock();
        match state.slots.get(client_id) {
            None => Outcome::NotFound,
            Some(Slot::Online { control, .. }) => {
                control.send(Control::Disconnect { end_session: end });
                Outcome::Done
            }
            Some(Slot::Offline(_)) if !end => Outcome::NotFound,
            Some(Slot::Offline(_)) => {
                let Some((id, Slot::Offline(mut offline))) = state.slots.remove_entry(client_id)
                else {
                    return Outcome::NotFound;
                };
                state.detach(&id);
                unschedule(&mut state.deadlines, &mut offline);
                drop(state);
                tracing::info!(client_id = %Short(&id), "session ended by an operator");
                // The session ends: its delayed will goes now [MQTT-3.1.3-9].
                if let Some((will, _)) = offline.will.take() {
                    bus.publish(will);
                }
                end_session(bus, offline.data);
                Outcome::Done
            }
        }
    }

    /// (queued, in flight) of every session, connected or not, for the metrics.
    pub fn depths(&self) -> Vec<(usize, usize)> {
        use std::sync::atomic::Ordering::Relaxed;
        let state = self.state.lock();
        (state.slots.values())
            .map(|slot| match slot {
                Slot::Online { control, .. } => (
                    control.mailbox.get().map_or(0, |m| m.len()),
                    control.inflight.load(Relaxed) as usize,
                ),
                Slot::Offline(offline) => (offline.data.mailbox.len(), offline.data.outgoing.len()),
            })
            .collect()
    }

    /// Number of sessions (online and offline).
    pub fn len(&self) -> usize {
        self.state.lock().slots.len()
    }

    /// Whether `client_id` has a session (online or offline).
    pub fn contains(&self, client_id: &str) -> bool {
        self.state.lock().slots.contains_key(client_id)
    }

    /// Offline-session deadlines armed (a delayed will or an expiry each).
    pub fn timers(&self) -> usize {
        self.state.lock().deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registry dropped without [`Registry::stop_timers`] (a bus used without a server) stops
/// its timer task too.
impl Drop for Registry {
    fn drop(&mut self) {
        self.stop_timers();
    }
}

fn next_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The registry's timer task: fire what is due, sleep until the next deadline or until an
/// earlier one is added. Ends with the bus (or when aborted by [`Registry::stop_timers`]).
async fn run_timers(bus: Weak<Bus>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(bus) = bus.upgrade() else { return };
            bus.sessions.fire_due(&bus)
        };
        // A wake-up sent meanwhile is kept as a permit: `notified` returns at once.
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// A session is over: remove its subscriptions, hand unacknowledged shared-subscription
/// messages to other group members, and count what is dropped.
pub fn end_session(bus: &Bus, mut data: SessionData) {
    for (filter, _) in data.subscriptions.values() {
        bus.index.unsubscribe(filter, data.key);
    }
    // What may not move to another member is lost (`Inflight::may_move_to_another_member`);
    // a message awaiting only PUBCOMP was delivered.
    let inflight = data
        .outgoing
        .take_where(|i| i.state != OutgoingState::AwaitingPubComp);
    let (movable, stuck): (Vec<_>, Vec<_>) = inflight
        .into_iter()
        .partition(Inflight::may_move_to_another_member);
    let mut lost = stuck.len() as u64;
    let queued = data.mailbox.take_where(|_| true);
    for delivery in movable.into_iter().map(|i| i.delivery).chain(queued) {
        if bus.redistribute(delivery, data.key).is_some() {
            lost += 1;
        }
    }
    // Deliveries only on disk go with the session's records.
    lost += data.mailbox.clear() as u64;
    data.mailbox.journal().delete();
    for _ in 0..lost {
        bus.stats.dropped(DropReason::SessionEnded);
    }
    if lost > 0 {
        tracing::info!(client_id = %Short(&data.mailbox.client_id), dropped = lost, "session ended with undelivered messages");
    }
}

/// Move this session's not-yet-acknowledged shared-subscription messages to other members of
/// their groups (the connection is gone; the session may come back, but the group should not
/// wait for it). Messages with no other member stay.
pub fn redistribute_shared(bus: &Bus, data: &mut SessionData) {
    let key = data.key;
    // In flight: what may move (`Inflight::may_move_to_another_member`) moves if another
    // member takes it; the rest stays in flight and is re-sent with DUP when this client
    // comes back [MQTT-4.4.0-1].
    let moved = data.outgoing.take_where(|i| {
        i.may_move_to_another_member() && bus.redistribute(i.delivery.clone(), key).is_none()
    });
    for inflight in moved {
        data.mailbox.forget(inflight.delivery.stored);
    }
    let mut keep: Vec<Delivery> = Vec::new();
    for d in data.mailbox.take_where(|d| d.share_group.is_some()) {
        let seq = d.stored;
        match bus.redistribute(d, key) {
            Some(d) => keep.push(d),
            None => data.mailbox.forget(seq),
        }
    }
    // Nobody else in the group: they wait for this session, oldest first.
    data.mailbox.requeue_front(keep.into_iter());
}
