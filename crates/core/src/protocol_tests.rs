//! The rules of `protocol`, without sockets: each test names its statement.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use edgemq_codec::{Auth, Disconnect, Properties, PubResponse, SubAck};

use super::*;
use crate::message::Message;
use crate::session::Delivery;
use crate::session::OutgoingState;

fn rules() -> Rules {
    Rules::from(&Limits {
        receive_maximum: 2,
        topic_alias_maximum: 4,
        max_topic_levels: 3,
        max_session_expiry: 600,
        ..Limits::default()
    })
}

fn v5() -> Inbound {
    Inbound::new(ProtocolVersion::V5, rules(), false, None, false)
}

fn v3() -> Inbound {
    Inbound::new(ProtocolVersion::V3_1_1, rules(), false, None, false)
}

fn durable_v5() -> Inbound {
    Inbound::new(ProtocolVersion::V5, rules(), false, None, true)
}

fn publish(topic: &str, qos: QoS, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: (qos != QoS::AtMostOnce).then_some(id),
        properties: Properties::default(),
        payload: Bytes::from_static(b"p"),
    }
}

fn aliased(topic: &str, alias: u16) -> Publish {
    let mut p = publish(topic, QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(alias);
    p
}

fn run(
    p: &mut Inbound,
    mut publish: Publish,
    incoming: &mut IncomingQos2,
) -> (Result<PublishStep, Violation>, Vec<Effect>) {
    let mut effects = Vec::new();
    let step = p.publish(&mut publish, incoming, &mut effects);
    (step, effects)
}

/// The topic a PUBLISH is routed under.
fn routed(p: &mut Inbound, mut publish: Publish) -> Option<ByteString> {
    let step = p.publish(&mut publish, &mut IncomingQos2::default(), &mut Vec::new());
    (step == Ok(PublishStep::Route)).then_some(publish.topic)
}

fn reason_of(r: Result<PublishStep, Violation>) -> ReasonCode {
    r.expect_err("a violation").reason
}

#[test]
fn mqtt_3_3_2_8_an_alias_out_of_range_is_0x94() {
    let mut incoming = IncomingQos2::default();
    for alias in [0, 5] {
        let (r, _) = run(&mut v5(), aliased("a", alias), &mut incoming);
        assert_eq!(reason_of(r), ReasonCode::TopicAliasInvalid, "alias {alias}");
    }
}

#[test]
fn mqtt_3_3_2_7_an_alias_used_before_it_was_set_is_a_protocol_error() {
    let mut incoming = IncomingQos2::default();
    let (r, _) = run(&mut v5(), aliased("", 1), &mut incoming);
    assert_eq!(reason_of(r), ReasonCode::ProtocolError);
}

#[test]
fn mqtt_3_3_2_10_an_alias_set_on_this_connection_stands_for_its_topic() {
    let mut p = v5();
    assert_eq!(
        routed(&mut p, aliased("sensors/1", 2)).as_deref(),
        Some("sensors/1")
    );
    assert_eq!(routed(&mut p, aliased("", 2)).as_deref(), Some("sensors/1"));
    // A new connection starts without aliases.
    assert_eq!(routed(&mut v5(), aliased("", 2)), None);
}

#[test]
fn mqtt_3_3_2_1_an_empty_topic_without_an_alias_is_a_protocol_error() {
    let (r, _) = run(
        &mut v3(),
        publish("", QoS::AtMostOnce, 0),
        &mut Default::default(),
    );
    assert_eq!(reason_of(r), ReasonCode::ProtocolError);
}

#[test]
fn mqtt_3_3_2_2_a_topic_name_with_wildcards_is_0x90() {
    for topic in ["a/+", "a/#"] {
        let (r, _) = run(
            &mut v5(),
            publish(topic, QoS::AtMostOnce, 0),
            &mut Default::default(),
        );
        assert_eq!(reason_of(r), ReasonCode::TopicNameInvalid, "{topic}");
    }
}

#[test]
fn mqtt_3_3_4_6_a_client_may_not_send_subscription_identifiers() {
    let mut p = publish("a", QoS::AtMostOnce, 0);
    p.properties.subscription_identifiers = vec![3];
    let (r, _) = run(&mut v5(), p, &mut Default::default());
    assert_eq!(reason_of(r), ReasonCode::ProtocolError);
}

#[test]
fn a_topic_deeper_than_the_limit_is_refused_in_the_protocol() {
    let deep = "a/b/c/d";
    let (r, e) = run(
        &mut v5(),
        publish(deep, QoS::AtLeastOnce, 7),
        &mut Default::default(),
    );
    assert!(matches!(r, Ok(PublishStep::TooDeep { close: None, .. })));
    let mut ack = PubResponse::new(7);
    ack.reason = ReasonCode::TopicNameInvalid;
    assert_eq!(e, vec![Effect::Send(Packet::PubAck(ack))]);
    let (r, _) = run(
        &mut v5(),
        publish(deep, QoS::AtMostOnce, 0),
        &mut Default::default(),
    );
    assert!(
        matches!(r, Ok(PublishStep::TooDeep { close: Some(v), .. }) if v.reason == ReasonCode::TopicNameInvalid)
    );
    let (r, e) = run(
        &mut v3(),
        publish(deep, QoS::AtLeastOnce, 7),
        &mut Default::default(),
    );
    assert!(matches!(r, Ok(PublishStep::TooDeep { close: Some(_), .. })));
    assert!(e.is_empty(), "v3 has no code: closed");
}

#[test]
fn mqtt_3_2_2_11_qos_above_maximum_qos_is_0x9b() {
    let mut r = rules();
    r.maximum_qos = QoS::AtLeastOnce;
    let mut p = Inbound::new(ProtocolVersion::V5, r, false, None, false);
    let (r, _) = run(
        &mut p,
        publish("a", QoS::ExactlyOnce, 1),
        &mut Default::default(),
    );
    assert_eq!(reason_of(r), ReasonCode::QoSNotSupported);
}

#[test]
fn mqtt_3_2_2_14_retain_when_not_available_is_0x9a() {
    let mut r = rules();
    r.retain_available = false;
    let mut p = Inbound::new(ProtocolVersion::V5, r, false, None, false);
    let mut m = publish("a", QoS::AtMostOnce, 0);
    m.retain = true;
    let (r, _) = run(&mut p, m, &mut Default::default());
    assert_eq!(reason_of(r), ReasonCode::RetainNotSupported);
}

#[test]
fn mqtt_3_3_4_9_more_qos_2_messages_than_receive_maximum_is_0x93() {
    let mut incoming = IncomingQos2::default();
    let mut p = v5();
    for id in [1, 2] {
        let (r, _) = run(&mut p, publish("a", QoS::ExactlyOnce, id), &mut incoming);
        assert_eq!(r, Ok(PublishStep::Route));
    }
    let (r, _) = run(&mut p, publish("a", QoS::ExactlyOnce, 3), &mut incoming);
    assert_eq!(reason_of(r), ReasonCode::ReceiveMaximumExceeded);
}

#[test]
fn mqtt_4_3_3_9_a_repeated_qos_2_id_is_answered_again_not_delivered_again() {
    let mut incoming = IncomingQos2::default();
    let mut p = v5();
    let (r, _) = run(&mut p, publish("a", QoS::ExactlyOnce, 9), &mut incoming);
    assert_eq!(r, Ok(PublishStep::Route));
    let mut dup = publish("a", QoS::ExactlyOnce, 9);
    dup.dup = true;
    let (r, e) = run(&mut p, dup, &mut incoming);
    assert_eq!(r, Ok(PublishStep::Answered));
    assert_eq!(e, vec![Effect::Send(Packet::PubRec(PubResponse::new(9)))]);
}

#[test]
fn a_durable_session_stores_qos_2_ids_and_holds_the_pubrec_for_the_commit() {
    let mut incoming = IncomingQos2::default();
    let mut p = durable_v5();
    let (_, e) = run(&mut p, publish("a", QoS::ExactlyOnce, 4), &mut incoming);
    assert_eq!(
        e,
        vec![Effect::IncomingQos2 {
            packet_id: 4,
            pending: true
        }]
    );
    let mut e = Vec::new();
    p.answer(
        4,
        QoS::ExactlyOnce,
        Outcome::Delivered,
        false,
        &mut incoming,
        &mut e,
    )
    .unwrap();
    assert_eq!(
        e,
        vec![
            Effect::HoldForCommit,
            Effect::Send(Packet::PubRec(PubResponse::new(4)))
        ]
    );
}

#[test]
fn mqtt_3_4_2_1_v5_acknowledgements_carry_the_outcome_v3_does_not() {
    let cases = [
        (Outcome::Delivered, ReasonCode::Success),
        (Outcome::NoSubscribers, ReasonCode::NoMatchingSubscribers),
        (Outcome::NotAuthorized, ReasonCode::NotAuthorized),
        (Outcome::QuotaExceeded, ReasonCode::QuotaExceeded),
    ];
    for (outcome, reason) in cases {
        let mut e = Vec::new();
        v5().answer(
            1,
            QoS::AtLeastOnce,
            outcome,
            false,
            &mut Default::default(),
            &mut e,
        )
        .unwrap();
        let mut ack = PubResponse::new(1);
        ack.reason = reason;
        assert_eq!(e, vec![Effect::Send(Packet::PubAck(ack))]);
        let mut e = Vec::new();
        let r = v3().answer(
            1,
            QoS::AtLeastOnce,
            outcome,
            false,
            &mut Default::default(),
            &mut e,
        );
        if outcome == Outcome::QuotaExceeded {
            assert_eq!(r.unwrap_err().reason, ReasonCode::QuotaExceeded);
            assert!(
                e.is_empty(),
                "[MQTT-4.4.0-1] not acknowledged: sent again after reconnecting"
            );
        } else {
            r.unwrap();
            assert_eq!(e, vec![Effect::Send(Packet::PubAck(PubResponse::new(1)))]);
        }
    }
    let mut e = Vec::new();
    v5().answer(
        1,
        QoS::AtLeastOnce,
        Outcome::Delivered,
        true,
        &mut Default::default(),
        &mut e,
    )
    .unwrap();
    assert_eq!(
        e[0],
        Effect::HoldForCommit,
        "a stored message is acknowledged once committed"
    );
    let mut e = Vec::new();
    v5().answer(
        0,
        QoS::AtMostOnce,
        Outcome::Delivered,
        false,
        &mut Default::default(),
        &mut e,
    )
    .unwrap();
    assert!(e.is_empty(), "QoS 0 has no acknowledgement");
}

#[test]
fn mqtt_4_3_3_a_refused_qos_2_message_ends_its_exchange_at_pubrec() {
    let mut incoming = IncomingQos2::default();
    let mut p = durable_v5();
    run(&mut p, publish("a", QoS::ExactlyOnce, 5), &mut incoming)
        .0
        .unwrap();
    let mut e = Vec::new();
    p.answer(
        5,
        QoS::ExactlyOnce,
        Outcome::NotAuthorized,
        false,
        &mut incoming,
        &mut e,
    )
    .unwrap();
    assert!(!incoming.contains(5), "released");
    assert!(e.contains(&Effect::IncomingQos2 {
        packet_id: 5,
        pending: false
    }));
}

fn outgoing_with(qos: QoS, stored: Option<u64>) -> (OutgoingWindow, u16) {
    let mut w = OutgoingWindow::default();
    let message = Arc::new(Message::broker_generated(
        ByteString::from_static("t"),
        Bytes::new(),
        qos,
        false,
    ));
    let delivery = Delivery {
        stored,
        ..Delivery::plain(message, qos)
    };
    let id = w.insert(delivery).unwrap();
    (w, id)
}

fn ack(
    p: &Inbound,
    packet: Packet,
    w: &mut OutgoingWindow,
) -> (Result<(), Violation>, Vec<Effect>) {
    let mut e = Vec::new();
    let r = p.acknowledgement(packet, w, &mut IncomingQos2::default(), &mut e);
    (r, e)
}

#[test]
fn mqtt_4_3_2_puback_settles_a_qos_1_delivery_and_is_out_of_sequence_for_qos_2() {
    let (mut w, id) = outgoing_with(QoS::AtLeastOnce, Some(11));
    let (r, e) = ack(&v5(), Packet::PubAck(PubResponse::new(id)), &mut w);
    assert_eq!((r, e), (Ok(()), vec![Effect::Forget(Some(11))]));
    assert!(w.is_empty());
    let (r, e) = ack(&v5(), Packet::PubAck(PubResponse::new(id)), &mut w);
    assert_eq!((r, e), (Ok(()), vec![]), "a stray PUBACK is ignored");
    let (mut w, id) = outgoing_with(QoS::ExactlyOnce, None);
    let (r, _) = ack(&v5(), Packet::PubAck(PubResponse::new(id)), &mut w);
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
}

#[test]
fn mqtt_4_3_3_pubrec_then_pubrel_then_pubcomp() {
    let (mut w, id) = outgoing_with(QoS::ExactlyOnce, Some(21));
    let p = durable_v5();
    let (r, e) = ack(&p, Packet::PubRec(PubResponse::new(id)), &mut w);
    r.unwrap();
    assert_eq!(
        e,
        vec![
            Effect::AwaitPubComp {
                seq: 21,
                packet_id: id
            },
            Effect::HoldForCommit,
            Effect::Send(Packet::PubRel(PubResponse::new(id)))
        ],
        "the PUBREL waits until only the identifier is stored"
    );
    assert_eq!(state_of(&w, id), Some(OutgoingState::AwaitingPubComp));
    let (r, e) = ack(&p, Packet::PubComp(PubResponse::new(id)), &mut w);
    assert_eq!((r, e), (Ok(()), vec![Effect::Forget(Some(21))]));
    assert!(w.is_empty());
}

#[test]
fn mqtt_4_3_3_an_unknown_pubrec_is_answered_pubrel_0x92_in_v5() {
    let mut w = OutgoingWindow::default();
    let (_, e) = ack(&v5(), Packet::PubRec(PubResponse::new(3)), &mut w);
    let mut rel = PubResponse::new(3);
    rel.reason = ReasonCode::PacketIdentifierNotFound;
    assert_eq!(e, vec![Effect::Send(Packet::PubRel(rel))]);
    let (_, e) = ack(&v3(), Packet::PubRec(PubResponse::new(3)), &mut w);
    assert_eq!(e, vec![Effect::Send(Packet::PubRel(PubResponse::new(3)))]);
}

#[test]
fn mqtt_4_3_3_a_failed_pubrec_ends_the_exchange() {
    let (mut w, id) = outgoing_with(QoS::ExactlyOnce, Some(8));
    let mut rec = PubResponse::new(id);
    rec.reason = ReasonCode::UnspecifiedError;
    let (r, e) = ack(&v5(), Packet::PubRec(rec), &mut w);
    assert_eq!((r, e), (Ok(()), vec![Effect::Forget(Some(8))]));
}

#[test]
fn mqtt_4_3_3_pubcomp_before_pubrec_and_pubrec_for_qos_1_are_protocol_errors() {
    let (mut w, id) = outgoing_with(QoS::ExactlyOnce, None);
    let (r, _) = ack(&v5(), Packet::PubComp(PubResponse::new(id)), &mut w);
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
    let (mut w, id) = outgoing_with(QoS::AtLeastOnce, None);
    let (r, _) = ack(&v5(), Packet::PubRec(PubResponse::new(id)), &mut w);
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
}

#[test]
fn mqtt_4_3_3_11_pubrel_releases_the_identifier_and_v5_answers_an_unknown_one_0x92() {
    let p = durable_v5();
    let mut incoming = IncomingQos2::default();
    incoming.receive(6);
    let mut e = Vec::new();
    p.acknowledgement(
        Packet::PubRel(PubResponse::new(6)),
        &mut OutgoingWindow::default(),
        &mut incoming,
        &mut e,
    )
    .unwrap();
    assert_eq!(
        e,
        vec![
            Effect::IncomingQos2 {
                packet_id: 6,
                pending: false
            },
            Effect::HoldForCommit,
            Effect::Send(Packet::PubComp(PubResponse::new(6)))
        ]
    );
    let mut e = Vec::new();
    p.acknowledgement(
        Packet::PubRel(PubResponse::new(6)),
        &mut OutgoingWindow::default(),
        &mut incoming,
        &mut e,
    )
    .unwrap();
    let mut comp = PubResponse::new(6);
    comp.reason = ReasonCode::PacketIdentifierNotFound;
    assert_eq!(e, vec![Effect::Send(Packet::PubComp(comp))]);
}

#[test]
fn mqtt_3_12_4_1_pingreq_is_answered_ahead_of_held_output() {
    let mut e = Vec::new();
    assert_eq!(v3().control(Packet::PingReq, &mut e), Ok(Control::Continue));
    assert_eq!(e, vec![Effect::SendUnheld(Packet::PingResp)]);
}

#[test]
fn mqtt_3_14_2_2_disconnect_may_not_set_an_expiry_after_connect_had_0() {
    let disconnect = |expiry| {
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: Properties::from(edgemq_codec::PropertyValues {
                session_expiry_interval: expiry,
                ..Default::default()
            }),
        })
    };
    let zero = Inbound::new(ProtocolVersion::V5, rules(), true, None, false);
    let r = zero.control(disconnect(Some(60)), &mut Vec::new());
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
    assert!(zero.control(disconnect(Some(0)), &mut Vec::new()).is_ok());
    // Otherwise it is taken, within the broker's cap.
    let r = v5().control(disconnect(Some(100_000)), &mut Vec::new());
    assert_eq!(
        r,
        Ok(Control::Disconnect {
            with_will: false,
            session_expiry: Some(600)
        })
    );
}

