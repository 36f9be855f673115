//! The issuer's HTTP API: [`routes`] (to mount beside the registry's, as `aip-ca serve` does)
//! and [`router`] (a complete router for an issuer running on its own).
//!
//! `POST /v1/challenge`, `POST /v1/token` (errors per spec 9.4.2, with `error_details` when
//! useful), and the admin endpoints `POST /v1/revoke`, `POST /v1/users`, `GET /v1/users`.
//! Bodies are parsed strictly, like the registry's; token responses are never cached. The
//! OAuth 2.1 face (RFC 8414 metadata, `/oauth/token`, introspection, revocation) is in
//! [`oauth`].

mod errors;
mod oauth;

use errors::admin_error;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use aip_api::issuer::{
    ChallengeRequest, CreateUserRequest, RevokeRequest, TokenErrorCode, TokenErrorResponse, TokenRequest,
};
use aip_http::{ApiError, ClientAdmission, StrictJson, no_store};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::directory::Caller;
use crate::service::{Issuer, IssuerError};

/// The issuer's routes, to merge into another router (no fallback, no limits).
pub fn routes(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/v1/challenge", post(challenge))
        .route("/v1/token", post(token))
        .route("/v1/revoke", post(revoke))
        .route("/v1/users", post(create_user).get(list_users))
        .with_state(issuer.clone())
        .merge(oauth::routes(issuer.clone()))
        .merge(crate::authorize::routes(issuer))
}

/// A complete router for an issuer served on its own.
pub fn router(issuer: Arc<Issuer>) -> Router {
    routes(issuer)
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
struct Peer(Option<IpAddr>);

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

async fn challenge(
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

async fn token(
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

async fn revoke(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    StrictJson(request, _): StrictJson<RevokeRequest>,
) -> Result<Response, ApiError> {
    let caller = admin(&issuer, &headers).await?;
    let response = issuer.revoke(&caller, request).await.map_err(admin_error)?;
    Ok(Json(response).into_response())
}

async fn create_user(
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
struct ListParams {
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_users(
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
