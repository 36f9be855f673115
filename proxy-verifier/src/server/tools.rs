//! `POST /v1/tools/{tool}/accept`: an operator accepts a tool whose description or input schema
//! changed since the session first listed it, so that it is listed and callable again (200, or
//! 404 when the tool has no change to accept). The acceptance is audited (`TOOL_ACCEPTED`).

use aip_api::ErrorBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::audit::Record;
use crate::normalize::normalize;

use super::admin::Admin;
use super::state::ServerState;
use aip_http::ApiError;

/// The answer of accepting a changed tool.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ToolAccepted {
    /// The tool, as named in the path.
    tool: String,
    /// Always `true`.
    accepted: bool,
}

/// `POST /v1/tools/{tool}/accept`.
#[utoipa::path(
    post,
    path = "/v1/tools/{tool}/accept",
    tag = "tools",
    summary = "Accept a changed tool",
    description = "A tool whose description or input schema changed since the session first listed it is withheld from `tools/list` and its calls refused; accepting the change lists it and lets it be called again. The acceptance is written to the audit log (`TOOL_ACCEPTED`). No request body.",
    params(("tool" = String, Path, description = "The tool, as the server names it (compared after normalization: NFKC, lowercase, spec 4.1).")),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Accepted.", body = ToolAccepted),
        (status = 401, description = "No admin token, or a wrong one (`invalid_token`); `WWW-Authenticate: Bearer realm=\"aip-proxy\"` (with `error=\"invalid_token\"` for a wrong one).", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "The Bearer challenge."))),
        (status = 404, description = "This tool has no change waiting to be accepted (`no_change`).", body = ErrorBody),
    )
)]
pub(super) async fn accept(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(tool): Path<String>,
) -> Result<Json<ToolAccepted>, ApiError> {
    if !state.schemas.accept(&normalize(&tool)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_change",
            "this tool has no change waiting to be accepted",
        ));
    }
    tracing::warn!(tool, "changed tool accepted by an operator");
    if let Some(audit) = &state.audit {
        let engine = state.policy.current();
        let mut record = Record::new("downstream", "ALLOW", engine.policy().mode().as_str(), false);
        record.event = Some("TOOL_ACCEPTED".into());
        record.tool = Some(tool.clone());
        record.reason = Some("the changed description or input schema was accepted by an operator".into());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        audit.record(record);
    }
    Ok(Json(ToolAccepted { tool, accepted: true }))
}
