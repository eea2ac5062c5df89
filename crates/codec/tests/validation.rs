//! One test per malformed-packet / protocol-error rule: hand-built bytes in, the exact
//! `DecodeError` (rule id and reason code) out.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use bytes::BytesMut;

use edgemq_codec::*;

/// Decode `bytes` after a CONNECT of `version` (or as the first packet when `None`).
fn decode(version: Option<ProtocolVersion>, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut d = Decoder::new(1 << 20);
    d.version = version;
    d.decode(&mut BytesMut::from(bytes))
}

fn err(version: Option<ProtocolVersion>, bytes: &[u8]) -> DecodeError {
    decode(version, bytes).expect_err("must be rejected")
}

const V4: Option<ProtocolVersion> = Some(ProtocolVersion::V3_1_1);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);

fn assert_rule(e: DecodeError, rule: &str, reason: ReasonCode) {
    assert_eq!((e.rule, e.reason), (rule, reason), "{e}");
}

#[test]
fn remaining_length_over_four_bytes() {
    assert_rule(
        err(V4, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        "[MQTT-1.5.5]",
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn packet_too_large_is_refused_from_the_header_alone() {
    let mut d = Decoder::new(100);
    d.version = V4;
    // Only the fixed header of a 2 MB packet has arrived.
    let e = d
        .decode(&mut BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]))
        .unwrap_err();
    assert_rule(e, "[MQTT-3.2.2-15]", ReasonCode::PacketTooLarge);
}

#[test]
fn claimed_length_does_not_reserve_memory() {
    let mut d = Decoder::new(u32::MAX);
    d.version = V4;
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert!(
        buf.capacity() < 1 << 20,
        "reserved {} bytes for a claimed 256 MB",
        buf.capacity()
    );
}

#[test]
fn reserved_flags() {
    for bytes in [
        &[0x41, 2, 0, 1][..],                // PUBACK
        &[0x60, 2, 0, 1][..],                // PUBREL must be 0010
        &[0x80, 6, 0, 1, 0, 1, b'a', 0][..], // SUBSCRIBE must be 0010
        &[0xA0, 5, 0, 1, 0, 1, b'a'][..],    // UNSUBSCRIBE must be 0010
        &[0xC1, 0][..],                      // PINGREQ
        &[0xE2, 0][..],                      // DISCONNECT
    ] {
        assert_rule(
            err(V4, bytes),
            "[MQTT-2.1.3-1]",
            ReasonCode::MalformedPacket,
        );
    }
}

#[test]
fn packet_type_zero_and_auth_on_v3() {
    assert_eq!(err(V4, &[0x00, 0]).reason, ReasonCode::MalformedPacket);
    assert_eq!(err(V4, &[0xF0, 0]).reason, ReasonCode::MalformedPacket);
    assert!(decode(V5, &[0xF0, 0]).unwrap().is_some());
}

#[test]
fn first_packet_must_be_connect_and_only_once() {
    assert_rule(
        err(None, &[0xC0, 0]),
        "[MQTT-3.1.0-1]",
        ReasonCode::ProtocolError,
    );
    let connect = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c',
    ];
    assert_rule(
        err(V4, &connect),
        "[MQTT-3.1.0-2]",
        ReasonCode::ProtocolError,
    );
}

