//! The application message as the broker routes it: immutable, shared as `Arc<Message>`
//! between every subscriber's queue, so fan-out copies a pointer, never the payload.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use edgemq_codec::{Properties, Publish, QoS};

use crate::subscriptions::SessionKey;

/// One published (or will) message.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS as published; each subscriber receives min(this, its granted QoS).
    pub qos: QoS,
    /// The RETAIN flag as published (forwarded only with Retain As Published).
    pub retain: bool,
    /// Properties forwarded unchanged to subscribers [MQTT-3.3.2-17..20]: payload format
    /// indicator, content type, response topic, correlation data, user properties, as a v5
    /// property body (no length prefix), encoded once when the message is made; empty when
    /// there are none (most messages). Topic alias, subscription identifiers and message
    /// expiry are per delivery and not kept here. Kept encoded, in its own allocation: decoded,
    /// a PUBLISH padded with empty user properties would cost 16 times its size while queued.
    pub properties: Bytes,
    /// Absolute expiry from the Message Expiry Interval; the remaining time is forwarded
    /// [MQTT-3.3.2-6].
    pub expires_at: Option<Instant>,
    /// The session that published it (for No Local); `None` for broker-generated messages.
    pub publisher: Option<SessionKey>,
    /// When the broker received it from a client (publish-to-delivery latency); `None` for
    /// the broker's own messages and for messages read back from the store.
    pub received_at: Option<Instant>,
}

impl Message {
    /// A message the broker makes itself (no properties, no expiry, no publishing session):
    /// health probes, and tests.
    pub fn broker_generated(topic: ByteString, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Message {
            topic,
            payload,
            qos,
            retain,
            properties: Bytes::new(),
            expires_at: None,
            publisher: None,
            received_at: None,
        }
    }

    /// Build from a client's PUBLISH, keeping only the properties that are forwarded.
    /// `max_expiry` caps the Message Expiry Interval (a broker limit).
    pub fn from_publish(
        publish: Publish,
        publisher: Option<SessionKey>,
        now: Instant,
        max_expiry: Option<u32>,
    ) -> Self {
        let Publish {
            qos,
            retain,
            topic,
            properties: mut p,
            payload,
            ..
        } = publish;
        let expiry = match (p.message_expiry_interval, max_expiry) {
            (Some(e), Some(max)) => Some(e.min(max)),
            (None, Some(max)) => Some(max),
            (e, None) => e,
        };
        // Only these travel with the message; everything else (topic alias, subscription
        // ids, a will's delay) is per hop or per delivery.
        let forwarded = p.payload_format_indicator.is_some()
            || p.content_type.is_some()
            || p.response_topic.is_some()
            || p.correlation_data.is_some()
            || !p.user_properties.is_empty();
        // Most messages carry none: no 400-byte struct built or compared for them.
        let properties = if forwarded {
            encode_body(&Properties::from(edgemq_codec::PropertyValues {
                payload_format_indicator: p.payload_format_indicator,
                content_type: std::mem::take(&mut p.content_type),
                response_topic: std::mem::take(&mut p.response_topic),
                correlation_data: std::mem::take(&mut p.correlation_data),
                user_properties: std::mem::take(&mut p.user_properties),
                ..Default::default()
            }))
        } else {
            Bytes::new()
        };
        // Topic and payload are slices of the packet. With properties in it, the packet is
        // more than they are: copied out when that would pin more than it costs.
        let (topic, payload) = if properties.len() > payload.len() {
            (ByteString::from(&*topic), Bytes::copy_from_slice(&payload))
        } else {
            (topic, payload)
        };
        Message {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at: expiry.map(|s| now + Duration::from_secs(u64::from(s))),
            publisher,
            received_at: Some(now),
        }
    }

    /// The forwarded properties as a v5 property body (no length prefix).
    pub fn forwarded_properties(&self) -> &[u8] {
        &self.properties
    }

    /// Bytes this message holds (topic, payload, forwarded properties): what queue, in-flight
    /// and retained budgets count.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.len()
    }

    /// Seconds left before expiry (rounded up, so a message never reaches 0 before it
    /// expires), or `None` if it never expires.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// `properties` as a v5 property body in its own allocation (empty when there are none).
pub fn encode_body(properties: &Properties) -> Bytes {
    if *properties == Properties::default() {
        return Bytes::new();
    }
    let mut body = BytesMut::new();
    // Only a string over 65,535 bytes fails, and the decoder admits none.
    match properties.encode_body(&mut body) {
        Ok(()) => body.freeze(),
        Err(_) => Bytes::new(),
    }
}
