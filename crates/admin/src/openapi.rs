//! `/api/v1/openapi.json`: the OpenAPI document of the admin port, generated from the
//! handlers' annotations (`utoipa`), so it lists what the router serves.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::{api, health, operate, AdminState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "edgemq admin API",
        description = "The admin port of edgemq (serve --admin-listen). Off loopback, or with --admin-token-file, every path but /healthz and /readyz needs Authorization: Bearer <token>."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        api::overview,
        api::clients,
        api::client,
        api::disconnect,
        api::sessions,
        api::delete_session,
        api::subscriptions,
        api::retained,
        api::delete_retained,
        operate::listeners,
        operate::config,
        operate::explain,
    ),
    components(schemas(operate::ExplainRequest))
)]
pub struct ApiDoc;

pub fn routes() -> Router<AdminState> {
    Router::new().route("/api/v1/openapi.json", get(document))
}

async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
