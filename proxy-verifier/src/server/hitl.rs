//! The approval routes (IETF draft 6.5): `GET /v1/hitl` lists the pending holds,
//! `POST /v1/hitl/{hold_id}/approve` and `/deny` answer one (200, 404, 409).

use aip_api::ErrorBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::hitl::{HitlError, PendingHold};

use super::admin::Admin;
use super::state::ServerState;
use aip_http::ApiError;

/// The answer of `GET /v1/hitl`: the approval settings in force and the pending holds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HoldList {
    /// Who may approve (`spec.hitl.approvers`; informational).
    approvers: Vec<String>,
    /// How long a held call waits for an answer.
    timeout_seconds: u64,
    /// What an unanswered hold becomes: `allow` or `deny`.
    #[schema(example = "deny")]
    on_timeout: &'static str,
    /// The holds waiting for an answer.
    holds: Vec<PendingHold>,
}

/// The answer of approving or denying a hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HoldAnswer {
    /// The hold.
    hold_id: String,
    /// `approved` or `denied`.
    #[schema(example = "approved")]
    outcome: &'static str,
}

/// `GET /v1/hitl`.
#[utoipa::path(
    get,
    path = "/v1/hitl",
    tag = "approvals",
    summary = "List the pending holds",
    description = "The calls held for a human's answer (tool rules with `action: ask`), with the approval settings in force. Arguments are shown redacted and truncated.",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "The pending holds.", body = HoldList),
        (status = 401, description = "No admin token, or a wrong one (`invalid_token`); `WWW-Authenticate: Bearer realm=\"aip-proxy\"` (with `error=\"invalid_token\"` for a wrong one).", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "The Bearer challenge."))),
    )
)]
pub(super) async fn list_holds(_admin: Admin, State(state): State<ServerState>) -> Json<HoldList> {
    let settings = state.hitl.settings();
    Json(HoldList {
        approvers: settings.approvers,
        timeout_seconds: settings.timeout.as_secs(),
        on_timeout: if settings.allow_on_timeout { "allow" } else { "deny" },
        holds: state.hitl.pending(),
    })
}

/// `POST /v1/hitl/{hold_id}/approve`.
#[utoipa::path(
    post,
    path = "/v1/hitl/{hold_id}/approve",
    tag = "approvals",
    summary = "Approve a hold",
    description = "The held call goes on: it is forwarded to the server. The first answer to a hold stands. No request body.",
    params(("hold_id" = String, Path, description = "The hold's id, as listed by `GET /v1/hitl`.")),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Approved.", body = HoldAnswer),
        (status = 401, description = "No admin token, or a wrong one (`invalid_token`); `WWW-Authenticate: Bearer realm=\"aip-proxy\"` (with `error=\"invalid_token\"` for a wrong one).", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "The Bearer challenge."))),
        (status = 404, description = "No pending hold has this id (`hold_not_found`).", body = ErrorBody),
        (status = 409, description = "The hold was already resolved: approved, denied or timed out (`hold_already_resolved`).", body = ErrorBody),
    )
)]
pub(super) async fn approve(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<HoldAnswer>, ApiError> {
    answer(state.hitl.approve(&id), id, "approved")
}

/// `POST /v1/hitl/{hold_id}/deny`.
#[utoipa::path(
    post,
    path = "/v1/hitl/{hold_id}/deny",
    tag = "approvals",
    summary = "Deny a hold",
    description = "The held call is refused: the client gets a JSON-RPC error. The first answer to a hold stands. No request body.",
    params(("hold_id" = String, Path, description = "The hold's id, as listed by `GET /v1/hitl`.")),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Denied.", body = HoldAnswer),
        (status = 401, description = "No admin token, or a wrong one (`invalid_token`); `WWW-Authenticate: Bearer realm=\"aip-proxy\"` (with `error=\"invalid_token\"` for a wrong one).", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "The Bearer challenge."))),
        (status = 404, description = "No pending hold has this id (`hold_not_found`).", body = ErrorBody),
        (status = 409, description = "The hold was already resolved: approved, denied or timed out (`hold_already_resolved`).", body = ErrorBody),
    )
)]
pub(super) async fn deny(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<HoldAnswer>, ApiError> {
    answer(state.hitl.deny(&id), id, "denied")
}

fn answer(result: Result<(), HitlError>, id: String, outcome: &'static str) -> Result<Json<HoldAnswer>, ApiError> {
    match result {
        Ok(()) => Ok(Json(HoldAnswer { hold_id: id, outcome })),
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
