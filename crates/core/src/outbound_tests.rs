//! The rules of `outbound`, without sockets: each test names its statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use edgemq_codec::{Decoder, Packet, Publish, QoS};

use super::*;
use crate::message::Message;

fn terms(version: ProtocolVersion) -> OutboundTerms {
    OutboundTerms {
        version,
        send_window: 2,
        max_inflight_bytes: 1 << 20,
        client_max_packet: None,
        server_topic_aliases: 0,
    }
}

fn v5() -> Outbound {
    Outbound::new(terms(ProtocolVersion::V5))
}

fn delivery(topic: &str, payload: usize, qos: QoS) -> Delivery {
    let message = Message::broker_generated(
        ByteString::from(topic),
        Bytes::from(vec![b'x'; payload]),
        qos,
        false,
    );
    Delivery::plain(Arc::new(message), qos)
}

/// `n` QoS 1 messages in flight, ids 1..=n.
fn window(n: usize) -> OutgoingWindow {
    let mut window = OutgoingWindow::default();
    for _ in 0..n {
        window.insert(delivery("t", 1, QoS::AtLeastOnce)).unwrap();
    }
    window
}

/// Everything `out` holds, decoded as the client would.
fn decoded(out: &mut BytesMut) -> Vec<Publish> {
    let mut decoder = Decoder::new(u32::MAX);
    decoder.version = Some(ProtocolVersion::V5);
    let mut packets = Vec::new();
    while let Some(packet) = decoder.decode(out).unwrap() {
        match packet {
            Packet::Publish(p) => packets.push(p),
            other => panic!("not a PUBLISH: {other:?}"),
        }
    }
    packets
}

#[test]
fn window_holds_no_more_than_the_clients_receive_maximum() {
    // [MQTT-3.3.4-9] The Server MUST NOT send more than Receive Maximum QoS 1 and QoS 2
    // PUBLISH packets for which it has not received PUBACK, PUBCOMP, or PUBREC with a
    // Reason Code of 128 or greater.
    let out = v5();
    assert!(out.window_open(&window(0), false));
    assert!(out.window_open(&window(1), false));
    assert!(!out.window_open(&window(2), false));
}

#[test]
fn byte_budget_and_shedding_close_the_window_but_one_message_always_moves() {
    let out = Outbound::new(OutboundTerms {
        max_inflight_bytes: 1,
        send_window: 10,
        ..terms(ProtocolVersion::V5)
    });
    // One message, however large, may go when none is in flight (or nothing would move).
    assert!(out.window_open(&window(0), true));
    assert!(!out.window_open(&window(1), false));
    let roomy = Outbound::new(OutboundTerms {
        send_window: 10,
        ..terms(ProtocolVersion::V5)
    });
    assert!(roomy.window_open(&window(1), false));
    assert!(
        !roomy.window_open(&window(1), true),
        "shedding at the memory budget"
    );
}

#[test]
fn resumed_session_resends_in_order_within_the_receive_maximum() {
    // [MQTT-4.4.0-1] When a Client reconnects with Clean Start set to 0 and a session is
    // present, both the Client and Server MUST resend any unacknowledged PUBLISH packets
    // (where QoS > 0) and PUBREL packets using their original Packet Identifiers.
    // [MQTT-3.3.4-9] ... but no more than the new Receive Maximum at once.
    let mut inflight = window(3);
    let id = inflight.insert(delivery("t", 1, QoS::ExactlyOnce)).unwrap();
    inflight.pubrec(id, false).unwrap();
    let mut out = v5();
    out.resume(&inflight);
    assert!(
        !out.window_open(&inflight, false),
        "re-sends go before anything new"
    );
    assert_eq!(out.next_resend(&inflight), Some(Resend::Publish(1)));
    assert_eq!(out.next_resend(&inflight), Some(Resend::Publish(2)));
    assert_eq!(
        out.next_resend(&inflight),
        None,
        "Receive Maximum 2 is full"
    );
    inflight.puback(1).unwrap();
    assert_eq!(out.next_resend(&inflight), Some(Resend::Publish(3)));
    inflight.puback(2).unwrap();
    assert_eq!(out.next_resend(&inflight), Some(Resend::PubRel(id)));
    assert_eq!(out.next_resend(&inflight), None);
    inflight.puback(3).unwrap();
    inflight.pubcomp(id).unwrap();
    assert!(out.window_open(&inflight, false));
}

#[test]
fn an_id_acknowledged_before_its_resend_is_skipped() {
    let mut inflight = window(2);
    let mut out = v5();
    out.resume(&inflight);
    inflight.puback(1).unwrap();
    assert_eq!(out.next_resend(&inflight), Some(Resend::Publish(2)));
    assert_eq!(out.next_resend(&inflight), None);
}

