//! The registry's HTTP API: `fn router(registry) -> axum::Router`.
//!
//! Errors are mapped to responses in one place ([`ApiError`]): an OAuth-style
//! `{"error", "error_description"}` body with the right status, `WWW-Authenticate` on 401,
//! and internal details logged but never sent. Bodies are limited to 64 KiB and parsed
//! strictly (JSON objects, no duplicate or unknown members).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aip_aat::ids::AgentId;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{
    CreateAccessTokenRequest, CreateRegistrationTokenRequest, ErrorBody, PublishRevocationsRequest,
    PublishRevocationsResponse, RegisterAgentRequest, RenewCertificateRequest, RotateKeyRequest, StatusRequest, WhoAmI,
};
use crate::metrics as m;
use crate::service::{Principal, Registry, RegistryError, StatusKind};
use crate::store::{AgentQuery, StoredEvent};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The API routes over `registry`.
pub fn router(registry: Arc<Registry>) -> Router {
    router_with(registry, Router::new())
}

/// The API routes over `registry`, plus `extra` (another component's routes, such as the
/// token issuer's, served on the same listener). Errors, limits and metrics apply to all.
pub fn router_with(registry: Arc<Registry>, extra: Router) -> Router {
    // Install the metrics recorder now, so that traffic before the first scrape counts.
    let _ = m::handle();
    let own = Router::new()
        .route("/v1/agents", post(register).get(list_agents))
        .route("/v1/agents/{id}", get(agent).delete(revoke_agent))
        .route("/v1/agents/{id}/rotate-key", post(rotate_key))
        .route("/v1/agents/{id}/certificate", post(renew_certificate))
        .route("/v1/agents/{id}/suspend", post(suspend))
        .route("/v1/agents/{id}/reactivate", post(reactivate))
        .route("/v1/agents/{id}/revoke", post(revoke_agent))
        .route("/v1/registration-tokens", post(create_registration_token))
        .route("/v1/access-tokens", post(create_access_token))
        .route("/v1/jwks", get(jwks))
        .route("/v1/crl", get(crl_der))
        .route("/v1/crl.pem", get(crl_pem))
        .route("/v1/revocations", get(revocations).post(publish_revocations))
        .route("/v1/whoami", get(whoami))
        .route("/v1/revocations.jws", get(revocations_jws))
        .route("/v1/revocations/stream", get(revocation_stream))
        .route("/.well-known/aip-configuration", get(discovery))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(registry);
    own.merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(track))
}

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
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidRequest(d) => Self::bad_request(d),
            RegistryError::Unauthorized(d) => invalid_token(d),
            RegistryError::InvalidProof(d) => Self {
                challenge: Some(r#"AIP-PoP realm="aip", error="invalid_proof""#),
                ..Self::new(StatusCode::UNAUTHORIZED, "invalid_proof", d)
            },
            RegistryError::Forbidden(d) => Self::new(StatusCode::FORBIDDEN, "insufficient_scope", d),
            RegistryError::AgentNotFound => Self::new(StatusCode::NOT_FOUND, "agent_not_found", "no agent has this id"),
            RegistryError::KeyAlreadyRegistered => Self::new(
                StatusCode::CONFLICT,
                "key_already_registered",
                "this public key is already registered",
            ),
            RegistryError::Conflict(d) => Self::new(StatusCode::CONFLICT, "conflict", d),
            e @ RegistryError::Internal(_) => {
                tracing::error!(error = ?e, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
        }
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

type ApiResult<T> = Result<T, ApiError>;

/// The bearer token of `Authorization: Bearer`, or the 401 to answer without one.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || ApiError {
        challenge: Some(r#"Bearer realm="aip""#),
        ..ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "an Authorization: Bearer token is required",
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(missing)
}

/// A 401 with a `WWW-Authenticate` challenge for an invalid bearer token.
pub fn invalid_token(description: impl Into<String>) -> ApiError {
    ApiError {
        challenge: Some(r#"Bearer realm="aip", error="invalid_token""#),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
    }
}

/// The caller, from `Authorization: Bearer`.
struct Caller(Principal);

impl FromRequestParts<Arc<Registry>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, registry: &Arc<Registry>) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers)?;
        Ok(Self(registry.authenticate(token).await?))
    }
}

impl Caller {
    fn reader(self) -> ApiResult<Principal> {
        if self.0.can_read() {
            Ok(self.0)
        } else {
            Err(RegistryError::Forbidden("this token cannot read registry data").into())
        }
    }
}

/// A strictly parsed JSON body, with the value it was parsed from (which proofs cover).
pub struct StrictJson<T>(pub T, pub Value);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (body, bytes) = read_body(req, state).await?;
        if !body {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        parse_body(&bytes).map(|(t, v)| Self(t, v))
    }
}

/// An optional strict JSON body: an empty body means the type's default.
struct OptionalJson<T>(T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (body, bytes) = read_body(req, state).await?;
        if !body {
            return Ok(Self(T::default()));
        }
        parse_body(&bytes).map(|(t, _)| Self(t))
    }
}

/// Reads the body (within the size limit); a non-empty body must be declared JSON.
/// Returns whether there was one.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), ApiError> {
    let declared_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request("the body could not be read")
        }
    })?;
    if bytes.is_empty() {
        return Ok((false, bytes));
    }
    if !declared_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    Ok((true, bytes))
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<(T, Value)> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let value = aip_aat::jcs::parse_strict(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let parsed = aip_aat::json::object(&value).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    Ok((parsed, value))
}

fn agent_id(id: &str) -> ApiResult<AgentId> {
    id.parse().map_err(|e| ApiError::bad_request(format!("{e}")))
}

