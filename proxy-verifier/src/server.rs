//! The proxy's optional HTTP server (`aip-proxy --listen ADDR`, spec 6 and IETF draft 6.5).
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `GET /health` | none | `{"status":"ok","policy","policy_hash","mode","uptime_seconds"}` |
//! | `GET /metrics` | none | Prometheus text (spec 6.4 names) |
//! | `POST /v1/validate` | admin bearer | evaluate a tool call with the policy in force (spec 6.2) |
//! | `GET /v1/hitl` | admin bearer | the pending holds |
//! | `POST /v1/hitl/{hold_id}/approve`, `/deny` | admin bearer | answer a hold (200, 404, 409) |
//!
//! The admin token comes from `AIP_PROXY_TOKEN`, or from a token file that is created with a
//! 32-byte random secret when missing ([`AdminToken::load`]); it is never printed.
//! Only its SHA-256 digest is kept, and presented tokens are compared digest to digest in
//! constant time. The token is never logged.
//!
//! Errors are JSON `{"error","error_description"}`; a missing or wrong token gets 401 with
//! `WWW-Authenticate: Bearer`. Bodies are limited to [`MAX_BODY_BYTES`] and parsed strictly.
//!
//! The server has no TLS, so [`spawn`] only listens on loopback addresses; for remote access put
//! a TLS-terminating reverse proxy in front of it.
//!
//! # `/v1/validate` and rate limits
//!
//! Validation runs the same evaluation as a relayed `tools/call` (spec 4.3 through
//! [`Engine::check_tool_call`], then the mode of 4.4 through [`Engine::resolve`]), against the
//! same engine, so **a validation consumes a token from the tool's rate-limit bucket**, shared
//! with the relay. A validation is taken to announce a call about to be made; counting it means
//! the endpoint cannot be used to learn a different answer than the relay would give. The
//! endpoint needs the admin token, so nobody else can drain a bucket through it.
//!
//! Every answer is `200` with `decision` `allow`, `block` or `ask` (spec 6.2.2): the request was
//! evaluated, and the decision is the result. Monitor mode answers `allow` with the violations it
//! would have refused for. DLP request scanning is not part of the answer yet, nor is an AAT
//! (`aat_status` is reserved in [`ValidateResponse`]).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::engine::{Decision, Engine, Grant, SchemaBook};
use crate::hitl::{Hitl, HitlError};
use crate::identity::{Check, Identity, Presented, grant_of};
pub use crate::metrics::{
    METRIC_DECISIONS, METRIC_DURATION, METRIC_POLICY_HASH, METRIC_REQUESTS, METRIC_VIOLATIONS, decision_label,
    install_metrics, record_decision, record_policy_hash, violation_type,
};
use crate::state::PolicyHandle;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The environment variable that supplies the admin token instead of a generated one.
pub const TOKEN_ENV: &str = "AIP_PROXY_TOKEN";
/// Shortest admin token accepted from the environment.
pub const MIN_TOKEN_LEN: usize = 32;
/// How long [`ServerHandle::shutdown`] lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The admin bearer token, kept only as its SHA-256 digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why an admin token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// The secret is too short or holds characters that cannot travel in a header.
    #[error("the admin token must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces")]
    Weak,
    /// No random secret could be made.
    #[error("no random admin token could be made: {0}")]
    Random(getrandom::Error),
}

impl AdminToken {
    /// A fresh random token: 32 bytes, hex encoded. Returns the token and the secret, which the
    /// caller shows once (it is not kept).
    pub fn generate() -> Result<(Self, String), AdminTokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(AdminTokenError::Random)?;
        let secret = hex::encode(bytes);
        Ok((Self::digest_of(&secret), secret))
    }

    /// A token with this secret: at least [`MIN_TOKEN_LEN`] printable ASCII characters, no
    /// spaces.
    pub fn from_secret(secret: &str) -> Result<Self, AdminTokenError> {
        if secret.len() < MIN_TOKEN_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminTokenError::Weak);
        }
        Ok(Self::digest_of(secret))
    }

    /// The token from `AIP_PROXY_TOKEN`, `None` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Self>, AdminTokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(secret) if !secret.is_empty() => Self::from_secret(&secret).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(AdminTokenError::Weak),
        }
    }

    /// The token in force: `AIP_PROXY_TOKEN` when set, else the secret in `file`, which is
    /// created (mode 0600, never overwritten) with a fresh random secret when it does not exist.
    pub fn load(file: Option<&std::path::Path>) -> io::Result<Self> {
        let invalid = |e: AdminTokenError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        if let Some(token) = Self::from_env().map_err(invalid)? {
            return Ok(token);
        }
        let Some(file) = file else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the HTTP API needs a token: set {TOKEN_ENV} or pass --token-file FILE"),
            ));
        };
        match std::fs::read_to_string(file) {
            Ok(secret) => return Self::from_secret(secret.trim()).map_err(invalid),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (token, secret) = Self::generate().map_err(invalid)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)?;
        io::Write::write_all(&mut out, secret.as_bytes())?;
        out.sync_all()?;
        Ok(token)
    }

    /// Whether `presented` is the secret, compared digest to digest in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let digest = Sha256::digest(presented.as_bytes());
        bool::from(digest.as_slice().ct_eq(&self.digest))
    }

    fn digest_of(secret: &str) -> Self {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(Sha256::digest(secret.as_bytes()).as_slice());
        Self { digest }
    }
}

