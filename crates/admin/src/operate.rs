//! `/api/v1/listeners`, `/api/v1/config` and `/api/v1/authz/explain`: what the broker runs
//! with, and how its policy decides.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/v1/listeners` | each listener: name, bound address, open connections |
//! | GET | `/api/v1/config` | the configuration source and the last (re)load's diagnostics |
//! | POST | `/api/v1/authz/explain` | decide an action as a listener's policy would, and why |

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::{json, Value};

use edgemq_core::auth::{Action, Principal};

use crate::AdminState;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/listeners", get(listeners))
        .route("/api/v1/config", get(config))
        .route("/api/v1/authz/explain", post(explain))
}

#[utoipa::path(get, path = "/api/v1/listeners", tag = "broker", responses((status = 200, description = "Each listener: name, address, port, open connections")))]
pub(crate) async fn listeners(State(state): State<AdminState>) -> Json<Value> {
    let listeners: Vec<Value> = state
        .server
        .listeners()
        .await
        .iter()
        .map(|(name, addr, context)| {
            let expires = certificate_expiry(&state, name, context.port);
            json!({
                "name": name, "address": addr.to_string(), "port": context.port,
                "transport": context.transport, "connections": context.open_connections(),
                "authentication": context.authenticator().describe(),
                "certificate_expires_unix_s": expires,
            })
        })
        .collect();
    Json(json!({ "listeners": listeners }))
}

#[utoipa::path(get, path = "/api/v1/config", tag = "broker", responses((status = 200, description = "The configuration source and the last load")))]
pub(crate) async fn config(State(state): State<AdminState>) -> Json<Value> {
    let mut report = state
        .config
        .lock()
        .map(|v| v.clone())
        .unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut report {
        fields.insert("limits".into(), limits_json(&state.readiness.bus.limits));
    }
    Json(report)
}

/// The limits the broker runs with (a reload that changes them applies after a restart).
fn limits_json(l: &edgemq_core::limits::Limits) -> Value {
    json!({
        "max_packet_size": l.max_packet_size,
        "receive_maximum": l.receive_maximum,
        "max_session_expiry": l.max_session_expiry,
        "max_message_expiry": l.max_message_expiry,
        "max_keep_alive": l.max_keep_alive,
        "maximum_qos": l.maximum_qos as u8,
        "topic_alias_maximum": l.topic_alias_maximum,
        "max_queued_messages": l.max_queued_messages,
        "max_queued_bytes": l.max_queued_bytes,
        "overflow_policy": format!("{:?}", l.overflow_policy),
        "max_inflight_messages": l.max_inflight_messages,
        "max_inflight_bytes": l.max_inflight_bytes,
        "max_topic_levels": l.max_topic_levels,
        "max_subscriptions": l.max_subscriptions,
        "max_subscriptions_per_session": l.max_subscriptions_per_session,
        "max_sessions": l.max_sessions,
        "max_sessions_per_address": l.max_sessions_per_address,
        "max_retained_messages": l.max_retained_messages,
        "max_retained_bytes": l.max_retained_bytes,
        "max_connections": l.max_connections,
        "max_connections_per_address": l.max_connections_per_address,
        "max_client_id_length": l.max_client_id_len,
        "memory_budget": l.memory_budget,
        "sys_interval_secs": l.sys_interval_secs,
        "server_topic_aliases": l.server_topic_aliases,
    })
}

/// An action to decide.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExplainRequest {
    listener: String,
    client_id: String,
    username: Option<String>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
    /// `connect`, `publish` or `subscribe`.
    action: String,
    /// The topic (publish) or filter (subscribe).
    topic: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/authz/explain", tag = "authorization", request_body = ExplainRequest, responses((status = 200, description = "allowed, and the rule that decided"), (status = 400, description = "Bad action or topic"), (status = 404, description = "No such listener")))]
pub(crate) async fn explain(
    State(state): State<AdminState>,
    Json(req): Json<ExplainRequest>,
) -> Response {
    let bad =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    let topic = req.topic.as_deref().unwrap_or("");
    let action = match req.action.as_str() {
        "connect" => Action::Connect,
        "publish" if !topic.is_empty() => Action::Publish { topic },
        "subscribe" if !topic.is_empty() => Action::Subscribe { filter: topic },
        "publish" | "subscribe" => return bad("topic is required for publish and subscribe"),
        _ => return bad("action is connect, publish or subscribe"),
    };
    let listeners = state.server.listeners().await;
    let Some((_, _, context)) = listeners.iter().find(|(name, _, _)| *name == req.listener) else {
        let body = json!({ "error": "no such listener" });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    let principal = Principal {
        client_id: ByteString::from(req.client_id),
        username: req.username.map(ByteString::from),
        attributes: req.attributes.into_iter().collect(),
    };
    let (authorizer, _) = context.authorizer();
    let allowed = authorizer.authorize(&principal, action);
    let explanation = authorizer.explain(&principal, action);
    Json(json!({ "allowed": allowed, "explanation": explanation })).into_response()
}

/// When the TLS certificate of `listener`'s `port` expires (Unix seconds), if it has one.
fn certificate_expiry(state: &AdminState, listener: &str, port: u16) -> Option<u64> {
    let watches = state.certificates.lock().ok()?;
    let watch = watches
        .iter()
        .find(|w| w.listener == listener && w.port == port)?;
    let at = (watch.not_after)()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}
