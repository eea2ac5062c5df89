//! Mosquitto-compatible `$SYS` topics (docs/observability.md): every `sys_interval` the
//! broker publishes its counters as retained QoS 0 messages with plain decimal payloads.
//!
//! Nothing here counts on a hot path: the numbers are read from [`crate::stats::Stats`] and
//! from the parts that already know them (sessions, subscriptions, retained store). The
//! messages go through the bus like any other, so a listener's authorization applies to a
//! client subscribing to them, and a filter starting with a wildcard does not match them
//! [MQTT-4.7.2-1]. They are retained in [`Bus::sys_retained`], apart from clients' retained
//! messages: outside their budgets and counts, and never written to the durable store (they
//! would be stale after a restart; Mosquitto does not persist them either).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgemq_codec::QoS;
use edgemq_core::message::Message;
use edgemq_core::subscriptions::Router;
use tokio::task::JoinHandle;

use crate::bus::Bus;

/// Prefix of every topic published here.
pub const PREFIX: &str = "$SYS/broker/";

/// Mosquitto's load average for one counter: the per-minute rate over the last interval,
/// exponentially smoothed over 1, 5 and 15 minutes (`sys_tree.c`, `calc_load`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Per-minute rates smoothed over 1, 5 and 15 minutes.
    pub averages: [f64; 3],
    /// The counter at the previous update.
    last: u64,
}

/// The smoothing windows of [`Load::averages`], in minutes, and their topic suffixes.
const WINDOWS: [(f64, &str); 3] = [(1.0, "1min"), (5.0, "5min"), (15.0, "15min")];

impl Load {
    /// A load whose first interval counts from `total`.
    pub fn starting_at(total: u64) -> Load {
        Load {
            averages: [0.0; 3],
            last: total,
        }
    }

    /// Fold in the counter's value `total`, `elapsed` after the previous update.
    pub fn update(&mut self, total: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let rate = total.saturating_sub(self.last) as f64 * 60.0 / secs;
        self.last = total;
        for (average, (minutes, _)) in self.averages.iter_mut().zip(WINDOWS) {
            let decay = (-secs / (60.0 * minutes)).exp();
            *average = rate + decay * (*average - rate);
        }
    }
}

/// The counters that have a load average, by their name under `$SYS/broker/load/`.
const LOADS: [&str; 9] = [
    "connections",
    "bytes/received",
    "bytes/sent",
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "sockets",
];

/// What the `$SYS` task keeps between intervals.
#[derive(Debug)]
pub struct SysTree {
    started: Instant,
    last: Instant,
    loads: [Load; LOADS.len()],
    heap_maximum: u64,
}

impl SysTree {
    pub fn new(bus: &Bus) -> SysTree {
        let now = bus.now();
        SysTree {
            started: now,
            last: now,
            loads: Self::totals(bus).map(Load::starting_at),
            heap_maximum: 0,
        }
    }

    /// The counters of [`LOADS`], in order.
    fn totals(bus: &Bus) -> [u64; LOADS.len()] {
        let s = &bus.stats;
        let connections = s.connections.load(Relaxed);
        let sent = s.messages_sent.load(Relaxed);
        [
            connections,
            s.bytes_received.load(Relaxed),
            s.bytes_sent.load(Relaxed),
            s.messages_received.load(Relaxed),
            sent,
            s.drops_total(),
            s.publishes_received.load(Relaxed),
            sent,
            connections,
        ]
    }

    /// Publish the whole tree now (retained, QoS 0).
    pub fn publish(&mut self, bus: &Bus) {
        let messages = self.messages(bus);
        for (topic, payload) in messages {
            let message = Message::broker_generated(
                topic.into(),
                Bytes::from(payload),
                QoS::AtMostOnce,
                true,
            );
            bus.publish_sys(Arc::new(message));
        }
    }

    /// Update the load averages and list every (topic, payload) as of now.
    pub fn messages(&mut self, bus: &Bus) -> Vec<(String, String)> {
        let now = bus.now();
        let totals = Self::totals(bus);
        let elapsed = now.saturating_duration_since(self.last);
        for (load, total) in self.loads.iter_mut().zip(totals) {
            load.update(total, elapsed);
        }
        self.last = now;
        let heap = crate::memory::accounted(bus) as u64;
        self.heap_maximum = self.heap_maximum.max(heap);

        let mut out = self.counters(bus, now, heap);
        for (name, load) in LOADS.iter().zip(&self.loads) {
            for (average, (_, window)) in load.averages.iter().zip(WINDOWS) {
                out.push((format!("load/{name}/{window}"), format!("{average:.2}")));
            }
        }
        for (topic, _) in &mut out {
            topic.insert_str(0, PREFIX);
        }
        out
    }