/// What the server reads and answers with.
#[derive(Clone, Debug)]
pub struct ServerState {
    policy: Arc<PolicyHandle>,
    schemas: Arc<SchemaBook>,
    hitl: Arc<Hitl>,
    token: AdminToken,
    metrics: Option<PrometheusHandle>,
    started: Instant,
    identity: Option<Arc<Identity>>,
}

impl ServerState {
    /// The state over the relay's live policy, schema book and hold queue. `metrics` is the
    /// handle from [`install_metrics`]; without it `/metrics` answers 503.
    pub fn new(
        policy: Arc<PolicyHandle>,
        schemas: Arc<SchemaBook>,
        hitl: Arc<Hitl>,
        token: AdminToken,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Self {
            policy,
            schemas,
            hitl,
            token,
            metrics,
            started: Instant::now(),
            identity: None,
        }
    }

    /// Validations also check the AAT (`X-AIP-AAT`, or `aat.header_name`) and its proof
    /// (`X-AIP-Proof`) with `identity`.
    #[must_use]
    pub fn with_identity(mut self, identity: Option<Arc<Identity>>) -> Self {
        self.identity = identity;
        self
    }
}

/// The header carrying the per-call proof over HTTP (DESIGN §7).
pub const PROOF_HEADER: &str = "X-AIP-Proof";

/// The routes over `state`.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/validate", post(validate))
        .route("/v1/hitl", get(list_holds))
        .route("/v1/hitl/{hold_id}/approve", post(approve))
        .route("/v1/hitl/{hold_id}/deny", post(deny))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets open ones finish (for at most a few seconds), and
    /// waits for the server thread. Dropping the handle stops the server without waiting.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the HTTP server thread failed");
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` now (so that a bad or busy address is the caller's error) and serves
/// [`router`]`(state)` on a thread of its own with a single-threaded tokio runtime. Refuses a
/// non-loopback address: this server has no TLS.
pub fn spawn(addr: SocketAddr, state: ServerState) -> io::Result<ServerHandle> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to listen on {addr}: the proxy's HTTP server has no TLS, so it listens only on a \
                 loopback address (127.0.0.1 or [::1]); put a TLS-terminating reverse proxy in front for \
                 remote access"
            ),
        ));
    }
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let upkeep = state.metrics.clone();
    let app = router(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("aip-proxy-http".into())
        .spawn(move || runtime.block_on(serve(listener, app, stopped, upkeep)))?;
    tracing::info!(%local_addr, "HTTP server listening");
    Ok(ServerHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stopped: tokio::sync::oneshot::Receiver<()>,
    upkeep: Option<PrometheusHandle>,
) {
    if let Some(handle) = upkeep {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let (grace, graceful) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.await;
    });
    let mut task = tokio::spawn(server.into_future());
    tokio::select! {
        result = &mut task => {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server stopped"),
                Err(e) => tracing::error!(error = %e, "the HTTP server failed"),
            }
            return;
        }
        _ = stopped => {}
    }
    let _ = grace.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
        tracing::warn!("open HTTP connections did not finish in time; closing them");
        task.abort();
    }
}

/// An error response: `{"error","error_description"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            challenge: None,
        }
    }

    fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn unauthorized(challenge: &'static str, description: &str) -> Self {
        Self {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// Proof that the request carried the admin token.
struct Admin;

impl FromRequestParts<ServerState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ServerState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(presented) = presented else {
            return Err(ApiError::unauthorized(
                r#"Bearer realm="aip-proxy""#,
                "an Authorization: Bearer token is required",
            ));
        };
        if state.token.verify(presented) {
            Ok(Self)
        } else {
            tracing::warn!(path = %parts.uri.path(), "request with a wrong admin token refused");
            Err(ApiError::unauthorized(
                r#"Bearer realm="aip-proxy", error="invalid_token""#,
                "the bearer token is not valid",
            ))
        }
    }
}

