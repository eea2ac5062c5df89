//! The CONNECT rules of `connect`, without sockets: each test names its statement.

use bytes::Bytes;
use bytestring::ByteString;

use edgemq_codec::{Connect, LastWill, Properties, ProtocolVersion, QoS, ReasonCode};

use super::*;

fn connect(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol_version: version,
        clean_start,
        keep_alive: 30,
        properties: Properties::default(),
        client_id: ByteString::from(client_id),
        last_will: None,
        username: None,
        password: None,
    }
}

fn assign() -> ByteString {
    ByteString::from_static("assigned-1")
}

fn refused(c: &Connect, limits: &Limits) -> Refused {
    check(c, limits, assign).expect_err("refused")
}

#[test]
fn mqtt_3_1_3_6_an_empty_client_id_is_assigned_in_v5_and_sent_back() {
    let limits = Limits::default();
    let c = connect(ProtocolVersion::V5, "", false);
    let id = check(&c, &limits, assign).unwrap();
    assert_eq!((id.id.as_ref(), id.assigned), ("assigned-1", true));
    let t = terms(&c, &limits, &id, None).unwrap();
    // [MQTT-3.2.2-16] the Assigned Client Identifier is in the CONNACK.
    assert_eq!(
        t.ack.properties.assigned_client_identifier.as_deref(),
        Some("assigned-1")
    );
}

#[test]
fn mqtt_3_1_3_7_and_8_an_empty_client_id_in_3_1_1_needs_clean_session() {
    let limits = Limits::default();
    assert!(check(&connect(ProtocolVersion::V3_1_1, "", true), &limits, assign).is_ok());
    let r = refused(&connect(ProtocolVersion::V3_1_1, "", false), &limits);
    assert_eq!(r.reason, ReasonCode::ClientIdentifierNotValid);
    // 3.1 never allowed one.
    let r = refused(&connect(ProtocolVersion::V3_1, "", true), &limits);
    assert_eq!(r.reason, ReasonCode::ClientIdentifierNotValid);
}

#[test]
fn mqtt_3_1_3_5_23_bytes_are_always_accepted_and_longer_ones_within_the_limit() {
    let limits = Limits {
        max_client_id_len: 23,
        ..Limits::default()
    };
    let ok = "a".repeat(23);
    assert!(check(&connect(ProtocolVersion::V5, &ok, true), &limits, assign).is_ok());
    let r = refused(
        &connect(ProtocolVersion::V5, &"a".repeat(24), true),
        &limits,
    );
    assert_eq!(
        (r.reason, r.limit),
        (
            ReasonCode::ClientIdentifierNotValid,
            Some(Limit::ClientIdLength)
        )
    );
    // [MQTT-3.1.3-9] 3.1.1 answers return code 2 Identifier rejected.
    assert!(refusal(ProtocolVersion::V3_1_1, r.reason, None).is_some());
}

fn with_will(qos: QoS, retain: bool, topic: &str) -> Connect {
    let mut c = connect(ProtocolVersion::V5, "w", true);
    c.last_will = Some(LastWill {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(b"gone"),
        qos,
        retain,
        properties: Properties::default(),
    });
    c
}

#[test]
fn mqtt_3_2_2_12_a_will_above_maximum_qos_is_0x9b() {
    let limits = Limits {
        maximum_qos: QoS::AtLeastOnce,
        ..Limits::default()
    };
    let r = refused(&with_will(QoS::ExactlyOnce, false, "w"), &limits);
    assert_eq!(r.reason, ReasonCode::QoSNotSupported);
}

#[test]
fn mqtt_3_2_2_13_a_retained_will_without_retain_available_is_0x9a() {
    let limits = Limits {
        retain_available: false,
        ..Limits::default()
    };
    let r = refused(&with_will(QoS::AtMostOnce, true, "w"), &limits);
    assert_eq!(r.reason, ReasonCode::RetainNotSupported);
}

#[test]
fn a_will_deeper_than_the_limit_is_0x90_and_counted() {
    let limits = Limits {
        max_topic_levels: 2,
        ..Limits::default()
    };
    let r = refused(&with_will(QoS::AtMostOnce, false, "a/b/c"), &limits);
    assert_eq!(
        (r.reason, r.limit),
        (ReasonCode::TopicNameInvalid, Some(Limit::TopicLevels))
    );
    // v3 has no code for it: closed without a CONNACK.
    assert_eq!(refusal(ProtocolVersion::V3_1_1, r.reason, None), None);
}

