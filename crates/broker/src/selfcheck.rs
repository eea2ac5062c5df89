//! The broker self-check (AIO "diagnostics.selfCheck"): publish a probe on
//! `azedge/dmqtt/selftest/<8 random letters>` through the bus at an interval and verify it
//! comes back through the subscription index within a timeout. It uses no listener, so it
//! works whatever the authentication; clients subscribed to `#` see the probes, as on AIO.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use rand::Rng;
use tokio::sync::watch;

use edgemq_codec::QoS;
use edgemq_core::message::Message;
use edgemq_core::subscriptions::{Router, StoredOptions};
use edgemq_core::topic::SubscriptionFilter;

use crate::bus::Bus;
use crate::mailbox::{Entry, Mailbox, MailboxHandle};
use crate::OverflowPolicy;

/// Prefix of the probe topics.
pub const TOPIC_PREFIX: &str = "azedge/dmqtt/selftest/";

#[derive(Debug, Clone, Copy)]
pub struct SelfCheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Results so far, for `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct SelfCheckStats {
    pub passed: AtomicU64,
    pub failed: AtomicU64,
    /// The last probe: 0 none yet, 1 passed, 2 failed.
    pub last: std::sync::atomic::AtomicU8,
    /// The last probe's round trip in microseconds (0 when it failed).
    pub last_latency_us: AtomicU64,
}

impl SelfCheckStats {
    /// Whether the last probe passed (`None`: none has run yet).
    pub fn last_passed(&self) -> Option<bool> {
        match self.last.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }
}

/// Run until `stop` turns true. Logs the first result and every change (pass ↔ fail) at
/// info/warn, each probe at debug.
pub async fn run(
    bus: Arc<Bus>,
    config: SelfCheckConfig,
    stats: Arc<SelfCheckStats>,
    mut stop: watch::Receiver<bool>,
) {
    let suffix: String = (0..8)
        .map(|_| rand::rng().random_range(b'a'..=b'z') as char)
        .collect();
    let topic = ByteString::from(format!("{TOPIC_PREFIX}{suffix}"));
    let mailbox = Arc::new(Mailbox::new(
        bus.next_id(),
        ByteString::from_static("$edgemq-selfcheck"),
        crate::mailbox::QueueLimits {
            messages: 16,
            bytes: usize::MAX,
            policy: OverflowPolicy::DropOldest,
            held: None,
        },
        crate::journal::Journal::new(None, ByteString::from_static("$edgemq-selfcheck")),
    ));
    mailbox.set_connected(true);
    let filter = SubscriptionFilter {
        share_group: None,
        filter: topic.clone(),
    };
    bus.index.subscribe(
        &filter,
        MailboxHandle(mailbox.clone()),
        StoredOptions::default(),
    );
    tracing::info!(topic = %topic, interval = ?config.interval, timeout = ?config.timeout, "self-check enabled");
    let mut last_ok: Option<bool> = None;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0u64.. {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        let sent = crate::bus::now();
        let payload = Bytes::from(format!("{{\"seq\":{seq}}}"));
        while mailbox.pop(true).is_some() {} // stale probes from a previous timeout
        bus.publish(Arc::new(Message::broker_generated(
            topic.clone(),
            payload.clone(),
            QoS::AtMostOnce,
            false,
        )));
        let came_back = tokio::time::timeout(config.timeout, async {
            loop {
                if let Some(entry) = mailbox.pop(true) {
                    if matches!(entry, Entry::Ready(d) if d.message.payload == payload) {
                        return;
                    }
                    continue;
                }
                mailbox.notified().await;
            }
        })
        .await
        .is_ok();
        let latency = if came_back {
            crate::bus::now()
                .saturating_duration_since(sent)
                .as_micros()
        } else {
            0
        };
        let latency = u64::try_from(latency).unwrap_or(u64::MAX);
        stats.last_latency_us.store(latency, Ordering::Relaxed);
        stats
            .last
            .store(if came_back { 1 } else { 2 }, Ordering::Relaxed);
        if came_back {
            stats.passed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(seq, "self-check probe returned");
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        if last_ok != Some(came_back) {
            if came_back {
                tracing::info!(topic = %topic, "self-check passed: probe routed back through the bus");
            } else {
                tracing::warn!(topic = %topic, timeout = ?config.timeout, "self-check FAILED: probe did not come back");
            }
            last_ok = Some(came_back);
        }
    }
    bus.index.unsubscribe(&filter, mailbox.key);
}
