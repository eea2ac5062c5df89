//! Packets from the client after CONNECT.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use bytestring::ByteString;
use edgemq_codec::{
    Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use edgemq_core::auth::Action;
use edgemq_core::logtext::Short;
use edgemq_core::message::Message;
use edgemq_core::session::{AckError, OutgoingState};
use edgemq_core::subscriptions::StoredOptions;
use edgemq_core::topic::{level_count, parse_subscription_filter};

use super::backlog::RetainedItem;
use super::{Connection, Exit};
use crate::mailbox::MailboxHandle;
use crate::stats::Limit;

/// The filters of one SUBSCRIBE or UNSUBSCRIBE that were refused before reaching the index,
/// counted and summarised in one (rate-limited) log line per packet.
#[derive(Default)]
struct Refusals {
    invalid: u64,
    too_deep: u64,
    beyond_count: u64,
    beyond_subscriptions: u64,
    beyond_broker: u64,
    /// The first refused filter and why.
    first: Option<String>,
}

impl Refusals {
    fn note(&mut self, raw: &str, why: impl std::fmt::Display) {
        if self.first.is_none() {
            self.first = Some(format!("{}: {why}", Short(raw)));
        }
    }

    fn total(&self) -> u64 {
        self.invalid
            + self.too_deep
            + self.beyond_count
            + self.beyond_subscriptions
            + self.beyond_broker
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    pub(super) fn handle_packet(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => {
                match self.session.outgoing.puback(ack.packet_id) {
                    Ok(delivery) => self.session.mailbox.forget(delivery.stored),
                    Err(AckError::NotFound) => {} // a stray PUBACK is harmless
                    Err(AckError::OutOfSequence) => {
                        return Err(self.protocol_error("[MQTT-4.3.2] PUBACK for a QoS 2 message"))
                    }
                }
                Ok(())
            }
            Packet::PubRec(rec) => {
                let seq = self.stored_key(rec.packet_id);
                match self
                    .session
                    .outgoing
                    .pubrec(rec.packet_id, rec.reason.is_error())
                {
                    Ok(()) if !rec.reason.is_error() => {
                        // Only the identifier is kept from here; stored before the PUBREL, so
                        // the message itself is never sent again [MQTT-4.3.3].
                        if let (Some(seq), Some(store)) = (seq, self.session.mailbox.store()) {
                            store.sent(
                                &self.client_id,
                                seq,
                                rec.packet_id,
                                OutgoingState::AwaitingPubComp,
                            );
                            self.after_store_ops();
                        }
                        self.send(Packet::PubRel(PubResponse::new(rec.packet_id)));
                    }
                    Ok(()) => self.session.mailbox.forget(seq),
                    Err(AckError::NotFound) if self.version.is_v5() => {
                        // [MQTT-4.3.3] answer an unknown PUBREC with PUBREL 0x92.
                        let mut rel = PubResponse::new(rec.packet_id);
                        rel.reason = ReasonCode::PacketIdentifierNotFound;
                        self.send(Packet::PubRel(rel));
                    }
                    Err(AckError::NotFound) => {
                        self.send(Packet::PubRel(PubResponse::new(rec.packet_id)))
                    }
                    Err(AckError::OutOfSequence) => {
                        return Err(self.protocol_error("[MQTT-4.3.3] PUBREC for a QoS 1 message"))
                    }
                }
                Ok(())
            }
            Packet::PubRel(rel) => {
                let mut comp = PubResponse::new(rel.packet_id);
                if self.session.incoming_qos2.release(rel.packet_id) {
                    // A stale identifier left on disk would swallow the next message that
                    // reuses it: forgotten before the PUBCOMP.
                    if let Some(store) = self.session.mailbox.store() {
                        store.incoming_qos2(&self.client_id, rel.packet_id, false);
                        self.after_store_ops();
                    }
                } else if self.version.is_v5() {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(Packet::PubComp(comp));
                Ok(())
            }
            Packet::PubComp(comp) => {
                let seq = self.stored_key(comp.packet_id);
                match self.session.outgoing.pubcomp(comp.packet_id) {
                    Ok(()) => self.session.mailbox.forget(seq),
                    Err(AckError::NotFound) => {}
                    Err(AckError::OutOfSequence) => {
                        return Err(self.protocol_error("[MQTT-4.3.3] PUBCOMP before PUBREC"))
                    }
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(unsubscribe);
                Ok(())
            }
            Packet::PingReq => {
                // Not behind acknowledgements waiting for the store [MQTT-3.12.4-1].
                self.io.send_unheld(Packet::PingResp, self.version);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.properties.session_expiry_interval {
                    if self.connect_expiry_zero && expiry != 0 {
                        return Err(self.protocol_error(
                            "[MQTT-3.14.2-2] DISCONNECT sets a session expiry after CONNECT had 0",
                        ));
                    }
                    self.session.expiry_interval = expiry.min(self.bus.limits.max_session_expiry);
                }
                Err(Exit::ClientDisconnect {
                    with_will: disconnect.reason == ReasonCode::DisconnectWithWillMessage,
                })
            }
            Packet::Auth(auth) => {
                // Only a connection that used enhanced authentication may re-authenticate, with
                // the same method [MQTT-4.12.1-1]; the handshake is single-step, so 0x18 Continue
                // from a client is out of sequence.
                let Some(method) = self.authentication_method.as_deref() else {
                    return Err(self
                        .protocol_error("[MQTT-4.12.0-1] AUTH without an authentication method"));
                };
                if auth.reason != ReasonCode::ReAuthenticate {
                    return Err(self.protocol_error(
                        "[MQTT-4.12.1-1] AUTH from the client must be 0x19 Re-authenticate here",
                    ));
                }
                if auth.properties.authentication_method.as_deref() != Some(method) {
                    return Err(self.protocol_error(
                        "[MQTT-4.12.1-1] re-authentication must use the CONNECT's method",
                    ));
                }
                self.pending_reauth = Some(Box::new(auth));
                Ok(())
            }
            Packet::Connect(_) => Err(self.protocol_error("[MQTT-3.1.0-2] second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(self.protocol_error("server-to-client packet sent by a client"))
            }
        }
    }

    fn protocol_error(&mut self, rule: &'static str) -> Exit {
        tracing::warn!(rule, "protocol error; closing");
        self.violation(ReasonCode::ProtocolError, rule)
    }

    fn refuse(&mut self, reason: ReasonCode, rule: &'static str) -> Exit {
        tracing::warn!(rule, reason = reason.0, "refused; closing");
        self.violation(reason, rule)
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<(), Exit> {
        if self.version.is_v5() {
            if !publish.properties.subscription_identifiers.is_empty() {
                return Err(self
                    .protocol_error("[MQTT-3.3.4-6] subscription identifier in a client PUBLISH"));
            }
            if let Some(alias) = publish.properties.topic_alias {
                let max = self.bus.limits.topic_alias_maximum;
                match self.aliases.resolve(alias, &publish.topic, max) {
                    Ok(topic) => publish.topic = topic,
                    Err(e) => {
                        return Err(self.refuse(ReasonCode::TopicAliasInvalid, topic_alias_rule(e)));
                    }
                }
            }
        }
        if publish.topic.is_empty() {
            return Err(
                self.protocol_error("[MQTT-3.3.2-1] empty topic name without a topic alias")
            );
        }
        if let Err(e) = edgemq_core::topic::validate_topic_name(&publish.topic) {
            tracing::warn!(error = %e, "invalid topic name; closing");
            return Err(self.violation(ReasonCode::TopicNameInvalid, "invalid topic name"));
        }
        if level_count(&publish.topic) > self.bus.limits.max_topic_levels {
            return self.refuse_deep_publish(&publish);
        }
        if publish.qos > self.bus.limits.maximum_qos {
            return Err(self.refuse(
                ReasonCode::QoSNotSupported,
                "[MQTT-3.2.2-11] QoS above Maximum QoS",
            ));
        }
        if publish.retain && !self.bus.limits.retain_available {
            return Err(self.refuse(
                ReasonCode::RetainNotSupported,
                "[MQTT-3.2.2-14] retain not available",
            ));
        }
        let packet_id = publish.packet_id.unwrap_or(0);
        let qos = publish.qos;
        if qos == QoS::ExactlyOnce {
            let window = usize::from(self.bus.limits.receive_maximum);
            let is_new = !self.session.incoming_qos2.contains(packet_id);
            if is_new && self.session.incoming_qos2.len() >= window {
                return Err(self.refuse(
                    ReasonCode::ReceiveMaximumExceeded,
                    "[MQTT-3.3.4-9] receive maximum exceeded",
                ));
            }
            if !self.session.incoming_qos2.receive(packet_id) {
                // A repeat of a message already received: acknowledge again, deliver once
                // [MQTT-4.3.3-9].
                self.send(Packet::PubRec(PubResponse::new(packet_id)));
                return Ok(());
            }
            // Kept on disk with the routed copies (one commit), so a repeat after a restart
            // is still recognised.
            if let Some(store) = self.session.mailbox.store() {
                store.incoming_qos2(&self.client_id, packet_id, true);
            }
        }
        let mut stored = qos == QoS::ExactlyOnce && self.session.mailbox.store().is_some();
        let topic = publish.topic.clone();
        let allowed = self.authorized(Action::Publish { topic: &topic });
        let reason;
        if allowed {
            let message = Message::from_publish(
                publish,
                Some(self.session.key),
                self.bus.now(),
                self.bus.limits.max_message_expiry,
            );
            let routed = self.bus.publish_from_client(Arc::new(message));
            if routed.store_refused && !self.version.is_v5() {
                // v3 has no code to refuse with, and acknowledging would lose the message:
                // closed unacknowledged, the client sends it again when it reconnects.
                return Err(self.violation(ReasonCode::QuotaExceeded, "store full"));
            }
            stored |= routed.durable;
            if routed.matched > 0 {
                self.routed_in_batch += 1;
            }
            // A retained message the retained budget refuses is neither kept nor routed
            // (v5 0x97; v3 has no code); nor is one the store budget refuses.
            reason = if routed.retain_refused || routed.store_refused {
                ReasonCode::QuotaExceeded
            } else if routed.matched == 0 {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::Success
            };
            if let Some(mailbox) = routed.congested {
                self.hold_back_for(mailbox);
            } else if self.bus.pressure.holds_publishers() {
                self.hold_back_for_memory();
            }
        } else {
            // v5: PUBACK/PUBREC 0x87; v3 has no reason codes: acknowledged, not delivered.
            reason = ReasonCode::NotAuthorized;
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                if stored {
                    self.after_store_ops();
                }
                self.send(Packet::PubAck(self.response(packet_id, reason)));
            }
            QoS::ExactlyOnce => {
                if reason.is_error() {
                    // A refused QoS 2 message ends its exchange here [MQTT-4.3.3].
                    self.session.incoming_qos2.release(packet_id);
                    if let Some(store) = self.session.mailbox.store() {
                        store.incoming_qos2(&self.client_id, packet_id, false);
                    }
                }
                if stored {
                    self.after_store_ops();
                }
                self.send(Packet::PubRec(self.response(packet_id, reason)));
            }
        }
        Ok(())
    }

    /// A PUBACK/PUBREC carrying `reason` in v5 (v3 has no reason codes).
    fn response(&self, packet_id: u16, reason: ReasonCode) -> PubResponse {
        let mut r = PubResponse::new(packet_id);
        if self.version.is_v5() {
            r.reason = reason;
        }
        r
    }

    /// A topic deeper than `max_topic_levels`: v5 QoS 1/2 are answered PUBACK/PUBREC 0x90
    /// and the session goes on; v5 QoS 0 can only be answered with DISCONNECT 0x90; v3 has
    /// no reason codes: closed. Nothing is routed or retained.
    fn refuse_deep_publish(&mut self, publish: &Publish) -> Result<(), Exit> {
        let max = self.bus.limits.max_topic_levels;
        self.bus.stats.refused(Limit::TopicLevels, 1);
        self.warn_input(format_args!(
            "PUBLISH refused: topic {} has more than {max} levels (max-topic-levels)",
            Short(&publish.topic)
        ));
        let id = publish.packet_id.unwrap_or(0);
        let reason = ReasonCode::TopicNameInvalid;
        match (self.version.is_v5(), publish.qos) {
            (true, QoS::AtLeastOnce) => self.send(Packet::PubAck(self.response(id, reason))),
            (true, QoS::ExactlyOnce) => self.send(Packet::PubRec(self.response(id, reason))),
            _ => return Err(self.violation(reason, "topic deeper than max-topic-levels")),
        }
        Ok(())
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Exit> {
        // One Subscription Identifier per SUBSCRIBE applies to all its filters.
        let subscription_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut retained_for: Vec<(ByteString, StoredOptions)> = Vec::new();
        let mut refusals = Refusals::default();
        for (i, (raw, options)) in subscribe.filters.into_iter().enumerate() {
            let stored = StoredOptions {
                options,
                subscription_id,
            };
            let reason = self.subscribe_one(i, raw, stored, &mut refusals, &mut retained_for)?;
            reasons.push(reason);
        }
        self.report_refusals("SUBSCRIBE", &refusals);
        // The subscriptions are on disk before the SUBACK says they exist.
        if self.persist_session() {
            self.after_store_ops();
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Default::default(),
            reasons,
        }));
        // Retained messages follow the SUBACK [MQTT-3.8.4-4], with RETAIN set [MQTT-3.3.1-8],
        // each once however many filters match it, streamed by `pump` as the client takes
        // them.
        // Matched one filter at a time: a packet's duplicates never exist all at once.
        if !retained_for.is_empty() {
            let now = self.bus.now();
            let retained = &self.bus.retained;
            self.retained_backlog
                .add(retained_for.into_iter().flat_map(|(filter, stored)| {
                    let mut found = Vec::new();
                    retained.matching(&filter, now, &mut found);
                    found.into_iter().map(move |message| RetainedItem {
                        message,
                        qos: stored.options.qos,
                        subscription_id: stored.subscription_id,
                    })
                }));
        }
        Ok(())
    }

    /// The `index`th filter of a SUBSCRIBE: checked against the limits and the policy, then
    /// added. Returns its SUBACK reason; a filter owed retained messages joins `retained_for`.
    fn subscribe_one(
        &mut self,
        index: usize,
        raw: ByteString,
        mut stored: StoredOptions,
        refusals: &mut Refusals,
        retained_for: &mut Vec<(ByteString, StoredOptions)>,
    ) -> Result<ReasonCode, Exit> {
        // Kept for the session's life: copied out of the SUBSCRIBE, which a slice would pin.
        let raw = ByteString::from(&*raw);
        let limits = &self.bus.limits;
        // v3 has one failure code, 0x80.
        let is_v5 = self.version.is_v5();
        let failure = |v5: ReasonCode| match is_v5 {
            true => v5,
            false => ReasonCode::UnspecifiedError,
        };
        if index >= limits.max_filters_per_packet {
            refusals.beyond_count += 1;
            refusals.note(&raw, "beyond max-filters-per-packet");
            return Ok(failure(ReasonCode::QuotaExceeded));
        }
        let filter = match parse_subscription_filter(&raw) {
            Ok(f) => f,
            Err(e) => {
                refusals.invalid += 1;
                refusals.note(&raw, e);
                return Ok(failure(ReasonCode::TopicFilterInvalid));
            }
        };
        if level_count(&filter.filter) > limits.max_topic_levels {
            refusals.too_deep += 1;
            refusals.note(&raw, "deeper than max-topic-levels");
            return Ok(failure(ReasonCode::TopicFilterInvalid));
        }
        if filter.share_group.is_some() && stored.options.no_local {
            return Err(self.protocol_error("[MQTT-3.8.3-4] No Local on a shared subscription"));
        }
        if !self.authorized(Action::Subscribe { filter: &raw }) {
            return Ok(failure(ReasonCode::NotAuthorized));
        }
        // A new subscription (not a replacement) within the session's and the broker's
        // budgets.
        if !self.session.subscriptions.contains_key(&raw) {
            let limits = &self.bus.limits;
            if self.session.subscriptions.len() >= limits.max_subscriptions_per_session {
                refusals.beyond_subscriptions += 1;
                refusals.note(&raw, "beyond max-subscriptions-per-session");
                return Ok(failure(ReasonCode::QuotaExceeded));
            }
            if self.bus.index.len() >= limits.max_subscriptions {
                refusals.beyond_broker += 1;
                refusals.note(&raw, "beyond max-subscriptions");
                return Ok(failure(ReasonCode::QuotaExceeded));
            }
        }
        stored.options.qos = stored.options.qos.min(self.bus.limits.maximum_qos);
        let handle = MailboxHandle(self.session.mailbox.clone());
        let existed = self.bus.index.subscribe(&filter, handle, stored);
        let send_retained = filter.share_group.is_none()
            && match stored.options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            retained_for.push((filter.filter.clone(), stored));
        }
        let granted = ReasonCode(stored.options.qos as u8);
        self.session.subscriptions.insert(raw, (filter, stored));
        Ok(granted)
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let limits = &self.bus.limits;
        let (max_filters, max_levels) = (limits.max_filters_per_packet, limits.max_topic_levels);
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let mut refusals = Refusals::default();
        for (i, raw) in unsubscribe.filters.into_iter().enumerate() {
            let depth = match parse_subscription_filter(&raw) {
                Ok(f) => level_count(&f.filter),
                Err(_) => level_count(&raw),
            };
            let reason = if i >= max_filters {
                refusals.beyond_count += 1;
                refusals.note(&raw, "beyond max-filters-per-packet");
                ReasonCode::UnspecifiedError
            } else if depth > max_levels {
                refusals.too_deep += 1;
                refusals.note(&raw, "deeper than max-topic-levels");
                ReasonCode::TopicFilterInvalid
            } else {
                match self.session.subscriptions.remove(&raw) {
                    Some((filter, _)) if self.bus.index.unsubscribe(&filter, self.session.key) => {
                        ReasonCode::Success
                    }
                    _ => ReasonCode::NoSubscriptionExisted,
                }
            };
            reasons.push(reason);
        }
        self.report_refusals("UNSUBSCRIBE", &refusals);
        if self.version != ProtocolVersion::V5 {
            reasons.clear();
        }
        if self.persist_session() {
            self.after_store_ops();
        }
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: Default::default(),
            reasons,
        }));
    }

    /// Count a packet's refused filters and log them in one rate-limited line.
    fn report_refusals(&mut self, packet: &str, r: &Refusals) {
        if r.total() == 0 {
            return;
        }
        self.bus.stats.refused(Limit::TopicLevels, r.too_deep);
        let stats = &self.bus.stats;
        stats.refused(Limit::FiltersPerPacket, r.beyond_count);
        stats.refused(Limit::SubscriptionsPerSession, r.beyond_subscriptions);
        stats.refused(Limit::Subscriptions, r.beyond_broker);
        let limits = &self.bus.limits;
        let (max_levels, max_filters) = (limits.max_topic_levels, limits.max_filters_per_packet);
        self.warn_input(format_args!(
            "{packet}: {} filters refused ({} invalid, {} deeper than max-topic-levels {max_levels}, {} beyond max-filters-per-packet {max_filters}, {} beyond max-subscriptions-per-session, {} beyond max-subscriptions); first: {}",
            r.total(), r.invalid, r.too_deep, r.beyond_count, r.beyond_subscriptions, r.beyond_broker,
            r.first.as_deref().unwrap_or("-"),
        ));
    }

    /// The store key of the delivery in flight under `packet_id`, if it is stored.
    fn stored_key(&self, packet_id: u16) -> Option<u64> {
        self.session
            .outgoing
            .find(packet_id)
            .and_then(|i| i.delivery.stored)
    }

    /// Write the (persistent) session to the store; true if it was.
    pub(super) fn persist_session(&self) -> bool {
        let will = self.will.as_ref().map(|w| (w.message.clone(), w.delay));
        self.session.persist(None, will)
    }

    /// Encode a packet into the write buffer.
    pub(super) fn send(&mut self, packet: Packet) {
        if let Err(e) = packet.encode(self.version, &mut self.io.wbuf) {
            tracing::error!(error = %e, "could not encode a packet");
        }
    }
}

fn topic_alias_rule(e: edgemq_core::session::TopicAliasError) -> &'static str {
    match e {
        edgemq_core::session::TopicAliasError::OutOfRange => {
            "[MQTT-3.3.2-8] topic alias out of range"
        }
        edgemq_core::session::TopicAliasError::Unknown => "[MQTT-3.3.2-7] unknown topic alias",
    }
}
