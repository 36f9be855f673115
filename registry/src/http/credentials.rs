//! `/v1/registration-tokens`, `/v1/access-tokens` (create, list, revoke) and `/v1/whoami`.

use std::sync::Arc;

use aip_api::registry::{CreateAccessTokenRequest, CreateRegistrationTokenRequest, WhoAmI};
use aip_http::StrictJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::errors::ApiResult;
use crate::service::{Principal, Registry};

pub(super) async fn create_registration_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<CreateRegistrationTokenRequest>,
) -> ApiResult<Response> {
    let token = registry.create_registration_token(&principal, &request).await?;
    Ok((StatusCode::CREATED, aip_http::no_store(), Json(token)).into_response())
}

pub(super) async fn create_access_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<CreateAccessTokenRequest>,
) -> ApiResult<Response> {
    let token = registry.create_access_token(&principal, &request).await?;
    Ok((StatusCode::CREATED, aip_http::no_store(), Json(token)).into_response())
}

pub(super) async fn list_registration_tokens(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
) -> ApiResult<Response> {
    let tokens = registry.list_registration_tokens(&principal).await?;
    Ok((aip_http::no_store(), Json(tokens)).into_response())
}

pub(super) async fn revoke_registration_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(token_id): Path<String>,
) -> ApiResult<Response> {
    let token = registry.revoke_registration_token(&principal, &token_id).await?;
    Ok((aip_http::no_store(), Json(token)).into_response())
}

pub(super) async fn list_access_tokens(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
) -> ApiResult<Response> {
    let tokens = registry.list_access_tokens(&principal).await?;
    Ok((aip_http::no_store(), Json(tokens)).into_response())
}

pub(super) async fn revoke_access_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(token_id): Path<String>,
) -> ApiResult<Response> {
    let token = registry.revoke_access_token(&principal, &token_id).await?;
    Ok((aip_http::no_store(), Json(token)).into_response())
}

pub(super) async fn whoami(Caller(principal): Caller) -> ApiResult<Response> {
    let (token_id, role) = match principal {
        Principal::Admin { token_id } => (token_id, "admin"),
        Principal::Reader { token_id } => (token_id, "reader"),
        Principal::Registrar { token_id, .. } => (token_id, "registration"),
    };
    Ok(Json(WhoAmI {
        token_id,
        role: role.into(),
    })
    .into_response())
}
