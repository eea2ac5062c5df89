//! CONNECT → CONNACK: decode the first packet (within the connect timeout), validate it,
//! authenticate, attach the session (new, resumed or taken over) and answer.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};

use edgemq_codec::{
    ConnAck, Connect, Decoder, Packet, Properties, ProtocolVersion, QoS, ReasonCode,
};
use edgemq_core::auth::{Action, AuthDecision, ConnectRequest, Principal, RequestKind};
use edgemq_core::logtext::{Attrs, Short, ShortOpt};
use edgemq_core::message::Message;
use edgemq_core::session::{IncomingQos2, OutgoingWindow};
use edgemq_core::topic::level_count;

use super::{Accepted, Io, Peer, Will};
use crate::bus::Bus;
use crate::listener::ListenerContext;
use crate::mailbox::{Mailbox, QueueLimits};
use crate::sessions::{ControlSlot, SessionData};
use crate::stats::Limit;

/// Run the handshake. `None` means the connection is refused; any answer (CONNACK with an
/// error) is left in `io.wbuf` for the caller to flush.
pub(super) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    mut decoder: Decoder,
    peer: &Peer,
    listener: &Arc<ListenerContext>,
    bus: &Arc<Bus>,
) -> Option<Accepted> {
    let timeout = Duration::from_secs(bus.limits.connect_timeout_secs);
    let connect = match tokio::time::timeout(timeout, read_connect(io, &mut decoder)).await {
        Ok(Ok(connect)) => connect,
        Ok(Err(Refusal {
            version,
            reason,
            detail,
        })) => {
            tracing::warn!(listener = %listener.name, peer = %peer.addr, reason = reason.0, "connection refused: {detail}");
            if let Some(version) = version {
                connack_error(io, version, reason);
            }
            return None;
        }
        Err(_) => {
            tracing::info!(listener = %listener.name, peer = %peer.addr, "no CONNECT within {}s; closing", timeout.as_secs());
            return None;
        }
    };
    let version = connect.protocol_version;
    let limits = &bus.limits;
    // Near the memory budget, new connections are refused first (the monitor logs the
    // level; each refusal is counted): v5 0x89 Server busy, v3 3 Server unavailable.
    if bus.pressure.refuses_connections() {
        crate::memory::refused_connection(bus);
        connack_error(io, version, ReasonCode::ServerBusy);
        return None;
    }

    // Client identifier [MQTT-3.1.3-5..8].
    // Copied out of the CONNECT (a slice would keep the whole packet alive for the
    // session's life), as everything else kept from it below.
    let mut client_id = ByteString::from(&*connect.client_id);
    let mut assigned = false;
    if client_id.is_empty() {
        let may_assign = match version {
            ProtocolVersion::V5 => true,
            ProtocolVersion::V3_1_1 => connect.clean_start, // [MQTT-3.1.3-7], [MQTT-3.1.3-8]
            ProtocolVersion::V3_1 => false,
        };
        if !may_assign {
            tracing::warn!(listener = %listener.name, peer = %peer.addr, "refused: empty client identifier without clean session [MQTT-3.1.3-8]");
            connack_error(io, version, ReasonCode::ClientIdentifierNotValid);
            return None;
        }
        client_id = ByteString::from(format!("edgemq-{:016x}", rand::random::<u64>()));
        assigned = true;
    } else if client_id.len() > limits.max_client_id_len {
        // Longer than max-client-id-length (at least the 23 bytes every server must allow
        // [MQTT-3.1.3-5]): v5 CONNACK 0x85 Client Identifier not valid [MQTT-3.1.3-8], v3
        // return code 2 Identifier rejected (3.1.1 [MQTT-3.1.3-9]), then close.
        bus.stats.refused(Limit::ClientIdLength, 1);
        if let Some(refusals) = bus.client_id_warning.admit(bus.now()) {
            tracing::warn!(
                listener = %listener.name, peer = %peer.addr, client_id = %Short(&client_id),
                length = client_id.len(), max_client_id_length = limits.max_client_id_len,
                refusals,
                "refused: client identifier longer than max-client-id-length bytes"
            );
        }
        connack_error(io, version, ReasonCode::ClientIdentifierNotValid);
        return None;
    }

    // Will: QoS and retain must be supported [MQTT-3.2.2-12], [MQTT-3.2.2-13].
    if let Some(will) = &connect.last_will {
        if will.qos > limits.maximum_qos {
            connack_error(io, version, ReasonCode::QoSNotSupported);
            return None;
        }
        if will.retain && !limits.retain_available {
            connack_error(io, version, ReasonCode::RetainNotSupported);
            return None;
        }
        // A will is a PUBLISH to come: the same depth limit (v5 0x90; v3 has no code: closed).
        if level_count(&will.topic) > limits.max_topic_levels {
            bus.stats.refused(Limit::TopicLevels, 1);
            tracing::warn!(listener = %listener.name, peer = %peer.addr, client_id = %Short(&client_id), will_topic = %Short(&will.topic), "refused: will topic has more than {} levels (max-topic-levels)", limits.max_topic_levels);
            connack_error(io, version, ReasonCode::TopicNameInvalid);
            return None;
        }
    }
    // Enhanced authentication: only methods this listener's chain handles (single step:
    // the CONNECT carries everything, as K8S-SAT does) [MQTT-4.12.0-1].
    if let Some(method) = connect.properties.authentication_method.as_deref() {
        if !listener.authenticator().supports_method(method) {
            tracing::warn!(listener = %listener.name, port = listener.port, peer = %peer.addr, client_id = %Short(&client_id), method = %Short(method), "refused: unsupported authentication method");
            connack_error(io, version, ReasonCode::BadAuthenticationMethod);
            return None;
        }
    }

    let request = ConnectRequest {
        kind: RequestKind::Connect,
        listener: &listener.name,
        port: listener.port,
        peer: peer.addr,
        client_id: &client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_ref(),
        authentication_method: connect.properties.authentication_method.as_deref(),
        authentication_data: connect.properties.authentication_data.as_ref(),
        client_certificates: &peer.client_certificates,
    };
    // The authenticator logs its decision with the method and the reason.
    let authenticator = listener.authenticator();
    let admission = match authenticator.authenticate(&request).await {
        AuthDecision::Allow(admission) => admission,
        AuthDecision::Deny(reason) => {
            connack_error(io, version, reason);
            return None;
        }
    };
    let principal = Principal {
        client_id: client_id.clone(),
        username: match admission.username {
            Some(name) => Some(ByteString::from(name)),
            None => connect.username.as_deref().map(ByteString::from),
        },
        attributes: admission.attributes,
    };
    let (authorizer, _) = listener.authorizer();
    if !authorizer.authorize(&principal, Action::Connect) {
        tracing::warn!(
            listener = %listener.name, port = listener.port, peer = %peer.addr,
            client_id = %Short(&client_id), username = %ShortOpt(principal.username.as_deref()),
            attributes = %Attrs(&principal.attributes), action = "connect",
            "not authorized: {}", authorizer.explain(&principal, Action::Connect)
        );
        connack_error(io, version, ReasonCode::NotAuthorized);
        return None;
    }

    // Session expiry: v5 from the property (capped), v3 from clean session [MQTT-3.1.2-4..6].
    let requested_expiry = match version {
        ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        _ if connect.clean_start => 0,
        // 3.1.1 has no expiry: a persistent session lasts `v3_session_expiry` after its
        // client leaves (Mosquitto's persistent_client_expiration), not forever.
        _ => limits.v3_session_expiry,
    };
    let expiry = requested_expiry.min(limits.max_session_expiry);

    // Keep-alive: v5 clients may be told a different value (Server Keep Alive).
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if let (ProtocolVersion::V5, Some(max)) = (version, limits.max_keep_alive) {
        if keep_alive == 0 || keep_alive > max {
            keep_alive = max;
            server_keep_alive = Some(max);
        }
    }

    let will = connect.last_will.as_ref().map(|w| {
        let publish = edgemq_codec::Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: ByteString::from(&*w.topic),
            packet_id: None,
            properties: w.properties.clone(),
            payload: bytes::Bytes::copy_from_slice(&w.payload),
        };
        let delay = w.properties.will_delay_interval.unwrap_or(0);
        // The will's own expiry counts from when it is published; approximated from now
        // plus its delay (it can only be published later, never earlier).
        let mut message =
            Message::from_publish(publish, None, bus.now(), limits.max_message_expiry);
        if let Some(at) = message.expires_at.as_mut() {
            *at += Duration::from_secs(u64::from(delay));
        }
        Will {
            message: Arc::new(message),
            delay,
        }
    });

    let mut ack = ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    };
    if version.is_v5() {
        let p = &mut ack.properties;
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
        if assigned {
            p.assigned_client_identifier = Some(client_id.clone());
        }
        if expiry != requested_expiry {
            p.session_expiry_interval = Some(expiry);
        }
        p.server_keep_alive = server_keep_alive;
        // Echo the enhanced authentication method that admitted the client [MQTT-4.12.0-1].
        p.authentication_method = admission
            .authentication_method
            .clone()
            .map(ByteString::from);
    }
    // Decided before the session is touched: a client whose Maximum Packet Size no CONNACK
    // fits is refused [MQTT-3.1.2-24].
    if let Some(max) = connect.properties.maximum_packet_size {
        if !fit_connack(&mut ack, version, max) {
            tracing::warn!(listener = %listener.name, peer = %peer.addr, client_id = %Short(&client_id), max, "refused: the client's Maximum Packet Size is smaller than any CONNACK that could accept it [MQTT-3.1.2-24]");
            // The shortest CONNACK is 5 bytes; below that nothing may be sent at all.
            if max >= 5 {
                connack_error(io, version, ReasonCode::PacketTooLarge);
            }
            return None;
        }
    }

    if expiry != 0 && refuse_persistent_session(bus, &client_id) {
        connack_error(io, version, quota_exceeded(version));
        return None;
    }
    let conn_id = bus.next_id();
    let control = Arc::new(ControlSlot::default());
    let new_session = || {
        let key = bus.next_id();
        SessionData {
            key,
            mailbox: Arc::new(Mailbox::new(
                key,
                client_id.clone(),
                QueueLimits::of(limits, &bus.held),
                bus.store.clone(),
            )),
            subscriptions: Default::default(),
            outgoing: {
                let mut window = OutgoingWindow::default();
                window.account(bus.held.inflight.clone());
                window
            },
            incoming_qos2: IncomingQos2::default(),
            expiry_interval: expiry,
        }
    };
    let Ok(opened) = bus
        .sessions
        .open(
            bus,
            &client_id,
            peer.addr.ip(),
            connect.clean_start,
            conn_id,
            control.clone(),
            new_session,
        )
        .await
    else {
        // max-sessions, max-sessions-per-address: v5 0x97 Quota exceeded, v3 3 Server
        // unavailable.
        connack_error(io, version, quota_exceeded(version));
        return None;
    };
    let mut session = opened.data;
    session.expiry_interval = expiry;
    // A persistent session goes to the store as it opens, with its will: a
    // broker that stops while the client is connected sends it after the restart.
    // (Once durable, a session stays so until it ends: its records are deleted then.)
    if expiry != 0 {
        session.mailbox.set_durable(true);
    }
    session.persist(None, will.as_ref().map(|w| (w.message.clone(), w.delay)));

    ack.session_present = opened.session_present;
    let _ = Packet::ConnAck(ack).encode(version, &mut io.wbuf);

    tracing::info!(
        listener = %listener.name, peer = %peer.addr, client_id = %Short(&client_id),
        protocol = version as u8, clean_start = connect.clean_start,
        session_present = opened.session_present, keep_alive, "client connected"
    );

    // The client's Receive Maximum (65,535 when absent), up to what the broker keeps in
    // flight per client.
    // (3.1.1 clients have none: --receive-maximum is their window, as documented.)
    let send_window = match version {
        ProtocolVersion::V5 => connect.properties.receive_maximum.unwrap_or(u16::MAX),
        _ => limits.receive_maximum,
    };
    let send_window = usize::from(send_window.min(limits.max_inflight_messages));
    Some(Accepted {
        client_id,
        version,
        decoder,
        session,
        principal,
        conn_id,
        control,
        keep_alive,
        will,
        send_window,
        client_max_packet: connect.properties.maximum_packet_size,
        connect_expiry_zero: requested_expiry == 0,
        credentials_expire: admission.expires_at,
        authentication_method: admission.authentication_method,
    })
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

