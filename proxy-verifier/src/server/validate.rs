//! `POST /v1/validate` (spec 6.2): a tool call evaluated as the relay would evaluate it, with the
//! AAT and proof headers checked when the proxy verifies AATs, and the answer of spec 6.2.2.

use std::time::Instant;

use aip_aat::jsonrpc::ErrorCode;
use aip_api::ErrorBody;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::{Decision, Engine, Grant, SchemaBook};
use crate::identity::{Check, Identity, Presented, grant_of};
use crate::metrics::{decision_label, record_decision, violation_type};
use crate::policy::CapabilitiesMode;

use super::admin::Admin;
use aip_http::ApiError;

use super::api::json_body;
use super::state::ServerState;

/// The header carrying the per-call proof over HTTP (docs/architecture.md, "The AAT on the wire").
pub const PROOF_HEADER: &str = "X-AIP-Proof";

/// The body of `POST /v1/validate` (spec 6.2.1).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The tool, as the client names it.
    #[schema(example = "read_file")]
    pub tool: String,
    /// Its arguments (`params.arguments` of the `tools/call`).
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
}

/// The answer of `POST /v1/validate` (spec 6.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ValidateResponse {
    /// `allow`, `block` or `ask`.
    #[schema(example = "allow")]
    pub decision: String,
    /// Why, in a sentence.
    pub reason: String,
    /// The violations found (also under `allow` in monitor mode).
    pub violations: Vec<Violation>,
    /// The AAT's status, when the proxy validates AATs (the policy has `spec.aat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub aat_status: Option<AatStatus>,
}

/// One violation in a `ValidateResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Violation {
    /// The kind, as the metrics name it (`violation_type`); `aat_invalid` or
    /// `aat_capability_denied` for a refused AAT.
    #[serde(rename = "type")]
    #[schema(example = "argument_invalid")]
    pub kind: String,
    /// The argument at fault, or `tool`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// `aat_status` of spec 6.2.2 (v1alpha3).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct AatStatus {
    /// Whether the AAT verified.
    pub valid: bool,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub agent_id: Option<String>,
    /// The user the agent acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<String>,
    /// Whether the tool was checked against the AAT's capabilities.
    pub capabilities_checked: bool,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub issuer: Option<String>,
    /// Why the AAT does not hold: the spec 11.2 string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub aat_error: Option<String>,
    /// Why, in a sentence, when not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
}

impl AatStatus {
    /// The status of a check; `capabilities_checked` when the tool was held against the AAT's
    /// capabilities.
    pub fn of(check: &Check, capabilities_checked: bool) -> Self {
        let from = |aat: &aip_aat::token::VerifiedAat| {
            let claims = aat.claims();
            (
                Some(claims.agent.id.to_string()),
                claims.user_binding.as_ref().map(|b| b.user_id.clone()),
                Some(claims.iss.clone()),
            )
        };
        match check {
            Check::Anonymous => Self {
                valid: false,
                agent_id: None,
                user_id: None,
                capabilities_checked: false,
                issuer: None,
                aat_error: None,
                reason: Some("no AAT presented".into()),
            },
            Check::Verified(v) => {
                let (agent_id, user_id, issuer) = from(&v.aat);
                Self {
                    valid: true,
                    agent_id,
                    user_id,
                    capabilities_checked,
                    issuer,
                    aat_error: None,
                    reason: None,
                }
            }
            Check::Rejected(r) => {
                let (agent_id, user_id, issuer) = r.aat.as_deref().map_or((None, None, None), from);
                Self {
                    valid: false,
                    agent_id,
                    user_id,
                    capabilities_checked: false,
                    issuer,
                    aat_error: r.refusal.aat_error().map(str::to_owned),
                    reason: Some(r.refusal.reason()),
                }
            }
        }
    }
}

/// Evaluates a call as the relay would and phrases the answer of spec 6.2.2.
pub fn evaluate(engine: &Engine, schemas: &SchemaBook, request: &ValidateRequest) -> (ValidateResponse, Decision) {
    evaluate_for(engine, schemas, request, None)
}

/// As [`evaluate`] for a caller whose verified AAT brings `grant` (spec 4.3 step 0c).
pub fn evaluate_for(
    engine: &Engine,
    schemas: &SchemaBook,
    request: &ValidateRequest,
    grant: Option<&Grant<'_>>,
) -> (ValidateResponse, Decision) {
    let verdict = engine.check_tool_call(&request.tool, Some(&request.arguments), grant, schemas, Instant::now());
    let resolution = engine.resolve(verdict);
    let denial = resolution.denial.as_ref();
    let violations: Vec<Violation> = denial
        .iter()
        .map(|d| Violation {
            kind: violation_type(d).to_owned(),
            field: d.failed_arg.clone().unwrap_or_else(|| "tool".to_owned()),
            message: d.reason.clone(),
        })
        .collect();
    let (decision, reason) = match (resolution.decision, denial) {
        (Decision::Allow, _) => ("allow", "Tool call allowed by policy".to_owned()),
        (Decision::Ask, _) => ("ask", "Tool call requires human approval (action: ask)".to_owned()),
        (Decision::AllowMonitor, Some(d)) => (
            "allow",
            format!(
                "Monitor mode: the violation is logged and the call forwarded ({})",
                d.reason
            ),
        ),
        (Decision::AllowMonitor, None) => ("allow", "Monitor mode: the call is forwarded".to_owned()),
        (Decision::Block | Decision::RateLimited, Some(d)) => ("block", d.reason.clone()),
        (Decision::Block | Decision::RateLimited, None) => ("block", "Tool call refused by policy".to_owned()),
    };
    let response = ValidateResponse {
        decision: decision.to_owned(),
        reason,
        violations,
        aat_status: None,
    };
    (response, resolution.decision)
}

