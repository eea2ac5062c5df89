use bytestring::ByteString;

use crate::{Properties, QoS, ReasonCode};

/// SUBSCRIBE ([MQTT-3.8]). Fixed header flags must be 0b0010 [MQTT-3.8.1-1]; at least one
/// filter [MQTT-3.8.3-3]; each filter is a valid UTF-8 topic filter (wildcard placement is
/// checked by the broker core, which answers per filter with 0x8F in SUBACK rather than
/// closing). In v3 the options byte's bits 7-2 are reserved and must be 0 [MQTT-3-8.3-4];
/// in v5 bits 7-6 must be 0 and retain handling 3 is a Protocol Error [MQTT-3.8.3-5].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// Property context `Subscribe`: at most one subscription identifier, user properties.
    pub properties: Properties,
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// The subscription options byte ([MQTT-3.8.3.1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent for a new subscription ([MQTT-3.8.3.1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe = 0,
    /// 1: send only if the subscription does not currently exist.
    SendIfNew = 1,
    /// 2: do not send.
    DoNotSend = 2,
}

/// SUBACK ([MQTT-3.9]): one reason code per filter, in order. v3 writes 0x00/0x01/0x02 or
/// 0x80 for any failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reasons: Vec<ReasonCode>,
}
