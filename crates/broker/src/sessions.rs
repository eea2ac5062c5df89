//! The session registry: client identifier → session, online or offline.
//!
//! An online session is owned by its connection task (no lock is taken to change its state);
//! the registry only holds a control channel to it. When the connection ends, the task hands
//! the [`SessionData`] back here to wait offline (persistent sessions) or be discarded.
//! Takeover: the new connection replaces the registry entry and sends `TakeOver` to the old
//! task under the registry lock; the old task answers with the session data. Because both the
//! replacement and the send happen under the lock, an old task that is exiting at the same
//! time always finds the request in its channel (see [`Registry::close`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use edgemq_codec::QoS;
use edgemq_core::logtext::Short;
use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, IncomingQos2, OutgoingState, OutgoingWindow};
use edgemq_core::subscriptions::{SessionKey, StoredOptions};
use edgemq_core::topic::{parse_subscription_filter, SubscriptionFilter};
use edgemq_store::record::unix_ms;
use edgemq_store::{RecoveredSession, SessionRecord};

use crate::bus::Bus;
use crate::mailbox::{Mailbox, MailboxHandle};
use crate::stats::DropReason;

/// Session Expiry Interval meaning "never expires" [MQTT-3.1.2-11].
pub const NEVER_EXPIRES: u32 = u32::MAX;

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
        }
    }

    /// Record the packet identifiers of QoS 1 messages in flight, so that after a restart
    /// they are re-sent under them [MQTT-4.4.0-1]. (Done when the connection ends rather than
    /// per send: a QoS 1 message in flight when the broker is killed is re-sent under a new
    /// identifier, which at-least-once delivery allows.)
    fn record_inflight_qos1(&self) {
        let Some(store) = self.mailbox.store() else {
            return;
        };
        for inflight in self.outgoing.iter() {
            if let (OutgoingState::AwaitingPubAck, Some(seq)) =
                (inflight.state, inflight.delivery.stored)
            {
                store.sent(
                    &self.mailbox.client_id,
                    seq,
                    inflight.packet_id,
                    inflight.state,
                );
            }
        }
    }

    /// Write the session to the store, if it is a persistent one and there is a store;
    /// true if it was written.
    pub fn persist(&self, disconnected_at: Option<u64>, will: Option<(Arc<Message>, u32)>) -> bool {
        let Some(store) = self.mailbox.store() else {
            return false;
        };
        store.put_session(&self.mailbox.client_id, self.record(disconnected_at, will));
        true
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
}

/// How the registry reaches an online session's connection task: at most one request (a
/// takeover) and a wake-up. A few dozen bytes, where a channel would cost every idle
/// connection a kilobyte.
#[derive(Debug, Default)]
pub struct ControlSlot {
    request: Mutex<Option<Control>>,
    wake: Notify,
}

impl ControlSlot {
    pub fn send(&self, request: Control) {
        *self.request.lock() = Some(request);
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
    },
    /// Boxed: most slots are online, and the map's entries are as large as its largest.
    Offline(Box<Offline>),
}

