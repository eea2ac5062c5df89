//! Messages to the client: drain the mailbox into the write buffer within the client's
//! Receive Maximum, and re-send what was in flight when a session resumes.

use tokio::io::{AsyncRead, AsyncWrite};

use bytes::BytesMut;

use edgemq_codec::{OutgoingPublish, Packet, ProtocolVersion, PubResponse, QoS};
use edgemq_core::logtext::Short;
use edgemq_core::session::{AliasUse, Delivery, OutboundAliases, OutgoingState, OutgoingWindow};

use super::{Connection, Exit, Loading, LOAD_BATCH, WRITE_HIGH_WATER};
use crate::mailbox::Entry;
use crate::stats::{DropReason, Stats};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Move deliveries from the mailbox into the write buffer while the buffer is below its
    /// high-water mark and the in-flight window has room. Order is kept: a QoS 0 message
    /// behind a QoS 1/2 message waiting for window room waits too.
    pub(super) fn pump(&mut self) -> Result<(), Exit> {
        let now = self.bus.now();
        self.resend_backlog_within_window(now);
        self.pump_retained(now);
        while self.io.wbuf.len() < WRITE_HIGH_WATER && self.loading.is_none() {
            let delivery = match self.session.mailbox.pop(self.window_open()) {
                None => return Ok(()),
                Some(Entry::Ready(delivery)) => delivery,
                Some(stored @ Entry::Stored { .. }) => {
                    // On disk only: read a batch back; the queue waits behind it.
                    let mut entries = vec![stored];
                    self.session.mailbox.pop_stored(LOAD_BATCH, &mut entries);
                    let keys = entries.iter().filter_map(Entry::seq).collect();
                    if let Some(reply) = self.session.mailbox.journal().load(keys) {
                        self.loading = Some(Loading { reply, entries });
                    }
                    return Ok(());
                }
            };
            if delivery.message.is_expired(now) {
                self.bus.stats.dropped(DropReason::Expired);
                self.session.mailbox.forget(delivery.stored);
                continue;
            }
            // QoS 1/2: moved into the window and encoded from there (no clone per message).
            if delivery.qos == QoS::AtMostOnce {
                let (mut writer, _) = self.writer_and_window();
                writer.write(&delivery, None, false, now);
                continue;
            }
            let stored_qos2 = delivery.stored.filter(|_| delivery.qos == QoS::ExactlyOnce);
            let id = match self.session.outgoing.insert(delivery) {
                Ok(id) => id,
                Err(delivery) => {
                    // 65,535 messages in flight cannot happen within a u16 Receive Maximum.
                    self.session
                        .mailbox
                        .requeue_front(std::iter::once(delivery));
                    return Ok(());
                }
            };
            if let Some(seq) = stored_qos2 {
                // The identifier must be on disk before the client sees it: after a restart
                // the message goes again under this identifier, which the client recognises
                // as one it has [MQTT-4.3.3].
                let journal = self.session.mailbox.journal();
                journal.sent(seq, id, OutgoingState::AwaitingPubRec);
                self.after_store_ops();
            }
            self.write_inflight(id, false, now);
        }
        Ok(())
    }

    /// Room for a new QoS 1/2 message (re-sends go first): under the client's Receive
    /// Maximum (capped by `max_inflight_messages`), under `max_inflight_bytes`, and not at
    /// the memory budget (one message always goes when nothing is in flight).
    fn window_open(&self) -> bool {
        let outgoing = &self.session.outgoing;
        // At the memory budget nothing new goes in flight (one still may when none is).
        let budget = outgoing.is_empty() || !self.bus.pressure.sheds();
        self.resend_backlog.is_empty()
            && budget
            && outgoing.len() < self.send_window
            && (outgoing.is_empty() || outgoing.bytes() < self.bus.limits.max_inflight_bytes)
    }

    /// Encode the in-flight message `id` straight from the window (no clone), with DUP on a
    /// re-send. One too large for this client is dropped as if delivered [MQTT-3.1.2-25],
    /// and forgotten by the store.
    fn write_inflight(&mut self, id: u16, dup: bool, now: std::time::Instant) {
        let (mut writer, outgoing) = self.writer_and_window();
        let written = outgoing
            .find(id)
            .is_some_and(|inflight| writer.write(&inflight.delivery, Some(id), dup, now));
        if !written {
            if let Ok(dropped) = outgoing.remove(id) {
                self.session.mailbox.forget(dropped.delivery.stored);
            }
        }
    }

    /// Send retained messages owed to SUBSCRIBEs, as the window and the write buffer allow.
    fn pump_retained(&mut self, now: std::time::Instant) {
        while self.io.wbuf.len() < WRITE_HIGH_WATER {
            let Some(item) = self.retained_backlog.front() else {
                return;
            };
            if item.message.qos.min(item.qos) != QoS::AtMostOnce && !self.window_open() {
                return;
            }
            let Some(item) = self.retained_backlog.pop_front() else {
                return;
            };
            if item.message.is_expired(now) {
                continue;
            }
            let delivery = item.into_delivery();
            if delivery.qos == QoS::AtMostOnce {
                let (mut writer, _) = self.writer_and_window();
                writer.write(&delivery, None, false, now);
                continue;
            }
            if let Ok(id) = self.session.outgoing.insert(delivery) {
                self.write_inflight(id, false, now);
            }
        }
    }

    /// On session resumption, re-send unacknowledged PUBLISHes with DUP set and PUBRELs for
    /// messages awaiting PUBCOMP, in their original order [MQTT-4.4.0-1] — but no more than
    /// the new connection's Receive Maximum allows [MQTT-3.3.4-9]; the rest follow as
    /// acknowledgements free the window.
    pub(super) fn resend_inflight(&mut self) {
        self.resend_backlog = self.session.outgoing.iter().map(|i| i.packet_id).collect();
        self.resend_backlog_within_window(self.bus.now());
    }

    fn resend_backlog_within_window(&mut self, now: std::time::Instant) {
        while let Some(&packet_id) = self.resend_backlog.front() {
            // Everything in the window except the backlog has been sent on this connection.
            // (Saturating: a client may acknowledge an id it was not re-sent yet.)
            let sent = self
                .session
                .outgoing
                .len()
                .saturating_sub(self.resend_backlog.len());
            if sent >= self.send_window {
                return;
            }
            self.resend_backlog.pop_front();
            let Some(state) = self.session.outgoing.find(packet_id).map(|i| i.state) else {
                continue;
            };
            match state {
                OutgoingState::AwaitingPubComp => {
                    self.send(Packet::PubRel(PubResponse::new(packet_id)))
                }
                _ => self.write_inflight(packet_id, true, now),
            }
        }
    }

    /// The write buffer and the in-flight window, borrowed apart so a delivery can be
    /// encoded straight from the window.
    fn writer_and_window(&mut self) -> (PublishWriter<'_>, &mut OutgoingWindow) {
        (
            PublishWriter {
                wbuf: &mut self.io.wbuf,
                version: self.version,
                client_max_packet: self.client_max_packet,
                stats: &self.bus.stats,
                aliases: self.outbound_aliases.as_deref_mut(),
            },
            &mut self.session.outgoing,
        )
    }
}

