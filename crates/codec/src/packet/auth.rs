use crate::{Properties, ReasonCode};

/// AUTH ([MQTT-3.15]), v5 only: decoding AUTH on a v3 connection is a Malformed Packet.
/// Reason 0x00 Success, 0x18 Continue authentication or 0x19 Re-authenticate; anything else is
/// a Protocol Error. Remaining length 0 means Success with no properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Properties,
}
