//! `/v1/registration-tokens`, `/v1/access-tokens` (create, list, revoke) and `/v1/whoami`.

use std::sync::Arc;

use aip_api::ErrorBody;
use aip_api::registry::{
    AccessTokenEntry, AccessTokenList, AccessTokenResponse, CreateAccessTokenRequest, CreateRegistrationTokenRequest,
    RegistrationTokenEntry, RegistrationTokenList, RegistrationTokenResponse, WhoAmI,
};
use aip_http::StrictJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::errors::ApiResult;
use crate::service::{Principal, Registry};

#[utoipa::path(
    post,
    path = "/v1/registration-tokens",
    tag = "credentials",
    summary = "Create a registration token",
    description = "A token that lets its holder register agents, a limited number of times until it expires (admin). The token is shown only in this answer.",
    request_body = CreateRegistrationTokenRequest,
    security(("accessToken" = [])),
    responses(
        (status = 201, description = "Created; never cached.", body = RegistrationTokenResponse),
        (status = 400, description = "Malformed request: a body that is not strict JSON of this shape, or values out of range (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(super) async fn create_registration_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<CreateRegistrationTokenRequest>,
) -> ApiResult<Response> {
    let token = registry.create_registration_token(&principal, &request).await?;
    Ok((StatusCode::CREATED, aip_http::no_store(), Json(token)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/access-tokens",
    tag = "credentials",
    summary = "Create an access token",
    description = "An admin or reader access token (admin). The token is shown only in this answer.",
    request_body = CreateAccessTokenRequest,
    security(("accessToken" = [])),
    responses(
        (status = 201, description = "Created; never cached.", body = AccessTokenResponse),
        (status = 400, description = "Malformed request: a body that is not strict JSON of this shape, or values out of range (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(super) async fn create_access_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<CreateAccessTokenRequest>,
) -> ApiResult<Response> {
    let token = registry.create_access_token(&principal, &request).await?;
    Ok((StatusCode::CREATED, aip_http::no_store(), Json(token)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/registration-tokens",
    tag = "credentials",
    summary = "List registration tokens",
    description = "Every registration token, oldest first, never the token itself (admin).",
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The tokens.", body = RegistrationTokenList),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(super) async fn list_registration_tokens(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
) -> ApiResult<Response> {
    let tokens = registry.list_registration_tokens(&principal).await?;
    Ok((aip_http::no_store(), Json(tokens)).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/registration-tokens/{token_id}",
    tag = "credentials",
    summary = "Revoke a registration token",
    description = "Revokes the token on every replica (admin).",
    params(("token_id" = String, Path, description = "The token's public id.")),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The revoked token.", body = RegistrationTokenEntry),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No token has this id (`token_not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn revoke_registration_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(token_id): Path<String>,
) -> ApiResult<Response> {
    let token = registry.revoke_registration_token(&principal, &token_id).await?;
    Ok((aip_http::no_store(), Json(token)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/access-tokens",
    tag = "credentials",
    summary = "List access tokens",
    description = "Every access token, oldest first, never the token itself (admin).",
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The tokens.", body = AccessTokenList),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(super) async fn list_access_tokens(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
) -> ApiResult<Response> {
    let tokens = registry.list_access_tokens(&principal).await?;
    Ok((aip_http::no_store(), Json(tokens)).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/access-tokens/{token_id}",
    tag = "credentials",
    summary = "Revoke an access token",
    description = "Revokes the token on every replica (admin).",
    params(("token_id" = String, Path, description = "The token's public id.")),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "The revoked token.", body = AccessTokenEntry),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token's role does not allow this (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No token has this id (`token_not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn revoke_access_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(token_id): Path<String>,
) -> ApiResult<Response> {
    let token = registry.revoke_access_token(&principal, &token_id).await?;
    Ok((aip_http::no_store(), Json(token)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "credentials",
    summary = "The token presented",
    description = "The id and role of the bearer token presented: `admin`, `reader` or `registration`.",
    security(("accessToken" = []), ("registrationToken" = [])),
    responses(
        (status = 200, description = "The token.", body = WhoAmI),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
    )
)]
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
