//! Exact wire forms: each packet type encoded for each protocol version, compared byte for
//! byte (hex on mismatch), then decoded back.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)] // tests: a failed unwrap is a failed assertion; properties built field by field read best

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use edgemq_codec::*;

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Encode, compare with `expected`, decode back and compare with the packet.
fn check(packet: Packet, version: ProtocolVersion, expected: &[u8]) {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out).unwrap();
    assert_eq!(
        hex(&out),
        hex(expected),
        "encoding of {packet:?} for {version:?}"
    );
    assert_eq!(packet.encoded_len(version), expected.len());
    let mut decoder = Decoder::new(u32::MAX);
    if !matches!(packet, Packet::Connect(_)) {
        decoder.version = Some(version);
    }
    let mut buf = BytesMut::from(expected);
    let decoded = decoder.decode(&mut buf).unwrap().expect("a whole packet");
    assert_eq!(decoded, packet);
    assert!(buf.is_empty());
}

fn s(v: &'static str) -> ByteString {
    ByteString::from_static(v)
}

#[test]
fn connect_v311_minimal() {
    let c = Connect {
        protocol_version: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: s("c1"),
        last_will: None,
        username: None,
        password: None,
    };
    check(
        Packet::Connect(Box::new(c)),
        ProtocolVersion::V3_1_1,
        &[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1',
        ],
    );
}

#[test]
fn connect_v31_uses_mqisdp() {
    let c = Connect {
        protocol_version: ProtocolVersion::V3_1,
        clean_start: true,
        keep_alive: 10,
        properties: Properties::default(),
        client_id: s("x"),
        last_will: None,
        username: None,
        password: None,
    };
    check(
        Packet::Connect(Box::new(c)),
        ProtocolVersion::V3_1,
        &[
            0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 10, 0, 1, b'x',
        ],
    );
}

#[test]
fn connect_v5_with_will_user_and_password() {
    let mut props = Properties::default();
    props.session_expiry_interval = Some(30);
    let mut will_props = Properties::default();
    will_props.will_delay_interval = Some(5);
    let c = Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 0,
        properties: props,
        client_id: s("id"),
        last_will: Some(LastWill {
            topic: s("w"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: will_props,
        }),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"p")),
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 40,
        0, 4, b'M', b'Q', b'T', b'T', 5,
        0b1110_1100, // user, password, will retain, will QoS 1, will flag
        0, 0,
        5, 0x11, 0, 0, 0, 30,
        0, 2, b'i', b'd',
        5, 0x18, 0, 0, 0, 5,
        0, 1, b'w',
        0, 3, b'b', b'y', b'e',
        0, 1, b'u',
        0, 1, b'p',
    ];
    check(Packet::Connect(Box::new(c)), ProtocolVersion::V5, &expected);
}

#[test]
fn connack() {
    let ack = ConnAck {
        session_present: true,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    };
    check(
        Packet::ConnAck(ack.clone()),
        ProtocolVersion::V3_1_1,
        &[0x20, 2, 1, 0],
    );
    check(
        Packet::ConnAck(ack),
        ProtocolVersion::V5,
        &[0x20, 3, 1, 0, 0],
    );
    let refused = ConnAck {
        reason: ReasonCode::NotAuthorized,
        ..Default::default()
    };
    check(
        Packet::ConnAck(refused.clone()),
        ProtocolVersion::V3_1_1,
        &[0x20, 2, 0, 5],
    );
    check(
        Packet::ConnAck(refused),
        ProtocolVersion::V5,
        &[0x20, 3, 0, 0x87, 0],
    );
    let mut p = Properties::default();
    p.receive_maximum = Some(100);
    p.topic_alias_maximum = Some(10);
    check(
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: p,
        }),
        ProtocolVersion::V5,
        &[0x20, 9, 0, 0, 6, 0x21, 0, 100, 0x22, 0, 10],
    );
}

#[test]
fn publish_qos0_and_qos1() {
    let p = Publish {
        topic: s("a/b"),
        payload: Bytes::from_static(b"hi"),
        ..Default::default()
    };
    check(
        Packet::Publish(p.clone()),
        ProtocolVersion::V3_1_1,
        &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'],
    );
    check(
        Packet::Publish(p),
        ProtocolVersion::V5,
        &[0x30, 8, 0, 3, b'a', b'/', b'b', 0, b'h', b'i'],
    );
    let p = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: s("t"),
        packet_id: Some(10),
        properties: Properties::default(),
        payload: Bytes::new(),
    };
    check(
        Packet::Publish(p),
        ProtocolVersion::V3_1_1,
        &[0x3B, 5, 0, 1, b't', 0, 10],
    );
}

