//! Raw-packet conformance suite, part 1: CONNECT/CONNACK, fixed header, PINGREQ, DISCONNECT,
//! AUTH, isolation of misbehaving clients and a slow reader.
//!
//! Every packet is hand-built (see `edgemq_testkit::raw`), never produced by `edgemq-codec`, so this is
//! an independent check of the codec and of the connection state machine. PUBLISH, SUBSCRIBE
//! and UNSUBSCRIBE live in `raw_packets_pubsub.rs`.
//!
//! Expected behaviour is the MQTT 3.1.1 / 5.0 specification plus the broker contract: v5
//! violations get a DISCONNECT (or a refusing CONNACK) with the reason code before the close,
//! v3.x violations a plain close. Run against mosquitto with `EDGEMQ_TEST_AGAINST=mosquitto`;
//! tests where mosquitto 2.0.11 legitimately differs return early there and say why.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;
use edgemq_testkit::{Endpoint, Target};
use std::time::Duration;

/// A v3.1.1 subscriber on `filter` at QoS 0 (SUBACK checked).
fn subscriber_v311(b: &Broker, id: &str, filter: &str) -> RawClient {
    let mut s = RawClient::v311(b.addr, id);
    s.send(&subscribe(1, None, &[(filter, 0)]));
    s.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x00]);
    s
}

// =======================================================================================
// CONNECT / CONNACK
// =======================================================================================

#[test]
fn connack_v311_plain_is_exact() {
    // [MQTT-3.2.2-1] clean session → Session Present 0; return code 0.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("plain", flags::CLEAN, 30));
    c.expect_packet(&[0x20, 0x02, 0x00, 0x00]);
    c.ping();
}

#[test]
fn connack_v311_session_present_after_reconnect() {
    // [MQTT-3.2.2-3] new session → Session Present 0; [MQTT-3.2.2-2] resumed session → 1.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("persist", 0, 0));
    c.expect_packet(&[0x20, 0x02, 0x00, 0x00]);
    c.send(&subscribe(1, None, &[("keep/#", 1)]));
    c.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x01]);
    c.send(&DISCONNECT);
    c.expect_closed_silently();

    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("persist", 0, 0));
    c.expect_packet(&[0x20, 0x02, 0x01, 0x00]);
    // The session (and its subscription) survived: a message on keep/x reaches us.
    let mut p = RawClient::v311(b.addr, "persist-pub");
    p.send(&publish_v311("keep/x", 0, 0, b"still here"));
    let got = c.expect_publish(false);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("keep/x", &b"still here"[..])
    );
}

#[test]
fn connack_v5_session_present_after_reconnect() {
    // [MQTT-3.2.2-2]/[MQTT-3.2.2-3] for v5: Clean Start 0 + Session Expiry keeps the session.
    let b = Broker::start();
    let expiry = props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 300)]);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("persist5", 0, 0, &expiry));
    let ack = c.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0x00, false));
    c.send(&DISCONNECT);
    c.expect_closed_silently();

    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("persist5", 0, 0, &expiry));
    let ack = c.expect_connack(true);
    assert_eq!((ack.code, ack.session_present), (0x00, true));
}

#[test]
fn connack_v5_properties_are_well_formed() {
    // [MQTT-3.2.2] CONNACK properties: only identifiers allowed in CONNACK, each at most once
    // (User Property excepted).
    let b = Broker::start();
    let (mut c, p) = RawClient::v5(b.addr, "props");
    for id in p.ids() {
        assert!(
            prop::CONNACK_ALLOWED.contains(&id),
            "property {id:#04x} is not allowed in CONNACK: {p:?}"
        );
        if id != prop::USER_PROPERTY {
            assert_eq!(
                p.count(id),
                1,
                "property {id:#04x} included more than once: {p:?}"
            );
        }
    }
    // [MQTT-4.12.0-6] no Authentication Method when the client did not ask for one.
    assert_eq!(p.get(prop::AUTHENTICATION_METHOD), None);
    // A client id was supplied, so none may be assigned.
    assert_eq!(p.get(prop::ASSIGNED_CLIENT_IDENTIFIER), None);
    c.ping();
}

