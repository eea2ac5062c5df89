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
