//! The protocol rules of a connection after CONNECT, free of I/O: a packet from the client
//! (and the outcome of routing it) goes in, with the session state it touches; what to do
//! comes out as [`Effect`]s, or a [`Violation`] that ends the connection. The broker's
//! connection task carries the effects out (encodes, writes, talks to the store) and decides
//! nothing about MQTT itself.
//!
//! Covered here: PUBLISH validation (topic aliases, topic names, depth, Maximum QoS, Retain
//! Available, the QoS 2 receive window and repeats) and its acknowledgement, the QoS 1/2
//! acknowledgement flows in both directions, PINGREQ, DISCONNECT, AUTH (re-authentication
//! requests) and packets a client may not send.

use edgemq_codec::{
    Auth, DecodeError, Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
};

use crate::limits::Limits;
use crate::session::{AckError, InboundAliases, IncomingQos2, OutgoingWindow, TopicAliasError};
use crate::topic::{level_count, validate_topic_name};

/// Why the broker ends a connection: the reason code it sends (v5 DISCONNECT) and the
/// normative statement or limit behind it. Every refusal that closes a connection is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub reason: ReasonCode,
    pub rule: &'static str,
}

impl Violation {
    pub const fn new(reason: ReasonCode, rule: &'static str) -> Self {
        Violation { reason, rule }
    }

    pub const fn protocol(rule: &'static str) -> Self {
        Violation::new(ReasonCode::ProtocolError, rule)
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Self {
        Violation::new(e.reason, e.rule)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reason 0x{:02X})", self.rule, self.reason.0)
    }
}

/// What the connection task does, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Encode and send, behind any output held for a commit.
    Send(Packet),
    /// Send ahead of output held for a commit: it promises nothing about stored state.
    SendUnheld(Packet),
    /// A delivery to the client is settled: its stored copy (if any) goes.
    Forget(Option<u64>),
    /// Stored delivery `seq` now only awaits PUBCOMP under `packet_id`: the message itself
    /// is never sent again [MQTT-4.3.3].
    AwaitPubComp { seq: u64, packet_id: u16 },
    /// A QoS 2 packet identifier from the client is pending (PUBREC sent) or released, on
    /// disk.
    IncomingQos2 { packet_id: u16, pending: bool },
    /// The output from here on waits until what was submitted to the store is committed.
    HoldForCommit,
}

/// Where the rules put what they decide: a `Vec` in tests; in the broker a [`Batch`] on the
/// stack of the call (nothing kept per connection between packets).
pub trait Effects {
    fn push(&mut self, effect: Effect);
}

impl Effects for Vec<Effect> {
    fn push(&mut self, effect: Effect) {
        Vec::push(self, effect);
    }
}

/// The effects of one packet: most packets have at most three.
pub type Batch = smallvec::SmallVec<[Effect; 4]>;

impl Effects for Batch {
    fn push(&mut self, effect: Effect) {
        smallvec::SmallVec::push(self, effect);
    }
}

/// The settings the rules read, taken from the broker's [`Limits`].
#[derive(Debug, Clone)]
pub struct Rules {
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    pub maximum_qos: QoS,
    pub retain_available: bool,
    pub max_topic_levels: usize,
    pub max_session_expiry: u32,
}

impl From<&Limits> for Rules {
    fn from(l: &Limits) -> Self {
        Rules {
            receive_maximum: l.receive_maximum,
            topic_alias_maximum: l.topic_alias_maximum,
            maximum_qos: l.maximum_qos,
            retain_available: l.retain_available,
            max_topic_levels: l.max_topic_levels,
            max_session_expiry: l.max_session_expiry,
        }
    }
}

/// What became of a PUBLISH that passed the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Routed to at least one subscription.
    Delivered,
    /// Routed to none (v5 0x10).
    NoSubscribers,
    /// Denied by the authorization policy (v5 0x87; v3 acknowledged, not delivered).
    NotAuthorized,
    /// Refused whole by a budget (retained messages, the store): v5 0x97.
    QuotaExceeded,
}

