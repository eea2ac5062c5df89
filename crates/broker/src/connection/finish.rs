//! The end of a connection: flush what may still go, hand the session back, publish the will
//! when it is due.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use edgemq_codec::{Disconnect, Packet, ReasonCode};
use edgemq_core::auth::Action;
use edgemq_core::lifetime::{will_timing, Ending, WillTiming};
use edgemq_core::message::Message;

use super::{Connection, Exit};
use crate::sessions::{redistribute_shared, Control};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// Tear down after the loop: flush, hand the session back, publish the will if due.
    pub(super) async fn finish(mut self: Box<Self>, exit: Exit) {
        self.session.mailbox.set_connected(false);
        self.bus.stats.add(&mut self.tally, &self.category);
        self.return_work();
        self.release_or_drop_held().await;
        let reason = match &exit {
            Exit::TakenOver { .. } => Some(ReasonCode::SessionTakenOver),
            Exit::Shutdown => Some(ReasonCode::ServerShuttingDown),
            Exit::Administrative => Some(ReasonCode::AdministrativeAction),
            _ => None,
        };
        if let (Some(reason), true) = (reason, self.version.is_v5()) {
            self.send(Packet::Disconnect(Disconnect {
                reason,
                properties: Default::default(),
            }));
        }
        // A client that does not read cannot hold the task: bounded flush.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.io.flush_all().await;
            let _ = self.io.writer.shutdown().await;
        })
        .await;
        tracing::info!(exit = ?ExitLog(&exit), "client disconnected");
        let will = self.will_to_publish(&exit);
        match exit {
            Exit::TakenOver { reply, .. } => {
                // A takeover's will goes now or never (`lifetime::will_timing`).
                if let Some((will, WillTiming::Now)) = will {
                    self.bus.publish(will);
                }
                let _ = reply.send(self.session);
            }
            _ => self.hand_back(will),
        }
    }

    /// Work in progress goes back to the session: entries being read back from the store,
    /// and (for a session that outlives the connection) retained messages not yet sent,
    /// queued like any message.
    fn return_work(&mut self) {
        if let Some(loading) = self.loading.take() {
            self.session.mailbox.unpop(loading.entries);
        }
        if self.session.expiry_interval != 0 {
            for item in self.retained_backlog.take_all() {
                self.session
                    .mailbox
                    .push(item.into_delivery(), &self.bus.stats);
            }
        }
    }

    /// Held answers go out only once committed (bounded wait); otherwise they are dropped
    /// and the client re-sends.
    async fn release_or_drop_held(&mut self) {
        let (Some(h), Some(committed)) = (self.io.hold, self.committed.as_mut()) else {
            return;
        };
        let reached = tokio::time::timeout(
            Duration::from_secs(2),
            committed.wait_for(|c| *c >= h.ticket),
        )
        .await;
        let failed = self.session.mailbox.journal().failed();
        if !matches!(reached, Ok(Ok(_))) || failed {
            self.io.wbuf.truncate(h.from);
        }
        self.io.hold = None;
    }

    /// The will and when it goes, if this exit publishes it (`lifetime::will_timing`) and
    /// the policy allows this client to publish it.
    fn will_to_publish(&mut self, exit: &Exit) -> Option<(Arc<Message>, WillTiming)> {
        let ending = match exit {
            Exit::ClientDisconnect { with_will } => Ending::Disconnect {
                with_will: *with_will,
            },
            Exit::TakenOver {
                new_clean_start, ..
            } => Ending::TakenOver {
                new_clean_start: *new_clean_start,
            },
            Exit::Shutdown | Exit::Closed | Exit::Violation(_) | Exit::Administrative => {
                Ending::Lost
            }
        };
        let will = self.will.take()?;
        let timing = will_timing(ending, will.delay, self.session.expiry_interval);
        if timing == WillTiming::Never {
            return None;
        }
        let topic = will.message.topic.clone();
        self.authorized(Action::Publish { topic: &topic })
            .then_some((will.message, timing))
    }

    /// The session goes back to the registry (offline, or ended), with its will.
    fn hand_back(mut self: Box<Self>, will: Option<(Arc<Message>, WillTiming)>) {
        redistribute_shared(&self.bus, &mut self.session);
        let closed =
            self.bus
                .sessions
                .close(&self.bus, &self.client_id, self.conn_id, self.session, will);
        if let Err(data) = closed {
            // Taken over while we were exiting: the request is in our channel.
            if let Some(Control::TakeOver { reply, .. }) = self.control.try_recv() {
                let _ = reply.send(*data);
            }
        }
    }
}

/// Log form of an exit without the session data.
pub(super) struct ExitLog<'a>(&'a Exit);

impl std::fmt::Debug for ExitLog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Exit::ClientDisconnect { with_will } => write!(f, "disconnect(with_will={with_will})"),
            Exit::Closed => write!(f, "connection closed"),
            Exit::Violation(v) => {
                write!(f, "refused(reason=0x{:02X}, rule={:?})", v.reason.0, v.rule)
            }
            Exit::TakenOver { .. } => write!(f, "session taken over"),
            Exit::Shutdown => write!(f, "server shutting down"),
            Exit::Administrative => write!(f, "disconnected by an operator"),
        }
    }
}
