//! Per-session protocol state that outlives a network connection: packet-identifier
//! allocation, the outgoing in-flight window (QoS 1/2 towards the client), incoming QoS 2
//! packet identifiers awaiting PUBREL, and the client's topic-alias table.
//!
//! Sans-I/O: the runtime feeds packets in and writes what these methods return; nothing here
//! knows about sockets or clocks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use edgemq_codec::QoS;

use crate::message::Message;

/// One message on its way to a subscriber: the shared message plus what is particular to this
/// subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(message QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag to send: true for retained messages sent on subscribe, or the published
    /// flag when the subscription has Retain As Published.
    pub retain: bool,
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// The share group this delivery was chosen for, if any (for redistribution).
    pub share_group: Option<ByteString>,
    /// Its key in the durable store while it is kept there (persistent sessions' QoS 1/2
    /// deliveries): removed when the client acknowledges it or it is dropped.
    pub stored: Option<u64>,
}

impl Delivery {
    /// `message` at `qos`: not retained, no subscription identifiers, no share group, not
    /// stored.
    pub fn plain(message: Arc<Message>, qos: QoS) -> Delivery {
        Delivery {
            message,
            qos,
            retain: false,
            subscription_ids: SmallVec::new(),
            share_group: None,
            stored: None,
        }
    }
}

/// Where an outgoing QoS 1/2 message stands ([MQTT-4.3]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREL sent, waiting for PUBCOMP. The message itself is no longer needed.
    AwaitingPubComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: u16,
    pub state: OutgoingState,
    pub delivery: Delivery,
}

impl Inflight {
    /// Whether this message, in flight to a client that has gone (offline, or its session
    /// ended), may go to another member of its share group instead. A QoS 1 message may: at
    /// worst this client gets a duplicate if it returns. A QoS 2 message once sent must
    /// complete with this client when it reconnects [MQTT-4.8.2-4], and is lost if its
    /// session ends first, never sent to another member [MQTT-4.8.2-5].
    pub fn may_move_to_another_member(&self) -> bool {
        self.delivery.share_group.is_some() && self.delivery.qos == QoS::AtLeastOnce
    }
}

/// Why an acknowledgement from the client could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No in-flight message has that packet identifier (v5 answers PUBREL with 0x92; stray
    /// PUBACK/PUBREC/PUBCOMP are ignored).
    #[error("packet identifier not found")]
    NotFound,
    /// The acknowledgement does not fit the message's state (e.g. PUBACK for a QoS 2 message).
    #[error("[MQTT-4.3] acknowledgement out of sequence")]
    OutOfSequence,
}

/// Outgoing QoS 1/2 messages awaiting acknowledgement, in send order, and the packet
/// identifier allocator. A client may allow up to 65,535 messages in flight (its Receive
/// Maximum), so every operation is O(1) (amortized): send order is a deque in which an
/// acknowledgement leaves a hole, and a map finds a packet identifier's place.
#[derive(Debug, Default)]
pub struct OutgoingWindow {
    /// Send order; `None` is a message acknowledged before older ones (dropped from the front
    /// as soon as it gets there, and compacted when holes outnumber messages).
    order: VecDeque<Option<Inflight>>,
    /// Sequence number of `order[0]`.
    base: u64,
    /// Packet identifier → sequence number.
    index: FxHashMap<u16, u64>,
    next_id: u16,
    /// Bytes of the messages in flight ([`Message::size`]), for the in-flight byte budget.
    bytes: usize,
    /// A broker-wide count the same bytes are added to (its memory budget), if any.
    account: Option<Arc<AtomicUsize>>,
}

