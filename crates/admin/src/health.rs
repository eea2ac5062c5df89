//! `/healthz`, `/readyz` and the `/metrics` handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use edgemq_broker::selfcheck::SelfCheckStats;
use edgemq_broker::Bus;

use crate::AdminState;

/// What the binary tells the admin port about the broker's start, plus what it reads itself.
#[derive(Debug)]
pub struct Readiness {
    pub bus: Arc<Bus>,
    /// Every configured listener is bound (false while one cannot bind).
    pub listeners_bound: AtomicBool,
    /// The configuration is loaded (always true without --config).
    pub config_loaded: AtomicBool,
    pub self_check: Option<Arc<SelfCheckStats>>,
}

impl Readiness {
    pub fn new(bus: Arc<Bus>, self_check: Option<Arc<SelfCheckStats>>) -> Readiness {
        Readiness {
            bus,
            listeners_bound: AtomicBool::new(false),
            config_loaded: AtomicBool::new(false),
            self_check,
        }
    }

    /// Each check and whether it passes.
    pub fn checks(&self) -> Vec<(&'static str, bool)> {
        let store = self.bus.durable.state();
        let self_check = self.self_check.as_ref().and_then(|s| s.last_passed());
        vec![
            (
                "listeners_bound",
                self.listeners_bound.load(Ordering::Acquire),
            ),
            ("config_loaded", self.config_loaded.load(Ordering::Acquire)),
            ("store", store != "failed" && store != "degraded"),
            // None yet (or none configured) does not hold readiness back.
            ("self_check", self_check != Some(false)),
        ]
    }
}

#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, description = "The process answers")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every check passes, 503 otherwise; the body names each check.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses((status = 200, description = "Ready"), (status = 503, description = "Not ready; the body names the failing checks")))]
pub async fn readyz(State(state): State<AdminState>) -> Response {
    let checks = state.readiness.checks();
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body = serde_json::json!({
        "ready": ready,
        "checks": checks.iter().map(|(name, ok)| (name.to_string(), serde_json::Value::Bool(*ok))).collect::<serde_json::Map<_, _>>(),
        "store": state.readiness.bus.durable.state(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "probes", responses((status = 200, description = "OpenMetrics text")))]
pub async fn metrics(State(state): State<AdminState>) -> Response {
    let listeners: Vec<(String, u16, usize)> = (state.server.listeners().await)
        .iter()
        .map(|(name, _, context)| (name.clone(), context.port, context.open_connections()))
        .collect();
    if let Ok(mut slot) = state.listeners.lock() {
        *slot = listeners;
    }
    match crate::metrics::render(&state.registry) {
        Ok(text) => {
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(header::CONTENT_TYPE, kind)], text).into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        )
            .into_response(),
    }
}