#[test]
fn a_message_larger_than_the_clients_maximum_packet_size_is_not_written() {
    // [MQTT-3.1.2-25] Where a Packet is too large to send, the Server MUST discard it
    // without sending it and then behave as if it had completed sending that Application
    // Message.
    let mut out = Outbound::new(OutboundTerms {
        client_max_packet: Some(64),
        ..terms(ProtocolVersion::V5)
    });
    let now = Instant::now();
    let mut buf = BytesMut::from(&b"before"[..]);
    let big = delivery("t", 100, QoS::AtLeastOnce);
    assert!(matches!(
        out.write(&big, Some(1), false, now, &mut buf),
        Written::TooLarge
    ));
    assert_eq!(&buf[..], b"before", "nothing of it written");
    let small = delivery("t", 10, QoS::AtLeastOnce);
    buf.clear();
    assert!(matches!(
        out.write(&small, Some(1), false, now, &mut buf),
        Written::Sent
    ));
    assert!(buf.len() <= 64);
}

#[test]
fn an_alias_whose_publish_was_too_large_is_not_used_later() {
    // The client never saw the PUBLISH that set the alias, so a later one must set it
    // again with the topic, not use it with an empty topic [MQTT-3.3.2-12].
    let mut out = Outbound::new(OutboundTerms {
        client_max_packet: Some(64),
        server_topic_aliases: 4,
        ..terms(ProtocolVersion::V5)
    });
    let now = Instant::now();
    let mut buf = BytesMut::new();
    let big = delivery("a/topic", 100, QoS::AtMostOnce);
    assert!(matches!(
        out.write(&big, None, false, now, &mut buf),
        Written::TooLarge
    ));
    let small = delivery("a/topic", 1, QoS::AtMostOnce);
    assert!(matches!(
        out.write(&small, None, false, now, &mut buf),
        Written::Sent
    ));
    assert!(matches!(
        out.write(&small, None, false, now, &mut buf),
        Written::Sent
    ));
    let sent = decoded(&mut buf);
    assert_eq!(&*sent[0].topic, "a/topic");
    assert_eq!(sent[0].properties.topic_alias, Some(1));
    assert_eq!(
        &*sent[1].topic, "",
        "the alias set by the first PUBLISH sent"
    );
    assert_eq!(sent[1].properties.topic_alias, Some(1));
}

#[test]
fn v3_clients_get_no_topic_aliases_or_properties() {
    let mut out = Outbound::new(OutboundTerms {
        server_topic_aliases: 4,
        ..terms(ProtocolVersion::V3_1_1)
    });
    let now = Instant::now();
    let mut message = Message::broker_generated(
        ByteString::from("t"),
        Bytes::from_static(b"p"),
        QoS::AtMostOnce,
        false,
    );
    message.expires_at = Some(now + Duration::from_secs(10));
    let d = Delivery::plain(Arc::new(message), QoS::AtMostOnce);
    let mut buf = BytesMut::new();
    out.write(&d, None, false, now, &mut buf);
    out.write(&d, None, false, now, &mut buf);
    // v3.1.1 PUBLISH: fixed header, topic, payload; no properties.
    assert_eq!(
        &buf[..],
        &[0x30, 4, 0, 1, b't', b'p', 0x30, 4, 0, 1, b't', b'p']
    );
}

#[test]
fn the_expiry_sent_is_what_is_left_of_it() {
    // [MQTT-3.3.2-6] The PUBLISH packet sent to a Client by the Server MUST contain a
    // Message Expiry Interval set to the received value minus the time that the
    // Application Message has been waiting in the Server.
    let mut out = v5();
    let start = Instant::now();
    let mut message =
        Message::broker_generated(ByteString::from("t"), Bytes::new(), QoS::AtMostOnce, false);
    message.expires_at = Some(start + Duration::from_secs(10));
    let d = Delivery::plain(Arc::new(message), QoS::AtMostOnce);
    let mut buf = BytesMut::new();
    out.write(&d, None, false, start + Duration::from_secs(4), &mut buf);
    assert_eq!(
        decoded(&mut buf)[0].properties.message_expiry_interval,
        Some(6)
    );
}

#[test]
fn an_expired_message_is_not_delivered() {
    // [MQTT-3.3.2-5] If the Message Expiry Interval has passed and the Server has not
    // managed to start onward delivery to a matching subscriber, then it MUST delete the
    // copy of the message for that subscriber. (The runtime drops a delivery that
    // `Message::is_expired` at the moment it would be written.)
    let start = Instant::now();
    let mut message =
        Message::broker_generated(ByteString::from("t"), Bytes::new(), QoS::AtMostOnce, false);
    message.expires_at = Some(start + Duration::from_secs(10));
    assert!(!message.is_expired(start + Duration::from_secs(9)));
    assert!(message.is_expired(start + Duration::from_secs(10)));
}

#[test]
fn a_resend_carries_dup_and_its_original_packet_identifier() {
    // [MQTT-3.3.1-1] The DUP flag MUST be set to 1 by the Client or Server when it
    // attempts to re-deliver a PUBLISH packet. [MQTT-4.4.0-1] ... original Packet Identifiers.
    let mut out = v5();
    let mut buf = BytesMut::new();
    let d = delivery("t", 1, QoS::AtLeastOnce);
    out.write(&d, Some(7), true, Instant::now(), &mut buf);
    let sent = decoded(&mut buf);
    assert!(sent[0].dup);
    assert_eq!(sent[0].packet_id, Some(7));
}