/// The next step for a PUBLISH.
#[derive(Debug, PartialEq)]
pub enum PublishStep {
    /// Authorize and route it (its topic now resolved from an alias), then call
    /// [`Inbound::answer`] with the outcome.
    Route,
    /// Answered already: a repeat of a QoS 2 identifier awaiting PUBREL [MQTT-4.3.3-9].
    Answered,
    /// Its topic is deeper than `max_topic_levels`: answered with 0x90 (v5 QoS 1/2), or the
    /// connection ends with `close`. Nothing is routed or retained.
    TooDeep { close: Option<Violation> },
}

/// What a control packet asks of the connection.
#[derive(Debug, PartialEq)]
pub enum Control {
    /// Nothing more than the effects.
    Continue,
    /// The client disconnects; the session expiry it set (capped), if it set one.
    Disconnect {
        with_will: bool,
        session_expiry: Option<u32>,
    },
    /// Re-authenticate with this AUTH [MQTT-4.12.1].
    Reauthenticate(Box<Auth>),
}

/// One connection's protocol state after CONNECT (the session's own state — windows, QoS 2
/// identifiers — is passed in: it outlives the connection).
#[derive(Debug)]
pub struct Inbound {
    version: ProtocolVersion,
    rules: Rules,
    aliases: InboundAliases,
    /// CONNECT set Session Expiry 0 (DISCONNECT may then not set one [MQTT-3.14.2-2]).
    connect_expiry_zero: bool,
    authentication_method: Option<String>,
    /// The session is persistent and stored: what promises durability waits for commits.
    durable: bool,
}

