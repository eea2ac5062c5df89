use crate::{Properties, ReasonCode};

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape ([MQTT-3.4] to [MQTT-3.7]). PUBREL's
/// fixed header flags must be 0b0010 [MQTT-3.6.1-1], the others 0. In v5 the reason code and
/// properties may be omitted on the wire when the reason is Success and there are no
/// properties (remaining length 2) [MQTT-3.4.2.1]; encode uses that short form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: u16,
    pub reason: ReasonCode,
    /// Property context `PubResponse`: reason string and user properties.
    pub properties: Properties,
}

impl PubResponse {
    /// A success response with no properties.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }
    }
}

use bytes::{BufMut, Bytes, BytesMut};

use crate::primitives::{read_u16, read_u8};
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, PacketType, ProtocolVersion};

impl PubResponse {
    pub(crate) fn decode(
        kind: PacketType,
        mut buf: Bytes,
        version: ProtocolVersion,
    ) -> Result<PubResponse, DecodeError> {
        let packet_id = read_u16(&mut buf)?;
        if packet_id == 0 {
            return Err(DecodeError::malformed(
                "[MQTT-2.2.1-3]",
                "packet identifier 0",
            ));
        }
        let mut response = PubResponse::new(packet_id);
        if version.is_v5() {
            if !buf.is_empty() {
                response.reason = ReasonCode(read_u8(&mut buf)?);
                let valid = match kind {
                    PacketType::PubRel | PacketType::PubComp => {
                        matches!(response.reason.0, 0x00 | 0x92)
                    }
                    _ => matches!(
                        response.reason.0,
                        0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
                    ),
                };
                if !valid {
                    return Err(DecodeError::malformed(
                        "[MQTT-3.4.2.1]",
                        "reason code not allowed in this acknowledgement",
                    ));
                }
            }
            if !buf.is_empty() {
                response.properties = Properties::decode(&mut buf, PropertyContext::PubResponse)?;
            }
        }
        if !buf.is_empty() {
            return Err(DecodeError::malformed(
                "[MQTT-3.4]",
                "bytes after the acknowledgement",
            ));
        }
        Ok(response)
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 2;
        }
        match (
            self.reason == ReasonCode::Success,
            self.properties.is_empty(),
        ) {
            (true, true) => 2,
            (_, true) => 3,
            _ => 3 + self.properties.encoded_len(),
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id);
        let len = self.remaining_len(version);
        if len >= 3 {
            out.put_u8(self.reason.0);
        }
        if len > 3 {
            self.properties.encode(out)?;
        }
        Ok(())
    }
}
