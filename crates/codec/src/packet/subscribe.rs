use bytestring::ByteString;

use crate::{Properties, QoS, ReasonCode};

/// SUBSCRIBE ([MQTT-3.8]). Fixed header flags must be 0b0010 [MQTT-3.8.1-1]; at least one
/// filter [MQTT-3.8.3-3]; each filter is a valid UTF-8 topic filter (wildcard placement is
/// checked by the broker core, which answers per filter with 0x8F in SUBACK rather than
/// closing). In v3 the options byte's bits 7-2 are reserved and must be 0 [MQTT-3-8.3-4];
/// in v5 bits 7-6 must be 0 and retain handling 3 is a Protocol Error [MQTT-3.8.3-5].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// Property context `Subscribe`: at most one subscription identifier, user properties.
    pub properties: Properties,
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// The subscription options byte ([MQTT-3.8.3.1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent for a new subscription ([MQTT-3.8.3.1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe = 0,
    /// 1: send only if the subscription does not currently exist.
    SendIfNew = 1,
    /// 2: do not send.
    DoNotSend = 2,
}

/// SUBACK ([MQTT-3.9]): one reason code per filter, in order. v3 writes 0x00/0x01/0x02 or
/// 0x80 for any failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reasons: Vec<ReasonCode>,
}

use bytes::{BufMut, Bytes, BytesMut};

use crate::primitives::{field_len, read_string, read_u16, read_u8, write_string};
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, ProtocolVersion};

impl SubscriptionOptions {
    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() && byte & 0xFC != 0 {
            return Err(DecodeError::malformed(
                "[MQTT-3-8.3-4]",
                "reserved subscription option bits set",
            ));
        }
        if byte & 0xC0 != 0 {
            return Err(DecodeError::malformed(
                "[MQTT-3.8.3-5]",
                "reserved subscription option bits set",
            ));
        }
        // QoS 3 is a Protocol Error in 5.0 [MQTT-3.8.3.1], a malformed option byte in 3.1.1.
        let qos = QoS::from_u8(byte & 0x03).ok_or(if version.is_v5() {
            DecodeError::protocol("[MQTT-3.8.3.1]", "subscription QoS 3")
        } else {
            DecodeError::malformed("[MQTT-3-8.3-4]", "subscription QoS 3")
        })?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::protocol("[MQTT-3.8.3-5]", "retain handling 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            b |= (u8::from(self.no_local) << 2)
                | (u8::from(self.retain_as_published) << 3)
                | ((self.retain_handling as u8) << 4);
        }
        b
    }
}

impl Subscribe {
    pub(crate) fn decode(
        mut buf: Bytes,
        version: ProtocolVersion,
    ) -> Result<Subscribe, DecodeError> {
        let packet_id = read_u16(&mut buf)?;
        if packet_id == 0 {
            return Err(DecodeError::malformed(
                "[MQTT-2.2.1-3]",
                "packet identifier 0",
            ));
        }
        let properties = if version.is_v5() {
            Properties::decode(&mut buf, PropertyContext::Subscribe)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while !buf.is_empty() {
            let filter = read_string(&mut buf)?;
            let options = SubscriptionOptions::decode(read_u8(&mut buf)?, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::protocol(
                "[MQTT-3.8.3-3]",
                "SUBSCRIBE without a topic filter",
            ));
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        } + self
            .filters
            .iter()
            .map(|(f, _)| field_len(f.as_bytes()) + 1)
            .sum::<usize>()
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        for (filter, options) in &self.filters {
            write_string(out, filter)?;
            out.put_u8(options.to_byte(version));
        }
        Ok(())
    }
}

impl SubAck {
    pub(crate) fn decode(mut buf: Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = read_u16(&mut buf)?;
        let properties = if version.is_v5() {
            Properties::decode(&mut buf, PropertyContext::SubAck)?
        } else {
            Properties::default()
        };
        let reasons: Vec<ReasonCode> = buf.iter().map(|b| ReasonCode(*b)).collect();
        if reasons.is_empty() {
            return Err(DecodeError::protocol(
                "[MQTT-3.9.3]",
                "SUBACK without reason codes",
            ));
        }
        let valid = |r: &ReasonCode| match version {
            ProtocolVersion::V5 => {
                matches!(
                    r.0,
                    0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
                )
            }
            _ => matches!(r.0, 0x00..=0x02 | 0x80),
        };
        if !reasons.iter().all(valid) {
            return Err(DecodeError::malformed(
                "[MQTT-3.9.3]",
                "SUBACK reason code not allowed",
            ));
        }
        Ok(SubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        } + self.reasons.len()
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        for r in &self.reasons {
            // v3 has only granted QoS 0-2 and 0x80 Failure [MQTT-3.9.3].
            out.put_u8(if version.is_v5() || r.0 <= 2 {
                r.0
            } else {
                0x80
            });
        }
        Ok(())
    }
}
