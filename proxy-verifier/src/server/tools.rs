//! `POST /v1/tools/{tool}/accept`: an operator accepts a tool whose description or input schema
//! changed since the session first listed it, so that it is listed and callable again (200, or
//! 404 when the tool has no change to accept). The acceptance is audited (`TOOL_ACCEPTED`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::audit::Record;
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
    if let Some(audit) = &state.audit {
        let engine = state.policy.current();
        let mut record = Record::new("downstream", "ALLOW", engine.policy().mode().as_str(), false);
        record.event = Some("TOOL_ACCEPTED".into());
        record.tool = Some(tool.clone());
        record.reason = Some("the changed description or input schema was accepted by an operator".into());
        record.policy_hash = Some(engine.policy().hash().to_owned());
        audit.record(record);
    }
    Ok(Json(json!({ "tool": tool, "accepted": true })))
}
