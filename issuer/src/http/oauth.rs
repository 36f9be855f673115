//! The OAuth 2.1 face over HTTP: `GET /.well-known/oauth-authorization-server` (RFC 8414),
//! `POST /oauth/token` (RFC 6749 §5 answers and errors, DPoP per RFC 9449),
//! `POST /oauth/introspect` (RFC 7662) and `POST /oauth/revoke` (RFC 7009). Requests are
//! form-encoded; answers JSON, never cached.

use std::sync::Arc;

use aip_api::oauth::{OAuthErrorBody, OAuthErrorCode};
use aip_http::{ApiError, ClientAdmission, no_store};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::errors::admin_error;
use crate::service::{INTROSPECT_PATH, Issuer, IssuerError, METADATA_PATH, OAuthForm, REVOKE_PATH, TOKEN_PATH};

/// The routes of the OAuth face.
pub(super) fn routes(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route(METADATA_PATH, get(metadata))
        .route(TOKEN_PATH, post(token))
        .route(INTROSPECT_PATH, post(introspect))
        .route(REVOKE_PATH, post(revoke))
        .with_state(issuer)
}

/// An error of the OAuth endpoints, answered with the RFC 6749 §5.2 body.
struct OAuthError(IssuerError);

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        if let IssuerError::Internal(e) = &self.0 {
            tracing::error!(error = ?e, "OAuth request failed");
        }
        let (code, description) = self.0.oauth_error();
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = OAuthErrorBody {
            error: code,
            error_description: description,
        };
        let mut response = (status, no_store(), Json(body)).into_response();
        if code == OAuthErrorCode::InvalidClient {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="aip", error="invalid_client""#),
            );
        }
        response
    }
}

fn oauth_error(code: OAuthErrorCode, description: &str) -> Response {
    OAuthError(IssuerError::oauth(code, description)).into_response()
}

/// The form of a request declared `application/x-www-form-urlencoded`.
fn form(headers: &HeaderMap, body: &Bytes) -> Result<OAuthForm, OAuthError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !declared {
        return Err(OAuthError(IssuerError::oauth(
            OAuthErrorCode::InvalidRequest,
            "the request must be application/x-www-form-urlencoded",
        )));
    }
    OAuthForm::parse(body).map_err(OAuthError)
}

async fn metadata(State(issuer): State<Arc<Issuer>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(issuer.oauth_metadata()),
    )
        .into_response()
}

async fn token(
    State(issuer): State<Arc<Issuer>>,
    admission: ClientAdmission,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let form = form(&headers, &body).map_err(IntoResponse::into_response)?;
    if let Some(client) = form.claimed_client() {
        admission.admit(&client).map_err(IntoResponse::into_response)?;
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(oauth_error(
            OAuthErrorCode::InvalidClient,
            "only private_key_jwt client authentication is accepted; send no Authorization header",
        ));
    }
    let mut proofs = headers.get_all("dpop").iter();
    let dpop = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(proof), None) => Some(
            proof
                .to_str()
                .map_err(|_| oauth_error(OAuthErrorCode::InvalidDpopProof, "the DPoP header is not visible ASCII"))?,
        ),
        (Some(_), Some(_)) => {
            return Err(oauth_error(OAuthErrorCode::InvalidDpopProof, "send one DPoP header"));
        }
    };
    let response = issuer
        .oauth_token(&form, dpop)
        .await
        .map_err(|e| OAuthError(e).into_response())?;
    Ok((no_store(), Json(response)).into_response())
}

async fn introspect(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    let token = aip_http::require_bearer(&headers).map_err(IntoResponse::into_response)?;
    let caller = issuer
        .authenticate(token)
        .await
        .map_err(|e| admin_error(e).into_response())?;
    let form = form(&headers, &body).map_err(IntoResponse::into_response)?;
    let Some(token) = form.get("token") else {
        return Err(oauth_error(OAuthErrorCode::InvalidRequest, "token is required"));
    };
    let response = issuer
        .introspect(&caller, token)
        .await
        .map_err(|e| OAuthError(e).into_response())?;
    Ok((no_store(), Json(response)).into_response())
}

async fn revoke(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    let form = form(&headers, &body).map_err(IntoResponse::into_response)?;
    let admin = match aip_http::bearer(&headers) {
        Some(token) => {
            let caller = issuer
                .authenticate(token)
                .await
                .map_err(|e| admin_error(e).into_response())?;
            if !caller.admin {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    "revoking another client's token needs an admin token",
                )
                .into_response());
            }
            Some(caller)
        }
        None => None,
    };
    issuer
        .oauth_revoke(&form, admin.as_ref())
        .await
        .map_err(|e| OAuthError(e).into_response())?;
    Ok((no_store(), StatusCode::OK).into_response())
}
