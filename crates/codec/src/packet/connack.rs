use crate::{Properties, ReasonCode};

/// CONNACK ([MQTT-3.2]). For v3 the reason code is written as
/// [`ReasonCode::to_v3_connack`]; on decode of v3 it is mapped back (0 → Success, 1 → 0x84,
/// 2 → 0x85, 3 → 0x88, 4 → 0x86, 5 → 0x87). Acknowledge flags bits 7-1 are reserved and
/// must be 0 [MQTT-3.2.2-1].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: Properties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::Success
    }
}

use bytes::{BufMut, Bytes, BytesMut};

use crate::primitives::read_u8;
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, ProtocolVersion};

impl ConnAck {
    pub(crate) fn decode(mut buf: Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = read_u8(&mut buf)?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::malformed(
                "[MQTT-3.2.2-1]",
                "CONNACK reserved flags set",
            ));
        }
        let code = read_u8(&mut buf)?;
        let (reason, properties) = if version.is_v5() {
            (
                ReasonCode(code),
                Properties::decode(&mut buf, PropertyContext::ConnAck)?,
            )
        } else {
            let reason = match code {
                0 => ReasonCode::Success,
                1 => ReasonCode::UnsupportedProtocolVersion,
                2 => ReasonCode::ClientIdentifierNotValid,
                3 => ReasonCode::ServerUnavailable,
                4 => ReasonCode::BadUserNameOrPassword,
                5 => ReasonCode::NotAuthorized,
                _ => {
                    return Err(DecodeError::malformed(
                        "[MQTT-3.2.2.3]",
                        "unknown CONNACK return code",
                    ))
                }
            };
            (reason, Properties::default())
        };
        if !buf.is_empty() {
            return Err(DecodeError::malformed(
                "[MQTT-3.2]",
                "bytes after the CONNACK",
            ));
        }
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            reason,
            properties,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u8(u8::from(self.session_present));
        if version.is_v5() {
            out.put_u8(self.reason.0);
            self.properties.encode(out)?;
        } else {
            out.put_u8(self.reason.to_v3_connack());
        }
        Ok(())
    }
}
