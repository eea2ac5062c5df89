//! Packets from the client after CONNECT.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use bytestring::ByteString;
use edgemq_codec::{
    Packet, ProtocolVersion, Publish, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use edgemq_core::auth::Action;
use edgemq_core::logtext::Short;
use edgemq_core::message::Message;
use edgemq_core::protocol::{Control, Effect, Outcome, PublishStep, Violation};
use edgemq_core::session::OutgoingState;
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

/// How handling a packet ended early.
enum Step {
    /// The rules refused it: the connection ends with this violation.
    Close(Violation),
    /// The connection ends for another reason (a DISCONNECT, a refused SUBSCRIBE).
    Exit(Exit),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// One packet from the client: the rules in `edgemq_core::protocol` decide, this carries
    /// out what they decide (SUBSCRIBE and UNSUBSCRIBE are still decided here).
    pub(super) fn handle_packet(&mut self, packet: Packet) -> Result<(), Exit> {
        let mut effects = std::mem::take(&mut self.effects);
        let result = match packet {
            Packet::Publish(publish) => self.on_publish(publish, &mut effects),
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                let s = &mut self.session;
                self.protocol
                    .acknowledgement(packet, &mut s.outgoing, &mut s.incoming_qos2, &mut effects)
                    .map_err(Step::Close)
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe).map_err(Step::Exit),
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(unsubscribe);
                Ok(())
            }
            other => match self.protocol.control(other, &mut effects) {
                Ok(control) => self.on_control(control).map_err(Step::Exit),
                Err(v) => Err(Step::Close(v)),
            },
        };
        self.carry_out(&mut effects);
        self.effects = effects;
        result.map_err(|step| match step {
            Step::Close(v) => self.close(v),
            Step::Exit(exit) => exit,
        })
    }

    fn on_control(&mut self, control: Control) -> Result<(), Exit> {
        match control {
            Control::Continue => Ok(()),
            Control::Disconnect {
                with_will,
                session_expiry,
            } => {
                if let Some(expiry) = session_expiry {
                    self.session.expiry_interval = expiry;
                }
                Err(Exit::ClientDisconnect { with_will })
            }
            Control::Reauthenticate(auth) => {
                self.pending_reauth = Some(auth);
                Ok(())
            }
        }
    }

    /// Carry out what the rules decided, in order.
    fn carry_out(&mut self, effects: &mut Vec<Effect>) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(packet) => self.send(packet),
                Effect::SendUnheld(packet) => self.io.send_unheld(packet, self.version),
                Effect::Forget(seq) => self.session.mailbox.forget(seq),
                Effect::AwaitPubComp { seq, packet_id } => {
                    if let Some(store) = self.session.mailbox.store() {
                        store.sent(
                            &self.client_id,
                            seq,
                            packet_id,
                            OutgoingState::AwaitingPubComp,
                        );
                    }
                }
                Effect::IncomingQos2 { packet_id, pending } => {
                    if let Some(store) = self.session.mailbox.store() {
                        store.incoming_qos2(&self.client_id, packet_id, pending);
                    }
                }
                Effect::HoldForCommit => self.after_store_ops(),
            }
        }
    }

    /// A violation ends the connection: logged once, with its rule, and (v5) a DISCONNECT.
    pub(super) fn close(&mut self, v: Violation) -> Exit {
        tracing::warn!(
            rule = v.rule,
            reason = v.reason.0,
            "protocol violation; closing"
        );
        self.violation(v)
    }

    fn on_publish(&mut self, mut publish: Publish, effects: &mut Vec<Effect>) -> Result<(), Step> {
        let step = self
            .protocol
            .publish(&mut publish, &mut self.session.incoming_qos2, effects);
        match step.map_err(Step::Close)? {
            PublishStep::Route => {}
            PublishStep::Answered => return Ok(()),
            PublishStep::TooDeep { close } => {
                self.bus.stats.refused(Limit::TopicLevels, 1);
                let max = self.bus.limits.max_topic_levels;
                self.warn_input(format_args!(
                    "PUBLISH refused: topic {} has more than {max} levels (max-topic-levels)",
                    Short(&publish.topic)
                ));
                return close.map_or(Ok(()), |v| Err(Step::Exit(self.violation(v))));
            }
        }
        let (packet_id, qos) = (publish.packet_id.unwrap_or(0), publish.qos);
        let (outcome, stored) = self.route(publish);
        self.protocol
            .answer(
                packet_id,
                qos,
                outcome,
                stored,
                &mut self.session.incoming_qos2,
                effects,
            )
            .map_err(Step::Close)
    }

    /// Authorize and route a client's message; its outcome, and whether routing wrote to
    /// the store for it.
    fn route(&mut self, publish: Publish) -> (Outcome, bool) {
        let topic = publish.topic.clone();
        if !self.authorized(Action::Publish { topic: &topic }) {
            return (Outcome::NotAuthorized, false);
        }
        let message = Message::from_publish(
            publish,
            Some(self.session.key),
            self.bus.now(),
            self.bus.limits.max_message_expiry,
        );
        let routed = self.bus.publish_from_client(Arc::new(message));
        if routed.matched > 0 {
            self.routed_in_batch += 1;
        }
        if let Some(mailbox) = routed.congested {
            self.hold_back_for(mailbox);
        } else if self.bus.pressure.holds_publishers() {
            self.hold_back_for_memory();
        }
        // Refused whole by the retained or the store budget: neither kept nor routed.
        let outcome = if routed.retain_refused || routed.store_refused {
            Outcome::QuotaExceeded
        } else if routed.matched == 0 {
            Outcome::NoSubscribers
        } else {
            Outcome::Delivered
        };
        (outcome, routed.durable)
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
            return Err(self.close(Violation::protocol(
                "[MQTT-3.8.3-4] No Local on a shared subscription",
            )));
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