async fn register(
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
struct ListParams {
    status: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_agents(
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

async fn agent(State(registry): State<Arc<Registry>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.reader()?;
    Ok(Json(registry.agent(&agent_id(&id)?).await?).into_response())
}

async fn rotate_key(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<String>,
    StrictJson(request, body): StrictJson<RotateKeyRequest>,
) -> ApiResult<Response> {
    let id = agent_id(&id)?;
    Ok(Json(registry.rotate_key(&id, request, &body).await?).into_response())
}

async fn renew_certificate(
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

async fn suspend(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Suspend, &request).await
}

async fn reactivate(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Reactivate, &request).await
}

async fn revoke_agent(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<StatusRequest>,
) -> ApiResult<Response> {
    status_change(&registry, &principal, &id, StatusKind::Revoke, &request).await
}

async fn create_registration_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<CreateRegistrationTokenRequest>,
) -> ApiResult<Response> {
    let token = registry.create_registration_token(&principal, &request).await?;
    Ok((StatusCode::CREATED, no_store(), Json(token)).into_response())
}

async fn create_access_token(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<CreateAccessTokenRequest>,
) -> ApiResult<Response> {
    let token = registry.create_access_token(&principal, &request).await?;
    Ok((StatusCode::CREATED, no_store(), Json(token)).into_response())
}

async fn publish_revocations(
    State(registry): State<Arc<Registry>>,
    Caller(principal): Caller,
    StrictJson(request, _): StrictJson<PublishRevocationsRequest>,
) -> ApiResult<Response> {
    let revocation_version = registry.publish_revocations_request(&principal, request).await?;
    Ok(Json(PublishRevocationsResponse { revocation_version }).into_response())
}

async fn whoami(Caller(principal): Caller) -> ApiResult<Response> {
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

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

async fn jwks(State(registry): State<Arc<Registry>>) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(registry.jwks())).into_response()
}

async fn crl_der(State(registry): State<Arc<Registry>>) -> ApiResult<Response> {
    let crl = registry.crl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-crl"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        crl.der.clone(),
    )
        .into_response())
}

async fn crl_pem(State(registry): State<Arc<Registry>>) -> ApiResult<Response> {
    let crl = registry.crl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        pem("X509 CRL", &crl.der),
    )
        .into_response())
}

/// PEM armour (RFC 7468).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .map(str::trim)
                .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
        })
}

async fn revocations(State(registry): State<Arc<Registry>>, caller: Caller, headers: HeaderMap) -> ApiResult<Response> {
    caller.reader()?;
    let list = registry.published_list().await?;
    let etag = HeaderValue::from_str(&list.etag).map_err(|_| ApiError::bad_request("etag"))?;
    if if_none_match(&headers, &list.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        list.json.clone(),
    )
        .into_response())
}

async fn revocations_jws(State(registry): State<Arc<Registry>>, caller: Caller) -> ApiResult<Response> {
    caller.reader()?;
    let list = registry.published_list().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/jose"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        list.jws.clone(),
    )
        .into_response())
}

struct StreamState {
    registry: Arc<Registry>,
    live: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>,
    pending: std::collections::VecDeque<Arc<StoredEvent>>,
    last: u64,
    catch_up: bool,
    _subscriber: SubscriberGauge,
}

struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!(m::EVENT_SUBSCRIBERS).increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::EVENT_SUBSCRIBERS).decrement(1.0);
    }
}

fn sse_event(event: &StoredEvent) -> Event {
    let at = time::OffsetDateTime::from_unix_timestamp(event.at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    let data = serde_json::json!({"version": event.version, "kind": event.kind, "subject": event.subject, "at": at, "data": event.data});
    Event::default()
        .id(event.version.to_string())
        .event(event.kind.clone())
        .data(data.to_string())
}

/// Events after `start`: first from the database, then live, each exactly once and in order.
fn event_stream(registry: Arc<Registry>, start: u64) -> impl Stream<Item = Result<Event, Infallible>> {
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = registry.subscribe();
    let state = StreamState {
        registry,
        live,
        pending: Default::default(),
        last: start,
        catch_up: true,
        _subscriber: SubscriberGauge::new(),
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                if event.version <= s.last {
                    continue;
                }
                if event.version > s.last + 1 {
                    // A gap (missed while lagging): fill it from the database first.
                    s.pending.clear();
                    s.catch_up = true;
                    continue;
                }
                s.last = event.version;
                return Some((Ok(sse_event(&event)), s));
            }
            if s.catch_up {
                match s.registry.events_after(s.last, 500).await {
                    Ok(events) => {
                        s.catch_up = events.len() == 500;
                        s.pending.extend(events.into_iter().map(Arc::new));
                        continue;
                    }
                    // End the stream; the client reconnects with Last-Event-ID.
                    Err(_) => return None,
                }
            }
            match s.live.recv().await {
                Ok(event) => s.pending.push_back(event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => s.catch_up = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn revocation_stream(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.reader()?;
    let start = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id (a list version)"))?,
        None => registry.revocation_version().await?,
    };
    let stream = event_stream(registry, start);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

async fn discovery(State(registry): State<Arc<Registry>>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(registry.discovery()),
    )
        .into_response()
}

async fn health(State(registry): State<Arc<Registry>>) -> Response {
    match registry.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = ?e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics_text() -> Response {
    match m::handle() {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "this endpoint does not accept that method",
    )
}

/// Counts and times every request by method, route template and status.
async fn track(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let method = if method == Method::GET || method == Method::POST || method == Method::DELETE {
        method.as_str().to_owned()
    } else {
        "OTHER".into()
    };
    metrics::counter!(m::HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(m::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}