#[test]
fn mqtt_3_1_2_4_to_6_session_expiry_from_clean_session_or_the_property_capped() {
    let limits = Limits {
        max_session_expiry: 100,
        v3_session_expiry: 50,
        ..Limits::default()
    };
    let t = |c: &Connect| terms(c, &limits, &check(c, &limits, assign).unwrap(), None).unwrap();
    assert_eq!(t(&connect(ProtocolVersion::V3_1_1, "a", true)).expiry, 0);
    assert_eq!(t(&connect(ProtocolVersion::V3_1_1, "a", false)).expiry, 50);
    let mut c = connect(ProtocolVersion::V5, "a", false);
    assert_eq!(t(&c).expiry, 0, "absent means 0 [MQTT-3.1.2-11]");
    assert!(t(&c).connect_expiry_zero);
    c.properties.session_expiry_interval = Some(1000);
    let capped = t(&c);
    assert_eq!(capped.expiry, 100);
    // [MQTT-3.2.2-?] a server that uses another expiry says so in CONNACK.
    assert_eq!(capped.ack.properties.session_expiry_interval, Some(100));
    c.properties.session_expiry_interval = Some(60);
    assert_eq!(t(&c).ack.properties.session_expiry_interval, None);
}

#[test]
fn mqtt_3_2_2_21_server_keep_alive_when_the_broker_caps_it() {
    let limits = Limits {
        max_keep_alive: Some(60),
        ..Limits::default()
    };
    let mut c = connect(ProtocolVersion::V5, "k", true);
    let id = check(&c, &limits, assign).unwrap();
    for (asked, got, told) in [(30, 30, None), (0, 60, Some(60)), (600, 60, Some(60))] {
        c.keep_alive = asked;
        let t = terms(&c, &limits, &id, None).unwrap();
        assert_eq!(
            (t.keep_alive, t.ack.properties.server_keep_alive),
            (got, told),
            "{asked}"
        );
    }
    // v3 has no Server Keep Alive: its own value stands.
    let mut c = connect(ProtocolVersion::V3_1_1, "k", true);
    c.keep_alive = 0;
    assert_eq!(terms(&c, &limits, &id, None).unwrap().keep_alive, 0);
}

#[test]
fn mqtt_3_3_4_9_the_send_window_is_the_clients_receive_maximum_within_the_brokers() {
    let limits = Limits {
        max_inflight_messages: 50,
        receive_maximum: 20,
        ..Limits::default()
    };
    let mut c = connect(ProtocolVersion::V5, "r", true);
    let id = check(&c, &limits, assign).unwrap();
    assert_eq!(terms(&c, &limits, &id, None).unwrap().send_window, 50);
    c.properties.receive_maximum = Some(5);
    assert_eq!(terms(&c, &limits, &id, None).unwrap().send_window, 5);
    let c = connect(ProtocolVersion::V3_1_1, "r", true);
    assert_eq!(terms(&c, &limits, &id, None).unwrap().send_window, 20);
}

#[test]
fn mqtt_3_1_2_24_the_connack_fits_the_clients_maximum_packet_size_or_0x95() {
    let limits = Limits::default();
    let mut c = connect(ProtocolVersion::V5, "m", true);
    let id = check(&c, &limits, assign).unwrap();
    let full = {
        let mut buf = bytes::BytesMut::new();
        Packet::ConnAck(terms(&c, &limits, &id, None).unwrap().ack)
            .encode(ProtocolVersion::V5, &mut buf)
            .unwrap();
        buf.len()
    };
    c.properties.maximum_packet_size = Some(21);
    let t = terms(&c, &limits, &id, None).unwrap();
    let mut buf = bytes::BytesMut::new();
    Packet::ConnAck(t.ack.clone())
        .encode(ProtocolVersion::V5, &mut buf)
        .unwrap();
    assert!(
        buf.len() <= 21 && buf.len() < full,
        "{} of {full}",
        buf.len()
    );
    assert_eq!(
        t.ack.properties.receive_maximum,
        Some(limits.receive_maximum)
    );
    // An assigned identifier must be sent [MQTT-3.2.2-16]: too long for 10 bytes.
    let mut c = connect(ProtocolVersion::V5, "", true);
    c.properties.maximum_packet_size = Some(10);
    let id = check(&c, &limits, assign).unwrap();
    let r = terms(&c, &limits, &id, None).unwrap_err();
    assert_eq!(r.reason, ReasonCode::PacketTooLarge);
    assert!(refusal(ProtocolVersion::V5, r.reason, Some(10)).is_some());
    assert_eq!(
        refusal(ProtocolVersion::V5, r.reason, Some(4)),
        None,
        "nothing fits"
    );
}

