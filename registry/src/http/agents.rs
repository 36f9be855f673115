//! `/v1/agents`: registration, records, listing, key rotation, certificate renewal and status
//! changes.

use std::sync::Arc;

use aip_aat::ids::AgentId;
use aip_api::ErrorBody;
use aip_api::registry::{
    AgentList, AgentResponse, CertificateResponse, RedirectUrisResponse, RegisterAgentResponse, StatusResponse,
};
use aip_api::registry::{
    RedirectUrisRequest, RegisterAgentRequest, RenewCertificateRequest, RotateKeyRequest, StatusKind, StatusRequest,
};
use aip_http::{ApiError, OptionalJson, StrictJson};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::errors::ApiResult;
use crate::service::{Principal, Registry};
use crate::store::AgentQuery;

fn agent_id(id: &str) -> ApiResult<AgentId> {
    id.parse().map_err(|e| ApiError::bad_request(format!("{e}")))
}

#[utoipa::path(
    post,
    path = "/v1/agents",
    tag = "agents",
    summary = "Register an agent",
    description = "Registers an agent's public key and metadata; signs its certificate and identity document (spec 8.3.1). The body carries a request proof by the key being registered. Authenticated by an admin access token or a registration token.",
    request_body = RegisterAgentRequest,
    security(("accessToken" = []), ("registrationToken" = [])),
    responses(
        (status = 201, description = "Registered.", body = RegisterAgentResponse, headers(("Location" = String, description = "`/v1/agents/{agent_id}`"))),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), or a bad request proof (`invalid_proof`).", body = ErrorBody),
        (status = 403, description = "The token may not register agents, or not with these capabilities (`insufficient_scope`).", body = ErrorBody),
        (status = 409, description = "The key is already registered (`key_already_registered`), or the name looks like another agent's (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn register(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, body): StrictJson<RegisterAgentRequest>,
) -> ApiResult<Response> {
    let response = registry.register(&principal, request, &body).await?;
    let location = format!("/v1/agents/{}", response.agent_id);
    let mut response = (StatusCode::CREATED, Json(response)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    status: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    summary = "List agents",
    description = "A page of agents in id order (admin or reader token).",
    params(
        ("status" = Option<String>, Query, description = "Only agents with this status: `active`, `suspended` or `revoked`."),
        ("after" = Option<String>, Query, description = "The `next` cursor of the previous page."),
        ("limit" = Option<u32>, Query, description = "Page size (default 100, at most 1000)."),
    ),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "A page of agents.", body = AgentList),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody), (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(super) async fn list_agents(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.reader()?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = params
        .status
        .map(|s| {
            s.parse()
                .map_err(|_| ApiError::bad_request("status must be active, suspended or revoked"))
        })
        .transpose()?;
    let after = params.after.as_deref().map(agent_id).transpose()?;
    let query = AgentQuery {
        status,
        after,
        limit: params.limit.unwrap_or(100),
    };
    Ok(Json(registry.agents(&query).await?).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/agents/{id}",
    tag = "agents",
    summary = "An agent's record",
    description = "The agent's status, identity document, keys and certificates (spec 8.3.2; admin or reader token).",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The agent.", body = AgentResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody), (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn agent(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.reader()?;
    Ok(Json(registry.agent(&agent_id(&id)?).await?).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/agents/{id}/redirect-uris",
    tag = "agents",
    summary = "Set an agent's redirect URIs",
    description = "Replaces the URIs `/oauth/authorize` may send people back to for this agent (admin).",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body = RedirectUrisRequest,
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The redirect URIs now registered.", body = RedirectUrisResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody), (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody), (status = 409, description = "The change conflicts with the agent's state, such as a revoked agent (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn set_redirect_uris(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    StrictJson(request, _): StrictJson<RedirectUrisRequest>,
) -> ApiResult<Response> {
    let id = agent_id(&id)?;
    Ok(Json(registry.set_redirect_uris(&principal, &id, request).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/agents/{id}/rotate-key",
    tag = "agents",
    summary = "Rotate an agent's key",
    description = "Replaces the agent's key (spec 8.3.4): proofs by the current and the new key; the old key stays valid for a grace period. No bearer token: the proofs authenticate.",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body = RotateKeyRequest,
    responses(
        (status = 200, description = "The new certificate and identity document.", body = CertificateResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "The request proof is missing, malformed, stale, replayed or not by the agent's current key (`invalid_proof`), with `WWW-Authenticate: AIP-PoP`.", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody),
        (status = 409, description = "The agent is not active, or the new key is already registered.", body = ErrorBody),
    )
)]
pub(super) async fn rotate_key(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<String>,
    StrictJson(request, body): StrictJson<RotateKeyRequest>,
) -> ApiResult<Response> {
    let id = agent_id(&id)?;
    Ok(Json(registry.rotate_key(&id, request, &body).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/agents/{id}/certificate",
    tag = "agents",
    summary = "Renew an agent's certificate",
    description = "Issues a new certificate for the agent's current key, with a request proof by that key. No bearer token: the proof authenticates.",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body = RenewCertificateRequest,
    responses(
        (status = 200, description = "The new certificate.", body = CertificateResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "The request proof is missing, malformed, stale, replayed or not by the agent's current key (`invalid_proof`), with `WWW-Authenticate: AIP-PoP`.", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody), (status = 409, description = "The change conflicts with the agent's state, such as a revoked agent (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn renew_certificate(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<String>,
    StrictJson(request, body): StrictJson<RenewCertificateRequest>,
) -> ApiResult<Response> {
    let id = agent_id(&id)?;
    Ok(Json(registry.renew_certificate(&id, request, &body).await?).into_response())
}

async fn status_change(
    registry: &Registry,
    principal: &Principal,
    id: &str,
    kind: StatusKind,
    request: &StatusRequest,
) -> ApiResult<Response> {
    let id = agent_id(id)?;
    Ok(Json(registry.change_status(principal, &id, kind, request).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/agents/{id}/suspend",
    tag = "agents",
    summary = "Suspend an agent",
    description = "Suspends the agent (reversible; its certificate is put on hold in the CRL) and publishes the change (admin). The body is optional.",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body(content = Option<StatusRequest>, description = "Why (optional)."),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The status change.", body = StatusResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody), (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody), (status = 409, description = "The change conflicts with the agent's state, such as a revoked agent (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn suspend(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Suspend, &request).await
}

#[utoipa::path(
    post,
    path = "/v1/agents/{id}/reactivate",
    tag = "agents",
    summary = "Reactivate an agent",
    description = "Reactivates a suspended agent and publishes the change (admin). The body is optional.",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body(content = Option<StatusRequest>, description = "Why (optional)."),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The status change.", body = StatusResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody), (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody), (status = 409, description = "The change conflicts with the agent's state, such as a revoked agent (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn reactivate(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Reactivate, &request).await
}

#[utoipa::path(
    post,
    path = "/v1/agents/{id}/revoke",
    tag = "agents",
    summary = "Revoke an agent",
    description = "Revokes the agent for good (its certificate goes on the CRL) and publishes the change (admin). The body is optional. `DELETE /v1/agents/{id}` does the same.",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body(content = Option<StatusRequest>, description = "Why, and the CRL reason (optional)."),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The status change.", body = StatusResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody), (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody), (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody), (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody), (status = 409, description = "The change conflicts with the agent's state, such as a revoked agent (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn revoke_agent(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Revoke, &request).await
}

#[utoipa::path(
    delete,
    path = "/v1/agents/{id}",
    tag = "agents",
    summary = "Revoke an agent",
    description = "The same as `POST /v1/agents/{id}/revoke` (admin). The body is optional.",
    params(("id" = String, Path, description = "The agent id (`ag_` followed by a UUID).")),
    request_body(content = Option<StatusRequest>, description = "Why, and the CRL reason (optional)."),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The status change.", body = StatusResponse),
        (status = 400, description = "Malformed request: a bad agent id, or a body that is not strict JSON of this shape.", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No agent has this id (`agent_not_found`).", body = ErrorBody),
        (status = 409, description = "The change conflicts with the agent's state, such as a revoked agent (`conflict`).", body = ErrorBody),
    )
)]
pub(super) async fn delete_agent(
    registry: State<Arc<Registry>>,
    caller: Caller,
    id: Path<String>,
    request: OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    revoke_agent(registry, caller, id, request).await
}
