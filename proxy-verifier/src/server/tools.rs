//! `POST /v1/tools/{tool}/accept`: an operator accepts a tool whose description or input schema
//! changed since the session first listed it, so that it is listed and callable again (200, or
//! 404 when the tool has no change to accept).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::normalize::normalize;

use super::admin::Admin;
use super::state::ServerState;
use aip_http::ApiError;

pub(super) async fn accept(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(tool): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.schemas.accept(&normalize(&tool)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_change",
            "this tool has no change waiting to be accepted",
        ));
    }
    tracing::warn!(tool, "changed tool accepted by an operator");
    Ok(Json(json!({ "tool": tool, "accepted": true })))
}