#[test]
fn connect_rules() {
    let c = |name: &[u8], level: u8, flags: u8, rest: &[u8]| {
        let mut v = vec![0x10, 0];
        v.extend_from_slice(&(name.len() as u16).to_be_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(&[level, flags, 0, 60]);
        v.extend_from_slice(rest);
        v[1] = (v.len() - 2) as u8;
        v
    };
    let id = [0, 1, b'c'];
    assert!(decode(None, &c(b"MQTT", 4, 2, &id)).unwrap().is_some());
    assert!(decode(None, &c(b"MQIsdp", 3, 2, &id)).unwrap().is_some());
    for (name, level) in [
        (&b"MQTT"[..], 6u8),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
        (b"MQTX", 4),
    ] {
        assert_rule(
            err(None, &c(name, level, 2, &id)),
            "[MQTT-3.1.2-2]",
            ReasonCode::UnsupportedProtocolVersion,
        );
    }
    assert_rule(
        err(None, &c(b"MQTT", 4, 3, &id)),
        "[MQTT-3.1.2-3]",
        ReasonCode::MalformedPacket,
    );
    // Will QoS 3.
    assert_rule(
        err(None, &c(b"MQTT", 4, 0x1E, &id)),
        "[MQTT-3.1.2-14]",
        ReasonCode::MalformedPacket,
    );
    // Will retain without the will flag.
    assert_rule(
        err(None, &c(b"MQTT", 4, 0x22, &id)),
        "[MQTT-3.1.2-13]",
        ReasonCode::MalformedPacket,
    );
    // Password without user name in 3.1.1 [MQTT-3.1.2-22]; allowed in 5.0.
    assert_rule(
        err(None, &c(b"MQTT", 4, 0x42, &[0, 1, b'c', 0, 1, b'p'])),
        "[MQTT-3.1.2-22]",
        ReasonCode::MalformedPacket,
    );
    assert!(
        decode(None, &c(b"MQTT", 5, 0x42, &[0, 0, 1, b'c', 0, 1, b'p']))
            .unwrap()
            .is_some()
    );
    // Client id with U+0000, and invalid UTF-8.
    assert_rule(
        err(None, &c(b"MQTT", 4, 2, &[0, 2, b'a', 0])),
        "[MQTT-1.5.4-2]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(None, &c(b"MQTT", 4, 2, &[0, 2, 0xC3, 0x28])),
        "[MQTT-1.5.4-1]",
        ReasonCode::MalformedPacket,
    );
    // Will topic with a wildcard.
    let will = [0, 1, b'c', 0, 1, b'#', 0, 0];
    assert_eq!(
        err(None, &c(b"MQTT", 4, 0x06, &will)).reason,
        ReasonCode::TopicNameInvalid
    );
    // Trailing bytes after the payload.
    assert_eq!(
        err(None, &c(b"MQTT", 4, 2, &[0, 1, b'c', 9])).reason,
        ReasonCode::MalformedPacket
    );
    // Field running past the end.
    assert_eq!(
        err(None, &c(b"MQTT", 4, 2, &[0, 5, b'c'])).reason,
        ReasonCode::MalformedPacket
    );
}

#[test]
fn publish_rules() {
    assert_rule(
        err(V4, &[0x36, 5, 0, 1, b't', 0, 1]),
        "[MQTT-3.3.1-4]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V4, &[0x38, 3, 0, 1, b't']),
        "[MQTT-3.3.1-2]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V4, &[0x30, 5, 0, 3, b'a', b'/', b'+']),
        "[MQTT-3.3.2-2]",
        ReasonCode::TopicNameInvalid,
    );
    assert_rule(
        err(V5, &[0x30, 4, 0, 1, b'#', 0]),
        "[MQTT-3.3.2-2]",
        ReasonCode::TopicNameInvalid,
    );
    assert_rule(
        err(V4, &[0x32, 5, 0, 1, b't', 0, 0]),
        "[MQTT-2.2.1-3]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V4, &[0x30, 2, 0, 0]),
        "[MQTT-4.7.3-1]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V5, &[0x30, 3, 0, 0, 0]),
        "[MQTT-3.3.2-1]",
        ReasonCode::ProtocolError,
    );
    assert!(
        decode(V5, &[0x30, 6, 0, 0, 3, 0x23, 0, 1])
            .unwrap()
            .is_some(),
        "empty topic with an alias"
    );
    assert_rule(
        err(V5, &[0x30, 7, 0, 1, b't', 3, 0x23, 0, 0]),
        "[MQTT-3.3.2-8]",
        ReasonCode::TopicAliasInvalid,
    );
    assert_rule(
        err(V4, &[0x30, 4, 0, 2, b'a', 0]),
        "[MQTT-1.5.4-2]",
        ReasonCode::MalformedPacket,
    );
    // PFI = 1 with a payload that is not UTF-8.
    assert_rule(
        err(V5, &[0x30, 7, 0, 1, b't', 2, 0x01, 1, 0xFF]),
        "[MQTT-3.3.2-4]",
        ReasonCode::PayloadFormatInvalid,
    );
}

#[test]
fn property_rules() {
    // Duplicate Message Expiry Interval.
    let dup = [
        0x30, 15, 0, 1, b't', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2, b'x',
    ];
    assert_rule(err(V5, &dup), "[MQTT-2.2.2-2]", ReasonCode::ProtocolError);
    // Session Expiry Interval is not a PUBLISH property.
    assert_rule(
        err(V5, &[0x30, 10, 0, 1, b't', 5, 0x11, 0, 0, 0, 1, b'x']),
        "[MQTT-2.2.2-2]",
        ReasonCode::MalformedPacket,
    );
    // Unknown property identifier.
    assert_rule(
        err(V5, &[0x30, 7, 0, 1, b't', 2, 0x7F, 0, b'x']),
        "[MQTT-2.2.2-2]",
        ReasonCode::MalformedPacket,
    );
    // Property length past the packet.
    assert_eq!(
        err(V5, &[0x30, 5, 0, 1, b't', 9, 0x01]).reason,
        ReasonCode::MalformedPacket
    );
    // User properties may repeat.
    let users = [
        0x30, 19, 0, 1, b't', 14, 0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'v', b'x',
    ];
    let Some(Packet::Publish(p)) = decode(V5, &users).unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.user_properties.len(), 2);
    // Subscription identifier 0 in SUBSCRIBE.
    assert_rule(
        err(V5, &[0x82, 8, 0, 1, 2, 0x0B, 0, 0, 1, b'a', 0]),
        "[MQTT-3.8.2.1.2]",
        ReasonCode::ProtocolError,
    );
    // Two subscription identifiers in one SUBSCRIBE.
    assert_eq!(
        err(V5, &[0x82, 10, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0]).reason,
        ReasonCode::ProtocolError
    );
    // Receive Maximum 0 in CONNECT.
    let c = [
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 3, 0x21, 0, 0, 0, 0,
    ];
    assert_eq!(err(None, &c).reason, ReasonCode::ProtocolError);
    // Request Problem Information 2.
    let c = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 2, 0x17, 2, 0, 0,
    ];
    assert_eq!(err(None, &c).reason, ReasonCode::ProtocolError);
}

