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
//! - [`sys`]: the `$SYS` topics, published from those counters.

pub mod bus;
mod connection;
pub mod cores;
pub mod inspect;
pub mod journal;
pub mod listener;
pub mod mailbox;
pub mod memory;
pub mod selfcheck;
pub mod server;
pub mod sessions;
pub mod stats;
pub mod sys;
pub mod transport;

use std::future::Future;
use std::net::SocketAddr;

pub use bus::Bus;
pub use edgemq_codec::QoS;
pub use edgemq_core::limits::{Limits, OverflowPolicy};
pub use listener::ListenerConfig;
pub use server::{ApplyReport, Durable, Server};
pub use transport::{Protocol, Transport};

/// Serve one already-accepted connection over any byte stream (an in-memory duplex in the
/// stateful fuzz target and in-process tests) until it ends. `shutdown` turning true ends it
/// as a server shutdown would.
pub async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    listener: std::sync::Arc<listener::ListenerContext>,
    bus: std::sync::Arc<Bus>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let peer = connection::Peer {
        addr: peer,
        client_certificates: Vec::new(),
    };
    connection::serve(stream, peer, listener, bus, shutdown).await;
}

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
    durable: Option<Durable>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = Server::new(config.limits.clone(), durable);
    let result = match server.apply(config.listeners).await {
        Ok(report) => {
            tracing::info!(
                listeners = report.started.len(),
                "ready: every listener is bound"
            );
            shutdown.await;
            tracing::info!("shutting down");
            Ok(())
        }
        Err(e) => Err(e),
    };
    server.shutdown().await;
    result
}
