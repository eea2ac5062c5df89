//! `/api/v1/…`: the admin API, JSON over HTTP, under the admin port's access rules.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/v1/overview` | counters, gauges and drops by reason (what `edgemq status` prints) |
//! | GET | `/api/v1/clients?search=&limit=` | connected clients |
//! | GET | `/api/v1/clients/{id}` | one client: its CONNECT, queue, in-flight, subscriptions |
//! | POST | `/api/v1/clients/{id}/disconnect` | DISCONNECT 0x98 Administrative action, then close |
//! | GET | `/api/v1/sessions?search=&limit=` | sessions, connected and offline |
//! | DELETE | `/api/v1/sessions/{id}` | end a session (a connected client is disconnected) |
//! | GET | `/api/v1/subscriptions?search=&limit=` | every session's subscriptions |
//! | GET | `/api/v1/retained?filter=&limit=` | retained messages matching a filter (default `#`) |
//! | DELETE | `/api/v1/retained?topic=` | delete a topic's retained message |
//!
//! `/api/v1/openapi.json` (crate::openapi) documents all of them.
//!
//! Lists are bounded (`limit`, at most 10,000; default 1,000). Client ids and topics in
//! paths are percent-encoded.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use edgemq_broker::inspect::{
    ClientInfo, ClientSnapshot, OfflineView, Outcome, SessionDrops, SessionView, SubscriptionView,
};
use edgemq_broker::sessions::Control;
use edgemq_broker::stats::{DropReason, Limit};
use edgemq_broker::Bus;
use edgemq_core::subscriptions::Router as _;

use crate::AdminState;

/// The largest `limit` a list takes.
const MAX_LIMIT: usize = 10_000;
/// How long a connected client's task has to answer an inspection.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/clients", get(clients))
        .route("/api/v1/clients/{id}", get(client))
        .route("/api/v1/clients/{id}/disconnect", post(disconnect))
        .route("/api/v1/sessions", get(sessions))
        .route(
            "/api/v1/sessions/{id}",
            axum::routing::delete(delete_session),
        )
        .route("/api/v1/subscriptions", get(subscriptions))
        .route("/api/v1/retained", get(retained).delete(delete_retained))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    search: String,
    limit: Option<usize>,
}

impl ListQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(1000).min(MAX_LIMIT)
    }
}

fn not_found(what: &str) -> Response {
    let body = json!({ "error": format!("{what} not found") });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

#[utoipa::path(get, path = "/api/v1/overview", tag = "broker", responses((status = 200, description = "Counters, gauges, drops by reason, refusals by limit, memory and store")))]
pub(crate) async fn overview(State(state): State<AdminState>) -> Json<Value> {
    Json(overview_json(&state.readiness.bus))
}

/// The overview: what the console's first page and `edgemq status` show.
pub fn overview_json(bus: &Bus) -> Value {
    let s = &bus.stats;
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), json!(s.drops(*r))))
        .collect();
    let refusals: serde_json::Map<String, Value> = Limit::ALL
        .iter()
        .map(|l| (l.as_str().to_string(), json!(s.refusals(*l))))
        .collect();
    let (store_bytes, store_budget) = bus.durable.usage_and_budget();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": bus.uptime().as_secs(),
        "clients_connected": s.clients_connected(),
        "clients_maximum": s.clients_maximum(),
        "sessions": bus.sessions.len(),
        "subscriptions": bus.index.len(),
        "retained_messages": bus.retained.len(),
        "retained_bytes": bus.retained.bytes(),
        "messages_received": s.messages_received.load(Relaxed),
        "messages_sent": s.messages_sent.load(Relaxed),
        "publishes_received": s.publishes_received.load(Relaxed),
        "bytes_received": s.bytes_received.load(Relaxed),
        "bytes_sent": s.bytes_sent.load(Relaxed),
        "connections_accepted": s.connections.load(Relaxed),
        "drops": drops,
        "drops_total": s.drops_total(),
        "refusals": refusals,
        "memory": { "accounted_bytes": edgemq_broker::memory::accounted(bus), "budget_bytes": bus.pressure.budget() },
        "store": { "state": bus.durable.state(), "bytes": store_bytes, "budget_bytes": store_budget },
    })
}

