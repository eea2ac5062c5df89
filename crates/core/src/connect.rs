//! What a CONNECT settles, free of I/O: the checks before authentication (client
//! identifier, will), then the terms of the connection (session expiry, keep-alive, the
//! client's receive window) and the CONNACK that states them. Authentication, authorization
//! and attaching the session are the broker's; what it decides here, it decides from the
//! CONNECT and the [`Limits`] alone.

use bytestring::ByteString;

use edgemq_codec::{ConnAck, Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

use crate::limits::{Limit, Limits};
use crate::topic::level_count;

/// A CONNECT refused: the CONNACK reason (sent if the version has a code for it, see
/// [`refusal`]), the statement or limit behind it, and the limit to count it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: ReasonCode,
    pub rule: &'static str,
    pub limit: Option<Limit>,
}

impl Refused {
    const fn new(reason: ReasonCode, rule: &'static str) -> Self {
        Refused {
            reason,
            rule,
            limit: None,
        }
    }
}

/// The client identifier the connection goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    pub id: ByteString,
    /// Chosen by the broker (sent back as Assigned Client Identifier in v5 [MQTT-3.2.2-16]).
    pub assigned: bool,
}

/// The checks before authentication: the client identifier [MQTT-3.1.3-5..9] (an empty one
/// is given `assign()`'s when the version allows it) and the will [MQTT-3.2.2-12],
/// [MQTT-3.2.2-13]. What is kept is copied out of the CONNECT, so it does not pin the packet.
pub fn check(
    connect: &Connect,
    limits: &Limits,
    assign: impl FnOnce() -> ByteString,
) -> Result<ClientId, Refused> {
    let client_id = client_id(connect, limits, assign)?;
    check_will(connect, limits)?;
    Ok(client_id)
}

fn client_id(
    connect: &Connect,
    limits: &Limits,
    assign: impl FnOnce() -> ByteString,
) -> Result<ClientId, Refused> {
    if connect.client_id.is_empty() {
        let may_assign = match connect.protocol_version {
            ProtocolVersion::V5 => true,
            ProtocolVersion::V3_1_1 => connect.clean_start,
            ProtocolVersion::V3_1 => false,
        };
        if !may_assign {
            return Err(Refused::new(
                ReasonCode::ClientIdentifierNotValid,
                "[MQTT-3.1.3-8] empty client identifier without clean session",
            ));
        }
        return Ok(ClientId {
            id: assign(),
            assigned: true,
        });
    }
    // Beyond max-client-id-length (at least the 23 bytes every server allows
    // [MQTT-3.1.3-5]): v5 0x85 [MQTT-3.1.3-8], v3 2 Identifier rejected [MQTT-3.1.3-9].
    if connect.client_id.len() > limits.max_client_id_len {
        return Err(Refused {
            limit: Some(Limit::ClientIdLength),
            ..Refused::new(
                ReasonCode::ClientIdentifierNotValid,
                "client identifier longer than max-client-id-length",
            )
        });
    }
    Ok(ClientId {
        id: ByteString::from(&*connect.client_id),
        assigned: false,
    })
}

fn check_will(connect: &Connect, limits: &Limits) -> Result<(), Refused> {
    let Some(will) = &connect.last_will else {
        return Ok(());
    };
    if will.qos > limits.maximum_qos {
        return Err(Refused::new(
            ReasonCode::QoSNotSupported,
            "[MQTT-3.2.2-12] will QoS above Maximum QoS",
        ));
    }
    if will.retain && !limits.retain_available {
        return Err(Refused::new(
            ReasonCode::RetainNotSupported,
            "[MQTT-3.2.2-13] retained will while retain is not available",
        ));
    }
    // A will is a PUBLISH to come: the same depth limit (v5 0x90; v3 has no code: closed).
    if level_count(&will.topic) > limits.max_topic_levels {
        return Err(Refused {
            limit: Some(Limit::TopicLevels),
            ..Refused::new(
                ReasonCode::TopicNameInvalid,
                "will topic deeper than max-topic-levels",
            )
        });
    }
    Ok(())
}