#[test]
fn connack_v5_advertises_default_limits() {
    // edgemq contract: CONNACK always carries Receive Maximum, Maximum Packet Size, Topic
    // Alias Maximum, Retain/Wildcard/Subscription-Identifier/Shared-Subscription Available;
    // Maximum QoS only when < 2; Server Keep Alive / Session Expiry only when overridden.
    // (mosquitto advertises a different set.)
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(
        "limits",
        flags::CLEAN,
        60,
        &props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 30)]),
    ));
    let ack = c.expect_connack(true);
    assert_eq!(ack.code, 0);
    let p = &ack.props;
    assert_eq!(p.num(prop::RECEIVE_MAXIMUM), Some(100), "{p:?}");
    assert_eq!(p.num(prop::MAXIMUM_PACKET_SIZE), Some(1_048_576), "{p:?}");
    assert_eq!(p.num(prop::TOPIC_ALIAS_MAXIMUM), Some(64), "{p:?}");
    assert_eq!(p.num(prop::RETAIN_AVAILABLE), Some(1), "{p:?}");
    assert_eq!(
        p.num(prop::WILDCARD_SUBSCRIPTION_AVAILABLE),
        Some(1),
        "{p:?}"
    );
    assert_eq!(
        p.num(prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE),
        Some(1),
        "{p:?}"
    );
    assert_eq!(p.num(prop::SHARED_SUBSCRIPTION_AVAILABLE), Some(1), "{p:?}");
    assert_eq!(
        p.get(prop::MAXIMUM_QOS),
        None,
        "Maximum QoS 2 must not be advertised: {p:?}"
    );
    assert_eq!(
        p.get(prop::SERVER_KEEP_ALIVE),
        None,
        "keep-alive was not overridden: {p:?}"
    );
    assert_eq!(
        p.get(prop::SESSION_EXPIRY_INTERVAL),
        None,
        "session expiry was not capped: {p:?}"
    );
}

#[test]
fn connack_v5_advertises_configured_limits() {
    // Server Keep Alive [MQTT-3.2.2-21]: when sent, the client must use it; edgemq sends it
    // when the client's keep-alive exceeds --max-keep-alive. Session Expiry Interval is sent
    // when capped; Maximum QoS when < 2 [MQTT-3.2.2-9].
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&[
        "--receive-maximum",
        "10",
        "--max-packet-size",
        "2000",
        "--topic-alias-maximum",
        "5",
        "--maximum-qos",
        "1",
        "--max-keep-alive",
        "30",
        "--max-session-expiry",
        "100",
    ]);
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5(
        "limits",
        flags::CLEAN,
        60,
        &props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 1000)]),
    ));
    let ack = c.expect_connack(true);
    assert_eq!(ack.code, 0);
    let p = &ack.props;
    assert_eq!(p.num(prop::RECEIVE_MAXIMUM), Some(10), "{p:?}");
    assert_eq!(p.num(prop::MAXIMUM_PACKET_SIZE), Some(2000), "{p:?}");
    assert_eq!(p.num(prop::TOPIC_ALIAS_MAXIMUM), Some(5), "{p:?}");
    assert_eq!(p.num(prop::MAXIMUM_QOS), Some(1), "{p:?}");
    assert_eq!(p.num(prop::SERVER_KEEP_ALIVE), Some(30), "{p:?}");
    assert_eq!(p.num(prop::SESSION_EXPIRY_INTERVAL), Some(100), "{p:?}");

    // A keep-alive of 0 ("no keep-alive") also exceeds the maximum.
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("limits0", flags::CLEAN, 0, &no_props()));
    let ack = c.expect_connack(true);
    assert_eq!(
        ack.props.num(prop::SERVER_KEEP_ALIVE),
        Some(30),
        "{:?}",
        ack.props
    );
}

#[test]
fn connect_v31_mqisdp_level3_works() {
    // MQTT 3.1: protocol name "MQIsdp", level 3; CONNACK has the same 4-byte form.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_raw(
        b"MQIsdp",
        3,
        flags::CLEAN,
        60,
        None,
        &lp(b"old-timer"),
    ));
    c.expect_packet(&[0x20, 0x02, 0x00, 0x00]);
    c.send(&subscribe(1, None, &[("v31/t", 1)]));
    c.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x01]);
    c.send(&publish_v311("v31/t", 0, 0, b"hi"));
    c.expect_packet(&publish_v311("v31/t", 0, 0, b"hi"));
}

