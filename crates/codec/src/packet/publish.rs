use bytes::Bytes;
use bytestring::ByteString;

use crate::{Properties, QoS};

/// PUBLISH ([MQTT-3.3]). The topic is a topic name: no `+`/`#` [MQTT-3.3.2-2], may be empty
/// only in v5 with a Topic Alias property (checked by the session, which knows the aliases);
/// an empty topic in v3 is a Protocol Error. QoS 0 with DUP set is Malformed [MQTT-3.3.1-2];
/// QoS 3 is Malformed [MQTT-3.3.1-4]; packet id 0 with QoS > 0 is Malformed [MQTT-2.2.1-3].
/// A Payload Format Indicator of 1 with a payload that is not UTF-8 is `PayloadFormatInvalid`
/// (0x99) [MQTT-3.3.2-4].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: ByteString,
    /// `None` for QoS 0; `Some(non-zero)` otherwise.
    pub packet_id: Option<u16>,
    /// Property context `Publish`.
    pub properties: Properties,
    pub payload: Bytes,
}