#[test]
fn publish_v5_properties() {
    let mut props = Properties::default();
    props.payload_format_indicator = Some(1);
    props.message_expiry_interval = Some(60);
    props.user_properties = vec![(s("k"), s("v")), (s("k"), s("w"))];
    props.subscription_identifiers = vec![1, 200];
    let p = Publish {
        qos: QoS::ExactlyOnce,
        topic: s("t"),
        packet_id: Some(1),
        properties: props,
        payload: Bytes::from_static(b"x"),
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x34, 33,
        0, 1, b't', 0, 1,
        26,
        0x01, 1,
        0x02, 0, 0, 0, 60,
        0x0B, 1,
        0x0B, 0xC8, 0x01,
        0x26, 0, 1, b'k', 0, 1, b'v',
        0x26, 0, 1, b'k', 0, 1, b'w',
        b'x',
    ];
    check(Packet::Publish(p), ProtocolVersion::V5, &expected);
}

#[test]
fn acknowledgements() {
    for (make, first) in [
        (Packet::PubAck as fn(PubResponse) -> Packet, 0x40),
        (Packet::PubRec, 0x50),
        (Packet::PubRel, 0x62),
        (Packet::PubComp, 0x70),
    ] {
        check(
            make(PubResponse::new(1)),
            ProtocolVersion::V3_1_1,
            &[first, 2, 0, 1],
        );
        // v5 short form when Success and no properties [MQTT-3.4.2.1].
        check(
            make(PubResponse::new(1)),
            ProtocolVersion::V5,
            &[first, 2, 0, 1],
        );
    }
    let mut r = PubResponse::new(7);
    r.reason = ReasonCode::NoMatchingSubscribers;
    check(
        Packet::PubAck(r),
        ProtocolVersion::V5,
        &[0x40, 3, 0, 7, 0x10],
    );
    let mut r = PubResponse::new(7);
    r.reason = ReasonCode::PacketIdentifierNotFound;
    r.properties.reason_string = Some(s("no"));
    check(
        Packet::PubComp(r),
        ProtocolVersion::V5,
        &[0x70, 9, 0, 7, 0x92, 5, 0x1F, 0, 2, b'n', b'o'],
    );
}

