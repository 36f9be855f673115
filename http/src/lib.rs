//! The HTTP plumbing the authority's services (registry, token issuer) and the proxy's API
//! share.
//!
//! - [`ApiError`]: the one place an error becomes a response — an OAuth-style
//!   `{"error", "error_description"}` body ([`aip_api::ErrorBody`]) with the right status and,
//!   on 401, a `WWW-Authenticate` challenge. Internal details are logged by the caller, never
//!   sent.
//! - [`StrictJson`] and [`OptionalJson`]: request bodies declared `application/json`, within
//!   the router's body limit, parsed strictly (an object, no duplicate or unknown members).
//! - [`bearer`], [`require_bearer`]: the token of `Authorization: Bearer`, and the 401 without one.
//! - [`no_store`], [`not_found`], [`method_not_allowed`]: what every service answers alike;
//!   [`refuse_oversized_bodies`]: the early `413` for a declared body past the limit.
//! - [`ClientAdmission`]: limits keyed by the client a request speaks for, which only its
//!   handler learns (the agent named in a token request).
//! - [`connections`]: how many connections a listener serves and how slow they may be.
//! - [`request_id`]: the id of every request, on its log span and in `X-Request-Id`;
//!   [`logs`]: how the long-running programs log (filter, text or JSON lines).
//! - [`metrics_upkeep`]: the recorders' histograms folded on a schedule.
//! - [`routes`]: routers that keep the table of their routes, which the OpenAPI descriptions
//!   are checked against.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connections;
pub mod logs;
pub mod metrics_upkeep;
pub mod request_id;
pub mod routes;

use aip_api::ErrorBody;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest request body the authority accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    challenge: Option<&'static str>,
}

