//! The packet model: one enum over the 15 MQTT control packets, one file per packet.
//!
//! Field conventions: strings are `ByteString` (UTF-8 validated on decode, no U+0000
//! [MQTT-1.5.4-2], no surrogates [MQTT-1.5.4-1]); binary fields and payloads are `Bytes`;
//! packet identifiers are `u16` and never 0 once decoded [MQTT-2.2.1-3]; `properties` is
//! ignored on encode and left default on decode for protocol levels 3 and 4.

use bytes::{BufMut, BytesMut};

use crate::primitives::{varint_len, write_varint};
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
pub use publish::{OutgoingPublish, Publish};
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
        if matches!(self, Packet::Auth(_)) && !version.is_v5() {
            return Ok(());
        }
        let remaining = self.remaining_len(version);
        out.reserve(1 + varint_len(remaining) + remaining);
        out.put_u8(((self.packet_type() as u8) << 4) | self.flags());
        write_varint(out, remaining)?;
        match self {
            Packet::Connect(c) => c.write(out),
            Packet::ConnAck(c) => c.write(version, out),
            Packet::Publish(p) => p.write(version, out),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                r.write(version, out)
            }
            Packet::Subscribe(s) => s.write(version, out),
            Packet::SubAck(s) => s.write(version, out),
            Packet::Unsubscribe(u) => u.write(version, out),
            Packet::UnsubAck(u) => u.write(version, out),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(d) => d.write(version, out),
            Packet::Auth(a) => a.write(out),
        }
    }

    /// Size of the whole encoded packet (fixed header included) for `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.remaining_len(version);
        1 + varint_len(remaining) + remaining
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.remaining_len(),
            Packet::ConnAck(c) => c.remaining_len(version),
            Packet::Publish(p) => p.remaining_len(version),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                r.remaining_len(version)
            }
            Packet::Subscribe(s) => s.remaining_len(version),
            Packet::SubAck(s) => s.remaining_len(version),
            Packet::Unsubscribe(u) => u.remaining_len(version),
            Packet::UnsubAck(u) => u.remaining_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.remaining_len(version),
            Packet::Auth(a) => a.remaining_len(),
        }
    }

    /// The fixed header's flag nibble [MQTT-2.1.3].
    fn flags(&self) -> u8 {
        match self {
            Packet::Publish(p) => p.flags(),
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        }
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
    let kind = header.packet_type;
    if kind == PacketType::Connect as u8 {
        if version.is_some() {
            return Err(DecodeError::protocol("[MQTT-3.1.0-2]", "second CONNECT"));
        }
        check_flags(header.flags, 0)?;
        return Ok(Packet::Connect(Box::new(Connect::decode(body)?)));
    }
    let Some(version) = version else {
        return Err(DecodeError::protocol(
            "[MQTT-3.1.0-1]",
            "first packet is not CONNECT",
        ));
    };
    let empty = |p: Packet| {
        if body.is_empty() {
            Ok(p)
        } else {
            Err(DecodeError::malformed(
                "[MQTT-3.12.1]",
                "PINGREQ/PINGRESP with a body",
            ))
        }
    };
    match kind {
        2 => check_flags(header.flags, 0)
            .and_then(|_| ConnAck::decode(body, version).map(Packet::ConnAck)),
        3 => Publish::decode(header.flags, body, version).map(Packet::Publish),
        4 => check_flags(header.flags, 0).and_then(|_| {
            PubResponse::decode(PacketType::PubAck, body, version).map(Packet::PubAck)
        }),
        5 => check_flags(header.flags, 0).and_then(|_| {
            PubResponse::decode(PacketType::PubRec, body, version).map(Packet::PubRec)
        }),
        6 => check_flags(header.flags, 0b0010).and_then(|_| {
            PubResponse::decode(PacketType::PubRel, body, version).map(Packet::PubRel)
        }),
        7 => check_flags(header.flags, 0).and_then(|_| {
            PubResponse::decode(PacketType::PubComp, body, version).map(Packet::PubComp)
        }),
        8 => check_flags(header.flags, 0b0010)
            .and_then(|_| Subscribe::decode(body, version).map(Packet::Subscribe)),
        9 => check_flags(header.flags, 0)
            .and_then(|_| SubAck::decode(body, version).map(Packet::SubAck)),
        10 => check_flags(header.flags, 0b0010)
            .and_then(|_| Unsubscribe::decode(body, version).map(Packet::Unsubscribe)),
        11 => check_flags(header.flags, 0)
            .and_then(|_| UnsubAck::decode(body, version).map(Packet::UnsubAck)),
        12 => check_flags(header.flags, 0).and_then(|_| empty(Packet::PingReq)),
        13 => check_flags(header.flags, 0).and_then(|_| empty(Packet::PingResp)),
        14 => check_flags(header.flags, 0)
            .and_then(|_| Disconnect::decode(body, version).map(Packet::Disconnect)),
        15 if version.is_v5() => {
            check_flags(header.flags, 0).and_then(|_| Auth::decode(body).map(Packet::Auth))
        }
        15 => Err(DecodeError::malformed(
            "[MQTT-2.1.2]",
            "AUTH is not an MQTT 3 packet",
        )),
        _ => Err(DecodeError::malformed(
            "[MQTT-2.1.2]",
            "reserved packet type 0",
        )),
    }
}

/// Flag bits other than PUBLISH's are fixed [MQTT-2.1.3-1].
fn check_flags(flags: u8, expected: u8) -> Result<(), DecodeError> {
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::malformed(
            "[MQTT-2.1.3-1]",
            "reserved fixed-header flags are wrong",
        ))
    }
}
