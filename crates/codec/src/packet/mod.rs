//! The packet model: one enum over the 15 MQTT control packets, one file per packet.
//!
//! Field conventions: strings are `ByteString` (UTF-8 validated on decode, no U+0000
//! [MQTT-1.5.4-2], no surrogates [MQTT-1.5.4-1]); binary fields and payloads are `Bytes`;
//! packet identifiers are `u16` and never 0 once decoded [MQTT-2.2.1-3]; `properties` is
//! ignored on encode and left default on decode for protocol levels 3 and 4.

use bytes::BytesMut;

use crate::{DecodeError, EncodeError};

mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod pubresponse;
mod subscribe;
mod unsubscribe;

pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::Publish;
pub use pubresponse::PubResponse;
pub use subscribe::{RetainHandling, SubAck, Subscribe, SubscriptionOptions};
pub use unsubscribe::{UnsubAck, Unsubscribe};

/// Protocol level from CONNECT ([MQTT-3.1.2.2]): 3 = MQTT 3.1 ("MQIsdp"), 4 = 3.1.1
/// ("MQTT"), 5 = 5.0 ("MQTT").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    V3_1 = 3,
    V3_1_1 = 4,
    V5 = 5,
}

impl ProtocolVersion {
    pub const fn is_v5(self) -> bool {
        matches!(self, ProtocolVersion::V5)
    }
}

/// Quality of service. QoS 3 is a Malformed Packet [MQTT-3.3.1-4].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3 and above.
    pub const fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Control packet types ([MQTT-2.1.2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

/// One MQTT control packet, any protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Append this packet's wire form for `version` to `out`. v3 forms omit properties,
    /// reason codes the v3 packet has no room for, and AUTH (an `EncodeError` is not used for
    /// that: encoding AUTH for v3 is a caller bug and writes nothing).
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        todo!("codec helper")
    }
}

/// Decode-side view of the fixed header: packet type nibble, flags nibble, remaining length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: u8,
    pub flags: u8,
    pub remaining_length: u32,
}

/// Decode one packet body. `header` has been read and `body` holds exactly
/// `remaining_length` bytes. `version` is `None` only for the first packet of a connection,
/// which must be CONNECT [MQTT-3.1.0-1] (the CONNECT decoder reads the version itself).
pub fn decode_body(
    header: FixedHeader,
    body: bytes::Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Packet, DecodeError> {
    let _ = (header, body, version);
    todo!("codec helper")
}