#[test]
fn mqtt_4_12_0_1_the_authentication_method_is_echoed() {
    let limits = Limits::default();
    let c = connect(ProtocolVersion::V5, "a", true);
    let id = check(&c, &limits, assign).unwrap();
    let t = terms(&c, &limits, &id, Some("K8S-SAT")).unwrap();
    assert_eq!(
        t.ack.properties.authentication_method.as_deref(),
        Some("K8S-SAT")
    );
}

#[test]
fn mqtt_3_2_2_budgets_refuse_v5_with_0x97_and_v3_with_server_unavailable() {
    assert_eq!(
        quota_exceeded(ProtocolVersion::V5),
        ReasonCode::QuotaExceeded
    );
    let v3 = quota_exceeded(ProtocolVersion::V3_1_1);
    assert_eq!(v3, ReasonCode::ServerUnavailable);
    assert!(refusal(ProtocolVersion::V3_1_1, v3, None).is_some());
}

#[test]
fn mqtt_3_1_2_26_server_aliases_only_up_to_the_clients_topic_alias_maximum() {
    let limits = Limits {
        server_topic_aliases: 16,
        ..Limits::default()
    };
    let mut c = connect(ProtocolVersion::V5, "a", true);
    let id = check(&c, &limits, assign).unwrap();
    assert_eq!(
        terms(&c, &limits, &id, None).unwrap().server_topic_aliases,
        0,
        "absent: none"
    );
    c.properties.topic_alias_maximum = Some(4);
    assert_eq!(
        terms(&c, &limits, &id, None).unwrap().server_topic_aliases,
        4
    );
    c.properties.topic_alias_maximum = Some(100);
    assert_eq!(
        terms(&c, &limits, &id, None).unwrap().server_topic_aliases,
        16
    );
    let off = Limits::default();
    assert_eq!(
        terms(&c, &off, &id, None).unwrap().server_topic_aliases,
        0,
        "off by default"
    );
}

#[test]
fn mqtt_3_1_2_2_an_unsupported_protocol_level_is_refused_in_the_3_1_1_form() {
    // [MQTT-3.1.2-2] If the Protocol Version is not 5 and the Server does not want to
    // accept the CONNECT packet, the Server MAY send a CONNACK packet with Reason Code
    // 0x84 (Unsupported Protocol Version) and then MUST close the Network Connection.
    // The 3.1.1 form (return code 1) is what a client of any version can read.
    let reason = ReasonCode::UnsupportedProtocolVersion;
    assert_eq!(
        refusal_version(reason, Some(ProtocolVersion::V5)),
        Some(ProtocolVersion::V3_1_1)
    );
    assert_eq!(refusal_version(reason, None), Some(ProtocolVersion::V3_1_1));
    // Any other malformed CONNECT is answered in the version it states, if readable.
    let malformed = ReasonCode::MalformedPacket;
    assert_eq!(
        refusal_version(malformed, Some(ProtocolVersion::V5)),
        Some(ProtocolVersion::V5)
    );
    assert_eq!(refusal_version(malformed, None), None);
}

#[test]
fn the_version_of_an_undecodable_connect_is_read_from_its_header() {
    let v5 = [0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02];
    let v311 = [0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    let v31 = [0x10, 12, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3];
    // A two-byte remaining length is skipped.
    let long = [0x10, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 5];
    assert_eq!(sniff_version(&v5), Some(ProtocolVersion::V5));
    assert_eq!(sniff_version(&v311), Some(ProtocolVersion::V3_1_1));
    assert_eq!(sniff_version(&v31), Some(ProtocolVersion::V3_1));
    assert_eq!(sniff_version(&long), Some(ProtocolVersion::V5));
    assert_eq!(sniff_version(&[0x30, 2, 0, 0]), None, "not a CONNECT");
    assert_eq!(sniff_version(&v5[..5]), None, "too short to tell");
    assert_eq!(
        sniff_version(&[0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 9]),
        None
    );
}
