use bytes::Bytes;
use bytestring::ByteString;

use crate::{Properties, QoS};

/// PUBLISH ([MQTT-3.3]). The topic is a topic name: no `+`/`#` [MQTT-3.3.2-2], may be empty
/// only in v5 with a Topic Alias property (checked by the session, which knows the aliases);
/// an empty topic in v3 is a Protocol Error. QoS 0 with DUP set is Malformed [MQTT-3.3.1-2];
/// QoS 3 is Malformed [MQTT-3.3.1-4]; packet id 0 with QoS > 0 is Malformed [MQTT-2.2.1-3].
/// A Payload Format Indicator of 1 with a payload that is not UTF-8 is `PayloadFormatInvalid`
/// (0x99) [MQTT-3.3.2-4].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: ByteString,
    /// `None` for QoS 0; `Some(non-zero)` otherwise.
    pub packet_id: Option<u16>,
    /// Property context `Publish`.
    pub properties: Properties,
    pub payload: Bytes,
}

use bytes::{BufMut, BytesMut};

use crate::primitives::{field_len, read_string, read_u16, varint_len, write_string, write_varint};
use crate::properties::id;
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// A Payload Format Indicator of 1 promises UTF-8 [MQTT-3.3.2-4].
pub(crate) fn check_payload_format(
    properties: &Properties,
    payload: &Bytes,
) -> Result<(), DecodeError> {
    if properties.payload_format_indicator == Some(1) && std::str::from_utf8(payload).is_err() {
        return Err(DecodeError::with_reason(
            ReasonCode::PayloadFormatInvalid,
            "[MQTT-3.3.2-4]",
            "payload format indicator is UTF-8 but the payload is not",
        ));
    }
    Ok(())
}

impl Publish {
    pub(crate) fn decode(
        flags: u8,
        mut buf: Bytes,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        let dup = flags & 0x08 != 0;
        let retain = flags & 0x01 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::malformed(
            "[MQTT-3.3.1-4]",
            "PUBLISH with QoS 3",
        ))?;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::malformed(
                "[MQTT-3.3.1-2]",
                "DUP set on a QoS 0 PUBLISH",
            ));
        }
        let topic = read_string(&mut buf)?;
        if topic.contains(['+', '#']) {
            return Err(DecodeError::with_reason(
                ReasonCode::TopicNameInvalid,
                "[MQTT-3.3.2-2]",
                "wildcard in a PUBLISH topic name",
            ));
        }
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            let id = read_u16(&mut buf)?;
            if id == 0 {
                return Err(DecodeError::malformed(
                    "[MQTT-2.2.1-3]",
                    "packet identifier 0",
                ));
            }
            Some(id)
        };
        let properties = if version.is_v5() {
            Properties::decode(&mut buf, PropertyContext::Publish)?
        } else {
            Properties::default()
        };
        if topic.is_empty() {
            if !version.is_v5() {
                return Err(DecodeError::malformed("[MQTT-4.7.3-1]", "empty topic name"));
            }
            if properties.topic_alias.is_none() {
                return Err(DecodeError::protocol(
                    "[MQTT-3.3.2-1]",
                    "empty topic name without a topic alias",
                ));
            }
        }
        if properties.topic_alias == Some(0) {
            return Err(DecodeError::with_reason(
                ReasonCode::TopicAliasInvalid,
                "[MQTT-3.3.2-8]",
                "topic alias 0",
            ));
        }
        check_payload_format(&properties, &buf)?;
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload: buf,
        })
    }

    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        field_len(self.topic.as_bytes())
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + if version.is_v5() {
                self.properties.encoded_len()
            } else {
                0
            }
            + self.payload.len()
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        write_string(out, &self.topic)?;
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id.unwrap_or(0));
        }
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        out.put_slice(&self.payload);
        Ok(())
    }
}

/// A PUBLISH as the broker sends it to one subscriber, from borrowed parts: no `Publish` or
/// `Properties` is built per subscriber. The message's forwarded properties are encoded once
/// per message (`Properties::encode_body`) and copied in; the per-delivery ones (remaining
/// message expiry [MQTT-3.3.2-6], subscription identifiers [MQTT-3.3.4-3]) are appended.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPublish<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    /// `None` for QoS 0.
    pub packet_id: Option<u16>,
    /// Encoded forwarded properties, without the length prefix (v5 only).
    pub forwarded_properties: &'a [u8],
    pub message_expiry_interval: Option<u32>,
    pub subscription_identifiers: &'a [u32],
    /// v5 Topic Alias; with an alias already set on this connection, `topic` is empty
    /// [MQTT-3.3.2-12].
    pub topic_alias: Option<u16>,
    pub payload: &'a [u8],
}

impl OutgoingPublish<'_> {
    /// Append the packet to `out`; returns its encoded size.
    pub fn encode(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let properties = if version.is_v5() {
            self.forwarded_properties.len()
                + self.message_expiry_interval.map_or(0, |_| 5)
                + self.topic_alias.map_or(0, |_| 3)
                + self
                    .subscription_identifiers
                    .iter()
                    .map(|s| 1 + varint_len(*s as usize))
                    .sum::<usize>()
        } else {
            0
        };
        let remaining = field_len(self.topic.as_bytes())
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + if version.is_v5() {
                varint_len(properties) + properties
            } else {
                0
            }
            + self.payload.len();
        let total = 1 + varint_len(remaining) + remaining;
        out.reserve(total);
        out.put_u8(
            (3 << 4) | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain),
        );
        write_varint(out, remaining)?;
        write_string(out, self.topic)?;
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id.unwrap_or(0));
        }
        if version.is_v5() {
            write_varint(out, properties)?;
            out.put_slice(self.forwarded_properties);
            if let Some(expiry) = self.message_expiry_interval {
                out.put_u8(id::MESSAGE_EXPIRY_INTERVAL);
                out.put_u32(expiry);
            }
            if let Some(alias) = self.topic_alias {
                out.put_u8(id::TOPIC_ALIAS);
                out.put_u16(alias);
            }
            for sid in self.subscription_identifiers {
                out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
                write_varint(out, *sid as usize)?;
            }
        }
        out.put_slice(self.payload);
        Ok(total)
    }
}