#[test]
fn subscribe_and_suback() {
    let sub = Subscribe {
        packet_id: 2,
        properties: Properties::default(),
        filters: vec![(
            s("a/+"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    };
    check(
        Packet::Subscribe(sub),
        ProtocolVersion::V3_1_1,
        &[0x82, 8, 0, 2, 0, 3, b'a', b'/', b'+', 1],
    );
    let mut props = Properties::default();
    props.subscription_identifiers = vec![5];
    let opts = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let sub = Subscribe {
        packet_id: 3,
        properties: props,
        filters: vec![(s("x"), opts)],
    };
    check(
        Packet::Subscribe(sub),
        ProtocolVersion::V5,
        &[0x82, 9, 0, 3, 2, 0x0B, 5, 0, 1, b'x', 0b0010_1110],
    );
    let ack = SubAck {
        packet_id: 3,
        properties: Properties::default(),
        reasons: vec![ReasonCode::GrantedQoS1, ReasonCode::TopicFilterInvalid],
    };
    check(
        Packet::SubAck(ack.clone()),
        ProtocolVersion::V5,
        &[0x90, 5, 0, 3, 0, 0x01, 0x8F],
    );
    // v3 writes 0x80 for every failure [MQTT-3.9.3].
    let mut out = BytesMut::new();
    Packet::SubAck(ack)
        .encode(ProtocolVersion::V3_1_1, &mut out)
        .unwrap();
    assert_eq!(&out[..], &[0x90, 4, 0, 3, 0x01, 0x80]);
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = Unsubscribe {
        packet_id: 4,
        properties: Properties::default(),
        filters: vec![s("a")],
    };
    check(
        Packet::Unsubscribe(u.clone()),
        ProtocolVersion::V3_1_1,
        &[0xA2, 5, 0, 4, 0, 1, b'a'],
    );
    check(
        Packet::Unsubscribe(u),
        ProtocolVersion::V5,
        &[0xA2, 6, 0, 4, 0, 0, 1, b'a'],
    );
    let ack = UnsubAck {
        packet_id: 4,
        properties: Properties::default(),
        reasons: vec![],
    };
    check(
        Packet::UnsubAck(ack),
        ProtocolVersion::V3_1_1,
        &[0xB0, 2, 0, 4],
    );
    let ack = UnsubAck {
        packet_id: 4,
        properties: Properties::default(),
        reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
    };
    check(
        Packet::UnsubAck(ack),
        ProtocolVersion::V5,
        &[0xB0, 5, 0, 4, 0, 0x00, 0x11],
    );
}

#[test]
fn ping_disconnect_auth() {
    check(Packet::PingReq, ProtocolVersion::V3_1_1, &[0xC0, 0]);
    check(Packet::PingResp, ProtocolVersion::V5, &[0xD0, 0]);
    check(
        Packet::Disconnect(Disconnect::default()),
        ProtocolVersion::V3_1_1,
        &[0xE0, 0],
    );
    check(
        Packet::Disconnect(Disconnect::default()),
        ProtocolVersion::V5,
        &[0xE0, 0],
    );
    let d = Disconnect {
        reason: ReasonCode::SessionTakenOver,
        properties: Properties::default(),
    };
    // Always with a Property Length, which every client parses (see disconnect.rs) ...
    check(
        Packet::Disconnect(d.clone()),
        ProtocolVersion::V5,
        &[0xE0, 2, 0x8E, 0],
    );
    // ... while the short form clients may send is accepted [MQTT-3.14.2.2.1].
    let mut decoder = Decoder::new(u32::MAX);
    decoder.version = Some(ProtocolVersion::V5);
    let mut short = BytesMut::from(&[0xE0, 1, 0x8E][..]);
    assert_eq!(
        decoder.decode(&mut short).unwrap(),
        Some(Packet::Disconnect(d))
    );
    let mut p = Properties::default();
    p.authentication_method = Some(s("K8S-SAT"));
    let a = Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties: p,
    };
    check(
        Packet::Auth(a),
        ProtocolVersion::V5,
        &[
            0xF0, 12, 0x18, 10, 0x15, 0, 7, b'K', b'8', b'S', b'-', b'S', b'A', b'T',
        ],
    );
    check(
        Packet::Auth(Auth::default()),
        ProtocolVersion::V5,
        &[0xF0, 0],
    );
}

#[test]
fn decoder_waits_for_whole_packets_and_splits_several() {
    let mut d = Decoder::new(1024);
    d.version = Some(ProtocolVersion::V3_1_1);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0x30]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(&[5, 0, 1, b't']);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 5, "buffer untouched while incomplete");
    buf.extend_from_slice(&[b'x', b'y', 0xC0, 0x00]);
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::Publish(_))
    ));
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::PingReq));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
}

#[test]
fn payload_is_a_zero_copy_slice_of_the_read_buffer() {
    let mut d = Decoder::new(1 << 20);
    d.version = Some(ProtocolVersion::V3_1_1);
    let mut buf = BytesMut::from(&[0x30, 7, 0, 1, b't', b'd', b'a', b't', b'a'][..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = d.decode(&mut buf).unwrap() else {
        panic!("publish")
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        start + 5,
        "payload points into the read buffer"
    );
}

#[test]
fn outgoing_publish_carries_a_topic_alias_and_may_leave_the_topic_empty() {
    // [MQTT-3.3.2-12] with an alias already set, the topic may be zero length.
    for (topic, alias) in [("long/topic/name", 3u16), ("", 3)] {
        let outgoing = OutgoingPublish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic,
            packet_id: Some(9),
            forwarded_properties: &[],
            message_expiry_interval: None,
            subscription_identifiers: &[],
            topic_alias: Some(alias),
            payload: b"x",
        };
        let mut out = BytesMut::new();
        let len = outgoing.encode(ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(len, out.len());
        let mut d = Decoder::new(u32::MAX);
        d.version = Some(ProtocolVersion::V5);
        let Some(Packet::Publish(p)) = d.decode(&mut out).unwrap() else {
            panic!("not a PUBLISH");
        };
        assert_eq!((&*p.topic, p.properties.topic_alias), (topic, Some(alias)));
    }
}
