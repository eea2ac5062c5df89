//! Packets from the client after CONNECT.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use bytestring::ByteString;
use edgemq_codec::{
    Packet, ProtocolVersion, Publish, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use edgemq_core::auth::Action;
use edgemq_core::logtext::Short;
use edgemq_core::message::Message;
use edgemq_core::protocol::{Batch, Control, Effect, Outcome, PublishStep, Violation};
use edgemq_core::session::OutgoingState;
use edgemq_core::subscribe::{self, Refusal, Tally};
use edgemq_core::subscriptions::Router;
use edgemq_core::subscriptions::StoredOptions;

use super::{Connection, Exit};
use crate::mailbox::MailboxHandle;
use crate::stats::Limit;
use edgemq_core::backlog::RetainedItem;

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
        let mut effects = Batch::new();
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
        self.carry_out(effects);
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
    fn carry_out(&mut self, effects: Batch) {
        for effect in effects {
            match effect {
                Effect::Send(packet) => self.send(packet),
                Effect::SendUnheld(packet) => self.io.send_unheld(packet, self.version),
                Effect::Forget(seq) => self.session.mailbox.forget(seq),
                Effect::AwaitPubComp { seq, packet_id } => {
                    let journal = self.session.mailbox.journal();
                    journal.sent(seq, packet_id, OutgoingState::AwaitingPubComp);
                }
                Effect::IncomingQos2 { packet_id, pending } => {
                    let journal = self.session.mailbox.journal();
                    journal.incoming_qos2(packet_id, pending);
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

    fn on_publish(&mut self, mut publish: Publish, effects: &mut Batch) -> Result<(), Step> {
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
        self.tally.publishes_in += 1;
        self.tally.payload_in += message.payload.len() as u64;
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
        let mut tally = Tally::default();
        for (i, (raw, options)) in subscribe.filters.into_iter().enumerate() {
            let stored = StoredOptions {
                options,
                subscription_id,
            };
            let reason = match self.subscribe_one(i, raw, stored, &mut retained_for)? {
                Ok(granted) => granted,
                Err((raw, refusal)) => {
                    tally.note(&raw, refusal);
                    refusal.suback(self.version)
                }
            };
            reasons.push(reason);
        }
        self.report_refusals("SUBSCRIBE", &tally);
        // The subscriptions are on disk before the SUBACK says they exist.
        if self.persist_session() {
            self.after_store_ops();
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Default::default(),
            reasons,
        }));
        self.owe_retained(retained_for);
        Ok(())
    }

    /// Retained messages follow the SUBACK, with RETAIN set (3.1.1 [MQTT-3.3.1-8]),
    /// each once however many filters match it, streamed by `pump` as the client takes them.
    /// Matched one filter at a time: a packet's duplicates never exist all at once.
    fn owe_retained(&mut self, retained_for: Vec<(ByteString, StoredOptions)>) {
        if retained_for.is_empty() {
            return;
        }
        let now = self.bus.now();
        let retained = &self.bus.retained;
        let sys = &self.bus.sys_retained;
        self.retained_backlog
            .add(retained_for.into_iter().flat_map(|(filter, stored)| {
                let mut found = Vec::new();
                retained.matching(&filter, now, &mut found);
                // Only a filter starting with `$` can match `$SYS` [MQTT-4.7.2-1].
                if filter.starts_with('$') {
                    sys.matching(&filter, now, &mut found);
                }
                found.into_iter().map(move |message| RetainedItem {
                    message,
                    qos: stored.options.qos,
                    subscription_id: stored.subscription_id,
                })
            }));
    }

    /// The `index`th filter of a SUBSCRIBE: the rules (`edgemq_core::subscribe`), the policy
    /// and the budgets, then the index. Its granted QoS, or the filter and why it was
    /// refused; a filter owed retained messages joins `retained_for`.
    fn subscribe_one(
        &mut self,
        index: usize,
        raw: ByteString,
        mut stored: StoredOptions,
        retained_for: &mut Vec<(ByteString, StoredOptions)>,
    ) -> Result<Result<ReasonCode, (ByteString, Refusal)>, Exit> {
        // Kept for the session's life: copied out of the SUBSCRIBE, which a slice would pin.
        let raw = ByteString::from(&*raw);
        let checked = subscribe::check(index, &raw, &stored.options, &self.bus.limits);
        let filter = match checked.map_err(|v| self.close(v))? {
            Ok(filter) => filter,
            Err(refusal) => return Ok(Err((raw, refusal))),
        };
        if !self.authorized(Action::Subscribe { filter: &raw }) {
            return Ok(Err((raw, Refusal::NotAuthorized)));
        }
        let replaces = self.session.subscriptions.contains_key(&raw);
        let (session_holds, broker_holds) =
            (self.session.subscriptions.len(), self.bus.index.len());
        if let Err(refusal) =
            subscribe::within_budgets(replaces, session_holds, broker_holds, &self.bus.limits)
        {
            return Ok(Err((raw, refusal)));
        }
        stored.options.qos = subscribe::granted(stored.options.qos, &self.bus.limits);
        let handle = MailboxHandle(self.session.mailbox.clone());
        let existed = self.bus.index.subscribe(&filter, handle, stored);
        if subscribe::sends_retained(&filter, stored.options.retain_handling, existed) {
            retained_for.push((filter.filter.clone(), stored));
        }
        self.session.subscriptions.insert(raw, (filter, stored));
        Ok(Ok(ReasonCode(stored.options.qos as u8)))
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let mut tally = Tally::default();
        for (i, raw) in unsubscribe.filters.into_iter().enumerate() {
            let reason = match subscribe::check_unsubscribe(i, &raw, &self.bus.limits) {
                Err(refusal) => {
                    tally.note(&raw, refusal);
                    refusal.unsuback()
                }
                Ok(()) => match self.session.subscriptions.remove(&raw) {
                    Some((filter, _)) if self.bus.index.unsubscribe(&filter, self.session.key) => {
                        ReasonCode::Success
                    }
                    _ => ReasonCode::NoSubscriptionExisted,
                },
            };
            reasons.push(reason);
        }
        self.report_refusals("UNSUBSCRIBE", &tally);
        // [MQTT-3.11.2] a v3 UNSUBACK has no reason codes.
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
    fn report_refusals(&mut self, packet: &str, t: &Tally) {
        if t.total() == 0 {
            return;
        }
        for (limit, n) in t.by_limit() {
            self.bus.stats.refused(limit, n);
        }
        let limits = &self.bus.limits;
        let (max_levels, max_filters) = (limits.max_topic_levels, limits.max_filters_per_packet);
        let first = t
            .first
            .as_ref()
            .map(|(raw, why)| format!("{}: {why}", Short(raw)));
        self.warn_input(format_args!(
            "{packet}: {} filters refused ({} invalid, {} deeper than max-topic-levels {max_levels}, {} beyond max-filters-per-packet {max_filters}, {} beyond max-subscriptions-per-session, {} beyond max-subscriptions); first: {}",
            t.total(), t.invalid, t.too_deep, t.beyond_count, t.beyond_session, t.beyond_broker,
            first.as_deref().unwrap_or("-"),
        ));
    }

    /// Write the (persistent) session to the store; true if it was.
    pub(super) fn persist_session(&self) -> bool {
        let will = self.will.as_ref().map(|w| (w.message.clone(), w.delay));
        self.session.persist(None, will)
    }

    /// Encode a packet into the write buffer.
    pub(super) fn send(&mut self, packet: Packet) {
        self.io.encode(&packet, self.version);
    }
}
