use bytestring::ByteString;

use crate::{Properties, ReasonCode};

/// UNSUBSCRIBE ([MQTT-3.10]). Flags must be 0b0010 [MQTT-3.10.1-1]; at least one filter
/// [MQTT-3.10.3-2].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub properties: Properties,
    pub filters: Vec<ByteString>,
}

/// UNSUBACK ([MQTT-3.11]). v3 has no reason codes: `reasons` is empty on decode and not
/// written on encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reasons: Vec<ReasonCode>,
}

use bytes::{BufMut, Bytes, BytesMut};

use crate::primitives::{field_len, read_string, read_u16, write_string};
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, ProtocolVersion};

impl Unsubscribe {
    pub(crate) fn decode(
        mut buf: Bytes,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let packet_id = read_u16(&mut buf)?;
        if packet_id == 0 {
            return Err(DecodeError::malformed(
                "[MQTT-2.2.1-3]",
                "packet identifier 0",
            ));
        }
        let properties = if version.is_v5() {
            Properties::decode(&mut buf, PropertyContext::Unsubscribe)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while !buf.is_empty() {
            filters.push(read_string(&mut buf)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::protocol(
                "[MQTT-3.10.3-2]",
                "UNSUBSCRIBE without a topic filter",
            ));
        }
        Ok(Unsubscribe {
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
            .map(|f| field_len(f.as_bytes()))
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
        for f in &self.filters {
            write_string(out, f)?;
        }
        Ok(())
    }
}

impl UnsubAck {
    pub(crate) fn decode(
        mut buf: Bytes,
        version: ProtocolVersion,
    ) -> Result<UnsubAck, DecodeError> {
        let packet_id = read_u16(&mut buf)?;
        let (properties, reasons) = if version.is_v5() {
            let p = Properties::decode(&mut buf, PropertyContext::UnsubAck)?;
            let reasons: Vec<ReasonCode> = buf.iter().map(|b| ReasonCode(*b)).collect();
            if !reasons
                .iter()
                .all(|r| matches!(r.0, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91))
            {
                return Err(DecodeError::malformed(
                    "[MQTT-3.11.3]",
                    "UNSUBACK reason code not allowed",
                ));
            }
            (p, reasons)
        } else {
            if !buf.is_empty() {
                return Err(DecodeError::malformed(
                    "[MQTT-3.11]",
                    "bytes after the UNSUBACK",
                ));
            }
            (Properties::default(), Vec::new())
        };
        Ok(UnsubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.encoded_len() + self.reasons.len()
        } else {
            0
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id);
        if version.is_v5() {
            self.properties.encode(out)?;
            for r in &self.reasons {
                out.put_u8(r.0);
            }
        }
        Ok(())
    }
}
