use bytes::Bytes;
use bytestring::ByteString;

use crate::{Properties, ProtocolVersion, QoS};

/// CONNECT ([MQTT-3.1]). Protocol name "MQIsdp" for level 3, "MQTT" for 4 and 5; any other
/// name or level is an error with reason `UnsupportedProtocolVersion` (the broker answers with
/// CONNACK 0x84 / return code 1 then closes). The reserved flag bit must be 0 [MQTT-3.1.2-3];
/// will QoS 3, will flags set without the will flag, password without username in 3.1.1
/// [MQTT-3.1.2-22] are Malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol_version: ProtocolVersion,
    pub clean_start: bool,
    pub keep_alive: u16,
    /// Property context `Connect`.
    pub properties: Properties,
    /// May be empty (the broker assigns one or rejects, by version).
    pub client_id: ByteString,
    pub last_will: Option<LastWill>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
}

/// The will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Validated as a topic name (no wildcards, non-empty) [MQTT-3.1.3-11].
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Property context `Will` (v5 only).
    pub properties: Properties,
}

use bytes::{BufMut, BytesMut};

use crate::primitives::{
    field_len, read_binary, read_string, read_u16, read_u8, write_binary, write_string,
};
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, ReasonCode};

const UNSUPPORTED: DecodeError = DecodeError::with_reason(
    ReasonCode::UnsupportedProtocolVersion,
    "[MQTT-3.1.2-2]",
    "unsupported protocol name or level",
);

impl Connect {
    pub(crate) fn decode(mut buf: Bytes) -> Result<Connect, DecodeError> {
        let name = read_binary(&mut buf)?;
        let level = read_u8(&mut buf)?;
        let protocol_version = match (&name[..], level) {
            (b"MQTT", 4) => ProtocolVersion::V3_1_1,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V3_1,
            _ => return Err(UNSUPPORTED),
        };
        let flags = read_u8(&mut buf)?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::malformed(
                "[MQTT-3.1.2-3]",
                "CONNECT reserved flag is set",
            ));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        if will_qos == 3 {
            return Err(DecodeError::malformed("[MQTT-3.1.2-14]", "will QoS 3"));
        }
        if !will_flag && (will_qos != 0 || will_retain) {
            return Err(DecodeError::malformed(
                "[MQTT-3.1.2-13]",
                "will QoS or retain set without the will flag",
            ));
        }
        if password_flag && !username_flag && protocol_version != ProtocolVersion::V5 {
            return Err(DecodeError::malformed(
                "[MQTT-3.1.2-22]",
                "password flag without user name flag",
            ));
        }
        let keep_alive = read_u16(&mut buf)?;
        let properties = if protocol_version.is_v5() {
            Properties::decode(&mut buf, PropertyContext::Connect)?
        } else {
            Properties::default()
        };
        let client_id = read_string(&mut buf)?;
        let last_will = if will_flag {
            let properties = if protocol_version.is_v5() {
                Properties::decode(&mut buf, PropertyContext::Will)?
            } else {
                Properties::default()
            };
            let topic = read_string(&mut buf)?;
            if topic.is_empty() || topic.contains(['+', '#']) {
                return Err(DecodeError::with_reason(
                    ReasonCode::TopicNameInvalid,
                    "[MQTT-3.1.3-11]",
                    "will topic is not a valid topic name",
                ));
            }
            let payload = read_binary(&mut buf)?;
            super::publish::check_payload_format(&properties, &payload)?;
            Some(LastWill {
                topic,
                payload,
                qos: QoS::from_u8(will_qos).unwrap_or_default(),
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if username_flag {
            Some(read_string(&mut buf)?)
        } else {
            None
        };
        let password = if password_flag {
            Some(read_binary(&mut buf)?)
        } else {
            None
        };
        if !buf.is_empty() {
            return Err(DecodeError::malformed(
                "[MQTT-3.1.3]",
                "bytes after the CONNECT payload",
            ));
        }
        Ok(Connect {
            protocol_version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            last_will,
            username,
            password,
        })
    }

    fn name_and_level(&self) -> (&'static [u8], u8) {
        match self.protocol_version {
            ProtocolVersion::V3_1 => (b"MQIsdp", 3),
            ProtocolVersion::V3_1_1 => (b"MQTT", 4),
            ProtocolVersion::V5 => (b"MQTT", 5),
        }
    }

    pub(crate) fn remaining_len(&self) -> usize {
        let v5 = self.protocol_version.is_v5();
        let (name, _) = self.name_and_level();
        let mut len = field_len(name) + 1 + 1 + 2 + field_len(self.client_id.as_bytes());
        if v5 {
            len += self.properties.encoded_len();
        }
        if let Some(w) = &self.last_will {
            len += field_len(w.topic.as_bytes()) + field_len(&w.payload);
            if v5 {
                len += w.properties.encoded_len();
            }
        }
        len += self
            .username
            .as_ref()
            .map_or(0, |u| field_len(u.as_bytes()));
        len += self.password.as_ref().map_or(0, |p| field_len(p));
        len
    }

    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol_version.is_v5();
        let (name, level) = self.name_and_level();
        write_binary(out, name)?;
        out.put_u8(level);
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.last_will {
            flags |= 0x04 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        out.put_u8(flags);
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(out)?;
        }
        write_string(out, &self.client_id)?;
        if let Some(w) = &self.last_will {
            if v5 {
                w.properties.encode(out)?;
            }
            write_string(out, &w.topic)?;
            write_binary(out, &w.payload)?;
        }
        if let Some(u) = &self.username {
            write_string(out, u)?;
        }
        if let Some(p) = &self.password {
            write_binary(out, p)?;
        }
        Ok(())
    }
}