/// `POST /v1/validate`.
#[utoipa::path(
    post,
    path = "/v1/validate",
    tag = "validation",
    summary = "Evaluate a tool call",
    description = "Evaluates a `tools/call` as the relay would, with the policy in force, without making it: every answer is 200 with the decision (`allow`, `block` or `ask`); monitor mode answers `allow` with the violations it would have refused for. A validation consumes a token from the tool's rate-limit bucket, shared with the relay. When the policy has `spec.aat`, the AAT and its proof are checked too (an AAT that does not hold blocks the call where the policy enforces AATs) and the answer carries `aat_status`; without it these headers are ignored. The body is `{\"tool\", \"arguments\"}` and nothing else, at most 256 KiB.",
    params(
        ("X-AIP-AAT" = Option<String>, Header, description = "The agent's AAT. The policy's `aat.header_name` replaces this header's name."),
        ("X-AIP-Proof" = Option<String>, Header, description = "The per-call proof of possession (compact JWS, `typ: aip-pop+jwt`) by the agent's key, over the AAT, the tool and the hash of its arguments."),
    ),
    request_body(content = ValidateRequest, description = "The call to evaluate.", content_type = "application/json"),
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Evaluated: the decision, why, the violations found and, when AATs are checked, the AAT's status.", body = ValidateResponse),
        (status = 400, description = "The body is not exactly `{\"tool\": string, \"arguments\": object}`, or cannot be read, or an AAT or proof header is not visible ASCII (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No admin token, or a wrong one (`invalid_token`); `WWW-Authenticate: Bearer realm=\"aip-proxy\"` (with `error=\"invalid_token\"` for a wrong one).", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "The Bearer challenge."))),
        (status = 413, description = "The body is larger than 256 KiB (`invalid_request`).", body = ErrorBody),
        (status = 415, description = "The body is not declared `application/json` (`invalid_request`).", body = ErrorBody),
        (status = 500, description = "The evaluation failed (`server_error`).", body = ErrorBody),
    )
)]
pub(super) async fn validate(
    _admin: Admin,
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ValidateResponse>, ApiError> {
    let started = Instant::now();
    let request: ValidateRequest = json_body(&headers, body, r#"{"tool": string, "arguments": object}"#)?;
    let engine = state.policy.current();
    let (response, decision) = match state.identity.clone() {
        None => evaluate(&engine, &state.schemas, &request),
        // The AAT check may wait on the replay store (a Redis round trip): off the runtime.
        Some(identity) => {
            let schemas = state.schemas.clone();
            tokio::task::spawn_blocking(move || validate_with_aat(&identity, &engine, &schemas, &request, &headers))
                .await
                .map_err(|_| ApiError::internal())??
        }
    };
    record_decision(
        decision_label(decision),
        response.violations.first().map(|v| v.kind.as_str()),
        started.elapsed(),
    );
    Ok(Json(response))
}

/// `/v1/validate` with the AAT and proof headers (spec 6.2; docs/architecture.md, "The AAT on the wire").
fn validate_with_aat(
    identity: &Identity,
    engine: &Engine,
    schemas: &SchemaBook,
    request: &ValidateRequest,
    headers: &HeaderMap,
) -> Result<(ValidateResponse, Decision), ApiError> {
    let header = |name: &str| -> Result<Option<&str>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("the {name} header is not visible ASCII"))),
        }
    };
    let presented = Presented {
        aat: header(&identity.settings().header_name)?,
        proof: header(PROOF_HEADER)?,
        dpop: None,
        verified: None,
    };
    let arguments = Value::Object(request.arguments.clone());
    let call = aip_aat::proof::Call::tools_call(&request.tool, Some(&arguments));
    let check = identity.check(presented, &call);
    match &check {
        Check::Rejected(r) if r.enforced => {
            let code = r.refusal.error_code();
            let response = ValidateResponse {
                decision: "block".into(),
                reason: r.refusal.reason(),
                violations: vec![Violation {
                    kind: if code == ErrorCode::CapabilityDenied {
                        "aat_capability_denied"
                    } else {
                        "aat_invalid"
                    }
                    .into(),
                    field: "aat".into(),
                    message: r.refusal.reason(),
                }],
                aat_status: Some(AatStatus::of(&check, false)),
            };
            Ok((response, Decision::Block))
        }
        Check::Verified(v) => {
            let grant = grant_of(&v.aat, identity);
            let (mut response, decision) = evaluate_for(engine, schemas, request, Some(&grant));
            response.aat_status = Some(AatStatus::of(&check, grant.mode != CapabilitiesMode::PolicyOnly));
            Ok((response, decision))
        }
        Check::Anonymous | Check::Rejected(_) => {
            let (mut response, decision) = evaluate(engine, schemas, request);
            response.aat_status = Some(AatStatus::of(&check, false));
            Ok((response, decision))
        }
    }
}