async fn health(State(state): State<ServerState>) -> Json<Value> {
    let engine = state.policy.current();
    let policy = engine.policy();
    Json(json!({
        "status": "ok",
        "policy": policy.name(),
        "policy_hash": policy.hash(),
        "mode": policy.mode().as_str(),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

async fn metrics_text(State(state): State<ServerState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "no metrics recorder is installed in this process",
        ));
    };
    {
        let engine = state.policy.current();
        record_policy_hash(engine.policy().name(), engine.policy().hash());
    }
    let text = handle.render();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The body of `POST /v1/validate` (spec 6.2.1).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The tool, as the client names it.
    pub tool: String,
    /// Its arguments.
    pub arguments: Map<String, Value>,
}

/// The answer of `POST /v1/validate` (spec 6.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ValidateResponse {
    /// `allow`, `block` or `ask`.
    pub decision: String,
    /// Why, in a sentence.
    pub reason: String,
    /// The violations found (also under `allow` in monitor mode).
    pub violations: Vec<Violation>,
    /// The AAT's status, when the proxy validates AATs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_status: Option<AatStatus>,
}

/// One violation in a [`ValidateResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Violation {
    /// The kind, as [`violation_type`] names it.
    #[serde(rename = "type")]
    pub kind: String,
    /// The argument at fault, or `tool`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// `aat_status` of spec 6.2.2 (v1alpha3).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct AatStatus {
    /// Whether the AAT verified.
    pub valid: bool,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The user the agent acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Whether the tool was checked against the AAT's capabilities.
    pub capabilities_checked: bool,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Why the AAT does not hold: the spec 11.2 string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_error: Option<String>,
    /// Why, in a sentence, when not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AatStatus {
    /// The status of a check; `capabilities_checked` when the tool was held against the AAT's
    /// capabilities.
    pub fn of(check: &Check, capabilities_checked: bool) -> Self {
        let from = |aat: &aip_aat::token::VerifiedAat| {
            let claims = aat.claims();
            (
                Some(claims.agent.id.to_string()),
                claims.user_binding.as_ref().map(|b| b.user_id.clone()),
                Some(claims.iss.clone()),
            )
        };
        match check {
            Check::Anonymous => Self {
                valid: false,
                agent_id: None,
                user_id: None,
                capabilities_checked: false,
                issuer: None,
                aat_error: None,
                reason: Some("no AAT presented".into()),
            },
            Check::Verified(v) => {
                let (agent_id, user_id, issuer) = from(&v.aat);
                Self {
                    valid: true,
                    agent_id,
                    user_id,
                    capabilities_checked,
                    issuer,
                    aat_error: None,
                    reason: None,
                }
            }
            Check::Rejected(r) => {
                let (agent_id, user_id, issuer) = r.aat.as_deref().map_or((None, None, None), from);
                Self {
                    valid: false,
                    agent_id,
                    user_id,
                    capabilities_checked: false,
                    issuer,
                    aat_error: r.refusal.aat_error().map(str::to_owned),
                    reason: Some(r.refusal.reason()),
                }
            }
        }
    }
}

/// Evaluates a call as the relay would and phrases the answer of spec 6.2.2.
pub fn evaluate(engine: &Engine, schemas: &SchemaBook, request: &ValidateRequest) -> (ValidateResponse, Decision) {
    evaluate_for(engine, schemas, request, None)
}

/// As [`evaluate`] for a caller whose verified AAT brings `grant` (spec 4.3 step 0c).
pub fn evaluate_for(
    engine: &Engine,
    schemas: &SchemaBook,
    request: &ValidateRequest,
    grant: Option<&Grant<'_>>,
) -> (ValidateResponse, Decision) {
    let verdict = engine.check_tool_call(&request.tool, Some(&request.arguments), grant, schemas, Instant::now());
    let resolution = engine.resolve(verdict);
    let denial = resolution.denial.as_ref();
    let violations: Vec<Violation> = denial
        .iter()
        .map(|d| Violation {
            kind: violation_type(d).to_owned(),
            field: d.failed_arg.clone().unwrap_or_else(|| "tool".to_owned()),
            message: d.reason.clone(),
        })
        .collect();
    let (decision, reason) = match (resolution.decision, denial) {
        (Decision::Allow, _) => ("allow", "Tool call allowed by policy".to_owned()),
        (Decision::Ask, _) => ("ask", "Tool call requires human approval (action: ask)".to_owned()),
        (Decision::AllowMonitor, Some(d)) => (
            "allow",
            format!(
                "Monitor mode: the violation is logged and the call forwarded ({})",
                d.reason
            ),
        ),
        (Decision::AllowMonitor, None) => ("allow", "Monitor mode: the call is forwarded".to_owned()),
        (Decision::Block | Decision::RateLimited, Some(d)) => ("block", d.reason.clone()),
        (Decision::Block | Decision::RateLimited, None) => ("block", "Tool call refused by policy".to_owned()),
    };
    let response = ValidateResponse {
        decision: decision.to_owned(),
        reason,
        violations,
        aat_status: None,
    };
    (response, resolution.decision)
}