/// Encodes PUBLISHes for one client into its write buffer.
struct PublishWriter<'a> {
    wbuf: &'a mut BytesMut,
    version: ProtocolVersion,
    client_max_packet: Option<u32>,
    stats: &'a Stats,
    aliases: Option<&'a mut OutboundAliases>,
}

impl PublishWriter<'_> {
    /// Encode one PUBLISH. Returns false (and writes nothing) if the packet exceeds the
    /// client's Maximum Packet Size; the drop is counted.
    fn write(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: std::time::Instant,
    ) -> bool {
        let message = &delivery.message;
        let v5 = self.version.is_v5();
        let alias = match self.aliases.as_deref_mut() {
            Some(aliases) if v5 => aliases.alias(&message.topic),
            _ => AliasUse::Plain,
        };
        let (topic, topic_alias) = match alias {
            AliasUse::Plain => (&*message.topic, None),
            AliasUse::Set(n) => (&*message.topic, Some(n)),
            AliasUse::Use(n) => ("", Some(n)),
        };
        let publish = OutgoingPublish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            forwarded_properties: if v5 {
                message.forwarded_properties()
            } else {
                &[]
            },
            message_expiry_interval: message.remaining_expiry(now),
            subscription_identifiers: &delivery.subscription_ids,
            topic_alias,
            payload: &message.payload,
        };
        let before = self.wbuf.len();
        let encoded = publish.encode(self.version, self.wbuf);
        let too_large = self
            .client_max_packet
            .is_some_and(|max| self.wbuf.len() - before > max as usize);
        if encoded.is_err() || too_large {
            self.wbuf.truncate(before);
            // Not sent: an alias it was to set is not set.
            if let (AliasUse::Set(_), Some(aliases)) = (alias, self.aliases.as_deref_mut()) {
                aliases.forget(&message.topic);
            }
        }
        if let Err(e) = encoded {
            tracing::error!(error = %e, "could not encode a PUBLISH");
            return false;
        }
        if too_large {
            self.stats.dropped(DropReason::PacketTooLarge);
            tracing::debug!(topic = %Short(&message.topic), "message larger than the client's Maximum Packet Size: dropped for this client");
            return false;
        }
        self.stats
            .messages_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
}