/// How the broker must answer a CONNECT it refuses.
enum Answer {
    /// A plain close, nothing sent.
    Close,
    /// Exactly this packet, then a close.
    Exactly(&'static [u8]),
    /// v5: a CONNACK refusing with one of these codes, then a close (another broker may
    /// just close: `expect_v5_connect_refusal`).
    V5Refusal(&'static [u8]),
    /// A close, optionally after one CONNACK refusing with return code 1 (3.1.1 form) or,
    /// in v5, 0x84.
    CloseOptionallyRefused,
}

/// One row: a CONNECT the broker must refuse, the statement, and the answer.
struct Refusal {
    name: &'static str,
    rule: &'static str,
    connect: Vec<u8>,
    answer: Answer,
}

fn refusal(name: &'static str, rule: &'static str, connect: Vec<u8>, answer: Answer) -> Refusal {
    Refusal {
        name,
        rule,
        connect,
        answer,
    }
}

impl Answer {
    fn check(&self, c: &mut RawClient) {
        match self {
            Answer::Close => c.expect_closed_silently(),
            Answer::Exactly(packet) => {
                c.expect_packet(packet);
                c.expect_closed_silently();
            }
            Answer::V5Refusal(codes) => c.expect_v5_connect_refusal(codes, Broker::edgemq_only()),
            Answer::CloseOptionallyRefused => {
                let got = c.expect_closed();
                let ok = match got.as_slice() {
                    [] => true,
                    [ack] if ack[..] == [0x20, 0x02, 0x00, 0x01] => true,
                    [ack] => ack[0] == 0x20 && parse_connack(ack, true).code == 0x84,
                    _ => false,
                };
                let got: Vec<_> = got.iter().map(|p| hex(p)).collect();
                assert!(
                    ok,
                    "expected a close (optionally after a refusing CONNACK), got {got:?}"
                );
            }
        }
    }
}

/// Malformed or refused CONNECTs, each on a fresh connection to one broker: v3.x closes
/// (with a CONNACK only where 3.1.1 has a return code), v5 answers CONNACK 0x81 / 0x82 / 0x84.
fn refusals() -> Vec<Refusal> {
    use Answer::*;
    let bad_utf8: [&[u8]; 2] = [b"bad\x80id", b"sur\xed\xa0\x80"];
    let mut rows = vec![
        refusal(
            "connect_wrong_protocol_name_v311_is_refused",
            "[MQTT-3.1.2-1] (3.1.1): a wrong protocol name MAY be disconnected; the server MUST NOT continue",
            connect_raw(b"MQTX", 4, flags::CLEAN, 0, None, &lp(b"badname")),
            CloseOptionallyRefused,
        ),
        refusal(
            "connect_wrong_protocol_name_v5_is_refused",
            "[MQTT-3.1.2-1] (5.0): the server MAY send CONNACK 0x84 and MUST close",
            connect_raw(b"MQTX", 5, flags::CLEAN, 0, Some(&no_props()), &lp(b"badname5")),
            CloseOptionallyRefused,
        ),
        refusal(
            "connect_unsupported_level_6_gets_rc1_in_311_form",
            "[MQTT-3.1.2-2] unsupported level: return code 1 in the 3.1.1 form every client reads",
            connect_raw(b"MQTT", 6, flags::CLEAN, 0, None, &lp(b"future")),
            Exactly(&[0x20, 0x02, 0x00, 0x01]),
        ),
        refusal(
            "connect_unsupported_level_2_gets_rc1_in_311_form",
            "[MQTT-3.1.2-2] the same for a level below 3",
            connect_raw(b"MQTT", 2, flags::CLEAN, 0, None, &lp(b"past")),
            Exactly(&[0x20, 0x02, 0x00, 0x01]),
        ),
        refusal(
            "connect_reserved_flag_v311_closes",
            "[MQTT-3.1.2-3] the reserved flag must be 0",
            connect_v311("resv", flags::CLEAN | flags::RESERVED, 0),
            Close,
        ),
        refusal(
            "connect_reserved_flag_v5_connack_0x81",
            "[MQTT-3.1.2-3] (5.0) a reserved flag not 0 is a Malformed Packet",
            connect_v5("resv5", flags::CLEAN | flags::RESERVED, 0, &no_props()),
            V5Refusal(&[0x81]),
        ),
        refusal(
            "connect_will_qos3_v311_closes",
            "[MQTT-3.1.2-14] Will QoS must not be 3",
            connect_v311_will("wq3", flags::CLEAN | flags::WILL_QOS1 | flags::WILL_QOS2, "w/t", b"bye"),
            Close,
        ),
        refusal(
            "connect_will_qos3_v5_connack_0x81",
            "[MQTT-3.1.2-12] (5.0 §3.1.2.6) Will QoS 3 is a Malformed Packet",
            connect_v5_will("wq3-5", flags::CLEAN | flags::WILL_QOS1 | flags::WILL_QOS2, &no_props(), "w/t", b"bye"),
            V5Refusal(&[0x81]),
        ),
        refusal(
            "connect_will_retain_without_will_flag_v311_closes",
            "[MQTT-3.1.2-15] Will Flag 0: Will Retain must be 0",
            connect_v311("wr", flags::CLEAN | flags::WILL_RETAIN, 0),
            Close,
        ),
        refusal(
            "connect_will_retain_without_will_flag_v5_refused",
            "[MQTT-3.1.2-13] (5.0) Will Flag 0: Will Retain must be 0 (malformed or protocol error: the spec does not say which)",
            connect_v5("wr5", flags::CLEAN | flags::WILL_RETAIN, 0, &no_props()),
            V5Refusal(&[0x81, 0x82]),
        ),
        refusal(
            "connect_will_qos_without_will_flag_v311_closes",
            "[MQTT-3.1.2-13] (3.1.1) Will Flag 0: Will QoS must be 0",
            connect_v311("wq", flags::CLEAN | flags::WILL_QOS1, 0),
            Close,
        ),
        refusal(
            "connect_password_without_username_v311_closes",
            "[MQTT-3.1.2-22] (3.1.1) User Name Flag 0: Password Flag must be 0",
            connect_raw(b"MQTT", 4, flags::CLEAN | flags::PASSWORD, 0, None, &cat(&[&lp(b"pwonly"), &lp(b"secret")])),
            Close,
        ),
        refusal(
            "connect_empty_client_id_clean_session_0_v311_rc2",
            "[MQTT-3.1.3-8] an empty client id with CleanSession 0: return code 2, then close",
            connect_v311("", 0, 0),
            Exactly(&[0x20, 0x02, 0x00, 0x02]),
        ),
        refusal(
            "connect_empty_client_id_v31_rc2",
            "MQTT 3.1 requires a 1-23 character client id: identifier rejected (return code 2)",
            connect_raw(b"MQIsdp", 3, flags::CLEAN, 0, None, &lp(b"")),
            Exactly(&[0x20, 0x02, 0x00, 0x02]),
        ),
        refusal(
            "connect_client_id_with_nul_v311_closes",
            "[MQTT-1.5.3-2] (3.1.1) a UTF-8 string must not contain U+0000",
            connect_raw(b"MQTT", 4, flags::CLEAN, 0, None, &lp(b"nul\0id")),
            Close,
        ),
        refusal(
            "connect_client_id_with_nul_v5_connack_0x81",
            "[MQTT-1.5.4-2] (5.0) U+0000 in a UTF-8 string is a Malformed Packet",
            connect_raw(b"MQTT", 5, flags::CLEAN, 0, Some(&no_props()), &lp(b"nul\0id")),
            V5Refusal(&[0x81]),
        ),
        refusal(
            "first_packet_not_connect_closes (PINGREQ)",
            "[MQTT-3.1.0-1] the first packet from the client must be CONNECT",
            PINGREQ.to_vec(),
            Close,
        ),
        refusal(
            "first_packet_not_connect_closes (PUBLISH)",
            "[MQTT-3.1.0-1] the first packet from the client must be CONNECT",
            publish_v311("early/bird", 0, 0, b"x"),
            Close,
        ),
    ];
    for bad in bad_utf8 {
        rows.push(refusal(
            "connect_client_id_invalid_utf8_v311_closes",
            "[MQTT-1.5.3-1] (3.1.1) ill-formed UTF-8 (a lone continuation byte, an encoded surrogate)",
            connect_raw(b"MQTT", 4, flags::CLEAN, 0, None, &lp(bad)),
            Close,
        ));
        rows.push(refusal(
            "connect_client_id_invalid_utf8_v5_connack_0x81",
            "[MQTT-1.5.4-1] (5.0) ill-formed UTF-8 is a Malformed Packet",
            connect_raw(b"MQTT", 5, flags::CLEAN, 0, Some(&no_props()), &lp(bad)),
            V5Refusal(&[0x81]),
        ));
    }
    rows
}

#[test]
fn connect_refusals() {
    let b = Target::start();
    for row in refusals() {
        // Shown with the assertion's message when a row fails.
        eprintln!("row {}: {}", row.name, row.rule);
        let mut c = RawClient::open(b.addr());
        c.send(&row.connect);
        row.answer.check(&mut c);
    }
}

#[test]
fn connect_empty_client_id_clean_session_1_v311_accepted() {
    // [MQTT-3.1.3-6] zero-length client id with CleanSession 1 → server assigns one.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("", flags::CLEAN, 0));
    c.expect_packet(&[0x20, 0x02, 0x00, 0x00]);
    c.ping();
}

#[test]
fn connect_empty_client_id_v5_gets_assigned_identifier() {
    // [MQTT-3.2.2-16] zero-length client id → CONNACK carries an Assigned Client Identifier.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("", flags::CLEAN, 0, &no_props()));
    let ack = c.expect_connack(true);
    assert_eq!(ack.code, 0);
    let assigned = ack
        .props
        .str(prop::ASSIGNED_CLIENT_IDENTIFIER)
        .unwrap_or_default();
    assert!(
        !assigned.is_empty(),
        "no Assigned Client Identifier in {:?}",
        ack.props
    );
    c.ping();
}

#[test]
fn second_connect_v311_closes() {
    // [MQTT-3.1.0-2] a second CONNECT is a protocol violation → disconnect.
    let b = Broker::start();
    let mut c = RawClient::v311(b.addr, "twice");
    c.send(&connect_v311("twice", flags::CLEAN, 0));
    c.expect_closed_silently();
}

#[test]
fn second_connect_v5_disconnect_0x82() {
    // [MQTT-3.1.0-2] (5.0) a second CONNECT is a Protocol Error.
    let b = Broker::start();
    let (mut c, _) = RawClient::v5(b.addr, "twice5");
    c.send(&connect_v5("twice5", flags::CLEAN, 0, &no_props()));
    c.expect_v5_violation(&[0x82], Broker::edgemq_only());
}

// =======================================================================================
// Fixed header
// =======================================================================================

/// Send `bad` after a successful CONNECT, once as v3.1.1 (expect a plain close) and once as
/// v5 (expect DISCONNECT with one of `v5_reasons`).
fn violation_both(b: &impl Endpoint, bad: &[u8], v5_reasons: &[u8]) {
    let mut c = RawClient::v311(b.addr(), "bad-v311");
    c.send(bad);
    c.expect_closed_silently();

    let (mut c, _) = RawClient::v5(b.addr(), "bad-v5");
    c.send(bad);
    c.expect_v5_violation(v5_reasons, Broker::edgemq_only());
}

/// One row: a packet after CONNECT with a bad fixed header, the statement, the v5 reason
/// codes accepted, and whether mosquitto 2.0.11 deviates (then the row is edgemq-only).
struct FixedHeader {
    name: &'static str,
    rule: &'static str,
    bad: Vec<u8>,
    v5_reasons: &'static [u8],
    edgemq_only: bool,
}

fn fixed_header_rows() -> Vec<FixedHeader> {
    let row = |name, rule, bad: Vec<u8>, v5_reasons, edgemq_only| FixedHeader {
        name,
        rule,
        bad,
        v5_reasons,
        edgemq_only,
    };
    let with_first = |mut packet: Vec<u8>, first: u8| {
        packet[0] = first;
        packet
    };
    vec![
        row("fixed_header_pubrel_flags_must_be_0010", "[MQTT-2.1.3-1] PUBREL flags are 0010; 0000 is malformed",
            vec![0x60, 0x02, 0x00, 0x01], &[0x81], false),
        row("fixed_header_subscribe_flags_must_be_0010", "[MQTT-3.8.1-1] / [MQTT-2.1.3-1] SUBSCRIBE flags 0010",
            with_first(subscribe(1, None, &[("a/b", 0)]), 0x80), &[0x81], false),
        row("fixed_header_subscribe_flags_must_be_0010 (v5 layout)", "[MQTT-3.8.1-1] with a property block",
            with_first(subscribe(1, Some(&no_props()), &[("a/b", 0)]), 0x80), &[0x81], false),
        row("fixed_header_unsubscribe_flags_must_be_0010", "[MQTT-3.10.1-1] / [MQTT-2.1.3-1] UNSUBSCRIBE flags 0010",
            with_first(unsubscribe(1, None, &["a/b"]), 0xA0), &[0x81], false),
        // mosquitto 2.0.11 answers `c1 00` with `d0 00` instead of closing.
        row("fixed_header_pingreq_flags_must_be_0000", "[MQTT-2.1.3-1] PINGREQ flags 0000",
            vec![0xC1, 0x00], &[0x81], true),
        row("fixed_header_disconnect_flags_must_be_0000", "[MQTT-2.1.3-1] DISCONNECT flags 0000 (an invalid DISCONNECT is not a normal disconnect)",
            vec![0xE1, 0x00], &[0x81], false),
        row("remaining_length_with_five_bytes_is_malformed", "[MQTT-1.5.5] / 3.1.1 §2.2.3: the Remaining Length uses at most four bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], &[0x81], false),
        row("packet_type_0_is_rejected", "packet type 0 is reserved (3.1.1 Table 2.1, 5.0 Table 2-1)",
            vec![0x00, 0x00], &[0x81, 0x82], false),
        // mosquitto 2.0.11 answers `c0 01 00` with `d0 00` instead of closing.
        row("pingreq_with_nonzero_remaining_length_is_malformed", "PINGREQ has no variable header or payload (3.12.2/3.12.3)",
            vec![0xC0, 0x01, 0x00], &[0x81], true),
    ]
}

#[test]
fn fixed_header_violations() {
    let b = Target::start();
    for row in fixed_header_rows() {
        if row.edgemq_only && !Broker::edgemq_only() {
            continue;
        }
        eprintln!("row {}: {}", row.name, row.rule);
        violation_both(&b, &row.bad, row.v5_reasons);
    }
}

#[test]
fn auth_on_v311_closes() {
    // Packet type 15 is reserved in 3.1.1 (AUTH exists only in 5.0).
    let b = Broker::start();
    let mut c = RawClient::v311(b.addr, "auth311");
    c.send(&[0xF0, 0x00]);
    c.expect_closed_silently();
}

// =======================================================================================
// PINGREQ
// =======================================================================================

#[test]
fn pingreq_gets_exact_pingresp() {
    // [MQTT-3.12.4-1] the server must answer PINGREQ with PINGRESP `d0 00`.
    let b = Broker::start();
    let mut c = RawClient::v311(b.addr, "ping311");
    c.send(&PINGREQ);
    c.expect_packet(&[0xD0, 0x00]);
    let (mut c, _) = RawClient::v5(b.addr, "ping5");
    c.send(&PINGREQ);
    c.expect_packet(&[0xD0, 0x00]);
}

// =======================================================================================
// DISCONNECT
// =======================================================================================

#[test]
fn disconnect_v311_server_closes_and_discards_will() {
    // [MQTT-3.14.4-3] on DISCONNECT the server discards the Will; it then closes the
    // connection (3.14.4: SHOULD close if the client has not already).
    let b = Broker::start();
    let mut watcher = subscriber_v311(&b, "watcher", "will/#");
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311_will(
        "leaver",
        flags::CLEAN,
        "will/leaver",
        b"gone",
    ));
    c.expect_packet(&CONNACK_OK);
    c.send(&DISCONNECT);
    c.expect_closed_silently();
    // A marker published afterwards must be the next thing the watcher sees.
    let mut p = RawClient::v311(b.addr, "marker");
    p.send(&publish_v311("will/marker", 0, 0, b"m"));
    watcher.expect_packet(&publish_v311("will/marker", 0, 0, b"m"));
}

#[test]
fn disconnect_v5_session_expiry_after_zero_is_protocol_error() {
    // [MQTT-3.14.2-2] CONNECT had Session Expiry 0, DISCONNECT sets a non-zero one: not a
    // valid DISCONNECT → DISCONNECT 0x82, and (not being a normal disconnect) the Will is
    // published (5.0 §3.1.2.5).
    let b = Broker::start();
    let mut watcher = subscriber_v311(&b, "watcher5", "will5/#");
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will(
        "leaver5",
        flags::CLEAN,
        &no_props(),
        "will5/leaver",
        b"gone",
    ));
    assert_eq!(c.expect_connack(true).code, 0);
    let bad = packet(
        0xE0,
        &cat(&[&[0x00], &props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 60)])]),
    );
    c.send(&bad);
    c.expect_v5_violation(&[0x82], Broker::edgemq_only());
    watcher.expect_packet(&publish_v311("will5/leaver", 0, 0, b"gone"));
}