#[test]
fn mqtt_3_14_4_3_disconnect_with_will_message_keeps_the_will() {
    let d = Packet::Disconnect(Disconnect {
        reason: ReasonCode::DisconnectWithWillMessage,
        properties: Properties::default(),
    });
    assert_eq!(
        v5().control(d, &mut Vec::new()),
        Ok(Control::Disconnect {
            with_will: true,
            session_expiry: None
        })
    );
}

#[test]
fn mqtt_3_1_0_2_a_second_connect_and_server_only_packets_are_protocol_errors() {
    let connack = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: Properties::default(),
        reasons: vec![],
    });
    for packet in [connack, Packet::PingResp] {
        let r = v5().control(packet, &mut Vec::new());
        assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
    }
}

#[test]
fn mqtt_4_12_1_1_re_authentication_only_with_the_connect_method() {
    let auth = |reason, method: Option<&str>| {
        Packet::Auth(Auth {
            reason,
            properties: Properties::from(edgemq_codec::PropertyValues {
                authentication_method: method.map(ByteString::from),
                ..Default::default()
            }),
        })
    };
    let none = v5();
    let r = none.control(
        auth(ReasonCode::ReAuthenticate, Some("K8S-SAT")),
        &mut Vec::new(),
    );
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
    let sat = Inbound::new(
        ProtocolVersion::V5,
        rules(),
        false,
        Some("K8S-SAT".into()),
        false,
    );
    let r = sat.control(
        auth(ReasonCode::ContinueAuthentication, Some("K8S-SAT")),
        &mut Vec::new(),
    );
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
    let r = sat.control(
        auth(ReasonCode::ReAuthenticate, Some("other")),
        &mut Vec::new(),
    );
    assert_eq!(r.unwrap_err().reason, ReasonCode::ProtocolError);
    let r = sat.control(
        auth(ReasonCode::ReAuthenticate, Some("K8S-SAT")),
        &mut Vec::new(),
    );
    assert!(matches!(r, Ok(Control::Reauthenticate(_))));
}
