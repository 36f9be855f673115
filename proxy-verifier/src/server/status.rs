//! The unauthenticated status routes: `GET /health` and `GET /metrics` (Prometheus text, spec
//! 6.4 names).

use aip_api::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::metrics::record_policy_hash;

use super::state::ServerState;
use aip_http::ApiError;

/// The answer of `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// Always `ok`: the proxy is running.
    #[schema(example = "ok")]
    status: &'static str,
    /// The name of the policy in force.
    policy: String,
    /// Its hash (as in the audit records).
    policy_hash: String,
    /// Its mode: `enforce` or `monitor`.
    #[schema(example = "enforce")]
    mode: &'static str,
    /// Seconds since the HTTP API started.
    uptime_seconds: u64,
}

/// `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "status",
    summary = "Liveness and the policy in force",
    description = "Whether the proxy runs, with the name, hash and mode of the policy in force (it changes on reload). No authentication.",
    responses((status = 200, description = "Running.", body = Health))
)]
pub(super) async fn health(State(state): State<ServerState>) -> Json<Health> {
    let engine = state.policy.current();
    let policy = engine.policy();
    Json(Health {
        status: "ok",
        policy: policy.name().to_owned(),
        policy_hash: policy.hash().to_owned(),
        mode: policy.mode().as_str(),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    summary = "Prometheus metrics",
    description = "The proxy's metrics in the Prometheus text format (the names of spec 6.4). No authentication.",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 503, description = "No metrics recorder is installed in this process (`metrics_unavailable`).", body = ErrorBody),
    )
)]
pub(super) async fn metrics_text(State(state): State<ServerState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "no metrics recorder is installed in this process",
        ));
    };
    {
        let engine = state.policy.current();
        record_policy_hash(engine.policy().name(), engine.policy().hash());
    }
    let text = handle.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
