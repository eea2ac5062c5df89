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
