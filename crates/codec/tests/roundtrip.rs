//! Property tests: any valid packet survives encode → decode for 3.1.1 and 5.0, and no byte
//! sequence makes the decoder panic.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::prelude::*;

use edgemq_codec::*;

fn text() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/ é]{0,12}".prop_map(ByteString::from)
}

fn topic() -> impl Strategy<Value = ByteString> {
    "[a-z0-9]{1,6}(/[a-z0-9]{0,6}){0,3}".prop_map(ByteString::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn publish_props() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(topic()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec((text(), text()), 0..3),
        proptest::collection::vec(1u32..=268_435_455, 0..3),
        proptest::option::of(1u16..),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, up, ids, alias)| {
            Properties::from(edgemq_codec::PropertyValues {
                payload_format_indicator: pfi,
                message_expiry_interval: exp,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd.map(Bytes::from),
                user_properties: up,
                subscription_identifiers: ids,
                topic_alias: alias,
                ..Default::default()
            })
        })
}

fn packet(v5: bool) -> impl Strategy<Value = Packet> {
    let props = move |p: Properties| if v5 { p } else { Properties::default() };
    let publish = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        1u16..,
        publish_props(),
        "[a-z]{0,20}",
    )
        .prop_map(move |(q, dup, retain, topic, id, p, payload)| {
            Packet::Publish(Publish {
                dup: dup && q != QoS::AtMostOnce,
                qos: q,
                retain,
                topic,
                packet_id: (q != QoS::AtMostOnce).then_some(id),
                properties: props(p),
                payload: Bytes::from(payload),
            })
        });
    let ack = (1u16.., 0usize..4).prop_map(|(id, kind)| {
        let r = PubResponse::new(id);
        [
            Packet::PubAck,
            Packet::PubRec,
            Packet::PubRel,
            Packet::PubComp,
        ][kind](r)
    });
    let subscribe = (
        1u16..,
        proptest::collection::vec((topic(), qos(), any::<bool>(), any::<bool>(), 0u8..3), 1..4),
    )
        .prop_map(move |(id, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: Properties::default(),
                filters: filters
                    .into_iter()
                    .map(|(f, q, nl, rap, rh)| {
                        let options = if v5 {
                            SubscriptionOptions {
                                qos: q,
                                no_local: nl,
                                retain_as_published: rap,
                                retain_handling: [
                                    RetainHandling::SendOnSubscribe,
                                    RetainHandling::SendIfNew,
                                    RetainHandling::DoNotSend,
                                ][rh as usize],
                            }
                        } else {
                            SubscriptionOptions {
                                qos: q,
                                ..Default::default()
                            }
                        };
                        (f, options)
                    })
                    .collect(),
            })
        });
    let unsubscribe =
        (1u16.., proptest::collection::vec(topic(), 1..4)).prop_map(|(id, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id,
                properties: Properties::default(),
                filters,
            })
        });
    prop_oneof![
        publish,
        ack,
        subscribe,
        unsubscribe,
        Just(Packet::PingReq),
        Just(Packet::PingResp)
    ]
}

fn roundtrip(p: Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    p.encode(version, &mut out).unwrap();
    prop_assert_eq!(out.len(), p.encoded_len(version));
    let mut d = Decoder::new(u32::MAX);
    d.version = Some(version);
    let decoded = d.decode(&mut out).unwrap();
    prop_assert_eq!(decoded, Some(p));
    prop_assert!(out.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn roundtrip_v311(p in packet(false)) {
        roundtrip(p, ProtocolVersion::V3_1_1)?;
    }

    #[test]
    fn roundtrip_v5(p in packet(true)) {
        roundtrip(p, ProtocolVersion::V5)?;
    }

}

/// The broker's per-subscriber encoder (forwarded properties encoded once, expiry and
/// subscription ids appended) decodes to the PUBLISH the general encoder describes.
#[allow(clippy::too_many_arguments)] // one per PUBLISH field
fn outgoing_matches(
    qos: QoS,
    retain: bool,
    dup: bool,
    topic: ByteString,
    packet_id: u16,
    forwarded: Properties,
    expiry: Option<u32>,
    ids: Vec<u32>,
    payload: Vec<u8>,
    version: ProtocolVersion,
) -> Result<(), TestCaseError> {
    let dup = dup && qos != QoS::AtMostOnce;
    let packet_id = (qos != QoS::AtMostOnce).then_some(packet_id);
    let mut body = BytesMut::new();
    forwarded.encode_body(&mut body).unwrap();
    let outgoing = OutgoingPublish {
        dup,
        qos,
        retain,
        topic: &topic,
        packet_id,
        forwarded_properties: &body,
        message_expiry_interval: expiry,
        subscription_identifiers: &ids,
        topic_alias: None,
        payload: &payload,
    };
    let mut out = BytesMut::new();
    let len = outgoing.encode(version, &mut out).unwrap();
    prop_assert_eq!(len, out.len());
    let mut d = Decoder::new(u32::MAX);
    d.version = Some(version);
    let Some(Packet::Publish(decoded)) = d.decode(&mut out).unwrap() else {
        return Err(TestCaseError::fail("not a PUBLISH"));
    };
    prop_assert!(out.is_empty());
    let properties = if version.is_v5() {
        Properties::from(edgemq_codec::PropertyValues {
            message_expiry_interval: expiry,
            subscription_identifiers: ids,
            ..(*forwarded).clone()
        })
    } else {
        Properties::default()
    };
    let expected = Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: Bytes::from(payload),
    };
    prop_assert_eq!(decoded, expected);
    Ok(())
}

proptest! {
    #[test]
    fn outgoing_publish_encodes_like_publish(
        qos in qos(), retain in any::<bool>(), dup in any::<bool>(), topic in topic(),
        packet_id in 1u16.., forwarded in publish_props(),
        expiry in proptest::option::of(any::<u32>()),
        ids in proptest::collection::vec(1u32..=268_435_455, 0..3),
        payload in proptest::collection::vec(any::<u8>(), 0..64), v5 in any::<bool>(),
    ) {
        // Forwarded properties never carry the per-delivery ones.
        let forwarded = Properties::from(edgemq_codec::PropertyValues {
            message_expiry_interval: None,
            subscription_identifiers: Vec::new(),
            topic_alias: None,
            ..(*forwarded).clone()
        });
        // A Payload Format Indicator of 1 promises UTF-8 [MQTT-3.3.2-4].
        let payload = if forwarded.payload_format_indicator == Some(1) {
            String::from_utf8_lossy(&payload).into_owned().into_bytes()
        } else {
            payload
        };
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        outgoing_matches(qos, retain, dup, topic, packet_id, forwarded, expiry, ids, payload, version)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), start in 0u8..3) {
        let mut d = Decoder::new(4096);
        d.version = [None, Some(ProtocolVersion::V3_1_1), Some(ProtocolVersion::V5)][start as usize];
        let mut buf = BytesMut::from(&bytes[..]);
        // Decode until the input is exhausted or rejected; whatever is accepted must survive
        // a re-encode unchanged (the same check the cargo-fuzz target makes).
        while let Ok(Some(p)) = d.decode(&mut buf) {
            let Some(version) = d.version else { break };
            if matches!(p, Packet::Connect(_)) {
                continue;
            }
            let mut out = BytesMut::new();
            p.encode(version, &mut out).unwrap();
            let mut again = Decoder::new(u32::MAX);
            again.version = Some(version);
            prop_assert_eq!(again.decode(&mut out).unwrap(), Some(p));
        }
    }
}