impl Inbound {
    pub fn new(
        version: ProtocolVersion,
        rules: Rules,
        connect_expiry_zero: bool,
        authentication_method: Option<String>,
        durable: bool,
    ) -> Self {
        Inbound {
            version,
            rules,
            aliases: InboundAliases::default(),
            connect_expiry_zero,
            authentication_method,
            durable,
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The enhanced authentication method the connection was admitted with.
    pub fn authentication_method(&self) -> Option<&str> {
        self.authentication_method.as_deref()
    }

    /// A PUBLISH from the client: checked, its alias resolved, its QoS 2 identifier
    /// recorded.
    pub fn publish(
        &mut self,
        publish: &mut Publish,
        incoming: &mut IncomingQos2,
        effects: &mut impl Effects,
    ) -> Result<PublishStep, Violation> {
        if self.version.is_v5() {
            if !publish.properties.subscription_identifiers.is_empty() {
                return Err(Violation::protocol(
                    "[MQTT-3.3.4-6] subscription identifier in a client PUBLISH",
                ));
            }
            if let Some(alias) = publish.properties.topic_alias {
                publish.topic = self
                    .aliases
                    .resolve(alias, &publish.topic, self.rules.topic_alias_maximum)
                    .map_err(alias_violation)?;
            }
        }
        if publish.topic.is_empty() {
            return Err(Violation::protocol(
                "[MQTT-3.3.2-1] empty topic name without a topic alias",
            ));
        }
        if validate_topic_name(&publish.topic).is_err() {
            return Err(Violation::new(
                ReasonCode::TopicNameInvalid,
                "[MQTT-3.3.2-2] invalid topic name",
            ));
        }
        if level_count(&publish.topic) > self.rules.max_topic_levels {
            return Ok(self.too_deep(publish, effects));
        }
        if publish.qos > self.rules.maximum_qos {
            return Err(Violation::new(
                ReasonCode::QoSNotSupported,
                "[MQTT-3.2.2-11] QoS above Maximum QoS",
            ));
        }
        if publish.retain && !self.rules.retain_available {
            return Err(Violation::new(
                ReasonCode::RetainNotSupported,
                "[MQTT-3.2.2-14] retain not available",
            ));
        }
        if publish.qos == QoS::ExactlyOnce && !self.receive_qos2(publish, incoming, effects)? {
            return Ok(PublishStep::Answered);
        }
        Ok(PublishStep::Route)
    }

    /// Record a QoS 2 identifier; false if it repeats one awaiting PUBREC (answered again,
    /// not delivered again [MQTT-4.3.3-9]).
    fn receive_qos2(
        &self,
        publish: &Publish,
        incoming: &mut IncomingQos2,
        effects: &mut impl Effects,
    ) -> Result<bool, Violation> {
        let packet_id = publish.packet_id.unwrap_or(0);
        let is_new = !incoming.contains(packet_id);
        if is_new && incoming.len() >= usize::from(self.rules.receive_maximum) {
            return Err(Violation::new(
                ReasonCode::ReceiveMaximumExceeded,
                "[MQTT-3.3.4-9] receive maximum exceeded",
            ));
        }
        if !incoming.receive(packet_id) {
            effects.push(Effect::Send(Packet::PubRec(PubResponse::new(packet_id))));
            return Ok(false);
        }
        // On disk with the routed copies (one commit): a repeat after a restart is still
        // recognised.
        if self.durable {
            effects.push(Effect::IncomingQos2 {
                packet_id,
                pending: true,
            });
        }
        Ok(true)
    }

    fn too_deep(&self, publish: &Publish, effects: &mut impl Effects) -> PublishStep {
        let reason = ReasonCode::TopicNameInvalid;
        let id = publish.packet_id.unwrap_or(0);
        let close = match (self.version.is_v5(), publish.qos) {
            (true, QoS::AtLeastOnce) => {
                effects.push(Effect::Send(Packet::PubAck(self.response(id, reason))));
                None
            }
            (true, QoS::ExactlyOnce) => {
                effects.push(Effect::Send(Packet::PubRec(self.response(id, reason))));
                None
            }
            _ => Some(Violation::new(reason, "topic deeper than max-topic-levels")),
        };
        PublishStep::TooDeep { close }
    }

    /// Acknowledge a routed PUBLISH. `stored`: routing wrote something to the store for it,
    /// so the acknowledgement waits for the commit. MQTT 3 has no code to refuse a QoS 1/2
    /// message with, and acknowledging one that was not accepted would lose it: the
    /// connection ends unacknowledged, and the client sends it again when it reconnects
    /// [MQTT-4.4.0-1].
    pub fn answer(
        &self,
        packet_id: u16,
        qos: QoS,
        outcome: Outcome,
        stored: bool,
        incoming: &mut IncomingQos2,
        effects: &mut impl Effects,
    ) -> Result<(), Violation> {
        if outcome == Outcome::QuotaExceeded && !self.version.is_v5() && qos != QoS::AtMostOnce {
            return Err(Violation::new(
                ReasonCode::QuotaExceeded,
                "a budget refused a QoS 1/2 message and MQTT 3 has no code for it: closed unacknowledged",
            ));
        }
        let reason = match outcome {
            Outcome::Delivered => ReasonCode::Success,
            Outcome::NoSubscribers => ReasonCode::NoMatchingSubscribers,
            Outcome::NotAuthorized => ReasonCode::NotAuthorized,
            Outcome::QuotaExceeded => ReasonCode::QuotaExceeded,
        };
        let stored = stored || (qos == QoS::ExactlyOnce && self.durable);
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                if stored {
                    effects.push(Effect::HoldForCommit);
                }
                effects.push(Effect::Send(Packet::PubAck(
                    self.response(packet_id, reason),
                )));
            }
            QoS::ExactlyOnce => {
                // A refused QoS 2 message ends its exchange here [MQTT-4.3.3].
                if reason.is_error() {
                    incoming.release(packet_id);
                    if self.durable {
                        effects.push(Effect::IncomingQos2 {
                            packet_id,
                            pending: false,
                        });
                    }
                }
                if stored {
                    effects.push(Effect::HoldForCommit);
                }
                effects.push(Effect::Send(Packet::PubRec(
                    self.response(packet_id, reason),
                )));
            }
        }
        Ok(())
    }

