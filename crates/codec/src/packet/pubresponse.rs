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
        Self { packet_id, reason: ReasonCode::Success, properties: Properties::default() }
    }
}
