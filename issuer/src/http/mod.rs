//! The issuer's HTTP API: [`routes`] (to mount beside the registry's, as `aip-ca serve` does)
//! and [`router`] (a complete router for an issuer running on its own).
//!
//! `POST /v1/challenge`, `POST /v1/token` (errors per spec 9.4.2, with `error_details` when
//! useful), and the admin endpoints `POST /v1/revoke`, `POST /v1/users`, `GET /v1/users`.
//! Bodies are parsed strictly, like the registry's; token responses are never cached. The
//! OAuth 2.1 face (RFC 8414 metadata, `/oauth/token`, introspection, revocation) is in
//! [`oauth`].

mod errors;
pub(crate) mod oauth;

use errors::admin_error;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use aip_api::ErrorBody;
use aip_api::issuer::{
    ChallengeRequest, ChallengeResponse, CreateUserRequest, CreateUserResponse, RevokeRequest, RevokeResponse,
    TokenErrorCode, TokenErrorResponse, TokenRequest, TokenResponse, UserList,
};
use aip_http::routes::{Route, Routes};
use aip_http::{ApiError, ClientAdmission, StrictJson, no_store};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;

use crate::directory::Caller;
use crate::service::{Issuer, IssuerError};

/// The issuer's own JSON API routes, before their state is given.
fn own_routes() -> Routes<Arc<Issuer>> {
    Routes::new()
        .post("/v1/challenge", challenge)
        .post("/v1/token", token)
        .post("/v1/revoke", revoke)
        .post("/v1/users", create_user)
        .get("/v1/users", list_users)
}

/// The issuer's routes, to merge into another router (no fallback, no limits). The
/// interactive `/oauth/authorize` flow is among them only when `[issuer.authorize]` enables it.
pub fn routes(issuer: Arc<Issuer>) -> Routes {
    own_routes()
        .with_state(issuer.clone())
        .merge(oauth::routes().with_state(issuer.clone()))
        .merge(crate::authorize::routes(issuer))
}

/// Every method and path the issuer can route, the interactive flow's included.
pub fn route_table() -> Vec<Route> {
    own_routes()
        .merge(oauth::routes())
        .merge(crate::authorize::own_routes())
        .table()
}

/// A complete router for an issuer served on its own.
pub fn router(issuer: Arc<Issuer>) -> Router {
    routes(issuer)
        .into_router()
        .fallback(aip_http::not_found)
        .layer(DefaultBodyLimit::max(aip_http::MAX_BODY_BYTES))
}

/// A token-endpoint failure, answered with the spec 9.4.2 body.
struct TokenError(IssuerError);

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let (code, description, details) = match self.0 {
            IssuerError::Token {
                code,
                description,
                details,
            } => (code, description, details),
            IssuerError::InvalidRequest(d) => (TokenErrorCode::InvalidRequest, d, None),
            IssuerError::NotFound(d) => (TokenErrorCode::AgentNotFound, d, None),
            e => {
                tracing::error!(error = ?e, "token request failed");
                (TokenErrorCode::IssuerError, "internal error".to_owned(), None)
            }
        };
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = TokenErrorResponse {
            error: code,
            error_description: description,
            error_details: details,
        };
        let mut response = (status, no_store(), Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"AIP-PoP realm="aip""#),
            );
        }
        response
    }
}

/// The client's address, when the server records it (`into_make_service_with_connect_info`).
pub(crate) struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

async fn admin(issuer: &Issuer, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = aip_http::require_bearer(headers)?;
    issuer.authenticate(token).await.map_err(admin_error)
}