struct Refusal {
    /// The version to answer in, if known (or sniffed from a malformed CONNECT).
    version: Option<ProtocolVersion>,
    reason: ReasonCode,
    detail: String,
}

/// Read until the first packet decodes; it must be CONNECT [MQTT-3.1.0-1].
async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    decoder: &mut Decoder,
) -> Result<Box<Connect>, Refusal> {
    loop {
        // Sniffed before decoding: a failed decode has consumed the frame.
        let sniffed = sniff_version(&io.rbuf);
        match decoder.decode(&mut io.rbuf) {
            Ok(Some(Packet::Connect(connect))) => return Ok(connect),
            Ok(Some(other)) => {
                return Err(Refusal {
                    version: None,
                    reason: ReasonCode::ProtocolError,
                    detail: format!(
                        "[MQTT-3.1.0-1] first packet is {:?}, not CONNECT",
                        other.packet_type()
                    ),
                })
            }
            Ok(None) => {}
            Err(e) => {
                let version = if e.reason == ReasonCode::UnsupportedProtocolVersion {
                    // Answer in the 3.1.1 form, which every client can read [MQTT-3.1.2-2].
                    Some(ProtocolVersion::V3_1_1)
                } else {
                    sniffed
                };
                return Err(Refusal {
                    version,
                    reason: e.reason,
                    detail: e.to_string(),
                });
            }
        }
        match io.read_more().await {
            Ok(0) | Err(_) => {
                return Err(Refusal {
                    version: None,
                    reason: ReasonCode::Success,
                    detail: "closed before CONNECT".into(),
                })
            }
            Ok(_) => {}
        }
    }
}