async fn validate(
    _admin: Admin,
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ValidateResponse>, ApiError> {
    let started = Instant::now();
    let json_declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_declared {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let body = body.map_err(|rejection| {
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
    let request: ValidateRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"tool\": string, \"arguments\": object}} and nothing else: {e}"
        ))
    })?;
    let engine = state.policy.current();
    let (response, decision) = match &state.identity {
        None => evaluate(&engine, &state.schemas, &request),
        Some(identity) => validate_with_aat(identity, &engine, &state.schemas, &request, &headers)?,
    };
    record_decision(
        decision_label(decision),
        response.violations.first().map(|v| v.kind.as_str()),
        started.elapsed(),
    );
    Ok(Json(response))
}

/// `/v1/validate` with the AAT and proof headers (spec 6.2, DESIGN §7).
fn validate_with_aat(
    identity: &Identity,
    engine: &Engine,
    schemas: &SchemaBook,
    request: &ValidateRequest,
    headers: &HeaderMap,
) -> Result<(ValidateResponse, Decision), ApiError> {
    let header = |name: &str| -> Result<Option<&str>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("the {name} header is not visible ASCII"))),
        }
    };
    let presented = Presented {
        aat: header(&identity.settings().header_name)?,
        proof: header(PROOF_HEADER)?,
    };
    let arguments = Value::Object(request.arguments.clone());
    let call = aip_aat::proof::Call::tools_call(&request.tool, Some(&arguments));
    let check = identity.check(presented, &call);
    match &check {
        Check::Rejected(r) if r.enforced => {
            let (code, _, _) = r.refusal.error(Some(&request.tool));
            let response = ValidateResponse {
                decision: "block".into(),
                reason: r.refusal.reason(),
                violations: vec![Violation {
                    kind: if code == -32017 {
                        "aat_capability_denied"
                    } else {
                        "aat_invalid"
                    }
                    .into(),
                    field: "aat".into(),
                    message: r.refusal.reason(),
                }],
                aat_status: Some(AatStatus::of(&check, false)),
            };
            Ok((response, Decision::Block))
        }
        Check::Verified(v) => {
            let grant = grant_of(&v.aat, identity);
            let (mut response, decision) = evaluate_for(engine, schemas, request, Some(&grant));
            response.aat_status = Some(AatStatus::of(
                &check,
                grant.mode != crate::policy::CapabilitiesMode::PolicyOnly,
            ));
            Ok((response, decision))
        }
        Check::Anonymous | Check::Rejected(_) => {
            let (mut response, decision) = evaluate(engine, schemas, request);
            response.aat_status = Some(AatStatus::of(&check, false));
            Ok((response, decision))
        }
    }
}

async fn list_holds(_admin: Admin, State(state): State<ServerState>) -> Json<Value> {
    let settings = state.hitl.settings();
    Json(json!({
        "approvers": settings.approvers,
        "timeout_seconds": settings.timeout.as_secs(),
        "on_timeout": if settings.allow_on_timeout { "allow" } else { "deny" },
        "holds": state.hitl.pending(),
    }))
}

async fn approve(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    answer(state.hitl.approve(&id), &id, "approved")
}

async fn deny(
    _admin: Admin,
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    answer(state.hitl.deny(&id), &id, "denied")
}

fn answer(result: Result<(), HitlError>, id: &str, outcome: &str) -> Result<Json<Value>, ApiError> {
    match result {
        Ok(()) => Ok(Json(json!({ "hold_id": id, "outcome": outcome }))),
        Err(HitlError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "hold_not_found",
            "no pending hold has this id",
        )),
        Err(e @ HitlError::AlreadyResolved { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "hold_already_resolved",
            e.to_string(),
        )),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method",
    )
}
