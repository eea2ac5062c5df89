//! `GET /api/v1/listeners`: each MQTT listener's name and bound address (port 0 resolved),
//! for the console's Listeners page.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::AdminState;

pub fn routes() -> Router<AdminState> {
    Router::new().route("/api/v1/listeners", get(listeners))
}

async fn listeners(State(state): State<AdminState>) -> Json<Value> {
    let mut rows = match &state.server {
        Some(server) => server.local_addrs().await,
        None => Vec::new(),
    };
    rows.sort();
    let rows: Vec<Value> = rows
        .iter()
        .map(|(name, addr)| json!({ "name": name, "address": addr.to_string() }))
        .collect();
    Json(json!({ "listeners": rows }))
}
