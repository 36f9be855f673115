//! The approval routes (IETF draft 6.5): `GET /v1/hitl` lists the pending holds,
//! `POST /v1/hitl/{hold_id}/approve` and `/deny` answer one (200, 404, 409).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::hitl::HitlError;

use super::admin::Admin;
use super::state::ServerState;
use aip_http::ApiError;

pub(super) async fn list_holds(_admin: Admin, State(state): State<ServerState>) -> Json<Value> {
    let settings = state.hitl.settings();
    Json(json!({
        "approvers": settings.approvers,
        "timeout_seconds": settings.timeout.as_secs(),
        "on_timeout": if settings.allow_on_timeout { "allow" } else { "deny" },
        "holds": state.hitl.pending(),
    }))
}

pub(super) async fn approve(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    answer(state.hitl.approve(&id), &id, "approved")
}

pub(super) async fn deny(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    answer(state.hitl.deny(&id), &id, "denied")
}

fn answer(result: Result<(), HitlError>, id: &str, outcome: &str) -> Result<Json<Value>, ApiError> {
    match result {
        Ok(()) => Ok(Json(json!({ "hold_id": id, "outcome": outcome }))),
        Err(HitlError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "hold_not_found",
            "no pending hold has this id",
        )),
        Err(e @ HitlError::AlreadyResolved { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "hold_already_resolved",
            e.to_string(),
        )),
    }
}