fn client_json(info: &ClientInfo) -> Value {
    let since = info
        .connected_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "listener": &*info.listener,
        "port": info.port,
        "address": info.peer.to_string(),
        "protocol": match info.protocol as u8 { 3 => "3.1", 4 => "3.1.1", _ => "5.0" },
        "username": info.username.as_deref(),
        "attributes": info.attributes.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
        "keep_alive": info.keep_alive,
        "clean_start": info.clean_start,
        "connected_at_unix_ms": since.as_millis() as u64,
    })
}

fn subscription_json(s: &SubscriptionView) -> Value {
    json!({
        "filter": &*s.filter,
        "qos": s.qos as u8,
        "no_local": s.no_local,
        "retain_as_published": s.retain_as_published,
        "subscription_id": s.subscription_id,
    })
}

fn drops_json(d: &SessionDrops) -> Value {
    json!({ "queue_full": d.queue_full, "offline_qos0": d.offline_qos0, "unsendable": d.unsendable })
}

fn snapshot_json(s: &ClientSnapshot) -> Value {
    json!({
        "inflight": s.inflight,
        "inflight_bytes": s.inflight_bytes,
        "queued": s.queued,
        "incoming_qos2": s.incoming_qos2,
        "session_expiry": s.session_expiry,
        "idle_secs": s.idle_secs,
        "drops": drops_json(&s.drops),
        "subscriptions": s.subscriptions.iter().map(subscription_json).collect::<Vec<_>>(),
    })
}

fn offline_json(o: &OfflineView) -> Value {
    json!({
        "queued": o.queued,
        "inflight": o.inflight,
        "session_expiry": o.session_expiry,
        "expires_in_secs": o.expires_in_secs,
        "will_pending": o.will_pending,
        "drops": drops_json(&o.drops),
        "subscriptions": o.subscriptions.iter().map(subscription_json).collect::<Vec<_>>(),
    })
}

fn session_json(v: &SessionView) -> Value {
    json!({
        "client_id": &*v.client_id,
        "connected": v.client.is_some(),
        "epoch": v.epoch,
        "client": v.client.as_deref().map(client_json),
        "offline": v.offline.as_ref().map(offline_json),
    })
}