#[test]
fn subscribe_rules() {
    assert_rule(
        err(V4, &[0x82, 2, 0, 1]),
        "[MQTT-3.8.3-3]",
        ReasonCode::ProtocolError,
    );
    assert_rule(
        err(V4, &[0x82, 6, 0, 1, 0, 1, b'a', 0x04]),
        "[MQTT-3-8.3-4]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40]),
        "[MQTT-3.8.3-5]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30]),
        "[MQTT-3.8.3-5]",
        ReasonCode::ProtocolError,
    );
    assert_eq!(
        err(V4, &[0x82, 6, 0, 1, 0, 1, b'a', 0x03]).reason,
        ReasonCode::MalformedPacket,
        "QoS 3"
    );
    assert_eq!(
        err(V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x03]).reason,
        ReasonCode::ProtocolError,
        "QoS 3"
    );
    assert_rule(
        err(V4, &[0x82, 6, 0, 0, 0, 1, b'a', 0]),
        "[MQTT-2.2.1-3]",
        ReasonCode::MalformedPacket,
    );
    assert_rule(
        err(V4, &[0xA2, 2, 0, 1]),
        "[MQTT-3.10.3-2]",
        ReasonCode::ProtocolError,
    );
}

#[test]
fn small_packet_rules() {
    assert_eq!(
        err(V4, &[0xC0, 1, 0]).reason,
        ReasonCode::MalformedPacket,
        "PINGREQ with a body"
    );
    assert_eq!(
        err(V4, &[0xE0, 1, 0]).reason,
        ReasonCode::MalformedPacket,
        "v3 DISCONNECT with a body"
    );
    assert_eq!(
        err(V4, &[0x40, 3, 0, 1, 0]).reason,
        ReasonCode::MalformedPacket,
        "v3 PUBACK with a reason"
    );
    assert_eq!(
        err(V5, &[0x40, 3, 0, 1, 0x05]).reason,
        ReasonCode::MalformedPacket,
        "PUBACK reason 0x05"
    );
    assert_eq!(
        err(V5, &[0x62, 3, 0, 1, 0x10]).reason,
        ReasonCode::MalformedPacket,
        "PUBREL reason 0x10"
    );
    assert_eq!(
        err(V5, &[0xF0, 1, 0x05]).reason,
        ReasonCode::ProtocolError,
        "AUTH reason 0x05"
    );
    assert_eq!(
        err(V4, &[0x40, 2, 0, 0]).reason,
        ReasonCode::MalformedPacket,
        "PUBACK id 0"
    );
}

#[test]
fn a_server_refuses_server_only_packets_from_their_header_whatever_their_body() {
    // MQTT 5 §4.13.1: a packet the client may not send is a Protocol Error (0x82), even when
    // its body would not decode (which a client decoder would call Malformed, 0x81).
    for bytes in [
        &[0x20, 0x00][..],
        &[0x20, 0x02, 0x00, 0x00],
        &[0x90, 0x03, 0x00, 0x01, 0x00],
        &[0xB0, 0x00],
        &[0xD0, 0x00],
    ] {
        let mut d = Decoder::for_server(1 << 20);
        d.version = V5;
        let e = d.decode(&mut BytesMut::from(bytes)).unwrap_err();
        assert_rule(e, "[MQTT-4.13.1]", ReasonCode::ProtocolError);
    }
    // A client-side decoder reads them.
    assert!(decode(V5, &[0xD0, 0x00]).unwrap().is_some());
}