    /// PUBACK, PUBREC, PUBREL or PUBCOMP from the client.
    pub fn acknowledgement(
        &self,
        packet: Packet,
        outgoing: &mut OutgoingWindow,
        incoming: &mut IncomingQos2,
        effects: &mut impl Effects,
    ) -> Result<(), Violation> {
        match packet {
            Packet::PubAck(ack) => match outgoing.puback(ack.packet_id) {
                Ok(delivery) => effects.push(Effect::Forget(delivery.stored)),
                Err(AckError::NotFound) => {} // a stray PUBACK is harmless
                Err(AckError::OutOfSequence) => {
                    return Err(Violation::protocol(
                        "[MQTT-4.3.2] PUBACK for a QoS 2 message",
                    ))
                }
            },
            Packet::PubRec(rec) => self.pubrec(&rec, outgoing, effects)?,
            Packet::PubRel(rel) => {
                let mut comp = PubResponse::new(rel.packet_id);
                if incoming.release(rel.packet_id) {
                    // A stale identifier left on disk would swallow the next message that
                    // reuses it: forgotten before the PUBCOMP.
                    if self.durable {
                        effects.push(Effect::IncomingQos2 {
                            packet_id: rel.packet_id,
                            pending: false,
                        });
                        effects.push(Effect::HoldForCommit);
                    }
                } else if self.version.is_v5() {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                effects.push(Effect::Send(Packet::PubComp(comp)));
            }
            Packet::PubComp(comp) => {
                let seq = stored_key(outgoing, comp.packet_id);
                match outgoing.pubcomp(comp.packet_id) {
                    Ok(()) => effects.push(Effect::Forget(seq)),
                    Err(AckError::NotFound) => {}
                    Err(AckError::OutOfSequence) => {
                        return Err(Violation::protocol("[MQTT-4.3.3] PUBCOMP before PUBREC"))
                    }
                }
            }
            _ => return Err(Violation::protocol("not an acknowledgement")),
        }
        Ok(())
    }

    fn pubrec(
        &self,
        rec: &PubResponse,
        outgoing: &mut OutgoingWindow,
        effects: &mut impl Effects,
    ) -> Result<(), Violation> {
        let packet_id = rec.packet_id;
        let seq = stored_key(outgoing, packet_id);
        match outgoing.pubrec(packet_id, rec.reason.is_error()) {
            Ok(()) if !rec.reason.is_error() => {
                // Only the identifier is kept from here; stored before the PUBREL.
                if let (Some(seq), true) = (seq, self.durable) {
                    effects.push(Effect::AwaitPubComp { seq, packet_id });
                    effects.push(Effect::HoldForCommit);
                }
                effects.push(Effect::Send(Packet::PubRel(PubResponse::new(packet_id))));
            }
            // A PUBREC with a failure ends the exchange [MQTT-4.3.3].
            Ok(()) => effects.push(Effect::Forget(seq)),
            Err(AckError::NotFound) => {
                // v5: an unknown PUBREC is answered PUBREL 0x92 [MQTT-4.3.3].
                let mut rel = PubResponse::new(packet_id);
                if self.version.is_v5() {
                    rel.reason = ReasonCode::PacketIdentifierNotFound;
                }
                effects.push(Effect::Send(Packet::PubRel(rel)));
            }
            Err(AckError::OutOfSequence) => {
                return Err(Violation::protocol(
                    "[MQTT-4.3.3] PUBREC for a QoS 1 message",
                ))
            }
        }
        Ok(())
    }

    /// PINGREQ, DISCONNECT, AUTH, and the packets a client may not send after CONNECT.
    pub fn control(
        &self,
        packet: Packet,
        effects: &mut impl Effects,
    ) -> Result<Control, Violation> {
        match packet {
            // Not behind acknowledgements waiting for the store [MQTT-3.12.4-1].
            Packet::PingReq => {
                effects.push(Effect::SendUnheld(Packet::PingResp));
                Ok(Control::Continue)
            }
            Packet::Disconnect(d) => {
                let expiry = d.properties.session_expiry_interval;
                if self.connect_expiry_zero && expiry.is_some_and(|e| e != 0) {
                    return Err(Violation::protocol(
                        "[MQTT-3.14.2-2] DISCONNECT sets a session expiry after CONNECT had 0",
                    ));
                }
                Ok(Control::Disconnect {
                    with_will: d.reason == ReasonCode::DisconnectWithWillMessage,
                    session_expiry: expiry.map(|e| e.min(self.rules.max_session_expiry)),
                })
            }
            Packet::Auth(auth) => self.auth(auth),
            Packet::Connect(_) => Err(Violation::protocol("[MQTT-3.1.0-2] second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Violation::protocol(SERVER_ONLY))
            }
            _ => Err(Violation::protocol("not a control packet")),
        }
    }

    /// Only a connection that used enhanced authentication may re-authenticate, with the
    /// same method [MQTT-4.12.1-1]; the handshake is single-step, so 0x18 Continue from a
    /// client is out of sequence.
    fn auth(&self, auth: Auth) -> Result<Control, Violation> {
        let Some(method) = self.authentication_method.as_deref() else {
            return Err(Violation::protocol(
                "[MQTT-4.12.0-1] AUTH without an authentication method",
            ));
        };
        if auth.reason != ReasonCode::ReAuthenticate {
            return Err(Violation::protocol(
                "[MQTT-4.12.1-1] AUTH from the client must be 0x19 Re-authenticate here",
            ));
        }
        if auth.properties.authentication_method.as_deref() != Some(method) {
            return Err(Violation::protocol(
                "[MQTT-4.12.1-1] re-authentication must use the CONNECT's method",
            ));
        }
        Ok(Control::Reauthenticate(Box::new(auth)))
    }

    /// A PUBACK/PUBREC carrying `reason` in v5 (v3 has no reason codes).
    fn response(&self, packet_id: u16, reason: ReasonCode) -> PubResponse {
        let mut r = PubResponse::new(packet_id);
        if self.version.is_v5() {
            r.reason = reason;
        }
        r
    }
}

/// A packet only a server sends, from a client: a Protocol Error (MQTT 5 §4.13.1).
pub const SERVER_ONLY: &str =
    "[MQTT-4.13.1] a packet only a server may send (CONNACK, SUBACK, UNSUBACK, PINGRESP)";

/// An alias out of range is 0x94 [MQTT-3.3.2-8]; one used before it was set has no topic to
/// stand for, which §3.3.2.3.4 makes a Protocol Error (0x82).
fn alias_violation(e: TopicAliasError) -> Violation {
    match e {
        TopicAliasError::OutOfRange => Violation::new(
            ReasonCode::TopicAliasInvalid,
            "[MQTT-3.3.2-8] topic alias is 0 or above the Topic Alias Maximum",
        ),
        TopicAliasError::Unknown => Violation::protocol(
            "[MQTT-3.3.2-7] topic alias used before it was set (§3.3.2.3.4: Protocol Error)",
        ),
    }
}

/// The store key of the delivery in flight under `packet_id`, if it is stored.
fn stored_key(outgoing: &OutgoingWindow, packet_id: u16) -> Option<u64> {
    outgoing.find(packet_id).and_then(|i| i.delivery.stored)
}

/// Whether an in-flight entry is still in its first phase (used by tests).
#[cfg(test)]
fn state_of(outgoing: &OutgoingWindow, packet_id: u16) -> Option<crate::session::OutgoingState> {
    outgoing.find(packet_id).map(|i| i.state)
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
