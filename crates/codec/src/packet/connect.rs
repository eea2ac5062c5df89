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
