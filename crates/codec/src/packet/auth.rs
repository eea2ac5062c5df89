use crate::{Properties, ReasonCode};

/// AUTH ([MQTT-3.15]), v5 only: decoding AUTH on a v3 connection is a Malformed Packet.
/// Reason 0x00 Success, 0x18 Continue authentication or 0x19 Re-authenticate; anything else is
/// a Protocol Error. Remaining length 0 means Success with no properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Properties,
}

use bytes::{BufMut, Bytes, BytesMut};

use crate::primitives::read_u8;
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError};

impl Auth {
    pub(crate) fn decode(mut buf: Bytes) -> Result<Auth, DecodeError> {
        let mut a = Auth::default();
        if buf.is_empty() {
            return Ok(a);
        }
        a.reason = ReasonCode(read_u8(&mut buf)?);
        if !matches!(a.reason.0, 0x00 | 0x18 | 0x19) {
            return Err(DecodeError::protocol(
                "[MQTT-3.15.2-1]",
                "AUTH reason code not allowed",
            ));
        }
        if !buf.is_empty() {
            a.properties = Properties::decode(&mut buf, PropertyContext::Auth)?;
        }
        if !buf.is_empty() {
            return Err(DecodeError::malformed(
                "[MQTT-3.15]",
                "bytes after the AUTH",
            ));
        }
        Ok(a)
    }

    pub(crate) fn remaining_len(&self) -> usize {
        if self.reason == ReasonCode::Success && self.properties.is_empty() {
            0
        } else {
            1 + self.properties.encoded_len()
        }
    }

    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.remaining_len() > 0 {
            out.put_u8(self.reason.0);
            self.properties.encode(out)?;
        }
        Ok(())
    }
}
