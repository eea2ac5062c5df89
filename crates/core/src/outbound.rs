//! The rules of what a connection sends: when a QoS 1/2 message may go in flight (the
//! client's Receive Maximum, the in-flight byte budget, re-sends first), how a PUBLISH is
//! written for this client (its protocol version, server topic aliases, the remaining
//! expiry), and what happens to one larger than the client's Maximum Packet Size.
//!
//! The runtime owns the queue, the store and the socket; it asks [`Outbound`] and carries
//! out the answer. Time comes in as an argument.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;

use edgemq_codec::{EncodeError, OutgoingPublish, ProtocolVersion};

use crate::session::{AliasUse, Delivery, OutboundAliases, OutgoingState, OutgoingWindow};

/// What CONNECT settled about the client's side of the flow.
#[derive(Debug, Clone, Copy)]
pub struct OutboundTerms {
    pub version: ProtocolVersion,
    /// The client's Receive Maximum (capped by the broker's in-flight limit).
    pub send_window: usize,
    /// The broker's `max_inflight_bytes`.
    pub max_inflight_bytes: usize,
    /// The client's Maximum Packet Size, if it set one.
    pub client_max_packet: Option<u32>,
    /// Topic aliases the broker may assign (0: none; v5 only).
    pub server_topic_aliases: u16,
}

/// The result of writing one PUBLISH.
#[derive(Debug)]
pub enum Written {
    /// In the buffer.
    Sent,
    /// Larger than the client's Maximum Packet Size: nothing written, and the message is to
    /// be dropped for this client as if delivered [MQTT-3.1.2-25].
    TooLarge,
    /// The codec refused it (a length beyond the protocol's); nothing written.
    Unencodable(EncodeError),
}

/// What to re-send next from an earlier connection's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// The PUBLISH again, with DUP set [MQTT-3.3.1-1].
    Publish(u16),
    /// Its PUBREL: the client had acknowledged the PUBLISH with PUBREC.
    PubRel(u16),
}

/// Per-connection sending state: the client's terms, the server's topic aliases and the
/// re-sends owed on session resumption.
#[derive(Debug)]
pub struct Outbound {
    terms: OutboundTerms,
    /// Boxed: most connections have none.
    aliases: Option<Box<OutboundAliases>>,
    /// Packet ids in flight from an earlier connection, not yet re-sent on this one because
    /// the client's Receive Maximum was full [MQTT-3.3.4-9]; they go before anything new.
    resend: VecDeque<u16>,
}

impl Outbound {
    pub fn new(terms: OutboundTerms) -> Self {
        let aliases = (terms.version.is_v5() && terms.server_topic_aliases > 0)
            .then(|| Box::new(OutboundAliases::new(terms.server_topic_aliases)));
        Outbound {
            terms,
            aliases,
            resend: VecDeque::new(),
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        self.terms.version
    }

    /// Room for a new QoS 1/2 message: nothing left to re-send, under the client's Receive
    /// Maximum [MQTT-3.3.4-9] and the in-flight byte budget, and not shedding at the memory
    /// budget (`sheds`). One message always may go when none is in flight, so a message
    /// larger than the byte budget still moves.
    pub fn window_open(&self, window: &OutgoingWindow, sheds: bool) -> bool {
        self.resend.is_empty()
            && window.len() < self.terms.send_window
            && (window.is_empty() || (!sheds && window.bytes() < self.terms.max_inflight_bytes))
    }

    /// A session resumed with `window` in flight: every message in it is owed again, in its
    /// original order [MQTT-4.4.0-1].
    pub fn resume(&mut self, window: &OutgoingWindow) {
        self.resend = window.iter().map(|inflight| inflight.packet_id).collect();
    }

    /// The next re-send the client's Receive Maximum has room for, if any. Ids the client
    /// acknowledged before they were re-sent are skipped.
    pub fn next_resend(&mut self, window: &OutgoingWindow) -> Option<Resend> {
        loop {
            let &packet_id = self.resend.front()?;
            // Everything in the window but the backlog went out on this connection.
            // (Saturating: a client may acknowledge an id it was not re-sent yet.)
            let sent = window.len().saturating_sub(self.resend.len());
            if sent >= self.terms.send_window {
                return None;
            }
            self.resend.pop_front();
            match window.find(packet_id).map(|inflight| inflight.state) {
                None => continue,
                Some(OutgoingState::AwaitingPubComp) => return Some(Resend::PubRel(packet_id)),
                Some(_) => return Some(Resend::Publish(packet_id)),
            }
        }
    }

    /// Append `delivery` as a PUBLISH for this client to `out`: with a server topic alias
    /// where one applies, the expiry left at `now` [MQTT-3.3.2-6], and (v5) the properties
    /// forwarded unaltered [MQTT-3.3.2-17]. Nothing is written if it would exceed the
    /// client's Maximum Packet Size [MQTT-3.1.2-25].
    pub fn write(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: Instant,
        out: &mut BytesMut,
    ) -> Written {
        let message = &delivery.message;
        let v5 = self.terms.version.is_v5();
        let alias = match self.aliases.as_deref_mut() {
            Some(aliases) => aliases.alias(&message.topic),
            None => AliasUse::Plain,
        };
        let (topic, topic_alias) = match alias {
            AliasUse::Plain => (&*message.topic, None),
            AliasUse::Set(n) => (&*message.topic, Some(n)),
            AliasUse::Use(n) => ("", Some(n)),
        };
        let publish = OutgoingPublish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            forwarded_properties: if v5 {
                message.forwarded_properties()
            } else {
                &[]
            },
            message_expiry_interval: message.remaining_expiry(now),
            subscription_identifiers: &delivery.subscription_ids,
            topic_alias,
            payload: &message.payload,
        };
        let before = out.len();
        let written = match publish.encode(self.terms.version, out) {
            Err(e) => Written::Unencodable(e),
            Ok(size) if self.too_large(size) => Written::TooLarge,
            Ok(_) => return Written::Sent,
        };
        out.truncate(before);
        // Not sent: an alias it was to set is not set for the client, so not here either.
        if let (AliasUse::Set(_), Some(aliases)) = (alias, self.aliases.as_deref_mut()) {
            aliases.forget(&message.topic);
        }
        written
    }

    fn too_large(&self, size: usize) -> bool {
        self.terms
            .client_max_packet
            .is_some_and(|max| size > max as usize)
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
