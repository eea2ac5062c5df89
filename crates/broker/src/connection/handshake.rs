//! CONNECT → CONNACK: decode the first packet (within the connect timeout), validate it,
//! authenticate, attach the session (new, resumed or taken over) and answer.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};

use edgemq_codec::{Connect, Decoder, Packet, ProtocolVersion, ReasonCode};
use edgemq_core::auth::{Action, AuthDecision, ConnectRequest, Principal, RequestKind};
use edgemq_core::connect as rules;
use edgemq_core::logtext::{Attrs, Short, ShortOpt};
use edgemq_core::message::Message;
use edgemq_core::session::{IncomingQos2, OutgoingWindow};

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

    // Client identifier and will, before authentication: decided in
    // `edgemq_core::connect`.
    let checked = rules::check(&connect, limits, || {
        ByteString::from(format!("edgemq-{:016x}", rand::random::<u64>()))
    });
    let checked = match checked {
        Ok(id) => id,
        Err(refused) => {
            refuse(io, bus, listener, peer, &connect, refused);
            return None;
        }
    };
    let client_id = checked.id.clone();
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

    // Expiry, keep-alive, the receive window and the CONNACK stating them, decided before
    // the session is touched (a client whose Maximum Packet Size no CONNACK fits is
    // refused [MQTT-3.1.2-24]).
    let method = admission.authentication_method.as_deref();
    let terms = match rules::terms(&connect, limits, &checked, method) {
        Ok(terms) => terms,
        Err(refused) => {
            refuse(io, bus, listener, peer, &connect, refused);
            return None;
        }
    };
    let (expiry, keep_alive) = (terms.expiry, terms.keep_alive);

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

    let mut ack = terms.ack;
    if expiry != 0 && refuse_persistent_session(bus, &client_id) {
        connack_error(io, version, rules::quota_exceeded(version));
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
        connack_error(io, version, rules::quota_exceeded(version));
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
        send_window: terms.send_window,
        client_max_packet: connect.properties.maximum_packet_size,
        connect_expiry_zero: terms.connect_expiry_zero,
        credentials_expire: admission.expires_at,
        authentication_method: admission.authentication_method,
    })
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

/// A CONNECT the rules refused: counted under its limit, logged (rate-limited for the
/// limits a flood could hit), answered if the version has a code for it.
fn refuse<S>(
    io: &mut Io<S>,
    bus: &Bus,
    listener: &ListenerContext,
    peer: &Peer,
    connect: &Connect,
    refused: rules::Refused,
) {
    let client_id = &connect.client_id;
    match refused.limit {
        Some(limit) => {
            bus.stats.refused(limit, 1);
            let max = match limit {
                Limit::TopicLevels => bus.limits.max_topic_levels,
                _ => bus.limits.max_client_id_len,
            };
            if let Some(refusals) = bus.client_id_warning.admit(bus.now()) {
                tracing::warn!(
                    listener = %listener.name, peer = %peer.addr, client_id = %Short(client_id),
                    length = client_id.len(), refusals,
                    "connection refused: {} ({}={max})", refused.rule, limit.as_str()
                );
            }
        }
        None => tracing::warn!(
            listener = %listener.name, peer = %peer.addr, client_id = %Short(client_id),
            reason = refused.reason.0, "connection refused: {}", refused.rule
        ),
    }
    connack_error(io, connect.protocol_version, refused.reason);
}

/// Queue a refusing CONNACK if one may be sent ([`rules::refusal`]).
fn connack_error<S>(io: &mut Io<S>, version: ProtocolVersion, reason: ReasonCode) {
    if let Some(ack) = rules::refusal(version, reason, None) {
        let _ = Packet::ConnAck(ack).encode(version, &mut io.wbuf);
    }
}
