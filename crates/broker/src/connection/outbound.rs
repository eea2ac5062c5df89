//! Messages to the client: drain the mailbox into the write buffer as
//! `edgemq_core::outbound` allows, and re-send what was in flight when a session resumes.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use edgemq_codec::{Packet, PubResponse, QoS};
use edgemq_core::logtext::Short;
use edgemq_core::outbound::{Resend, Written};
use edgemq_core::session::{Delivery, OutgoingState};

use super::{Connection, Exit, Loading, LOAD_BATCH, WRITE_HIGH_WATER};
use crate::mailbox::{Entry, Mailbox};
use crate::stats::{DropReason, Stats, Tally};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Move deliveries from the mailbox into the write buffer while the buffer is below its
    /// high-water mark and the in-flight window has room. Order is kept: a QoS 0 message
    /// behind a QoS 1/2 message waiting for window room waits too.
    pub(super) fn pump(&mut self) -> Result<(), Exit> {
        let now = self.bus.now();
        self.resend_within_window(now);
        self.pump_retained(now);
        while self.io.wbuf.len() < WRITE_HIGH_WATER && self.loading.is_none() {
            let delivery = match self.session.mailbox.pop(self.window_open()) {
                None => return Ok(()),
                Some(Entry::Ready(delivery)) => delivery,
                Some(stored @ Entry::Stored { .. }) => {
                    self.load_stored(stored);
                    return Ok(());
                }
            };
            if delivery.message.is_expired(now) {
                // [MQTT-3.3.2-5]: expired before onward delivery started.
                let mailbox = &self.session.mailbox;
                mailbox.dropped_unsendable(DropReason::Expired, &self.bus.stats);
                self.session.mailbox.forget(delivery.stored);
                continue;
            }
            if let Some(at) = delivery.message.received_at {
                let latency = now.saturating_duration_since(at);
                self.bus.stats.delivery_latency.observe(latency);
            }
            if !self.send_delivery(delivery, now) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A queue entry on disk only: read a batch back; the queue waits behind it.
    fn load_stored(&mut self, stored: Entry) {
        let mut entries = vec![stored];
        self.session.mailbox.pop_stored(LOAD_BATCH, &mut entries);
        let keys = entries.iter().filter_map(Entry::seq).collect();
        if let Some(reply) = self.session.mailbox.journal().load(keys) {
            self.loading = Some(Loading { reply, entries });
        }
    }

    /// Send one delivery: QoS 0 straight into the buffer, QoS 1/2 into the window and
    /// encoded from there (no clone per message). False if the window had no identifier
    /// left (the delivery goes back to the front of the queue).
    fn send_delivery(&mut self, delivery: Delivery, now: Instant) -> bool {
        if delivery.qos == QoS::AtMostOnce {
            self.write_publish(&delivery, None, false, now);
            return true;
        }
        let stored_qos2 = delivery.stored.filter(|_| delivery.qos == QoS::ExactlyOnce);
        let id = match self.session.outgoing.insert(delivery) {
            Ok(id) => id,
            Err(delivery) => {
                // 65,535 messages in flight cannot happen within a u16 Receive Maximum.
                let queue = &mut self.session.mailbox;
                queue.requeue_front(std::iter::once(delivery));
                return false;
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
        true
    }

    /// Room for a new QoS 1/2 message (see `Outbound::window_open`).
    fn window_open(&self) -> bool {
        let sheds = self.bus.pressure.sheds();
        self.outbound.window_open(&self.session.outgoing, sheds)
    }

    /// Encode the in-flight message `id` straight from the window (no clone), with DUP on a
    /// re-send. One not written (too large for this client) is dropped as if delivered
    /// [MQTT-3.1.2-25], and forgotten by the store.
    fn write_inflight(&mut self, id: u16, dup: bool, now: Instant) {
        let Some(inflight) = self.session.outgoing.find(id) else {
            return;
        };
        let written =
            self.outbound
                .write(&inflight.delivery, Some(id), dup, now, &mut self.io.wbuf);
        let out = Counting(&self.bus.stats, &self.session.mailbox, &mut self.tally);
        if !count_written(out, written, &inflight.delivery) {
            if let Ok(dropped) = self.session.outgoing.remove(id) {
                self.session.mailbox.forget(dropped.delivery.stored);
            }
        }
    }

    /// Encode a QoS 0 delivery.
    fn write_publish(&mut self, delivery: &Delivery, id: Option<u16>, dup: bool, now: Instant) {
        let written = self
            .outbound
            .write(delivery, id, dup, now, &mut self.io.wbuf);
        let out = Counting(&self.bus.stats, &self.session.mailbox, &mut self.tally);
        count_written(out, written, delivery);
    }

    /// Send retained messages owed to SUBSCRIBEs, as the window and the write buffer allow.
    fn pump_retained(&mut self, now: Instant) {
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
            if !item.message.is_expired(now) {
                self.send_delivery(item.into_delivery(), now);
            }
        }
    }

    /// On session resumption, re-send unacknowledged PUBLISHes with DUP set and PUBRELs for
    /// messages awaiting PUBCOMP, in their original order, within the new connection's
    /// Receive Maximum (`Outbound::resume`).
    pub(super) fn resend_inflight(&mut self) {
        self.outbound.resume(&self.session.outgoing);
        self.resend_within_window(self.bus.now());
    }

    fn resend_within_window(&mut self, now: Instant) {
        while let Some(resend) = self.outbound.next_resend(&self.session.outgoing) {
            match resend {
                Resend::PubRel(id) => self.send(Packet::PubRel(PubResponse::new(id))),
                Resend::Publish(id) => self.write_inflight(id, true, now),
            }
        }
    }
}

/// Where a written PUBLISH is counted: broker-wide, the session's drops, the wake-up's tally.
struct Counting<'a>(&'a Stats, &'a Mailbox, &'a mut Tally);

/// Count and log what `Outbound::write` did; true if the PUBLISH is in the buffer.
fn count_written(out: Counting<'_>, written: Written, delivery: &Delivery) -> bool {
    let Counting(stats, mailbox, tally) = out;
    match written {
        Written::Sent => {
            tally.sent += 1;
            tally.payload_out += delivery.message.payload.len() as u64;
            return true;
        }
        Written::TooLarge => {
            mailbox.dropped_unsendable(DropReason::PacketTooLarge, stats);
            tracing::debug!(topic = %Short(&delivery.message.topic), "message larger than the client's Maximum Packet Size: dropped for this client");
        }
        Written::Unencodable(e) => tracing::error!(error = %e, "could not encode a PUBLISH"),
    }
    false
}