impl ApiError {
    /// An error with this status, `error` code and description.
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            challenge: None,
        }
    }

    /// `400 invalid_request`.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// `401 invalid_token` with the `WWW-Authenticate` challenge `challenge`.
    pub fn unauthorized(challenge: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description).with_challenge(challenge)
    }

    /// `401 invalid_token` for a bearer token the authority does not accept, with the challenge
    /// that says so.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::unauthorized(r#"Bearer realm="aip", error="invalid_token""#, description)
    }

    /// The same error with a `WWW-Authenticate` challenge.
    #[must_use]
    pub fn with_challenge(self, challenge: &'static str) -> Self {
        Self {
            challenge: Some(challenge),
            ..self
        }
    }

    /// `500 server_error`, saying nothing of the cause (which the caller logs).
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error` code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            error_description: self.description,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, the token trimmed);
/// `None` when the header is missing, not visible ASCII, of another scheme, or empty.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The bearer token of the request (see [`bearer`]), or the authority's 401 asking for one.
pub fn require_bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    bearer(headers)
        .ok_or_else(|| ApiError::unauthorized(r#"Bearer realm="aip""#, "an Authorization: Bearer token is required"))
}

/// A request refused for going over a rate limit: `429 rate_limited` with `Retry-After` (whole
/// seconds, at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyRequests {
    /// How long until the client may try again.
    pub retry_after: std::time::Duration,
}

impl IntoResponse for TooManyRequests {
    fn into_response(self) -> Response {
        let wait = self.retry_after;
        let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

/// The check behind a [`ClientAdmission`].
type Admit = dyn Fn(&str) -> Result<(), TooManyRequests> + Send + Sync;

/// Admits or refuses a request by the client it speaks for (an agent id), for limits that
/// only the handler can apply because only it reads who the client is. A rate limiter puts one
/// in the request's extensions; handlers take it as an extractor and call
/// [`admit`](Self::admit) once they know the client. Without one, every client is admitted.
#[derive(Clone, Default)]
pub struct ClientAdmission(Option<std::sync::Arc<Admit>>);

impl ClientAdmission {
    /// An admission that asks `admit`.
    pub fn new(admit: impl Fn(&str) -> Result<(), TooManyRequests> + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(admit)))
    }

    /// Admits `client`, or says how long it must wait.
    pub fn admit(&self, client: &str) -> Result<(), TooManyRequests> {
        self.0.as_ref().map_or(Ok(()), |admit| admit(client))
    }
}

impl std::fmt::Debug for ClientAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientAdmission").field(&self.0.is_some()).finish()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAdmission {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned().unwrap_or_default())
    }
}

/// Headers that keep a response with a secret out of caches.
pub fn no_store() -> [(HeaderName, &'static str); 2] {
    [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")]
}

/// The answer for a path no route serves.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The answer for a method a route does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "this endpoint does not accept that method",
    )
}

/// Whether the request declares a JSON body (`Content-Type: application/json`, parameters
/// allowed).
pub fn declares_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `415` for a body that is not declared JSON.
pub fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request",
        "the body must be JSON (Content-Type: application/json)",
    )
}

/// `413` for a body past `limit` bytes.
pub fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        format!("the body is larger than {limit} bytes"),
    )
}

/// Middleware: `413` at once for a request whose `Content-Length` is past
/// [`MAX_BODY_BYTES`], before any of its body is read — so a client that sent
/// `Expect: 100-continue` is refused without sending the body.
pub async fn refuse_oversized_bodies(request: Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX)) {
        return body_too_large(MAX_BODY_BYTES).into_response();
    }
    next.run(request).await
}

/// The error for a body that could not be read: `413` past `limit` bytes, else `400`.
pub fn unreadable_body(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large(limit)
    } else {
        ApiError::bad_request("the body could not be read")
    }
}

/// A strictly parsed JSON body, with the value it was parsed from (which request proofs
/// cover). A missing body is refused.
#[derive(Debug)]
pub struct StrictJson<T>(pub T, pub Value);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        parse_body(&bytes).map(|(t, v)| Self(t, v))
    }
}

/// An optional strict JSON body: an empty body means the type's default.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        parse_body(&bytes).map(|(t, _)| Self(t))
    }
}

/// Reads the body within the router's limit ([`MAX_BODY_BYTES`] unless the router sets
/// another); a non-empty body must be declared JSON.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let declared_json = declares_json(req.headers());
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|rejection| unreadable_body(&rejection, MAX_BODY_BYTES))?;
    if !bytes.is_empty() && !declared_json {
        return Err(not_json());
    }
    Ok(bytes)
}

/// Parses a body strictly: UTF-8, one JSON object, no duplicate members, the type's own
/// members only.
fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Value), ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let value = aip_aat::jcs::parse_strict(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    // The top level is an object (checked above), and nested objects are read with
    // `aip_aat::json::object`; the path names a nested member at fault (`metadata: unknown
    // field ...`).
    let parsed = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid body: {e}"))
        } else {
            ApiError::bad_request(format!("invalid body: {path}: {e}"))
        }
    })?;
    Ok((parsed, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(authorization).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(&headers(b"Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers(b"bearer  abc ")), Some("abc"));
        for refused in [&b"Basic YWRtaW4="[..], b"Bearer ", b"Bearer", b"abc", b"Bearer \xff"] {
            assert_eq!(bearer(&headers(refused)), None, "{refused:?}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn the_authority_asks_for_a_bearer_token_and_names_a_refused_one() {
        assert_eq!(require_bearer(&headers(b"Bearer abc")).unwrap(), "abc");
        let missing = require_bearer(&HeaderMap::new()).unwrap_err().into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="aip""#);
        let refused = ApiError::invalid_token("expired").into_response();
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="aip", error="invalid_token""#
        );
    }

    #[tokio::test]
    async fn errors_have_the_oauth_shape() {
        let response = ApiError::unauthorized(r#"Bearer realm="aip""#, "no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="aip""#);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error, "invalid_token");
        assert_eq!(body.error_description, "no token");
    }
}
