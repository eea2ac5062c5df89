//! # edgemq-broker: the runtime shell
//!
//! Layer: above codec and core; the only crate that knows tokio and sockets. It takes a
//! [`ServerConfig`] value (listeners, limits) and never parses files.
//!
//! # Layout
//! - [`listener`]: bind and accept; one task per connection.
//! - `connection`: the per-connection task (handshake, inbound packets, outbound deliveries).
//! - [`bus`]: shared routing state: subscription index, retained store, session registry.
//! - [`sessions`]: the session registry (takeover, offline sessions, will delay, expiry).
//! - [`mailbox`]: a session's bounded queue with its overflow policy.
//! - [`stats`]: counters, including every dropped message by reason.

pub mod bus;
mod connection;
pub mod listener;
pub mod mailbox;
pub mod sessions;
pub mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

pub use bus::Bus;
pub use edgemq_codec::QoS;
pub use edgemq_core::limits::{Limits, OverflowPolicy};
pub use listener::ListenerConfig;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listeners: Vec<ListenerConfig>,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind every listener, serve until `shutdown` resolves, then disconnect clients (v5 clients
/// get DISCONNECT 0x8B) and wait for their tasks (bounded).
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let bus = Bus::new(config.limits.clone());
    let mut bound = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let b = listener::BoundListener::bind(listener)
            .await
            .map_err(|source| ServerError::Bind {
                name: listener.name.clone(),
                addr: listener.addr,
                source,
            })?;
        bound.push(b);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(parking_lot::Mutex::new(JoinSet::new()));
    let mut accept_loops = JoinSet::new();
    for b in bound {
        accept_loops.spawn(b.run(bus.clone(), stop_rx.clone(), connections.clone()));
    }
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while accept_loops.join_next().await.is_some() {}
    let mut set = std::mem::take(&mut *connections.lock());
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some connections did not close within 5s");
    }
    let drops = bus.stats.drop_summary();
    if !drops.is_empty() {
        tracing::info!(drops = %drops, "dropped messages since start");
    }
    Ok(())
}
