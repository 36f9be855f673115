//! The OAuth 2.1 face over HTTP: `GET /.well-known/oauth-authorization-server` (RFC 8414),
//! `POST /oauth/token` (RFC 6749 §5 answers and errors, DPoP per RFC 9449),
//! `POST /oauth/introspect` (RFC 7662) and `POST /oauth/revoke` (RFC 7009). Requests are
//! form-encoded; answers JSON, never cached.

use std::sync::Arc;

use aip_api::ErrorBody;
use aip_api::oauth::{
    AuthorizationServerMetadata, IntrospectionResponse, OAuthErrorBody, OAuthErrorCode, OAuthTokenResponse,
};
use aip_http::routes::Routes;
use aip_http::{ApiError, ClientAdmission, no_store};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::errors::admin_error;
use crate::forms::{OAuthRevokeForm, OAuthTokenForm, OAuthTokenOnlyForm};
use crate::service::{INTROSPECT_PATH, Issuer, IssuerError, METADATA_PATH, OAuthForm, REVOKE_PATH, TOKEN_PATH};

/// The routes of the OAuth face.
pub(super) fn routes() -> Routes<Arc<Issuer>> {
    Routes::new()
        .get(METADATA_PATH, metadata)
        .post(TOKEN_PATH, token)
        .post(INTROSPECT_PATH, introspect)
        .post(REVOKE_PATH, revoke)
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

#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    operation_id = "oauth_metadata",
    tag = "oauth",
    summary = "Authorization server metadata",
    description = "RFC 8414 metadata of the issuer's OAuth 2.1 face. Cached for 5 minutes.",
    responses(
        (status = 200, description = "The metadata.", body = AuthorizationServerMetadata),
    )
)]
pub(crate) async fn metadata(State(issuer): State<Arc<Issuer>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(issuer.oauth_metadata()),
    )
        .into_response()
}

#[utoipa::path(
    post,
    path = "/oauth/token",
    operation_id = "oauth_token",
    tag = "oauth",
    summary = "OAuth token endpoint",
    description = "RFC 6749 token endpoint: `client_credentials`, `urn:ietf:params:oauth:grant-type:jwt-bearer` (an ID-JAG), `authorization_code` (PKCE S256) and `refresh_token`, each with `private_key_jwt` client authentication by the agent's key (no `Authorization` header). With a `DPoP` proof by the agent's key the AAT is `token_type: DPoP`, else `Bearer`.",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449) by the agent's key; at most one.")),
    request_body(content = OAuthTokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The AAT; never cached.", body = OAuthTokenResponse),
        (status = 400, description = "An RFC 6749 §5.2 error: `invalid_request`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, `invalid_target`, `invalid_dpop_proof`.", body = OAuthErrorBody),
        (status = 401, description = "Client authentication failed (`invalid_client`), with `WWW-Authenticate: Bearer`.", body = OAuthErrorBody),
        (status = 500, description = "Something failed on the server's side (`server_error`).", body = OAuthErrorBody),
    )
)]
pub(crate) async fn token(
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

#[utoipa::path(
    post,
    path = "/oauth/introspect",
    operation_id = "oauth_introspect",
    tag = "oauth",
    summary = "Token introspection",
    description = "RFC 7662 introspection of an AAT, reflecting revocation (admin or reader token).",
    request_body(content = OAuthTokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    security(("accessToken" = [])),
    responses(
        (status = 200, description = "`{\"active\": false}`, or `active: true` with the AAT's claims; never cached.", body = IntrospectionResponse),
        (status = 400, description = "No `token`, or a body that is not form-encoded (`invalid_request`).", body = OAuthErrorBody),
        (status = 401, description = "No valid bearer token (`invalid_token`).", body = ErrorBody),
        (status = 403, description = "The token may not introspect (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(crate) async fn introspect(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
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

#[utoipa::path(
    post,
    path = "/oauth/revoke",
    operation_id = "oauth_revoke",
    tag = "oauth",
    summary = "Token revocation",
    description = "RFC 7009 revocation: an agent revokes its own AAT or refresh token, authenticated with `private_key_jwt` in the form; an admin bearer token may revoke any.",
    request_body(content = OAuthRevokeForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("accessToken" = [])),
    responses(
        (status = 200, description = "Revoked, or not a token of this issuer (RFC 7009 §2.2); no body."),
        (status = 400, description = "An RFC 7009 / RFC 6749 §5.2 error (`invalid_request`, `unsupported_token_type`).", body = OAuthErrorBody),
        (status = 401, description = "Client authentication failed (`invalid_client`), or an invalid bearer token.", body = OAuthErrorBody),
        (status = 403, description = "A bearer token that is not an admin token (`insufficient_scope`).", body = ErrorBody),
    )
)]
pub(crate) async fn revoke(
    State(issuer): State<Arc<Issuer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
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