#[test]
fn disconnect_v5_normal_discards_will_and_closes() {
    // [MQTT-3.14.4-3] DISCONNECT 0x00 → will discarded; server closes.
    let b = Broker::start();
    let mut watcher = subscriber_v311(&b, "watcher5n", "will5n/#");
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will(
        "leaver5n",
        flags::CLEAN,
        &no_props(),
        "will5n/leaver",
        b"gone",
    ));
    assert_eq!(c.expect_connack(true).code, 0);
    c.send(&[0xE0, 0x01, 0x00]);
    c.expect_closed_silently();
    let mut p = RawClient::v311(b.addr, "marker5n");
    p.send(&publish_v311("will5n/marker", 0, 0, b"m"));
    watcher.expect_packet(&publish_v311("will5n/marker", 0, 0, b"m"));
}

#[test]
fn disconnect_v5_with_will_message_0x04_publishes_will() {
    // 5.0 §3.14.2.1: reason 0x04 "Disconnect with Will Message" → the will IS published.
    let b = Broker::start();
    let mut watcher = subscriber_v311(&b, "watcher5w", "will5w/#");
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5_will(
        "leaver5w",
        flags::CLEAN,
        &no_props(),
        "will5w/leaver",
        b"bye",
    ));
    assert_eq!(c.expect_connack(true).code, 0);
    c.send(&[0xE0, 0x01, 0x04]);
    c.expect_closed_silently();
    watcher.expect_packet(&publish_v311("will5w/leaver", 0, 0, b"bye"));
}

