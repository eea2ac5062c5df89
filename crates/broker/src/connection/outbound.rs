//! Messages to the client: drain the mailbox into the write buffer within the client's
//! Receive Maximum, and re-send what was in flight when a session resumes.

use tokio::io::{AsyncRead, AsyncWrite};

use edgemq_codec::{Packet, PubResponse, Publish, QoS};
use edgemq_core::session::{Delivery, OutgoingState};

use super::{Connection, Exit, WRITE_HIGH_WATER};
use crate::stats::DropReason;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Move deliveries from the mailbox into the write buffer while the buffer is below its
    /// high-water mark and the in-flight window has room. Order is kept: a QoS 0 message
    /// behind a QoS 1/2 message waiting for window room waits too.
    pub(super) fn pump(&mut self) -> Result<(), Exit> {
        let now = self.bus.now();
        self.resend_backlog_within_window(now);
        while self.io.wbuf.len() < WRITE_HIGH_WATER {
            let window_open =
                self.resend_backlog.is_empty() && self.session.outgoing.len() < self.send_window;
            let Some(delivery) = self.session.mailbox.pop(window_open) else {
                return Ok(());
            };
            if delivery.message.is_expired(now) {
                self.bus.stats.dropped(DropReason::Expired);
                continue;
            }
            let packet_id = match delivery.qos {
                QoS::AtMostOnce => None,
                _ => match self.session.outgoing.insert(delivery.clone()) {
                    Some(id) => Some(id),
                    None => {
                        // 65,535 messages in flight cannot happen within a u16 Receive Maximum.
                        self.session
                            .mailbox
                            .requeue_front(std::iter::once(delivery));
                        return Ok(());
                    }
                },
            };
            if !self.write_publish(&delivery, packet_id, false, now) {
                if let Some(id) = packet_id {
                    // Too large for this client: behave as if it was delivered [MQTT-3.1.2-25].
                    let _ = self.session.outgoing.remove(id);
                }
            }
        }
        Ok(())
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
            let Some(inflight) = self.session.outgoing.find(packet_id) else {
                continue;
            };
            match inflight.state {
                OutgoingState::AwaitingPubComp => {
                    self.send(Packet::PubRel(PubResponse::new(packet_id)))
                }
                _ => {
                    let delivery = inflight.delivery.clone();
                    if !self.write_publish(&delivery, Some(packet_id), true, now) {
                        // Too large for this client now: as if delivered [MQTT-3.1.2-25].
                        let _ = self.session.outgoing.remove(packet_id);
                    }
                }
            }
        }
    }

    /// Encode one PUBLISH for this client. Returns false (and writes nothing) if the packet
    /// exceeds the client's Maximum Packet Size; the drop is counted.
    fn write_publish(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: std::time::Instant,
    ) -> bool {
        let message = &delivery.message;
        let mut properties = if self.version.is_v5() {
            message.properties.clone()
        } else {
            Default::default()
        };
        if self.version.is_v5() {
            properties.message_expiry_interval = message.remaining_expiry(now);
            properties
                .subscription_identifiers
                .extend(delivery.subscription_ids.iter().copied());
        }
        let publish = Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: message.topic.clone(),
            packet_id,
            properties,
            payload: message.payload.clone(),
        };
        let before = self.io.wbuf.len();
        if let Err(e) = Packet::Publish(publish).encode(self.version, &mut self.io.wbuf) {
            tracing::error!(error = %e, "could not encode a PUBLISH");
            self.io.wbuf.truncate(before);
            return false;
        }
        if let Some(max) = self.client_max_packet {
            if self.io.wbuf.len() - before > max as usize {
                self.io.wbuf.truncate(before);
                self.bus.stats.dropped(DropReason::PacketTooLarge);
                tracing::debug!(topic = %message.topic, "message larger than the client's Maximum Packet Size: dropped for this client");
                return false;
            }
        }
        self.bus
            .stats
            .messages_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
}
