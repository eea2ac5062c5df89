//! Per-session protocol state that outlives a network connection: packet-identifier
//! allocation, the outgoing in-flight window (QoS 1/2 towards the client), incoming QoS 2
//! packet identifiers awaiting PUBREL, and the client's topic-alias table.
//!
//! Sans-I/O: the runtime feeds packets in and writes what these methods return; nothing here
//! knows about sockets or clocks.

use std::sync::Arc;

use bytestring::ByteString;
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
/// identifier allocator. The window is small (at most the client's Receive Maximum), so a
/// linear scan beats a map.
#[derive(Debug, Default)]
pub struct OutgoingWindow {
    inflight: Vec<Inflight>,
    next_id: u16,
}

impl OutgoingWindow {
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Allocate an unused non-zero packet identifier [MQTT-2.2.1-3] and record the message as
    /// sent. Returns `None` only if all 65,535 identifiers are in use.
    pub fn insert(&mut self, delivery: Delivery) -> Option<u16> {
        let state = match delivery.qos {
            QoS::ExactlyOnce => OutgoingState::AwaitingPubRec,
            _ => OutgoingState::AwaitingPubAck,
        };
        for _ in 0..=u16::MAX {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id == 0 {
                self.next_id = 1;
            }
            let id = self.next_id;
            if !self.inflight.iter().any(|i| i.packet_id == id) {
                self.inflight.push(Inflight {
                    packet_id: id,
                    state,
                    delivery,
                });
                return Some(id);
            }
        }
        None
    }

    /// PUBACK: completes a QoS 1 message.
    pub fn puback(&mut self, packet_id: u16) -> Result<Delivery, AckError> {
        let idx = self.position(packet_id)?;
        if self.inflight[idx].state != OutgoingState::AwaitingPubAck {
            return Err(AckError::OutOfSequence);
        }
        Ok(self.inflight.remove(idx).delivery)
    }

    /// PUBREC: a QoS 2 message moves to awaiting PUBCOMP; the caller sends PUBREL. A repeated
    /// PUBREC (already awaiting PUBCOMP) is accepted so PUBREL is sent again. A PUBREC with an
    /// error reason ends the exchange ([MQTT-4.3.3]): pass `failed = true`.
    pub fn pubrec(&mut self, packet_id: u16, failed: bool) -> Result<(), AckError> {
        let idx = self.position(packet_id)?;
        match self.inflight[idx].state {
            OutgoingState::AwaitingPubRec | OutgoingState::AwaitingPubComp => {
                if failed {
                    self.inflight.remove(idx);
                } else {
                    self.inflight[idx].state = OutgoingState::AwaitingPubComp;
                }
                Ok(())
            }
            OutgoingState::AwaitingPubAck => Err(AckError::OutOfSequence),
        }
    }

    /// PUBCOMP: completes a QoS 2 message.
    pub fn pubcomp(&mut self, packet_id: u16) -> Result<(), AckError> {
        let idx = self.position(packet_id)?;
        if self.inflight[idx].state != OutgoingState::AwaitingPubComp {
            return Err(AckError::OutOfSequence);
        }
        self.inflight.remove(idx);
        Ok(())
    }

    /// Everything in flight, oldest first (for re-sending on session resumption
    /// [MQTT-4.4.0-1]).
    pub fn iter(&self) -> impl Iterator<Item = &Inflight> {
        self.inflight.iter()
    }

    /// Remove the messages for which `take` returns true (used to hand shared-subscription
    /// messages the client never acknowledged to another member of the group).
    pub fn take_where(&mut self, mut take: impl FnMut(&Inflight) -> bool) -> Vec<Inflight> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.inflight.len() {
            if take(&self.inflight[i]) {
                taken.push(self.inflight.remove(i));
            } else {
                i += 1;
            }
        }
        taken
    }

    fn position(&self, packet_id: u16) -> Result<usize, AckError> {
        self.inflight
            .iter()
            .position(|i| i.packet_id == packet_id)
            .ok_or(AckError::NotFound)
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
        self.topics[idx] = Some(topic.clone());
        Ok(topic.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn delivery(qos: QoS) -> Delivery {
        let msg = Message {
            topic: ByteString::from_static("t"),
            payload: bytes::Bytes::new(),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
        };
        let _ = Instant::now();
        Delivery {
            message: Arc::new(msg),
            qos,
            retain: false,
            subscription_ids: SmallVec::new(),
            share_group: None,
        }
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
        let mut w = OutgoingWindow {
            inflight: Vec::new(),
            next_id: u16::MAX - 1,
        };
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
}