/// The protocol level of a CONNECT that failed to decode, so the CONNACK uses its version.
fn sniff_version(buf: &[u8]) -> Option<ProtocolVersion> {
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

/// Queue a refusing CONNACK. v3 has return codes only for some reasons; others just close
/// (the spec's "close the network connection").
/// A new session refused by a budget: v5 0x97 Quota exceeded, v3 3 Server unavailable.
fn quota_exceeded(version: ProtocolVersion) -> ReasonCode {
    match version {
        ProtocolVersion::V5 => ReasonCode::QuotaExceeded,
        _ => ReasonCode::ServerUnavailable,
    }
}

/// From 90 % of `max_store_bytes`, no new persistent session: it would store what the store
/// has no room for. Resuming one (or a session that is not persistent) is always allowed.
fn refuse_persistent_session(bus: &Bus, client_id: &ByteString) -> bool {
    let Some(store) = &bus.store else {
        return false;
    };
    if store.level() < edgemq_store::Level::NearlyFull || bus.sessions.contains(client_id) {
        return false;
    }
    bus.stats.refused(Limit::StoreBudget, 1);
    bus.warn_store_budget(client_id, "new persistent session");
    true
}

fn connack_error<S>(io: &mut Io<S>, version: ProtocolVersion, reason: ReasonCode) {
    if !version.is_v5()
        && !matches!(
            reason,
            ReasonCode::UnsupportedProtocolVersion
                | ReasonCode::ClientIdentifierNotValid
                | ReasonCode::ServerUnavailable
                | ReasonCode::ServerBusy
                | ReasonCode::BadUserNameOrPassword
                | ReasonCode::BadAuthenticationMethod
                | ReasonCode::NotAuthorized
                | ReasonCode::Banned
        )
    {
        return;
    }
    let ack = ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    };
    let _ = Packet::ConnAck(ack).encode(version, &mut io.wbuf);
}
