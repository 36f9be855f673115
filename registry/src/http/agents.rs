//! `/v1/agents`: registration, records, listing, key rotation, certificate renewal and status
//! changes.

use std::sync::Arc;

use aip_aat::ids::AgentId;
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

pub(super) async fn agent(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.reader()?;
    Ok(Json(registry.agent(&agent_id(&id)?).await?).into_response())
}

pub(super) async fn set_redirect_uris(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    StrictJson(request, _): StrictJson<RedirectUrisRequest>,
) -> ApiResult<Response> {
    let id = agent_id(&id)?;
    Ok(Json(registry.set_redirect_uris(&principal, &id, request).await?).into_response())
}

pub(super) async fn rotate_key(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<String>,
    StrictJson(request, body): StrictJson<RotateKeyRequest>,
) -> ApiResult<Response> {
    let id = agent_id(&id)?;
    Ok(Json(registry.rotate_key(&id, request, &body).await?).into_response())
}

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

pub(super) async fn suspend(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Suspend, &request).await
}

pub(super) async fn reactivate(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Reactivate, &request).await
}

pub(super) async fn revoke_agent(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Revoke, &request).await
}
