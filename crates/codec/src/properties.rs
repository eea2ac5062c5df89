//! MQTT 5 properties ([MQTT-2.2.2]). One struct holds every property; which ones a packet may
//! carry is checked on decode against [`PropertyContext`] ("property not allowed in that
//! packet" and "property included more than once" are both Protocol Errors, 0x82).
//! On v3 connections properties are neither decoded nor encoded.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::DecodeError;

/// Property identifiers ([MQTT-2.2.2.2] table 2-4).
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Where a property block sits; decides which identifiers are allowed ([MQTT-2.2.2.2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Every MQTT 5 property. `None`/empty means absent. Decoding fills only the properties the
/// context allows; encoding writes whatever is set (callers set only valid ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    /// Several in a PUBLISH (one per matching subscription), at most one in a SUBSCRIBE.
    /// Each is 1..=268,435,455; 0 is a Protocol Error [MQTT-3.8.2.1.2].
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteString>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteString>,
    pub server_reference: Option<ByteString>,
    pub reason_string: Option<ByteString>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// Order is preserved and repeats are allowed [MQTT-3.3.2-18].
    pub user_properties: Vec<(ByteString, ByteString)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set (encodes as a single 0x00 length byte).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Decode a property block (length prefix included) from the front of `buf`, enforcing
    /// the allow-list for `ctx`, duplicate rules, value ranges (e.g. Receive Maximum 0,
    /// Maximum Packet Size 0, Topic Alias 0, byte-valued booleans other than 0/1 are
    /// Protocol Errors) and UTF-8 rules.
    pub fn decode(buf: &mut Bytes, ctx: PropertyContext) -> Result<Self, DecodeError> {
        todo!("codec helper")
    }

    /// Encode as a property block: variable-byte-integer length, then each property.
    pub fn encode(&self, out: &mut BytesMut) {
        todo!("codec helper")
    }

    /// Bytes `encode` will write, including the length prefix.
    pub fn encoded_len(&self) -> usize {
        todo!("codec helper")
    }
}
