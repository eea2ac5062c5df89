use crate::{Properties, ReasonCode};

/// DISCONNECT ([MQTT-3.14]). v3: no body (remaining length must be 0). v5: reason code and
/// properties may be omitted when the reason is Normal disconnection (remaining length 0);
/// encode uses that short form when possible.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason: ReasonCode,
    /// Property context `Disconnect`. A Session Expiry Interval here is only valid if the
    /// CONNECT's was non-zero (checked by the session).
    pub properties: Properties,
}

use bytes::{BufMut, Bytes, BytesMut};

use crate::primitives::read_u8;
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, ProtocolVersion};

impl Disconnect {
    pub(crate) fn decode(
        mut buf: Bytes,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        let mut d = Disconnect::default();
        if !version.is_v5() {
            if !buf.is_empty() {
                return Err(DecodeError::malformed(
                    "[MQTT-3.14.1]",
                    "v3 DISCONNECT with a body",
                ));
            }
            return Ok(d);
        }
        if !buf.is_empty() {
            d.reason = ReasonCode(read_u8(&mut buf)?);
        }
        if !buf.is_empty() {
            d.properties = Properties::decode(&mut buf, PropertyContext::Disconnect)?;
        }
        if !buf.is_empty() {
            return Err(DecodeError::malformed(
                "[MQTT-3.14]",
                "bytes after the DISCONNECT",
            ));
        }
        Ok(d)
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 0;
        }
        // The short form `E0 01 rc` (no Property Length) is valid [MQTT-3.14.2.2.1], but
        // rumqttc 0.24, paho.golang and rust-mqtt fail to parse it; `E0 02 rc 00` is equally
        // valid and understood by every client, so the Property Length is always written.
        if self.reason == ReasonCode::NormalDisconnection && self.properties.is_empty() {
            0
        } else {
            1 + self.properties.encoded_len()
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let len = self.remaining_len(version);
        if len >= 1 {
            out.put_u8(self.reason.0);
        }
        if len > 1 {
            self.properties.encode(out)?;
        }
        Ok(())
    }
}
