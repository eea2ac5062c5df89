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
