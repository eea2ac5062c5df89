//! Connection threads: one single-threaded runtime per core, each connection pinned to one
//! of them for its life (FlashMQ's and Seastar's shape).
//!
//! On tokio's shared multi-threaded runtime a connection's task may run on any worker, and a
//! worker that finds work wakes an idle one to steal it: on loopback traffic about a sixth
//! of the broker's CPU went to those wake-ups and task switches (perf: `finish_task_switch`,
//! `_raw_spin_unlock_irqrestore`). Pinned, a connection's reads, writes and timers stay on
//! its thread; a delivery to a connection on another thread wakes that thread once per
//! batch it has not yet picked up.
//!
//! Accept loops, the admin port and housekeeping stay on the caller's runtime; an accepted
//! socket is handed over as a `std` socket and registered with its thread's reactor there.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The connection threads, started by [`Cores::start`] and stopped when dropped (their
/// runtimes end with whatever tasks are still on them).
pub struct Cores {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropping these ends the threads' `block_on`.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Cores {
    /// Start `n` (≥ 1) threads, each running a single-threaded runtime with I/O and timers.
    pub fn start(n: usize) -> std::io::Result<Cores> {
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("edgemq-conn-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Cores {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        })
    }

    /// The thread for the next connection: round-robin, so long-lived connections spread
    /// evenly whatever order they arrive in.
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}
