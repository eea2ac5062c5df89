//! Listeners: bind, accept, and hand each connection to its own task. Every listener feeds
//! the same [`Bus`]; each has its own authenticator and authorizer.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use edgemq_core::auth::{AllowAll, Authenticator, Authorizer};

use crate::bus::Bus;

/// How one listener is set up.
#[derive(Clone)]
pub struct ListenerConfig {
    /// Name for logs (the BrokerListener name, or `default`).
    pub name: String,
    pub addr: SocketAddr,
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
}

impl ListenerConfig {
    /// A plain-TCP listener that admits anonymous clients and allows everything.
    pub fn anonymous(name: impl Into<String>, addr: SocketAddr) -> Self {
        ListenerConfig {
            name: name.into(),
            addr,
            authenticator: Arc::new(AllowAll),
            authorizer: Arc::new(AllowAll),
        }
    }
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

/// What a connection task needs to know about its listener.
pub struct ListenerContext {
    pub name: String,
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
}

/// A bound listener, ready to accept.
pub struct BoundListener {
    pub context: Arc<ListenerContext>,
    pub local_addr: SocketAddr,
    socket: TcpListener,
}

impl BoundListener {
    pub async fn bind(config: &ListenerConfig) -> std::io::Result<BoundListener> {
        let socket = TcpListener::bind(config.addr).await?;
        let local_addr = socket.local_addr()?;
        Ok(BoundListener {
            context: Arc::new(ListenerContext {
                name: config.name.clone(),
                authenticator: config.authenticator.clone(),
                authorizer: config.authorizer.clone(),
            }),
            local_addr,
            socket,
        })
    }

    /// Accept until shutdown; each connection is spawned into `connections`.
    pub async fn run(
        self,
        bus: Arc<Bus>,
        mut shutdown: watch::Receiver<bool>,
        connections: Arc<parking_lot::Mutex<JoinSet<()>>>,
    ) {
        tracing::info!(listener = %self.context.name, addr = %self.local_addr, protocol = "mqtt", "listening");
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = self.socket.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        bus.stats.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let task = crate::connection::serve(stream, peer, self.context.clone(), bus.clone(), shutdown.clone());
                        let mut set = connections.lock();
                        // Reap finished tasks so the set does not grow with churn.
                        while set.try_join_next().is_some() {}
                        set.spawn(task);
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(listener = %self.context.name, error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }
        tracing::info!(listener = %self.context.name, addr = %self.local_addr, "listener stopped");
    }
}