// =======================================================================================
// AUTH
// =======================================================================================

#[test]
fn auth_v5_without_authentication_method_is_protocol_error() {
    // [MQTT-4.12.0-7] no Authentication Method in CONNECT → the client must not send AUTH;
    // the server treats it as a Protocol Error.
    let b = Broker::start();
    let (mut c, _) = RawClient::v5(b.addr, "auth5");
    c.send(&[0xF0, 0x02, 0x18, 0x00]);
    c.expect_v5_violation(&[0x82], Broker::edgemq_only());
}

// =======================================================================================
// Session takeover
// =======================================================================================

#[test]
fn takeover_v5_old_connection_gets_0x8e() {
    // [MQTT-3.1.4-3] a new connection with the same client id disconnects the existing one;
    // v5: DISCONNECT 0x8E Session taken over.
    let b = Broker::start();
    let (mut old, _) = RawClient::v5(b.addr, "same-id");
    let (mut new, _) = RawClient::v5(b.addr, "same-id");
    // mosquitto 2.0.11 closes the old connection without a DISCONNECT (checked leniently).
    old.expect_v5_violation(&[0x8E], Broker::edgemq_only());
    new.ping();
}

#[test]
fn takeover_v311_old_connection_closed() {
    // [MQTT-3.1.4-2] (3.1.1) the existing client is disconnected.
    let b = Broker::start();
    let mut old = RawClient::v311(b.addr, "same-id");
    let mut new = RawClient::v311(b.addr, "same-id");
    old.expect_closed_silently();
    new.ping();
}

