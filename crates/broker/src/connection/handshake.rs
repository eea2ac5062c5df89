//! CONNECT → CONNACK: decode the first packet (within the connect timeout), validate it,
//! authenticate, attach the session (new, resumed or taken over) and answer.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};

use edgemq_codec::{Connect, Decoder, Packet, ProtocolVersion, ReasonCode};
use edgemq_core::auth::{Action, Admission, AuthDecision, ConnectRequest, Principal, RequestKind};
use edgemq_core::connect as rules;
use edgemq_core::logtext::{Attrs, Short, ShortOpt};
use edgemq_core::message::Message;
use edgemq_core::outbound::OutboundTerms;
use edgemq_core::protocol::Violation;
use edgemq_core::session::{IncomingQos2, OutgoingWindow};

use super::{Accepted, Io, Peer, Will};
use crate::bus::Bus;
use crate::inspect::ClientInfo;
use crate::listener::ListenerContext;
use crate::mailbox::{Mailbox, QueueLimits};
use crate::sessions::{ControlSlot, Opened, SessionData};
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
    let mut cx = Handshake {
        io,
        peer,
        listener,
        bus,
    };
    let connect = cx.read(&mut decoder).await?;
    // Near the memory budget, new connections are refused first (the monitor logs the
    // level; each refusal is counted): v5 0x89 Server busy, v3 3 Server unavailable.
    if bus.pressure.refuses_connections() {
        crate::memory::refused_connection(bus);
        cx.refuse_with(connect.protocol_version, ReasonCode::ServerBusy);
        return None;
    }
    // Client identifier and will, before authentication (`edgemq_core::connect`).
    let checked = rules::check(&connect, &bus.limits, || {
        ByteString::from(format!("edgemq-{:016x}", rand::random::<u64>()))
    });
    let checked = checked.map_err(|r| cx.refuse(&connect, r)).ok()?;
    let (admission, principal) = cx.authenticate(&connect, &checked.id).await?;
    // Expiry, keep-alive, the receive window and the CONNACK stating them, decided before
    // the session is touched (a client whose Maximum Packet Size no CONNACK fits is
    // refused [MQTT-3.1.2-24]).
    let method = admission.authentication_method.as_deref();
    let terms = rules::terms(&connect, &bus.limits, &checked, method);
    let terms = terms.map_err(|r| cx.refuse(&connect, r)).ok()?;
    let will = will(&connect, bus);
    let info = cx.client_info(&connect, &principal, terms.keep_alive);
    let (opened, conn_id, control) = cx
        .open_session(&connect, &checked.id, terms.expiry, info)
        .await?;
    Some(cx.accepted(Accepting {
        connect,
        decoder,
        client_id: checked.id,
        admission,
        principal,
        terms,
        will,
        opened,
        conn_id,
        control,
    }))
}

/// What the handshake works with.
struct Handshake<'a, S> {
    io: &'a mut Io<S>,
    peer: &'a Peer,
    listener: &'a Arc<ListenerContext>,
    bus: &'a Arc<Bus>,
}

/// Everything settled, for the CONNACK and the connection.
struct Accepting {
    connect: Box<Connect>,
    decoder: Decoder,
    client_id: ByteString,
    admission: Admission,
    principal: Principal,
    terms: rules::Terms,
    will: Option<Will>,
    opened: Opened,
    conn_id: u64,
    control: Arc<ControlSlot>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<'_, S> {
    /// The CONNECT, within the connect timeout; a refusal is logged and answered.
    async fn read(&mut self, decoder: &mut Decoder) -> Option<Box<Connect>> {
        let (listener, peer) = (&self.listener.name, self.peer.addr);
        let timeout = Duration::from_secs(self.bus.limits.connect_timeout_secs);
        match tokio::time::timeout(timeout, read_connect(self.io, decoder)).await {
            Ok(Ok(connect)) => Some(connect),
            Ok(Err(Refusal::Closed)) => {
                tracing::debug!(%listener, %peer, "closed before CONNECT");
                None
            }
            Ok(Err(Refusal::Violation {
                version,
                violation,
                detail,
            })) => {
                let reason = violation.reason;
                tracing::warn!(%listener, %peer, reason = reason.0, rule = violation.rule, "connection refused: {detail}");
                if let Some(version) = version {
                    self.refuse_with(version, reason);
                }
                None
            }
            Err(_) => {
                tracing::info!(%listener, %peer, "no CONNECT within {}s; closing", timeout.as_secs());
                None
            }
        }
    }