#[utoipa::path(
    post,
    path = "/v1/challenge",
    tag = "issuer",
    summary = "Get a challenge",
    description = "A single-use challenge for the agent to sign, valid for at most 60 s on any replica.",
    request_body = ChallengeRequest,
    responses(
        (status = 200, description = "The challenge; never cached.", body = ChallengeResponse),
        (status = 400, description = "Malformed request (`invalid_request`).", body = TokenErrorResponse),
        (status = 404, description = "No agent has this id (`agent_not_found`).", body = TokenErrorResponse),
        (status = 403, description = "The agent is suspended or revoked (`agent_suspended`, `agent_revoked`).", body = TokenErrorResponse),
    )
)]
pub(crate) async fn challenge(
    State(issuer): State<Arc<Issuer>>,
    admission: ClientAdmission,
    StrictJson(request, _): StrictJson<ChallengeRequest>,
) -> Result<Response, Response> {
    admission
        .admit(request.agent_id.as_str())
        .map_err(IntoResponse::into_response)?;
    let response = issuer
        .challenge(&request)
        .await
        .map_err(|e| TokenError(e).into_response())?;
    Ok((no_store(), Json(response)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/token",
    tag = "issuer",
    summary = "Get an AAT",
    description = "Mints an Agent Authentication Token (spec 9.3): grant types `agent_authentication` (proof of possession and user authorization), `aat_refresh` and `agent_attestation` (autonomous agents). Errors per spec 9.4.2.",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The AAT and what it grants; never cached.", body = TokenResponse),
        (status = 400, description = "Malformed request (`invalid_request`), or a refresh token that is unknown, used, expired or revoked (`invalid_grant`).", body = TokenErrorResponse),
        (status = 401, description = "The proof of possession (`invalid_proof`) or the user authorization (`user_auth_failed`) failed, with `WWW-Authenticate: AIP-PoP`.", body = TokenErrorResponse),
        (status = 403, description = "The agent is suspended or revoked, or every requested capability was denied.", body = TokenErrorResponse),
        (status = 404, description = "No agent has this id (`agent_not_found`).", body = TokenErrorResponse),
        (status = 500, description = "Internal issuer error (`issuer_error`).", body = TokenErrorResponse),
    )
)]
pub(crate) async fn token(
    State(issuer): State<Arc<Issuer>>,
    Peer(peer): Peer,
    admission: ClientAdmission,
    StrictJson(request, _): StrictJson<TokenRequest>,
) -> Result<Response, Response> {
    admission
        .admit(request.agent_id.as_str())
        .map_err(IntoResponse::into_response)?;
    let response = issuer
        .token(request, peer)
        .await
        .map_err(|e| TokenError(e).into_response())?;
    Ok((no_store(), Json(response)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/revoke",
    tag = "issuer",
    summary = "Revoke tokens, a session, a user or an agent",
    description = "Revokes exactly one of a `jti`, a `session_id`, a `user_id`, an `agent_id` or a `delegation` (the revocation id of a delegable AAT's block); the entries go to the revocation list (admin).",
    request_body = RevokeRequest,
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "What was revoked.", body = RevokeResponse),
        (status = 400, description = "Malformed request (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token is not an admin token (`insufficient_scope`).", body = ErrorBody),
        (status = 404, description = "No such user or agent (`not_found`).", body = ErrorBody),
        (status = 409, description = "The revocation does not apply (`conflict`).", body = ErrorBody),
    )
)]
pub(crate) async fn revoke(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    StrictJson(request, _): StrictJson<RevokeRequest>,
) -> Result<Response, ApiError> {
    let caller = admin(&issuer, &headers).await?;
    let response = issuer.revoke(&caller, request).await.map_err(admin_error)?;
    Ok(Json(response).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "issuer",
    summary = "Create a user",
    description = "A user who may delegate the listed tools to agents; the user's API key is shown only in this answer (admin).",
    request_body = CreateUserRequest,
    security(("accessToken" = [])),
    responses(
        (status = 201, description = "Created; never cached.", body = CreateUserResponse),
        (status = 400, description = "Malformed request (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token is not an admin token (`insufficient_scope`).", body = ErrorBody),
        (status = 409, description = "A user with this id exists (`conflict`).", body = ErrorBody),
    )
)]
pub(crate) async fn create_user(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    StrictJson(request, _): StrictJson<CreateUserRequest>,
) -> Result<Response, ApiError> {
    let caller = admin(&issuer, &headers).await?;
    let response = issuer.create_user(&caller, request).await.map_err(admin_error)?;
    Ok((StatusCode::CREATED, no_store(), Json(response)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    after: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "issuer",
    summary = "List users",
    description = "A page of users in id order (admin).",
    params(("after" = Option<String>, Query, description = "The `next` cursor of the previous page."), ("limit" = Option<u32>, Query, description = "Page size (default 100, at most 1000).")),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "A page of users.", body = UserList),
        (status = 400, description = "Malformed request (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`), with `WWW-Authenticate: Bearer`.", body = ErrorBody),
        (status = 403, description = "The token is not an admin token (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(crate) async fn list_users(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = admin(&issuer, &headers).await?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let users = issuer
        .users(&caller, params.after.as_deref(), params.limit.unwrap_or(100))
        .await
        .map_err(admin_error)?;
    Ok(Json(users).into_response())
}