/// The terms of an accepted connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    /// Session Expiry Interval in force (seconds; `u32::MAX` never).
    pub expiry: u32,
    /// CONNECT asked for expiry 0 (a DISCONNECT may then not set one [MQTT-3.14.2-2]).
    pub connect_expiry_zero: bool,
    /// Keep-alive in force (seconds; 0 none).
    pub keep_alive: u16,
    /// QoS 1/2 messages the broker may have in flight to the client.
    pub send_window: usize,
    /// Topic aliases the broker may assign on what it sends: its setting, up to the
    /// client's Topic Alias Maximum (v5; absent means 0 [MQTT-3.1.2-26]).
    pub server_topic_aliases: u16,
    /// The CONNACK to send (Session Present is the broker's to set).
    pub ack: ConnAck,
}

/// Session expiry, keep-alive and the receive window, and the CONNACK that states them. The
/// CONNACK fits the client's Maximum Packet Size [MQTT-3.1.2-24], or the CONNECT is refused
/// with 0x95 (sent only if 5 bytes fit, see [`refusal`]).
pub fn terms(
    connect: &Connect,
    limits: &Limits,
    client_id: &ClientId,
    authentication_method: Option<&str>,
) -> Result<Terms, Refused> {
    let version = connect.protocol_version;
    let requested = requested_expiry(connect, limits);
    let expiry = requested.min(limits.max_session_expiry);
    let (keep_alive, server_keep_alive) = keep_alive(connect, limits);
    let mut ack = ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    };
    if version.is_v5() {
        let p = &mut ack.properties;
        advertise(p, limits);
        if client_id.assigned {
            p.assigned_client_identifier = Some(client_id.id.clone());
        }
        if expiry != requested {
            p.session_expiry_interval = Some(expiry);
        }
        p.server_keep_alive = server_keep_alive;
        // Echo the enhanced authentication method that admitted the client [MQTT-4.12.0-1].
        p.authentication_method = authentication_method.map(ByteString::from);
    }
    if let Some(max) = connect.properties.maximum_packet_size {
        if !fit_connack(&mut ack, version, max) {
            return Err(Refused::new(
                ReasonCode::PacketTooLarge,
                "[MQTT-3.1.2-24] no CONNACK fits the client's Maximum Packet Size",
            ));
        }
    }
    Ok(Terms {
        expiry,
        connect_expiry_zero: requested == 0,
        keep_alive,
        send_window: send_window(connect, limits),
        server_topic_aliases: match version {
            ProtocolVersion::V5 => connect
                .properties
                .topic_alias_maximum
                .unwrap_or(0)
                .min(limits.server_topic_aliases),
            _ => 0,
        },
        ack,
    })
}

/// v5 from the property, v3 from clean session [MQTT-3.1.2-4..6]. 3.1.1 has no expiry: a
/// persistent session lasts `v3_session_expiry` after its client leaves (Mosquitto's
/// `persistent_client_expiration`), not forever.
fn requested_expiry(connect: &Connect, limits: &Limits) -> u32 {
    match connect.protocol_version {
        ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        _ if connect.clean_start => 0,
        _ => limits.v3_session_expiry,
    }
}

/// The keep-alive in force, and the Server Keep Alive to tell a v5 client when it differs
/// from what it asked [MQTT-3.2.2-21].
fn keep_alive(connect: &Connect, limits: &Limits) -> (u16, Option<u16>) {
    match (connect.protocol_version, limits.max_keep_alive) {
        (ProtocolVersion::V5, Some(max)) if connect.keep_alive == 0 || connect.keep_alive > max => {
            (max, Some(max))
        }
        _ => (connect.keep_alive, None),
    }
}

/// The client's Receive Maximum (65,535 when absent) up to what the broker keeps in flight
/// per client; 3.1.1 clients have none: `receive_maximum` is their window.
fn send_window(connect: &Connect, limits: &Limits) -> usize {
    let window = match connect.protocol_version {
        ProtocolVersion::V5 => connect.properties.receive_maximum.unwrap_or(u16::MAX),
        _ => limits.receive_maximum,
    };
    usize::from(window.min(limits.max_inflight_messages))
}

/// What the broker supports, in CONNACK properties.
fn advertise(p: &mut Properties, limits: &Limits) {
    p.receive_maximum = Some(limits.receive_maximum);
    p.maximum_packet_size = Some(limits.max_packet_size);
    p.topic_alias_maximum = Some(limits.topic_alias_maximum);
    p.retain_available = Some(u8::from(limits.retain_available));
    p.wildcard_subscription_available = Some(1);
    p.subscription_identifier_available = Some(1);
    p.shared_subscription_available = Some(1);
    if limits.maximum_qos < QoS::ExactlyOnce {
        p.maximum_qos = Some(limits.maximum_qos as u8);
    }
}