    /// The listener's authentication chain, then the policy's `connect` [MQTT-4.12.0-1].
    async fn authenticate(
        &mut self,
        connect: &Connect,
        client_id: &ByteString,
    ) -> Option<(Admission, Principal)> {
        let version = connect.protocol_version;
        let method = connect.properties.authentication_method.as_deref();
        // Enhanced authentication: only methods this listener's chain handles (single step:
        // the CONNECT carries everything, as K8S-SAT does).
        let authenticator = self.listener.authenticator();
        if let Some(reason) = edgemq_core::auth::unsupported_method(method, &*authenticator) {
            let method = method.unwrap_or_default();
            tracing::warn!(listener = %self.listener.name, port = self.listener.port, peer = %self.peer.addr, client_id = %Short(client_id), method = %Short(method), "refused: unsupported authentication method");
            self.refuse_with(version, reason);
            return None;
        }
        let request = ConnectRequest {
            kind: RequestKind::Connect,
            listener: &self.listener.name,
            port: self.listener.port,
            peer: self.peer.addr,
            client_id,
            username: connect.username.as_deref(),
            password: connect.password.as_ref(),
            authentication_method: method,
            authentication_data: connect.properties.authentication_data.as_ref(),
            client_certificates: &self.peer.client_certificates,
        };
        // The authenticator logs its decision with the method and the reason.
        let decision = self.listener.authenticator().authenticate(&request).await;
        self.bus.stats.authentication(&decision);
        let mut admission = match decision {
            AuthDecision::Allow(admission) => admission,
            AuthDecision::Deny(reason) => {
                self.refuse_with(version, reason);
                return None;
            }
        };
        let principal = Principal {
            client_id: client_id.clone(),
            username: admission
                .username
                .take()
                .or_else(|| connect.username.as_deref().map(String::from))
                .map(ByteString::from),
            attributes: std::mem::take(&mut admission.attributes),
        };
        self.authorize_connect(version, &principal)?;
        Some((admission, principal))
    }

    fn authorize_connect(&mut self, version: ProtocolVersion, principal: &Principal) -> Option<()> {
        let (authorizer, _) = self.listener.authorizer();
        let allowed = authorizer.authorize(principal, Action::Connect);
        if self.bus.stats.authorization(allowed) {
            return Some(());
        }
        tracing::warn!(
            listener = %self.listener.name, port = self.listener.port, peer = %self.peer.addr,
            client_id = %Short(&principal.client_id), username = %ShortOpt(principal.username.as_deref()),
            attributes = %Attrs(&principal.attributes), action = "connect",
            "not authorized: {}", authorizer.explain(principal, Action::Connect)
        );
        self.refuse_with(version, ReasonCode::NotAuthorized);
        None
    }

    /// A new, resumed or taken-over session, within the budgets (sessions, sessions per
    /// address, the store).
    async fn open_session(
        &mut self,
        connect: &Connect,
        client_id: &ByteString,
        expiry: u32,
        info: ClientInfo,
    ) -> Option<(Opened, u64, Arc<ControlSlot>)> {
        let (bus, version) = (self.bus, connect.protocol_version);
        if expiry != 0 && refuse_persistent_session(bus, client_id) {
            self.refuse_with(version, rules::quota_exceeded(version));
            return None;
        }
        let conn_id = bus.next_id();
        let control = Arc::new(ControlSlot::new(Arc::new(info)));
        let new_session = || new_session(bus, client_id, expiry);
        let opened = bus.sessions.open(
            bus,
            client_id,
            self.peer.addr.ip(),
            connect.clean_start,
            conn_id,
            control.clone(),
            new_session,
        );
        match opened.await {
            Ok(opened) => Some((opened, conn_id, control)),
            Err(_) => {
                // max-sessions, max-sessions-per-address: v5 0x97, v3 3 Server unavailable.
                self.refuse_with(version, rules::quota_exceeded(version));
                None
            }
        }
    }