#[derive(Debug)]
struct Offline {
    data: SessionData,
    /// Identifies this offline period, so a stale timer does nothing.
    generation: u64,
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

#[derive(Debug, Default)]
pub struct Registry {
    slots: Mutex<HashMap<ByteString, Slot>>,
}

enum Previous {
    None,
    Offline(SessionData, Option<Arc<Message>>),
    TakeOver(oneshot::Receiver<SessionData>),
}

impl Registry {
    /// Attach a new connection to the session for `client_id`, creating, resuming or taking
    /// it over. `new_session` builds a fresh session when one is needed.
    pub async fn open(
        &self,
        bus: &Arc<Bus>,
        client_id: &ByteString,
        clean_start: bool,
        conn_id: u64,
        control: Arc<ControlSlot>,
        new_session: impl FnOnce() -> SessionData,
    ) -> Opened {
        let previous = {
            let mut slots = self.slots.lock();
            let old = slots.insert(client_id.clone(), Slot::Online { conn_id, control });
            match old {
                None => Previous::None,
                Some(Slot::Offline(offline)) => {
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
                // A reconnection to the session cancels a delayed will [MQTT-3.1.3-9]; a clean
                // start ends the old session, which publishes it.
                if clean_start {
                    if let Some(will) = pending_will {
                        bus.publish(will);
                    }
                }
                Some(data)
            }
            Previous::TakeOver(rx) => tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .ok()
                .and_then(Result::ok),
        };
        match old {
            Some(data) if !clean_start && data.expiry_interval != 0 => Opened {
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
        }
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
        will: Option<(Arc<Message>, u32)>,
    ) -> Result<(), Box<SessionData>> {
        let now = bus.now();
        let mut slots = self.slots.lock();
        match slots.get(client_id) {
            Some(Slot::Online { conn_id: owner, .. }) if *owner == conn_id => {}
            _ => return Err(Box::new(data)),
        }
        let expiry = data.expiry_interval;
        if expiry == 0 {
            slots.remove(client_id);
            drop(slots);
            if let Some((will, _)) = will {
                bus.publish(will);
            }
            end_session(bus, data);
            return Ok(());
        }
        // The will goes at the earlier of its delay and the session's end [MQTT-3.1.3-9].
        let mut pending_will = None;
        let mut will_now = None;
        if let Some((will, delay)) = will {
            if delay == 0 {
                will_now = Some(will);
            } else {
                let delay = delay.min(expiry);
                pending_will = Some((will, now + Duration::from_secs(u64::from(delay))));
            }
        }
        let expires_at =
            (expiry != NEVER_EXPIRES).then(|| now + Duration::from_secs(u64::from(expiry)));
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
        let generation = bus.next_id();
        let next = next_deadline(expires_at, pending_will.as_ref().map(|(_, at)| *at));
        slots.insert(
            client_id.clone(),
            Slot::Offline(Box::new(Offline {
                data,
                generation,
                expires_at,
                will: pending_will,
                disconnected_at,
            })),
        );
        drop(slots);
        if let Some(will) = will_now {
            bus.publish(will);
        }
        if let Some(at) = next {
            spawn_timer(bus, client_id.clone(), generation, at);
        }
        Ok(())
    }

    /// A timer for an offline session fired: publish a due will, end an expired session.
    fn on_timer(&self, bus: &Arc<Bus>, client_id: &ByteString, generation: u64) {
        let now = bus.now();
        let mut due_will = None;
        let mut ended = None;
        let mut reschedule = None;
        {
            let mut slots = self.slots.lock();
            let Some(Slot::Offline(offline)) = slots.get_mut(client_id) else {
                return;
            };
            if offline.generation != generation {
                return;
            }
            if offline.will.as_ref().is_some_and(|(_, at)| *at <= now) {
                due_will = offline.will.take().map(|(w, _)| w);
                // Sent: a restart must not send it again.
                offline.data.persist(Some(offline.disconnected_at), None);
            }
            if offline.expires_at.is_some_and(|at| at <= now) {
                if let Some(Slot::Offline(offline)) = slots.remove(client_id) {
                    let Offline { data, will, .. } = *offline;
                    if let Some((w, _)) = will {
                        due_will = Some(w);
                    }
                    ended = Some(data);
                }
            } else {
                reschedule =
                    next_deadline(offline.expires_at, offline.will.as_ref().map(|(_, at)| *at));
            }
        }
        if let Some(will) = due_will {
            bus.publish(will);
        }
        if let Some(data) = ended {
            tracing::debug!(client_id = %Short(client_id), "session expired");
            end_session(bus, data);
        }
        if let Some(at) = reschedule {
            spawn_timer(bus, client_id.clone(), generation, at);
        }
    }

    /// Bring back the persistent sessions the store held at start-up, offline, with their
    /// subscriptions, queued and in-flight messages, expiry and pending will.
    pub fn restore(&self, bus: &Arc<Bus>, sessions: Vec<RecoveredSession>) {
        let now = bus.now();
        let restarted_at = unix_ms(std::time::SystemTime::now());
        for recovered in sessions {
            let key = bus.next_id();
            let client_id = recovered.client_id;
            let mailbox = Arc::new(Mailbox::new(
                key,
                client_id.clone(),
                crate::mailbox::QueueLimits::of(&bus.limits),
                bus.store.clone(),
            ));
            mailbox.set_durable(true);
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
            };
            let disconnected_at = recovered.record.disconnected_at.unwrap_or(restarted_at);
            // Not yet marked disconnected (the broker stopped while it was connected): from now.
            if recovered.record.disconnected_at.is_none() {
                data.persist(Some(disconnected_at), recovered.record.will.clone());
            }
            let generation = bus.next_id();
            let next = next_deadline(
                recovered.expires_at,
                recovered.will.as_ref().map(|(_, at)| *at),
            );
            self.slots.lock().insert(
                client_id.clone(),
                Slot::Offline(Box::new(Offline {
                    data,
                    generation,
                    expires_at: recovered.expires_at,
                    will: recovered.will,
                    disconnected_at,
                })),
            );
            if let Some(at) = next {
                spawn_timer(bus, client_id, generation, at.max(now));
            }
        }
    }

    /// Number of sessions (online and offline).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn next_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn spawn_timer(bus: &Arc<Bus>, client_id: ByteString, generation: u64, at: Instant) {
    let bus = bus.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(at.into()).await;
        bus.sessions.on_timer(&bus, &client_id, generation);
    });
}

/// A session is over: remove its subscriptions, hand unacknowledged shared-subscription
/// messages to other group members, and count what is dropped.
pub fn end_session(bus: &Bus, mut data: SessionData) {
    for (filter, _) in data.subscriptions.values() {
        bus.index.unsubscribe(filter, data.key);
    }
    // A QoS 2 message already sent to this client must never go to another member, even
    // though this session ends before it completed [MQTT-4.8.2-5]; it is lost.
    let inflight = data
        .outgoing
        .take_where(|i| i.state != OutgoingState::AwaitingPubComp);
    let mut lost = 0u64;
    let (exactly_once, movable): (Vec<_>, Vec<_>) = inflight
        .into_iter()
        .partition(|i| i.delivery.qos == QoS::ExactlyOnce);
    lost += exactly_once.len() as u64;
    let queued = data.mailbox.take_where(|_| true);
    for delivery in movable.into_iter().map(|i| i.delivery).chain(queued) {
        if bus.redistribute(delivery, data.key).is_some() {
            lost += 1;
        }
    }
    // Deliveries only on disk go with the session's records.
    lost += data.mailbox.clear() as u64;
    if let Some(store) = data.mailbox.store() {
        store.delete_session(&data.mailbox.client_id);
    }
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
    // In-flight QoS 1 messages move only if another member takes them; otherwise they stay
    // in flight and are re-sent with DUP when this client comes back [MQTT-4.4.0-1]. QoS 2
    // messages already sent stay with this client, whose delivery must complete when it
    // reconnects [MQTT-4.8.2-4].
    let moved = data.outgoing.take_where(|i| {
        i.delivery.share_group.is_some()
            && i.delivery.qos == QoS::AtLeastOnce
            && bus.redistribute(i.delivery.clone(), key).is_none()
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
