//! The memory budget the broker defends. It accounts for what clients make it hold —
//! queued and in-flight messages, retained messages, sessions, subscriptions, connections'
//! buffers — and sheds load before the budget is reached, in this order (docs/limits.md):
//!
//! 1. from 80 %: new connections are refused (CONNACK 0x89 Server busy; 3.1.1: 3);
//! 2. from 90 %: publishers are held back: a connection that routed a PUBLISH stops reading
//!    until the pressure falls or 2 s pass (so it is slowed, never stopped; from 95 % they
//!    are no longer held, since nothing grows any more);
//! 3. from 95 %: nothing grows: a message for a non-empty queue meets the session's
//!    overflow policy as if the queue were full, no new message goes in flight, and retained
//!    PUBLISHes are refused (0x97).
//!
//! Levels fall back with 5 % hysteresis. Accounted, not measured: resident memory includes
//! what the allocator keeps after a peak, which would hold the broker at a level after the
//! load is gone; the accounting falls as soon as what it counts is released.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use edgemq_core::subscriptions::Router;

use crate::bus::Bus;
use crate::stats::Limit;

/// How often the accounting is read (a loopback flood moves about 1 MB a millisecond).
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// Estimated bytes per session (registry entry, mailbox, session state), subscription
/// (trie node and entry) and connection (task, buffers at rest).
const SESSION_BYTES: usize = 2048;
const SUBSCRIPTION_BYTES: usize = 256;
const CONNECTION_BYTES: usize = 16 * 1024;

/// Message bytes held outside the retained store, kept up to date where they change.
#[derive(Debug, Default)]
pub struct Held {
    /// In session queues (in memory).
    pub queued: AtomicUsize,
    /// In flight to clients (shared with every session's window, see
    /// `OutgoingWindow::account`).
    pub inflight: std::sync::Arc<AtomicUsize>,
    /// Open connections.
    pub connections: AtomicUsize,
}

impl Held {
    pub fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicUsize, n: usize) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Everything accounted against the budget.
pub fn accounted(bus: &Bus) -> usize {
    let held = &bus.held;
    held.queued.load(Ordering::Relaxed)
        + held.inflight.load(Ordering::Relaxed)
        + held.connections.load(Ordering::Relaxed) * CONNECTION_BYTES
        + bus.retained.bytes()
        + bus.sessions.len() * SESSION_BYTES
        + bus.index.len() * SUBSCRIPTION_BYTES
}

/// Where the broker stands against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Normal = 0,
    RefuseConnections = 1,
    HoldPublishers = 2,
    Shed = 3,
}

impl Level {
    /// The level for `used` bytes of `budget`, given the current one (hysteresis: a level is
    /// left only 5 % below where it starts).
    fn of(used: u64, budget: u64, current: Level) -> Level {
        let percent = used.saturating_mul(100) / budget.max(1);
        let start = |level: Level| match level {
            Level::Normal => 0,
            Level::RefuseConnections => 80,
            Level::HoldPublishers => 90,
            Level::Shed => 95,
        };
        let levels = [Level::Shed, Level::HoldPublishers, Level::RefuseConnections];
        for level in levels {
            let threshold = if level <= current {
                start(level) - 5
            } else {
                start(level)
            };
            if percent >= threshold {
                return level;
            }
        }
        Level::Normal
    }

    fn from_u8(v: u8) -> Level {
        match v {
            3 => Level::Shed,
            2 => Level::HoldPublishers,
            1 => Level::RefuseConnections,
            _ => Level::Normal,
        }
    }
}

/// The broker's memory pressure, read on the hot path with one relaxed load.
#[derive(Debug)]
pub struct Pressure {
    /// Bytes; 0 = no budget.
    budget: u64,
    level: AtomicU8,
    changed: watch::Sender<u8>,
}

impl Pressure {
    pub fn new(budget: u64) -> Self {
        Pressure {
            budget,
            level: AtomicU8::new(0),
            changed: watch::channel(0).0,
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Relaxed))
    }

    pub fn refuses_connections(&self) -> bool {
        self.level() >= Level::RefuseConnections
    }

    /// Only between 90 and 95 %: from 95 % nothing grows any more, and holding publishers
    /// back would only slow everyone down.
    pub fn holds_publishers(&self) -> bool {
        self.level() == Level::HoldPublishers
    }

    pub fn sheds(&self) -> bool {
        self.level() >= Level::Shed
    }

    /// Take a new measurement; the previous level if it changed.
    fn update(&self, used: u64) -> Option<Level> {
        let old = self.level();
        let new = Level::of(used, self.budget, old);
        if new == old {
            return None;
        }
        self.level.store(new as u8, Ordering::Relaxed);
        self.changed.send_replace(new as u8);
        Some(old)
    }

    /// Resolves once publishers are no longer held back.
    pub async fn relieved(&self) {
        let mut rx = self.changed.subscribe();
        let _ = rx
            .wait_for(|level| *level < Level::HoldPublishers as u8)
            .await;
    }
}

/// The budget when none is set: 80 % of the memory this process may use (the cgroup's
/// `memory.max`, else the machine's), or none where that cannot be read.
pub fn default_budget() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m) / 10 * 8,
        (None, Some(m)) => m / 10 * 8,
        (Some(c), None) => c / 10 * 8,
        (None, None) => 0,
    }
}

/// Watch the accounting against the bus's budget until the bus is gone; every change of
/// level is logged. A thread of its own, not a task: a flood keeps the runtime's workers
/// busy, and a late measurement lets the flood overshoot the budget. None without a budget.
pub fn spawn_monitor(bus: Weak<Bus>, budget: u64) -> Option<std::thread::JoinHandle<()>> {
    if budget == 0 {
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("edgemq-memory".into())
        .spawn(move || loop {
            std::thread::sleep(SAMPLE_EVERY);
            let Some(bus) = bus.upgrade() else { return };
            let used = accounted(&bus) as u64;
            if let Some(old) = bus.pressure.update(used) {
                let new = bus.pressure.level();
                if new > old {
                    tracing::warn!(accounted = used, budget, from = ?old, to = ?new, "memory budget: shedding load (docs/limits.md)");
                } else {
                    tracing::info!(accounted = used, budget, from = ?old, to = ?new, "memory budget: pressure eased");
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(
                "memory budget: cannot start its monitor thread: {e}; the budget is not defended"
            );
            None
        }
    }
}

/// Count a connection refused for memory.
pub fn refused_connection(bus: &Bus) {
    bus.stats.refused(Limit::MemoryBudget, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rise_at_80_90_95_and_fall_5_below() {
        let b = 1000;
        assert_eq!(Level::of(790, b, Level::Normal), Level::Normal);
        assert_eq!(Level::of(800, b, Level::Normal), Level::RefuseConnections);
        assert_eq!(Level::of(900, b, Level::Normal), Level::HoldPublishers);
        assert_eq!(Level::of(960, b, Level::Normal), Level::Shed);
        assert_eq!(Level::of(920, b, Level::Shed), Level::Shed);
        assert_eq!(Level::of(880, b, Level::Shed), Level::HoldPublishers);
        assert_eq!(
            Level::of(760, b, Level::RefuseConnections),
            Level::RefuseConnections
        );
        assert_eq!(Level::of(740, b, Level::RefuseConnections), Level::Normal);
    }
}