    /// What operators see of this client while it is connected.
    fn client_info(&self, connect: &Connect, principal: &Principal, keep_alive: u16) -> ClientInfo {
        ClientInfo {
            listener: Arc::from(self.listener.name.as_str()),
            port: self.listener.port,
            peer: self.peer.addr,
            protocol: connect.protocol_version,
            username: principal.username.clone(),
            attributes: principal.attributes.clone(),
            keep_alive,
            clean_start: connect.clean_start,
            connected_at: std::time::SystemTime::now(),
        }
    }

    /// The session is this connection's: stored if persistent, CONNACK queued, logged.
    fn accepted(&mut self, a: Accepting) -> Accepted {
        let (connect, terms, opened, will) = (a.connect, a.terms, a.opened, a.will);
        let client_id = a.client_id;
        let version = connect.protocol_version;
        let mut session = opened.data;
        a.control.attach(session.mailbox.clone());
        session.expiry_interval = terms.expiry;
        // A persistent session goes to the store as it opens, with its will: a broker
        // that stops while the client is connected sends it after the restart. (Once
        // durable, a session stays so until it ends: its records are deleted then.)
        if terms.expiry != 0 {
            session.mailbox.journal().set_durable(true);
        }
        session.persist(None, will.as_ref().map(|w| (w.message.clone(), w.delay)));
        let mut ack = terms.ack;
        ack.session_present = opened.session_present;
        self.io.encode(&Packet::ConnAck(ack), version);
        tracing::info!(
            listener = %self.listener.name, peer = %self.peer.addr, client_id = %Short(&client_id),
            protocol = version as u8, clean_start = connect.clean_start,
            session_present = opened.session_present, keep_alive = terms.keep_alive, "client connected"
        );
        Accepted {
            client_id,
            version,
            decoder: a.decoder,
            session,
            principal: a.principal,
            conn_id: a.conn_id,
            control: a.control,
            keep_alive: terms.keep_alive,
            will,
            outbound: OutboundTerms {
                version,
                send_window: terms.send_window,
                max_inflight_bytes: self.bus.limits.max_inflight_bytes,
                client_max_packet: connect.properties.maximum_packet_size,
                server_topic_aliases: terms.server_topic_aliases,
            },
            connect_expiry_zero: terms.connect_expiry_zero,
            credentials_expire: a.admission.expires_at,
            authentication_method: a.admission.authentication_method,
            metric_category: metric_category(&connect),
        }
    }

    /// A CONNECT the rules refused: counted under its limit, logged (rate-limited for the
    /// limits a flood could hit), answered if the version has a code for it.
    fn refuse(&mut self, connect: &Connect, refused: rules::Refused) {
        let (bus, client_id) = (self.bus, &connect.client_id);
        let (listener, peer) = (&self.listener.name, self.peer.addr);
        match refused.limit {
            Some(limit) => {
                bus.stats.refused(limit, 1);
                let max = match limit {
                    Limit::TopicLevels => bus.limits.max_topic_levels,
                    _ => bus.limits.max_client_id_len,
                };
                if let Some(refusals) = bus.connect_refusal_warning.admit(bus.now()) {
                    tracing::warn!(
                        %listener, %peer, client_id = %Short(client_id),
                        length = client_id.len(), refusals,
                        "connection refused: {} ({}={max})", refused.rule, limit.as_str()
                    );
                }
            }
            None => tracing::warn!(
                %listener, %peer, client_id = %Short(client_id),
                reason = refused.reason.0, "connection refused: {}", refused.rule
            ),
        }
        self.refuse_with(connect.protocol_version, refused.reason);
    }