/// Keep the CONNACK within the client's Maximum Packet Size [MQTT-3.1.2-24] (found by the
/// session fuzz target: a client allowing 21 bytes got 24). Dropped first: the four
/// "available" flags, whose absence means the same; then Topic Alias Maximum (absent: no
/// aliases, the stricter reading) and Maximum Packet Size (the broker still enforces it).
/// False when it still does not fit (an Assigned Client Identifier, which must be sent
/// [MQTT-3.2.2-16], or Receive Maximum, which the broker enforces, cannot go).
fn fit_connack(ack: &mut ConnAck, version: ProtocolVersion, max: u32) -> bool {
    let fits = |ack: &ConnAck| {
        let mut buf = bytes::BytesMut::new();
        Packet::ConnAck(ack.clone())
            .encode(version, &mut buf)
            .is_ok()
            && buf.len() <= max as usize
    };
    let steps: [fn(&mut Properties); 3] = [
        |p| {
            p.retain_available = p.retain_available.filter(|v| *v != 1);
            p.wildcard_subscription_available = None;
            p.subscription_identifier_available = None;
            p.shared_subscription_available = None;
        },
        |p| p.topic_alias_maximum = None,
        |p| p.maximum_packet_size = None,
    ];
    for step in steps {
        if fits(ack) {
            return true;
        }
        step(&mut ack.properties);
    }
    fits(ack)
}

/// The CONNACK refusing a connection, if one may be sent: v3 has return codes for some
/// reasons only, and for others the connection just closes (the spec's "close the network
/// connection"); nothing at all fits a client whose Maximum Packet Size is under 5 bytes.
pub fn refusal(
    version: ProtocolVersion,
    reason: ReasonCode,
    client_max_packet: Option<u32>,
) -> Option<ConnAck> {
    let v3_has_code = matches!(
        reason,
        ReasonCode::UnsupportedProtocolVersion
            | ReasonCode::ClientIdentifierNotValid
            | ReasonCode::ServerUnavailable
            | ReasonCode::ServerBusy
            | ReasonCode::BadUserNameOrPassword
            | ReasonCode::BadAuthenticationMethod
            | ReasonCode::NotAuthorized
            | ReasonCode::Banned
    );
    if (!version.is_v5() && !v3_has_code) || client_max_packet.is_some_and(|m| m < 5) {
        return None;
    }
    Some(ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    })
}

/// The version to answer a CONNECT that failed to decode in (`None`: close without an
/// answer). An unsupported protocol level gets the 3.1.1 form, which every client can read
/// [MQTT-3.1.2-2]; otherwise the level the CONNECT states, if it got that far
/// ([`sniff_version`] of the bytes before decoding).
pub fn refusal_version(
    reason: ReasonCode,
    sniffed: Option<ProtocolVersion>,
) -> Option<ProtocolVersion> {
    if reason == ReasonCode::UnsupportedProtocolVersion {
        return Some(ProtocolVersion::V3_1_1);
    }
    sniffed
}

/// The protocol level a CONNECT in `buf` states, read without decoding it (a failed decode
/// consumes the frame, and the CONNACK refusing it should be in the client's version).
pub fn sniff_version(buf: &[u8]) -> Option<ProtocolVersion> {
    if buf.first().map(|b| b >> 4) != Some(1) {
        return None;
    }
    // Skip the remaining-length varint.
    let mut i = 1;
    while i < buf.len() && i < 5 && buf[i] & 0x80 != 0 {
        i += 1;
    }
    let body = buf.get(i + 1..)?;
    match body.get(..7)? {
        [0, 4, b'M', b'Q', b'T', b'T', 5] => Some(ProtocolVersion::V5),
        [0, 4, b'M', b'Q', b'T', b'T', 4] => Some(ProtocolVersion::V3_1_1),
        [0, 6, b'M', b'Q', b'I', b's', b'd'] => Some(ProtocolVersion::V3_1),
        _ => None,
    }
}

/// A new session refused by a budget: v5 0x97 Quota exceeded, v3 3 Server unavailable.
pub fn quota_exceeded(version: ProtocolVersion) -> ReasonCode {
    match version {
        ProtocolVersion::V5 => ReasonCode::QuotaExceeded,
        _ => ReasonCode::ServerUnavailable,
    }
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