    /// Everything but the load averages, topics relative to [`PREFIX`].
    fn counters(&self, bus: &Bus, now: Instant, heap: u64) -> Vec<(String, String)> {
        let s = &bus.stats;
        let connected = s.clients_connected();
        let sessions = bus.sessions.len() as u64;
        let disconnected = sessions.saturating_sub(connected);
        let retained = bus.retained.len() as u64;
        let held = &bus.held;
        let store_bytes =
            bus.retained.bytes() + held.queued.load(Relaxed) + held.inflight.load(Relaxed);
        let uptime = now.saturating_duration_since(self.started).as_secs();
        let values: [(&str, u64); 27] = [
            ("bytes/received", s.bytes_received.load(Relaxed)),
            ("bytes/sent", s.bytes_sent.load(Relaxed)),
            ("clients/connected", connected),
            ("clients/active", connected),
            ("clients/disconnected", disconnected),
            ("clients/inactive", disconnected),
            ("clients/expired", s.sessions_expired.load(Relaxed)),
            ("clients/maximum", s.clients_maximum()),
            ("clients/total", sessions),
            ("connections/socket/count", connected),
            ("heap/current", heap),
            ("heap/maximum", self.heap_maximum),
            ("messages/received", s.messages_received.load(Relaxed)),
            ("messages/sent", s.messages_sent.load(Relaxed)),
            ("messages/stored", retained),
            ("publish/messages/dropped", s.drops_total()),
            (
                "publish/messages/received",
                s.publishes_received.load(Relaxed),
            ),
            ("publish/messages/sent", s.messages_sent.load(Relaxed)),
            (
                "publish/bytes/received",
                s.payload_bytes_received.load(Relaxed),
            ),
            ("publish/bytes/sent", s.payload_bytes_sent.load(Relaxed)),
            ("retained messages/count", retained),
            ("store/messages/count", retained),
            ("store/messages/bytes", store_bytes as u64),
            ("subscriptions/count", bus.index.len() as u64),
            ("shared_subscriptions/count", bus.index.shared_len() as u64),
            ("uptime", uptime),
            ("version", 0),
        ];
        values
            .iter()
            .map(|(topic, value)| {
                let payload = match *topic {
                    "uptime" => format!("{value} seconds"),
                    "version" => format!("edgemq {}", env!("CARGO_PKG_VERSION")),
                    _ => value.to_string(),
                };
                (topic.to_string(), payload)
            })
            .collect()
    }
}

/// Publish the tree every `every` (the first time at once) until the bus is gone or the task
/// is aborted ([`crate::Server::shutdown`]).
pub fn spawn(bus: &Arc<Bus>, every: Duration) -> JoinHandle<()> {
    let mut tree = SysTree::new(bus);
    let bus: Weak<Bus> = Arc::downgrade(bus);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(bus) = bus.upgrade() else { return };
            tree.publish(&bus);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.005
    }

    #[test]
    fn a_steady_rate_converges_and_the_short_window_moves_first() {
        let mut load = Load::starting_at(0);
        // 60 messages a minute, updated every 10 s: one minute in.
        for i in 1..=6 {
            load.update(i * 10, Duration::from_secs(10));
        }
        let [one, five, fifteen] = load.averages;
        assert!(close(one, 60.0 * (1.0 - (-1.0f64).exp())), "{one}");
        assert!(close(five, 60.0 * (1.0 - (-0.2f64).exp())), "{five}");
        assert!(one > five && five > fifteen && fifteen > 0.0);
        // Three hours at the same rate: all three at the rate.
        for i in 7..=1086 {
            load.update(i * 10, Duration::from_secs(10));
        }
        assert!(
            load.averages.iter().all(|a| (a - 60.0).abs() < 0.1),
            "{load:?}"
        );
    }

    #[test]
    fn idle_time_decays_and_zero_elapsed_changes_nothing() {
        let mut load = Load::starting_at(100);
        load.update(160, Duration::from_secs(60));
        let after_burst = load;
        load.update(160, Duration::ZERO);
        assert_eq!(load, after_burst);
        load.update(160, Duration::from_secs(60));
        assert!(close(
            load.averages[0],
            after_burst.averages[0] * (-1.0f64).exp()
        ));
        // A counter that went backwards (never expected) reads as no traffic.
        load.update(10, Duration::from_secs(60));
        assert!(load.averages[0] < after_burst.averages[0]);
    }
}