// =======================================================================================
// Keep-alive
// =======================================================================================

#[test]
fn keep_alive_timeout_v5_disconnect_0x8d() {
    // [MQTT-3.1.2-22] no control packet within 1.5 × Keep Alive: the server closes the
    // connection; v5 sends DISCONNECT 0x8D (Keep Alive timeout) first.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v5("ka-v5", flags::CLEAN, 1, &no_props()));
    assert_eq!(c.expect_connack(true).code, 0);
    // Silent client: nothing more is sent. The broker must end the connection by itself.
    c.expect_v5_violation(&[0x8D], Broker::edgemq_only());
}

#[test]
fn keep_alive_timeout_v311_closes() {
    // [MQTT-3.1.2-24] (3.1.1) the server disconnects a client silent for 1.5 × Keep Alive.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("ka-v311", flags::CLEAN, 1));
    assert_eq!(c.expect_connack(false).code, 0);
    c.expect_closed_silently();
}

#[test]
fn keep_alive_pingreq_keeps_connection_open() {
    // [MQTT-3.1.2-23] any control packet (here PINGREQ) within the interval keeps the
    // connection; [MQTT-3.12.4-1] each PINGREQ gets a PINGRESP.
    let b = Broker::start();
    let mut c = RawClient::open(b.addr);
    c.send(&connect_v311("ka-ping", flags::CLEAN, 2));
    assert_eq!(c.expect_connack(false).code, 0);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        c.ping();
    }
}

