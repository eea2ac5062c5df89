//! # edgemq-admin: the broker's admin port
//!
//! Layer: beside the binary, above the broker (it reads `edgemq_broker::Bus`; nothing below
//! knows it exists). One HTTP server per `--admin-listen` address serves:
//!
//! - `/healthz`: the process answers (Kubernetes liveness);
//! - `/readyz`: every listener bound, the configuration loaded, the store not failing, the
//!   last self-check passed (Kubernetes readiness), as JSON with each check;
//! - `/metrics`: Prometheus/OpenMetrics text ([`metrics`]);
//! - `/api/v1/…`: the admin API ([`api`], [`listeners`]);
//! - `/` and `/console/…`: the web console ([`console`]; see docs/console.md).
//!
//! The AIO `Broker`'s `diagnostics.metrics.prometheusPort` gets a server of its own that
//! serves the same `/metrics`, `/healthz` and `/readyz` and nothing else.
//!
//! Access ([`access`]): health and readiness are open (they say only ok / not ok). The
//! rest needs the bearer token when one is configured; without one, the admin port may
//! only be bound to loopback — binding it elsewhere is refused at start (fail closed).

pub mod access;
pub mod api;
pub mod console;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod operate;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use edgemq_broker::Server;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use access::{AccessError, Token};
pub use health::Readiness;
pub use metrics::{BrokerCollector, CertificateWatch, Certificates};

/// Why the admin port could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("admin port {addr}: cannot bind: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the admin servers share.
#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub readiness: Arc<Readiness>,
    pub token: Option<Token>,
    /// The running server: its listeners and their policies.
    pub server: Arc<Server>,
    /// What the binary loaded and the last (re)load's diagnostics (`GET /api/v1/config`).
    pub config: Arc<std::sync::Mutex<serde_json::Value>>,
    /// The collector's view of the listeners (see [`BrokerCollector::listeners`]).
    pub listeners: Arc<std::sync::Mutex<Vec<(String, u16, usize)>>>,
    /// The TLS ports' certificates (also read by the collector).
    pub certificates: Certificates,
}

/// A bound admin server: its address (port 0 resolved) and the task serving it.
pub struct Bound {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Which routes a server has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `--admin-listen`: everything, under [`access`].
    Admin,
    /// `diagnostics.metrics.prometheusPort`: metrics and health only.
    Metrics,
}

fn router(state: AdminState, role: Role, addr: SocketAddr) -> Router {
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    let metrics = Router::new().route("/metrics", get(health::metrics));
    let guarded = match role {
        Role::Metrics => metrics,
        Role::Admin => {
            let data = metrics
                .merge(api::routes())
                .merge(operate::routes())
                .merge(openapi::routes());
            // The console's static shell is open (see `console`); its data is not.
            access::guarded(data, &state, addr).merge(console::routes())
        }
    };
    open.merge(guarded).with_state(state)
}

/// Bind `addr` for `role` and serve until `stop` turns true. An admin server on an address
/// other than loopback needs a token ([`access::check_binding`]).
pub async fn serve(
    addr: SocketAddr,
    role: Role,
    state: AdminState,
    mut stop: watch::Receiver<bool>,
) -> Result<Bound, AdminError> {
    if role == Role::Admin {
        access::check_binding(addr, state.token.as_ref())?;
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let app = router(state, role, addr);
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let served = axum::serve(listener, app).with_graceful_shutdown(stopped);
        if let Err(e) = served.await {
            tracing::error!(%addr, error = %e, "admin port failed");
        }
    });
    let what = match role {
        Role::Admin => "admin",
        Role::Metrics => "metrics",
    };
    tracing::info!(%addr, role = %what, "admin port open");
    Ok(Bound { addr, task })
}
