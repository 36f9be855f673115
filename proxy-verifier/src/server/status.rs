//! The unauthenticated status routes: `GET /health` and `GET /metrics` (Prometheus text, spec
//! 6.4 names).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::metrics::record_policy_hash;

use super::state::ServerState;
use aip_http::ApiError;

pub(super) async fn health(State(state): State<ServerState>) -> Json<Value> {
    let engine = state.policy.current();
    let policy = engine.policy();
    Json(json!({
        "status": "ok",
        "policy": policy.name(),
        "policy_hash": policy.hash(),
        "mode": policy.mode().as_str(),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

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