// =======================================================================================
// Logging
// =======================================================================================

#[test]
fn protocol_violation_logged_at_warn_with_client_id_and_rule() {
    // Contract: protocol violations are logged at WARN with the client id and the rule id.
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start();
    let mut c = RawClient::v311(b.addr, "noisy-client-42");
    c.send(&publish_raw(0x36, b"t", Some(1), None, b"x")); // QoS 3 [MQTT-3.3.1-4]
    c.expect_closed_silently();
    // Wait for the rule id, not the client id: "client connected" names the client first.
    let found = b.wait_for_log("MQTT-3.3.1-4", Duration::from_secs(10));
    let log = b.log();
    assert!(found, "violation not logged:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("noisy-client-42") && l.contains("WARN") && l.contains("MQTT-"))
        .unwrap_or_else(|| panic!("no WARN line with the client id and a rule id:\n{log}"));
    assert!(
        line.contains("MQTT-3.3.1-4"),
        "rule id for QoS 3 should be MQTT-3.3.1-4: {line}"
    );
}

// =======================================================================================
// Isolation and slow readers
// =======================================================================================

#[test]
fn misbehaving_clients_do_not_affect_a_good_client() {
    let b = Broker::start();
    let mut sub = subscriber_v311(&b, "good-sub", "iso/#");
    let mut publ = RawClient::v311(b.addr, "good-pub");

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        ("not connect first", PINGREQ.to_vec()),
        (
            "level 6",
            connect_raw(b"MQTT", 6, flags::CLEAN, 0, None, &lp(b"x")),
        ),
        (
            "half a connect",
            connect_v311("half", flags::CLEAN, 0)[..7].to_vec(),
        ),
        (
            "qos 3 publish",
            cat(&[
                &connect_v311("q3", flags::CLEAN, 0),
                &publish_raw(0x36, b"iso/x", Some(1), None, b"x"),
            ]),
        ),
        (
            "wildcard publish v5",
            cat(&[
                &connect_v5("wc", flags::CLEAN, 0, &no_props()),
                &publish_v5("iso/#", 0, 0, &no_props(), b"x"),
            ]),
        ),
        (
            "huge length",
            cat(&[
                &connect_v311("huge", flags::CLEAN, 0),
                &[0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            ]),
        ),
        (
            "connect then vanish",
            connect_v311("vanish", flags::CLEAN, 0),
        ),
        (
            "five-byte remaining length",
            cat(&[
                &connect_v311("rl5", flags::CLEAN, 0),
                &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ]),
        ),
    ];
    for (i, (what, bytes)) in bad.iter().enumerate() {
        let mut c = RawClient::open(b.addr);
        c.send_lenient(bytes);
        // Drop the connection from our side half of the time, let the broker do it otherwise.
        if i % 2 == 0 {
            let _ = c.next_event(Duration::from_millis(200));
        }
        drop(c);
        let payload = format!("after {what}");
        publ.send(&publish_v311(&format!("iso/{i}"), 0, 0, payload.as_bytes()));
        sub.expect_packet(&publish_v311(&format!("iso/{i}"), 0, 0, payload.as_bytes()));
    }
    // QoS 1 round trip as a final check.
    publ.send(&publish_v311("iso/end", 1, 9, b"end"));
    publ.expect_packet(&puback(9));
    sub.expect_packet(&publish_v311("iso/end", 0, 0, b"end"));
}

/// Resident set size of a process in kB, from /proc/<pid>/status.
fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS line")
}