    /// Queue a refusing CONNACK if one may be sent ([`rules::refusal`]).
    fn refuse_with(&mut self, version: ProtocolVersion, reason: ReasonCode) {
        if let Some(ack) = rules::refusal(version, reason, None) {
            self.io.encode(&Packet::ConnAck(ack), version);
        }
    }
}

/// A fresh session for `client_id`.
fn new_session(bus: &Bus, client_id: &ByteString, expiry: u32) -> SessionData {
    let key = bus.next_id();
    let mut outgoing = OutgoingWindow::default();
    outgoing.account(bus.held.inflight.clone());
    SessionData {
        key,
        mailbox: Arc::new(Mailbox::new(
            key,
            client_id.clone(),
            QueueLimits::of(&bus.limits, &bus.held),
            bus.durable.journal(client_id.clone()),
        )),
        subscriptions: Default::default(),
        outgoing,
        incoming_qos2: IncomingQos2::default(),
        expiry_interval: expiry,
        // Set by the registry as it hands the session over.
        epoch: 0,
    }
}

/// The client's will, kept out of the CONNECT (copied: it lives as long as the session).
fn will(connect: &Connect, bus: &Bus) -> Option<Will> {
    let w = connect.last_will.as_ref()?;
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
    // The will's own expiry counts from when it is published; approximated from now plus
    // its delay (it can only be published later, never earlier).
    let mut message =
        Message::from_publish(publish, None, bus.now(), bus.limits.max_message_expiry);
    if let Some(at) = message.expires_at.as_mut() {
        *at += Duration::from_secs(u64::from(delay));
    }
    Some(Will {
        message: Arc::new(message),
        delay,
    })
}

/// Why no CONNECT was accepted.
enum Refusal {
    /// The peer closed first (a port check, a client giving up).
    Closed,
    /// A protocol violation, answered in `version` if it is known (or sniffed from a
    /// malformed CONNECT).
    Violation {
        version: Option<ProtocolVersion>,
        violation: Violation,
        detail: String,
    },
}

/// Read until the first packet decodes; it must be CONNECT [MQTT-3.1.0-1].
async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    decoder: &mut Decoder,
) -> Result<Box<Connect>, Refusal> {
    loop {
        // Sniffed before decoding: a failed decode has consumed the frame.
        let sniffed = rules::sniff_version(&io.rbuf);
        match decoder.decode(&mut io.rbuf) {
            Ok(Some(Packet::Connect(connect))) => return Ok(connect),
            Ok(Some(other)) => {
                return Err(Refusal::Violation {
                    version: None,
                    violation: Violation::protocol("[MQTT-3.1.0-1]"),
                    detail: format!("the first packet is {:?}, not CONNECT", other.packet_type()),
                })
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Refusal::Violation {
                    version: rules::refusal_version(e.reason, sniffed),
                    detail: e.to_string(),
                    violation: e.into(),
                });
            }
        }
        match io.read_more().await {
            Ok(0) | Err(_) => return Err(Refusal::Closed),
            Ok(_) => {}
        }
    }
}

/// From 90 % of `max_store_bytes`, no new persistent session: it would store what the store
/// has no room for. Resuming one (or a session that is not persistent) is always allowed.
fn refuse_persistent_session(bus: &Bus, client_id: &ByteString) -> bool {
    if bus.durable.level() < edgemq_store::Level::NearlyFull || bus.sessions.contains(client_id) {
        return false;
    }
    bus.stats.refused(Limit::StoreBudget, 1);
    bus.warn_store_budget(client_id, "new persistent session");
    true
}

/// The CONNECT user property `metriccategory` (AIO): the `category` label of the client's
/// traffic metrics.
fn metric_category(connect: &Connect) -> Option<ByteString> {
    let properties = &connect.properties.user_properties;
    let (_, value) = properties.iter().find(|(k, _)| k == "metriccategory")?;
    Some(value.clone())
}