#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", params(ListQuery), responses((status = 200, description = "Connected clients")))]
pub(crate) async fn clients(
    State(state): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Json<Value> {
    let bus = &state.readiness.bus;
    let views = bus.sessions.list(&q.search, usize::MAX);
    let clients: Vec<Value> = views
        .iter()
        .filter(|v| v.client.is_some())
        .take(q.limit())
        .map(session_json)
        .collect();
    Json(json!({ "clients": clients }))
}

/// Ask `client_id`'s connection for its live state (`None`: not connected, or closing).
pub async fn inspect(bus: &Arc<Bus>, client_id: &str) -> Option<ClientSnapshot> {
    let control = bus.sessions.control(client_id)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    control.send(Control::Inspect(reply));
    tokio::time::timeout(INSPECT_TIMEOUT, answer)
        .await
        .ok()?
        .ok()
}

#[utoipa::path(get, path = "/api/v1/clients/{id}", tag = "clients", params(("id" = String, Path, description = "Client identifier")), responses((status = 200, description = "The client and its live state"), (status = 404, description = "Not connected")))]
pub(crate) async fn client(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let bus = &state.readiness.bus;
    let Some(view) = bus.sessions.get(&id).filter(|v| v.client.is_some()) else {
        return not_found("client");
    };
    let mut body = session_json(&view);
    if let Some(snapshot) = inspect(bus, &id).await {
        body["state"] = snapshot_json(&snapshot);
    }
    Json(body).into_response()
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/disconnect", tag = "clients", params(("id" = String, Path, description = "Client identifier")), responses((status = 204, description = "DISCONNECT 0x98 sent, connection closing"), (status = 404, description = "Not connected")))]
pub(crate) async fn disconnect(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
    let bus = &state.readiness.bus;
    if bus.sessions.control(&id).is_none() {
        return not_found("client");
    }
    match bus.sessions.disconnect(bus, &id, false) {
        Outcome::Done => StatusCode::NO_CONTENT.into_response(),
        Outcome::NotFound => not_found("client"),
    }
}

#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", params(ListQuery), responses((status = 200, description = "Sessions, connected and offline")))]
pub(crate) async fn sessions(
    State(state): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Json<Value> {
    let views = state.readiness.bus.sessions.list(&q.search, q.limit());
    Json(json!({ "sessions": views.iter().map(session_json).collect::<Vec<_>>() }))
}

#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "Client identifier")), responses((status = 204, description = "Session ended"), (status = 404, description = "No such session")))]
pub(crate) async fn delete_session(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
    let bus = &state.readiness.bus;
    match bus.sessions.disconnect(bus, &id, true) {
        Outcome::Done => StatusCode::NO_CONTENT.into_response(),
        Outcome::NotFound => not_found("session"),
    }
}

#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "sessions", params(ListQuery), responses((status = 200, description = "Every session's subscriptions")))]
pub(crate) async fn subscriptions(
    State(state): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Json<Value> {
    let bus = &state.readiness.bus;
    let mut rows = Vec::new();
    for view in bus.sessions.list(&q.search, q.limit()) {
        let subscriptions = match (&view.offline, &view.client) {
            (Some(offline), _) => offline.subscriptions.clone(),
            (None, Some(_)) => inspect(bus, &view.client_id)
                .await
                .map(|s| s.subscriptions)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        for s in &subscriptions {
            let mut row = subscription_json(s);
            row["client_id"] = json!(&*view.client_id);
            rows.push(row);
        }
        if rows.len() >= q.limit() {
            rows.truncate(q.limit());
            break;
        }
    }
    Json(json!({ "subscriptions": rows }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetainedQuery {
    filter: Option<String>,
    topic: Option<String>,
    limit: Option<usize>,
}

/// Payloads are shown when they are short UTF-8 text; otherwise only their size.
const PREVIEW: usize = 256;

#[utoipa::path(get, path = "/api/v1/retained", tag = "retained", params(RetainedQuery), responses((status = 200, description = "Retained messages matching the filter"), (status = 400, description = "Not a valid topic filter")))]
pub(crate) async fn retained(
    State(state): State<AdminState>,
    Query(q): Query<RetainedQuery>,
) -> Response {
    let bus = &state.readiness.bus;
    let filter = q.filter.unwrap_or_else(|| "#".to_string());
    if edgemq_core::topic::validate_topic_filter(&filter).is_err() {
        let body = json!({ "error": "not a valid topic filter" });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let mut found = Vec::new();
    bus.retained
        .matching(&filter, edgemq_broker::bus::now(), &mut found);
    found.sort_by(|a, b| a.topic.cmp(&b.topic));
    let limit = q.limit.unwrap_or(1000).min(MAX_LIMIT);
    let rows: Vec<Value> = found
        .iter()
        .take(limit)
        .map(|m| {
            let text = std::str::from_utf8(&m.payload).ok().filter(|t| t.len() <= PREVIEW);
            json!({ "topic": &*m.topic, "qos": m.qos as u8, "bytes": m.payload.len(), "payload_text": text })
        })
        .collect();
    Json(json!({ "filter": filter, "total": found.len(), "retained": rows })).into_response()
}

#[utoipa::path(delete, path = "/api/v1/retained", tag = "retained", params(RetainedQuery), responses((status = 204, description = "Deleted"), (status = 400, description = "No or invalid topic"), (status = 404, description = "No retained message on that topic")))]
pub(crate) async fn delete_retained(
    State(state): State<AdminState>,
    Query(q): Query<RetainedQuery>,
) -> Response {
    let bus = &state.readiness.bus;
    let Some(topic) = q.topic else {
        let body = json!({ "error": "topic= is required" });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    if edgemq_core::topic::validate_topic_name(&topic).is_err() {
        let body = json!({ "error": "not a valid topic name" });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let mut found = Vec::new();
    bus.retained
        .matching(&topic, edgemq_broker::bus::now(), &mut found);
    if !found.iter().any(|m| *m.topic == *topic) {
        return not_found("retained message");
    }
    // An empty retained PUBLISH deletes it, in memory and in the store [MQTT-3.3.1-6].
    let clear = edgemq_core::message::Message::broker_generated(
        topic.into(),
        bytes::Bytes::new(),
        edgemq_broker::QoS::AtMostOnce,
        true,
    );
    bus.publish(Arc::new(clear));
    StatusCode::NO_CONTENT.into_response()
}