#[test]
fn slow_reader_does_not_stall_the_broker() {
    let b = Broker::start();
    // The slow reader subscribes to everything at QoS 0 and never reads again.
    let mut slow = RawClient::v311(b.addr, "slow-reader");
    slow.send(&subscribe(1, None, &[("#", 0)]));
    slow.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x00]);
    let rss_before = Broker::edgemq_only().then(|| vm_rss_kb(b.pid()));

    let mut publ = RawClient::v311(b.addr, "firehose");
    let payload = vec![b'x'; 1024];
    let one = publish_v311("flood/data", 0, 0, &payload);
    let mut batch = Vec::with_capacity(one.len() * 100);
    for _ in 0..100 {
        batch.extend_from_slice(&one);
    }
    // 20,000 × 1 KB. The write timeout (60 s) turns a broker that stops reading the publisher
    // because of the slow subscriber into a failure instead of a hang.
    for _ in 0..200 {
        publ.send(&batch);
    }
    // The publisher's connection is still served…
    publ.ping();

    // …and a third client gets a round trip.
    let mut probe = RawClient::v311(b.addr, "probe");
    probe.send(&subscribe(1, None, &[("probe/echo", 1)]));
    probe.expect_packet(&[0x90, 0x03, 0x00, 0x01, 0x01]);
    probe.send(&publish_v311("probe/echo", 1, 3, b"ping"));
    let mut got_ack = false;
    let mut got_msg = false;
    while !(got_ack && got_msg) {
        let p = probe.read_packet();
        if p == puback(3) {
            got_ack = true;
        } else {
            let m = parse_publish(&p, false);
            assert_eq!(
                (m.topic.as_str(), m.payload.as_slice(), m.qos),
                ("probe/echo", &b"ping"[..], 1)
            );
            probe.send(&puback(m.pid.unwrap_or(0)));
            got_msg = true;
        }
    }

    if let Some(before) = rss_before {
        let after = vm_rss_kb(b.pid());
        let grown_mb = after.saturating_sub(before) / 1024;
        assert!(
            grown_mb < 200,
            "broker RSS grew by {grown_mb} MB ({before} kB → {after} kB) for one slow reader"
        );
        // Still alive and serving.
        let mut last = RawClient::v311(b.addr, "last");
        last.ping();
    }
    drop(slow);
}

/// [MQTT-3.1.2-24] The Server MUST NOT send packets exceeding the client's Maximum Packet
/// Size, the CONNACK included (found by the session fuzz target: a client allowing 21 bytes
/// got a 24-byte CONNACK). The broker leaves out properties whose absence means the same.
#[test]
fn connack_fits_a_small_client_maximum_packet_size() {
    let b = Broker::start();
    for max in [16u32, 21] {
        let mut c = RawClient::open(b.addr);
        c.send(&connect_v5(
            &format!("small-{max}"),
            flags::CLEAN,
            0,
            &props(&[p_u32(0x27, max)]),
        ));
        let p = c.read_packet();
        assert!(
            p.len() <= max as usize,
            "CONNACK of {} bytes for Maximum Packet Size {max}",
            p.len()
        );
        let ack = parse_connack(&p, true);
        assert_eq!(ack.code, 0, "{ack:?}");
        assert_eq!(
            ack.props.num(0x21),
            Some(100),
            "Receive Maximum kept: {ack:?}"
        );
        c.send(&[0xC0, 0x00]);
        c.expect_packet(&[0xD0, 0x00]);
    }
}