/// A window dropped with messages in flight takes their bytes off the broker's account.
impl Drop for OutgoingWindow {
    fn drop(&mut self) {
        if let Some(account) = &self.account {
            account.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

impl OutgoingWindow {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the messages in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Add the bytes in flight to `account` too, from now on.
    pub fn account(&mut self, account: Arc<AtomicUsize>) {
        account.fetch_add(self.bytes, Ordering::Relaxed);
        if let Some(old) = self.account.replace(account) {
            old.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }

    fn add_bytes(&mut self, n: usize) {
        self.bytes += n;
        if let Some(account) = &self.account {
            account.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sub_bytes(&mut self, n: usize) {
        self.bytes -= n;
        if let Some(account) = &self.account {
            account.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Allocate an unused non-zero packet identifier [MQTT-2.2.1-3] and record the message as
    /// sent. Gives the delivery back only if all 65,535 identifiers are in use.
    pub fn insert(&mut self, delivery: Delivery) -> Result<u16, Delivery> {
        if self.index.len() >= usize::from(u16::MAX) {
            return Err(delivery);
        }
        let state = match delivery.qos {
            QoS::ExactlyOnce => OutgoingState::AwaitingPubRec,
            _ => OutgoingState::AwaitingPubAck,
        };
        let id = loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.index.contains_key(&self.next_id) {
                break self.next_id;
            }
        };
        self.index.insert(id, self.base + self.order.len() as u64);
        self.add_bytes(delivery.message.size());
        self.order.push_back(Some(Inflight {
            packet_id: id,
            state,
            delivery,
        }));
        Ok(id)
    }

    /// Put back a message that was in flight before a restart, under the packet identifier
    /// the client already saw (so a QoS 2 receiver recognises it [MQTT-4.3.3]). Gives the
    /// delivery back if the identifier is 0 or already in use.
    pub fn restore(
        &mut self,
        packet_id: u16,
        state: OutgoingState,
        delivery: Delivery,
    ) -> Result<(), Delivery> {
        if packet_id == 0 || self.index.contains_key(&packet_id) {
            return Err(delivery);
        }
        self.index
            .insert(packet_id, self.base + self.order.len() as u64);
        self.add_bytes(delivery.message.size());
        self.order.push_back(Some(Inflight {
            packet_id,
            state,
            delivery,
        }));
        self.next_id = self.next_id.max(packet_id);
        Ok(())
    }

    /// PUBACK: completes a QoS 1 message.
    pub fn puback(&mut self, packet_id: u16) -> Result<Delivery, AckError> {
        if self.get(packet_id)?.state != OutgoingState::AwaitingPubAck {
            return Err(AckError::OutOfSequence);
        }
        Ok(self.remove(packet_id)?.delivery)
    }

    /// PUBREC: a QoS 2 message moves to awaiting PUBCOMP; the caller sends PUBREL. A repeated
    /// PUBREC (already awaiting PUBCOMP) is accepted so PUBREL is sent again. A PUBREC with an
    /// error reason ends the exchange ([MQTT-4.3.3]): pass `failed = true`.
    pub fn pubrec(&mut self, packet_id: u16, failed: bool) -> Result<(), AckError> {
        let inflight = self.get(packet_id)?;
        match inflight.state {
            OutgoingState::AwaitingPubRec | OutgoingState::AwaitingPubComp => {
                if failed {
                    self.remove(packet_id)?;
                } else {
                    inflight.state = OutgoingState::AwaitingPubComp;
                }
                Ok(())
            }
            OutgoingState::AwaitingPubAck => Err(AckError::OutOfSequence),
        }
    }

    /// PUBCOMP: completes a QoS 2 message.
    pub fn pubcomp(&mut self, packet_id: u16) -> Result<(), AckError> {
        if self.get(packet_id)?.state != OutgoingState::AwaitingPubComp {
            return Err(AckError::OutOfSequence);
        }
        self.remove(packet_id)?;
        Ok(())
    }

    /// The in-flight message with this packet identifier.
    pub fn find(&self, packet_id: u16) -> Option<&Inflight> {
        self.order.get(self.position(packet_id)?)?.as_ref()
    }

    /// Where this packet identifier's message is in `order`.
    fn position(&self, packet_id: u16) -> Option<usize> {
        let seq = *self.index.get(&packet_id)?;
        Some((seq - self.base) as usize)
    }

    /// Everything in flight, oldest first (for re-sending on session resumption
    /// [MQTT-4.4.0-1]).
    pub fn iter(&self) -> impl Iterator<Item = &Inflight> {
        self.order.iter().flatten()
    }

    /// Remove the messages for which `take` returns true (used to hand shared-subscription
    /// messages the client never acknowledged to another member of the group).
    pub fn take_where(&mut self, mut take: impl FnMut(&Inflight) -> bool) -> Vec<Inflight> {
        let mut taken = Vec::new();
        let mut freed = 0;
        for slot in &mut self.order {
            if slot.as_ref().is_some_and(&mut take) {
                if let Some(inflight) = slot.take() {
                    self.index.remove(&inflight.packet_id);
                    freed += inflight.delivery.message.size();
                    taken.push(inflight);
                }
            }
        }
        self.sub_bytes(freed);
        self.tidy();
        taken
    }

    fn get(&mut self, packet_id: u16) -> Result<&mut Inflight, AckError> {
        let position = self.position(packet_id).ok_or(AckError::NotFound)?;
        self.order
            .get_mut(position)
            .and_then(Option::as_mut)
            .ok_or(AckError::NotFound)
    }

    /// Forget an in-flight message (e.g. one too large for the client to be sent at all).
    pub fn remove(&mut self, packet_id: u16) -> Result<Inflight, AckError> {
        let seq = self.index.remove(&packet_id).ok_or(AckError::NotFound)?;
        let inflight = self
            .order
            .get_mut((seq - self.base) as usize)
            .and_then(Option::take)
            .ok_or(AckError::NotFound)?;
        self.sub_bytes(inflight.delivery.message.size());
        self.tidy();
        Ok(inflight)
    }

    /// Drop holes from the front; compact when holes outnumber messages (a client that leaves
    /// one message unacknowledged while acknowledging later ones must not grow the deque);
    /// release the memory of a large window once it is empty.
    fn tidy(&mut self) {
        while let Some(None) = self.order.front() {
            self.order.pop_front();
            self.base += 1;
        }
        if self.order.len() > 2 * self.index.len() + 64 {
            self.order.retain(Option::is_some);
            for (offset, inflight) in self.order.iter().flatten().enumerate() {
                self.index
                    .insert(inflight.packet_id, self.base + offset as u64);
            }
        }
        if self.index.is_empty() && self.order.capacity() > 256 {
            self.order = VecDeque::new();
            self.index = FxHashMap::default();
        }
    }
}

/// Packet identifiers of QoS 2 PUBLISHes received from the client and answered with PUBREC,
/// awaiting PUBREL ([MQTT-4.3.3-8]). A PUBLISH repeating one of these ids is not delivered
/// again.
#[derive(Debug, Default)]
pub struct IncomingQos2 {
    pending: Vec<u16>,
}

impl IncomingQos2 {
    /// Record a QoS 2 PUBLISH. Returns true if it is new (deliver it), false if it repeats a
    /// pending identifier (answer PUBREC again, do not deliver).
    pub fn receive(&mut self, packet_id: u16) -> bool {
        if self.pending.contains(&packet_id) {
            false
        } else {
            self.pending.push(packet_id);
            true
        }
    }

    /// Is this identifier awaiting PUBREL?
    pub fn contains(&self, packet_id: u16) -> bool {
        self.pending.contains(&packet_id)
    }

    /// PUBREL: release the identifier. Returns false if it was not pending (v5 answers
    /// PUBCOMP 0x92).
    pub fn release(&mut self, packet_id: u16) -> bool {
        match self.pending.iter().position(|&p| p == packet_id) {
            Some(i) => {
                self.pending.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// How many QoS 2 messages from the client are unacknowledged (counts against the
    /// broker's Receive Maximum [MQTT-3.3.4-9]).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending identifiers (to persist or restore a session).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.pending.iter().copied()
    }
}

/// Why a topic alias was refused; both are answered with DISCONNECT 0x94.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicAliasError {
    #[error("[MQTT-3.3.2-8] topic alias is 0 or above the Topic Alias Maximum")]
    OutOfRange,
    #[error("[MQTT-3.3.2-7] topic alias used before it was set")]
    Unknown,
}

/// Topic aliases the client set for its PUBLISHes to us (per connection [MQTT-3.3.2-10]).
#[derive(Debug, Default)]
pub struct InboundAliases {
    topics: Vec<Option<ByteString>>,
}

impl InboundAliases {
    /// Resolve a PUBLISH's topic: with an alias and a topic, (re)bind the alias; with an alias
    /// and an empty topic, look it up. `maximum` is the Topic Alias Maximum we advertised.
    pub fn resolve(
        &mut self,
        alias: u16,
        topic: &ByteString,
        maximum: u16,
    ) -> Result<ByteString, TopicAliasError> {
        if alias == 0 || alias > maximum {
            return Err(TopicAliasError::OutOfRange);
        }
        let idx = usize::from(alias - 1);
        if topic.is_empty() {
            return self
                .topics
                .get(idx)
                .cloned()
                .flatten()
                .ok_or(TopicAliasError::Unknown);
        }
        if self.topics.len() <= idx {
            self.topics.resize(idx + 1, None);
        }
        // Copied out of the packet: a slice would keep the whole PUBLISH (up to the maximum
        // packet size) alive for as long as the alias is bound.
        let owned = ByteString::from(&**topic);
        self.topics[idx] = Some(owned.clone());
        Ok(owned)
    }
}

/// Topic aliases the broker assigns to topics it sends to a v5 client that allows them
/// (its CONNECT Topic Alias Maximum), per connection [MQTT-3.3.2-10]: the first PUBLISH on a
/// topic carries the topic and a new alias, later ones only the alias [MQTT-3.3.2-12]. Aliases
/// are given first come, first served until `maximum` and never reassigned (a mapping that
/// never changes cannot be misread after a lost packet); topics longer than
/// [`OutboundAliases::MAX_TOPIC`] bytes are not aliased, which bounds what the map holds.
#[derive(Debug, Default)]
pub struct OutboundAliases {
    topics: std::collections::HashMap<ByteString, u16>,
    maximum: u16,
}

/// How to send a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasUse {
    /// The topic as it is, no alias.
    Plain,
    /// The topic and this new alias: the client learns the mapping.
    Set(u16),
    /// An empty topic and this alias, set earlier on this connection.
    Use(u16),
}

impl OutboundAliases {
    /// The longest topic given an alias.
    pub const MAX_TOPIC: usize = 1024;

    /// Up to `maximum` aliases (0: none).
    pub fn new(maximum: u16) -> Self {
        OutboundAliases {
            topics: std::collections::HashMap::new(),
            maximum,
        }
    }

    /// How to send `topic`; a new alias is taken now (see [`OutboundAliases::forget`]).
    pub fn alias(&mut self, topic: &ByteString) -> AliasUse {
        if let Some(&alias) = self.topics.get(topic) {
            return AliasUse::Use(alias);
        }
        let next = self.topics.len() + 1;
        if next > usize::from(self.maximum) || topic.len() > Self::MAX_TOPIC {
            return AliasUse::Plain;
        }
        let alias = u16::try_from(next).unwrap_or(u16::MAX);
        // Copied: a slice of a PUBLISH would keep the whole packet alive.
        self.topics.insert(ByteString::from(&**topic), alias);
        AliasUse::Set(alias)
    }

    /// The PUBLISH that was to set `alias` for `topic` was not sent (too large for the
    /// client): the mapping does not exist for the client, so it does not exist here.
    pub fn forget(&mut self, topic: &ByteString) {
        self.topics.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn delivery(qos: QoS) -> Delivery {
        let msg = Message::broker_generated(
            ByteString::from_static("t"),
            bytes::Bytes::new(),
            qos,
            false,
        );
        let _ = Instant::now();
        Delivery::plain(Arc::new(msg), qos)
    }

    #[test]
    fn packet_ids_are_non_zero_and_unique() {
        let mut w = OutgoingWindow::default();
        let a = w.insert(delivery(QoS::AtLeastOnce)).unwrap();
        let b = w.insert(delivery(QoS::AtLeastOnce)).unwrap();
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert!(w.puback(a).is_ok());
        assert_eq!(w.puback(a).unwrap_err(), AckError::NotFound);
    }

    #[test]
    fn packet_ids_wrap_and_skip_in_use() {
        let mut w = OutgoingWindow::default();
        w.next_id = u16::MAX - 1;
        let a = w.insert(delivery(QoS::AtLeastOnce)).unwrap();
        assert_eq!(a, u16::MAX);
        let b = w.insert(delivery(QoS::AtLeastOnce)).unwrap();
        assert_eq!(b, 1, "0 is never used [MQTT-2.2.1-3]");
    }

    #[test]
    fn qos2_sequence() {
        let mut w = OutgoingWindow::default();
        let id = w.insert(delivery(QoS::ExactlyOnce)).unwrap();
        assert_eq!(w.puback(id).unwrap_err(), AckError::OutOfSequence);
        assert_eq!(w.pubcomp(id).unwrap_err(), AckError::OutOfSequence);
        w.pubrec(id, false).unwrap();
        w.pubrec(id, false).unwrap();
        w.pubcomp(id).unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn full_window_of_65535() {
        let mut w = OutgoingWindow::default();
        let ids: Vec<u16> = (0..u16::MAX)
            .map(|_| w.insert(delivery(QoS::AtLeastOnce)).unwrap())
            .collect();
        assert!(w.insert(delivery(QoS::AtLeastOnce)).is_err());
        // Acknowledge every other one, newest first: order of the rest is kept.
        for id in ids.iter().rev().step_by(2) {
            w.puback(*id).unwrap();
        }
        let rest: Vec<u16> = w.iter().map(|i| i.packet_id).collect();
        let expected: Vec<u16> = ids.iter().rev().skip(1).step_by(2).rev().copied().collect();
        assert_eq!(rest, expected);
        // Freed identifiers are reused.
        assert!(w.insert(delivery(QoS::AtLeastOnce)).is_ok());
    }

    proptest::proptest! {
        /// The window against a plain list: same identifiers, same order, same answers.
        #[test]
        fn window_matches_a_list(ops in proptest::collection::vec((0u8..5, 0usize..40), 1..400)) {
            let mut w = OutgoingWindow::default();
            let mut model: Vec<(u16, OutgoingState)> = Vec::new();
            for (op, pick) in ops {
                let target = model.get(pick % model.len().max(1)).map(|(id, _)| *id).unwrap_or(1);
                match op {
                    0 | 1 => {
                        let qos = if op == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
                        let id = w.insert(delivery(qos)).unwrap();
                        proptest::prop_assert!(id != 0 && !model.iter().any(|(i, _)| *i == id));
                        let state = if op == 0 { OutgoingState::AwaitingPubAck } else { OutgoingState::AwaitingPubRec };
                        model.push((id, state));
                    }
                    2 => {
                        let pos = model.iter().position(|(i, _)| *i == target);
                        let ok = w.puback(target).is_ok();
                        let expect = pos.is_some_and(|p| model[p].1 == OutgoingState::AwaitingPubAck);
                        proptest::prop_assert_eq!(ok, expect);
                        if expect { model.remove(pos.unwrap()); }
                    }
                    3 => {
                        let pos = model.iter().position(|(i, _)| *i == target);
                        let ok = w.pubrec(target, false).is_ok();
                        let expect = pos.is_some_and(|p| model[p].1 != OutgoingState::AwaitingPubAck);
                        proptest::prop_assert_eq!(ok, expect);
                        if expect { model[pos.unwrap()].1 = OutgoingState::AwaitingPubComp; }
                    }
                    _ => {
                        let pos = model.iter().position(|(i, _)| *i == target);
                        let ok = w.pubcomp(target).is_ok();
                        let expect = pos.is_some_and(|p| model[p].1 == OutgoingState::AwaitingPubComp);
                        proptest::prop_assert_eq!(ok, expect);
                        if expect { model.remove(pos.unwrap()); }
                    }
                }
                let got: Vec<(u16, OutgoingState)> = w.iter().map(|i| (i.packet_id, i.state)).collect();
                proptest::prop_assert_eq!(&got, &model);
                proptest::prop_assert_eq!(w.len(), model.len());
            }
        }
    }

    #[test]
    fn mqtt_4_8_2_4_and_5_only_shared_qos1_in_flight_moves_to_another_member() {
        // [MQTT-4.8.2-4] The Server MUST complete the delivery of the message to that
        // Client when it reconnects. [MQTT-4.8.2-5] If the Client's Session terminates
        // before the Client reconnects, the Server MUST NOT send the Application Message
        // to any other subscribed Client.
        let mut window = OutgoingWindow::default();
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce] {
            window.insert(delivery(qos)).unwrap();
        }
        let shared = |mut d: Delivery| {
            d.share_group = Some(ByteString::from_static("g"));
            d
        };
        window.insert(shared(delivery(QoS::AtLeastOnce))).unwrap();
        window.insert(shared(delivery(QoS::ExactlyOnce))).unwrap();
        let moves: Vec<bool> = window
            .iter()
            .map(Inflight::may_move_to_another_member)
            .collect();
        assert_eq!(moves, [false, false, false, true, false]);
    }

    #[test]
    fn incoming_qos2_dedup() {
        let mut q = IncomingQos2::default();
        assert!(q.receive(7));
        assert!(!q.receive(7));
        assert_eq!(q.len(), 1);
        assert!(q.release(7));
        assert!(!q.release(7));
        assert!(q.receive(7));
    }

    #[test]
    fn topic_aliases() {
        let mut a = InboundAliases::default();
        let t = ByteString::from_static("a/b");
        let empty = ByteString::new();
        assert_eq!(a.resolve(0, &t, 10), Err(TopicAliasError::OutOfRange));
        assert_eq!(a.resolve(11, &t, 10), Err(TopicAliasError::OutOfRange));
        assert_eq!(a.resolve(3, &empty, 10), Err(TopicAliasError::Unknown));
        assert_eq!(a.resolve(3, &t, 10).unwrap(), "a/b");
        assert_eq!(a.resolve(3, &empty, 10).unwrap(), "a/b");
        let u = ByteString::from_static("c");
        assert_eq!(a.resolve(3, &u, 10).unwrap(), "c");
        assert_eq!(a.resolve(3, &empty, 10).unwrap(), "c");
    }

    #[test]
    fn mqtt_3_3_2_12_outbound_aliases_set_once_then_used_and_never_reassigned() {
        let mut a = OutboundAliases::new(2);
        let (t1, t2, t3) = (
            ByteString::from_static("a/1"),
            ByteString::from_static("a/2"),
            ByteString::from_static("a/3"),
        );
        assert_eq!(a.alias(&t1), AliasUse::Set(1));
        assert_eq!(a.alias(&t1), AliasUse::Use(1));
        assert_eq!(a.alias(&t2), AliasUse::Set(2));
        assert_eq!(a.alias(&t3), AliasUse::Plain, "all taken: no reassignment");
        assert_eq!(a.alias(&t2), AliasUse::Use(2));
        let long = ByteString::from("x".repeat(OutboundAliases::MAX_TOPIC + 1));
        assert_eq!(OutboundAliases::new(5).alias(&long), AliasUse::Plain);
        assert_eq!(OutboundAliases::new(0).alias(&t1), AliasUse::Plain);
        // A PUBLISH that was to set an alias but was not sent leaves no mapping.
        let mut a = OutboundAliases::new(2);
        assert_eq!(a.alias(&t1), AliasUse::Set(1));
        a.forget(&t1);
        assert_eq!(a.alias(&t1), AliasUse::Set(1));
    }
}
