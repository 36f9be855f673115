//! `/health` and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::metrics as m;
use crate::service::Registry;

#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    summary = "Liveness",
    description = "Whether the process is up and its database answers.",
    responses(
        (status = 200, description = "Up.", body = Object, example = json!({"status": "ok"})),
        (status = 503, description = "The database does not answer.", body = Object, example = json!({"status": "unavailable"})),
    )
)]
pub(super) async fn health(State(registry): State<Arc<Registry>>) -> Response {
    match registry.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Metrics",
    description = "Prometheus metrics in the text exposition format.",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "The metrics recorder is unavailable.", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn metrics_text() -> Response {
    match m::handle() {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response(),
    }
}
