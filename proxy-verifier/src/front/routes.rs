//! The front door's HTTP interface: MCP at `/mcp` (POST a message, GET the server's stream,
//! DELETE the session) and the protected resource metadata, behind the `Origin` check.
//!
//! A POST is authenticated ([`super::auth`]), matched to its session, and its message run
//! through the relay ([`super::exchange`]): refused or answered there, or forwarded — to the
//! remote server ([`super::upstream`]) or the session's stdio server ([`super::stdio`]). What
//! comes back, one JSON message or a stream of events, goes through the relay again (filtered
//! `tools/list`, DLP) before it reaches the client. A request the server does not answer within
//! the call timeout, cannot be reached for, or takes without an answer (202), is answered with a
//! JSON-RPC error.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::jsonrpc::ErrorCode;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use aip_http::routes::Routes;

use crate::jsonrpc::Envelope;
use crate::relay::Relay;

use super::auth::Credentials;
use super::exchange::{self, Outcome, id_key};
use super::metadata::{DPOP_ALGS, ResourceMetadata, WELL_KNOWN};
use super::session::{SESSION_ID, Session, SessionError};
use super::sse;
use super::state::{Door, Server};
use super::stdio::StdioServer;
use super::upstream::{Answer, Carried, Events, HttpServer, LAST_EVENT_ID, PROTOCOL_VERSION};
use aip_api::ErrorBody;

/// How long a client has to send a request's body, once its head has come.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle event stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The front door's fixed routes, before their state is given.
pub(super) fn own_routes() -> Routes<Arc<Door>> {
    Routes::new()
        .post("/mcp", post_message)
        .get("/mcp", open_stream)
        .delete("/mcp", end_session)
        .get(WELL_KNOWN, resource_metadata_at_root)
        .get(&format!("{WELL_KNOWN}/mcp"), resource_metadata)
}

/// The routes, for a resource whose path is `public_path`: the fixed ones, and the metadata
/// also at the well-known URL of a resource whose path is not `/mcp` (RFC 9728 §3.1).
pub(super) fn router(door: Arc<Door>, public_path: &str) -> Router {
    let mut routes = own_routes();
    let public_path = public_path.trim_end_matches('/');
    if !public_path.is_empty() && public_path != "/mcp" {
        routes = routes.get(&format!("{WELL_KNOWN}{public_path}"), resource_metadata);
    }
    routes
        .into_router()
        .fallback(|| async { plain_error(StatusCode::NOT_FOUND, "not_found", "no such resource") })
        .layer(middleware::from_fn_with_state(Arc::clone(&door), check_origin))
        .with_state(door)
}

/// RFC 9728 metadata, at the well-known URL without a path.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-protected-resource",
    tag = "metadata",
    summary = "Protected resource metadata (root)",
    description = "The same document as `/.well-known/oauth-protected-resource/mcp`.",
    responses(
        (status = 200, description = "The metadata.", body = ResourceMetadata),
        (status = 404, description = "The policy has no `spec.aat`: this server does not use tokens (`not_found`).", body = ErrorBody),
        (status = 503, description = "The authority's metadata cannot be read yet (`temporarily_unavailable`).", body = ErrorBody),
    )
)]
pub(super) async fn resource_metadata_at_root(door: State<Arc<Door>>) -> Response {
    resource_metadata(door).await
}

/// A request's credentials (`None`: anonymous) and the session it names (`None`: none).
type Caller = (Option<Credentials>, Option<Arc<Session>>);

/// Who makes a request with `method`, and the session it names: authenticated
/// ([`Door::authenticate`]) and the session its own; `Err` with the answer otherwise.
fn caller(door: &Door, headers: &HeaderMap, method: &Method) -> Result<Caller, Box<Response>> {
    let credentials = door.authenticate(headers, method)?;
    let agent = credentials.as_ref().and_then(Credentials::agent);
    match door.sessions.find(headers, agent) {
        Ok(session) => Ok((credentials, session)),
        Err(error) => Err(Box::new(session_error(&error))),
    }
}

/// DNS rebinding protection: a request from a browser page (`Origin`) must come from an
/// allowed origin.
async fn check_origin(State(door): State<Arc<Door>>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| door.origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)));
        if !allowed {
            tracing::warn!(origin = ?origin, "request from a foreign origin refused");
            return plain_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this Origin may not call the MCP server",
            );
        }
    }
    next.run(request).await
}

/// RFC 9728 metadata.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-protected-resource/mcp",
    tag = "metadata",
    summary = "Protected resource metadata",
    description = "RFC 9728 metadata of the MCP endpoint: its canonical resource URI (the audience AATs must carry), the authority as authorization server, the tools as scopes, the DPoP algorithms and whether DPoP-bound AATs are required. With `--public-url` whose path is not `/mcp`, it is also served at this prefix followed by that path.",
    responses(
        (status = 200, description = "The metadata.", body = ResourceMetadata),
        (status = 404, description = "The policy has no `spec.aat`: this server does not use tokens (`not_found`).", body = ErrorBody),
        (status = 503, description = "The authority's metadata cannot be read yet (`temporarily_unavailable`).", body = ErrorBody),
    )
)]
pub(super) async fn resource_metadata(State(door): State<Arc<Door>>) -> Response {
    let issuer = door.issuer().await;
    let Some(issuer) = issuer.as_deref() else {
        if door.identity.is_none() {
            return plain_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this MCP server does not use tokens (the policy has no spec.aat)",
            );
        }
        return plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the authorization server's metadata cannot be read yet",
        );
    };
    let scopes: Vec<String> = door
        .scopes()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let engine = door.policy.current();
    let metadata = ResourceMetadata {
        resource: &door.resource,
        authorization_servers: vec![issuer],
        scopes_supported: &scopes,
        bearer_methods_supported: ["header"],
        resource_name: engine.policy().name(),
        dpop_signing_alg_values_supported: DPOP_ALGS,
        dpop_bound_access_tokens_required: door.identity.as_ref().is_some_and(|i| i.settings().require_proof),
    };
    axum::Json(metadata).into_response()
}

/// POST /mcp: one JSON-RPC message.
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    summary = "Send an MCP message",
    description = "One JSON-RPC message of the MCP Streamable HTTP transport (revisions 2025-06-18 and 2025-11-25, and the stateless requests of later ones). It is checked against the policy (AAT, proof, methods, tools, arguments, rate limits, approvals, DLP) as on stdio: refusals are JSON-RPC errors. A request is answered with one message or an event stream; a notification or response with 202.",
    params(
        ("Mcp-Session-Id" = Option<String>, Header, description = "The session, once `initialize` opened one."),
        ("MCP-Protocol-Version" = Option<String>, Header, description = "The MCP revision the client speaks."),
        ("DPoP" = Option<String>, Header, description = "The DPoP proof (RFC 9449) for `Authorization: DPoP`: `htm`, `htu`, `iat`, `jti`, `ath`, and optionally the call binding `mcp_method`, `tool`, `args_hash`."),
    ),
    request_body(content = Object, description = "A JSON-RPC 2.0 message.", content_type = "application/json"),
    security(("aat" = [])),
    responses(
        (status = 200, description = "The answer: one JSON-RPC message, or the server's event stream for this request. After `initialize`, `Mcp-Session-Id` names the new session.", content(
            (Object = "application/json"),
            (String = "text/event-stream"),
        ), headers(("Mcp-Session-Id" = String, description = "The session `initialize` opened."))),
        (status = 202, description = "A notification or a response, accepted."),
        (status = 400, description = "A malformed `Mcp-Session-Id`, or an MCP revision the stdio server's front door does not speak (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No AAT (`unauthorized`), or one that is malformed, expired, for another audience, or a Bearer AAT where proofs are required (`invalid_token`), or a bad DPoP proof (`invalid_dpop_proof`); `WWW-Authenticate: Bearer resource_metadata=\"…\"` (and `DPoP` when proofs are required). Never cached.", body = ErrorBody),
        (status = 403, description = "`Origin` is not an allowed origin (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such session: start a new one with `initialize` (`session_not_found`).", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 30 s (`request_timeout`).", body = ErrorBody),
        (status = 413, description = "The message is larger than `--max-message-size` (`request_too_large`).", body = ErrorBody),
        (status = 415, description = "The body is not declared `application/json` (`unsupported_media_type`).", body = ErrorBody),
        (status = 500, description = "The proxy failed (`server_error`).", body = ErrorBody),
        (status = 502, description = "The server did not answer a notification or response (`bad_gateway`).", body = ErrorBody),
        (status = 503, description = "Too many sessions are open (`temporarily_unavailable`).", body = ErrorBody),
    )
)]
pub(super) async fn post_message(State(door): State<Arc<Door>>, headers: HeaderMap, body: Body) -> Response {
    if !declares_json(&headers) {
        return plain_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "POST a JSON-RPC message as application/json",
        );
    }
    let (credentials, session) = match caller(&door, &headers, &Method::POST) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let agent = credentials.as_ref().and_then(Credentials::agent);
    // Read once the caller is known, whole within a deadline: a body dripped byte by byte
    // would otherwise hold the connection for as long as each byte beats the idle timeout.
    let max = door.relay_options.max_message;
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return plain_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!("the message exceeds {max} bytes, or its body broke off"),
            );
        }
        Err(_) => {
            return plain_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                &format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            );
        }
    };
    // Serving a stdio server, the front door is the HTTP server that answers for the protocol
    // version; a remote server answers for its own.
    if matches!(door.server, Server::Stdio(_))
        && let Some(version) = headers.get(PROTOCOL_VERSION)
        && !SUPPORTED_VERSIONS.iter().any(|v| version == v)
    {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!(
                "unsupported MCP-Protocol-Version; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        );
    }
    // On stdio a blank line is only framing; over HTTP the body is the message, and an empty
    // one is no JSON at all.
    if body.iter().all(u8::is_ascii_whitespace) {
        return json_message(StatusCode::OK, empty_body());
    }
    let (id, initialize) = peek(&body);
    let relay = door.relay();
    let presented = credentials.as_ref().map(Credentials::presented).unwrap_or_default();
    let outcome = match exchange::client_message(&relay, &body, presented, door.checks_may_block).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!("the relay failed: {e}");
            return plain_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the proxy failed");
        }
    };
    let message = match outcome {
        Outcome::Answer(answer) => return json_message(StatusCode::OK, answer),
        Outcome::Nothing => return StatusCode::ACCEPTED.into_response(),
        Outcome::Forward(message) => message,
    };
    let forward = Forward {
        door: &door,
        relay,
        session,
        id,
        initialize,
        agent,
    };
    match &door.server {
        Server::Http(server) => forward.send_http(server, &headers, message).await,
        Server::Stdio(command) => forward.send_stdio(command, message).await,
    }
}

/// The protocol revisions a stdio server is served with over HTTP (`MCP-Protocol-Version`);
/// a remote server answers for its own.
const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// A message on its way to the server.
struct Forward<'a> {
    door: &'a Arc<Door>,
    relay: Arc<Relay>,
    session: Option<Arc<Session>>,
    /// The request's id (JSON text); `None` for a notification or response.
    id: Option<String>,
    initialize: bool,
    agent: Option<&'a str>,
}

impl Forward<'_> {
    async fn send_http(self, server: &HttpServer, headers: &HeaderMap, message: Vec<u8>) -> Response {
        let carried = Carried {
            session: self.session.as_ref().and_then(|s| s.upstream_id.as_ref()),
            protocol: headers.get(PROTOCOL_VERSION),
            last_event_id: None,
        };
        let deadline = self.door.call_timeout();
        let posted = match tokio::time::timeout(deadline, server.post(message, carried)).await {
            Ok(Ok(posted)) => posted,
            Ok(Err(why)) => return self.unanswered(&why),
            Err(_) => return self.unanswered(&timed_out(deadline)),
        };
        let opened = match (&posted.answer, self.initialize) {
            (Answer::Stream(_), true) => self.open_session(posted.session.clone(), None),
            (Answer::Message(status, _), true) if status.is_success() => {
                self.open_session(posted.session.clone(), None)
            }
            _ => Ok(None),
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(full) => return full.into_response(),
        };
        let mut response = match posted.answer {
            // A request is answered with a message or a stream, never with 202 (2025-06-18,
            // "Sending Messages to the Server"): no answer would ever reach the client.
            Answer::Accepted if self.id.is_some() => {
                self.unanswered("the server took the request without answering it")
            }
            Answer::Accepted => StatusCode::ACCEPTED.into_response(),
            Answer::Status(StatusCode::NOT_FOUND) | Answer::Message(StatusCode::NOT_FOUND, _)
                if self.session.is_some() =>
            {
                // The upstream forgot the session: so does the front door, and the client
                // starts a new one.
                if let Some(session) = &self.session {
                    self.door.sessions.close(&session.id);
                }
                session_error(&SessionError::Unknown)
            }
            // A notification or response taken with another success status than 202.
            Answer::Status(status) if status.is_success() && self.id.is_none() => StatusCode::ACCEPTED.into_response(),
            Answer::Status(status) => self.unanswered(&refused_by_server(status)),
            Answer::Message(status, body) => self.relay_message(status, &body),
            Answer::Stream(events) => stream_response(self.relay, events, self.id, Some(deadline)),
        };
        if let Some(session) = opened {
            insert_session(&mut response, &session);
        }
        response
    }

    async fn send_stdio(self, command: &str, message: Vec<u8>) -> Response {
        let (server, fresh) = match self.session.as_ref().and_then(|s| s.stdio.clone()) {
            Some(server) => (server, false),
            None if self.initialize => {
                let max = self.door.relay_options.max_message;
                match StdioServer::start(command, &self.door.policy, max) {
                    Ok(server) => (server, true),
                    Err(e) => {
                        tracing::error!("cannot start the target {command:?}: {e}");
                        return self.unanswered("the server cannot be started");
                    }
                }
            }
            None => {
                return plain_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "no session: send initialize first (Mcp-Session-Id)",
                );
            }
        };
        let waiting = match server.send(&message, self.id.as_deref()) {
            Ok(Some(waiting)) => waiting,
            Ok(None) => return StatusCode::ACCEPTED.into_response(),
            Err(e) => return self.unanswered(&e.to_string()),
        };
        let deadline = self.door.call_timeout();
        let answer = match tokio::time::timeout(deadline, waiting).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return self.unanswered("the server exited before answering"),
            Err(_) => return self.unanswered(&timed_out(deadline)),
        };
        let mut response = self.relay_message(StatusCode::OK, &answer);
        if fresh {
            match self.open_session(None, Some(server)) {
                Ok(Some(session)) => insert_session(&mut response, &session),
                Ok(None) => {}
                Err(full) => return full.into_response(),
            }
        }
        response
    }

    /// After a successful `initialize`: the front door's session.
    fn open_session(
        &self,
        upstream_id: Option<HeaderValue>,
        stdio: Option<Arc<StdioServer>>,
    ) -> Result<Option<Arc<Session>>, TooManySessions> {
        if !self.initialize || self.session.is_some() {
            return Ok(None);
        }
        self.door
            .sessions
            .open(self.agent, upstream_id, stdio)
            .map(Some)
            .ok_or(TooManySessions)
    }

    /// One message from the server, through the relay.
    fn relay_message(&self, status: StatusCode, body: &[u8]) -> Response {
        match exchange::server_message(&self.relay, body) {
            Ok(Some(message)) if status.is_success() => json_message(StatusCode::OK, message),
            // A JSON-RPC error with a client-error status (e.g. an unsupported protocol
            // version) keeps its status; the upstream refusing the proxy's own credentials
            // must not look like the client's token failing.
            Ok(Some(message))
                if status.is_client_error()
                    && !matches!(
                        status,
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::PROXY_AUTHENTICATION_REQUIRED
                    ) =>
            {
                json_message(status, message)
            }
            Ok(Some(_)) => self.unanswered(&refused_by_server(status)),
            Ok(None) => self.unanswered("the server's answer is not a JSON-RPC message"),
            Err(e) => {
                tracing::error!("the relay failed: {e}");
                self.unanswered("the server's answer cannot be relayed")
            }
        }
    }

    /// The server did not answer: a JSON-RPC error for a request, 502 otherwise.
    fn unanswered(&self, why: &str) -> Response {
        tracing::warn!("the server did not answer: {why}");
        match &self.id {
            Some(id) => json_message(StatusCode::OK, internal_error(Some(id), why)),
            None => plain_error(StatusCode::BAD_GATEWAY, "bad_gateway", why),
        }
    }
}

/// [`MAX_SESSIONS`](super::session::MAX_SESSIONS) are open.
struct TooManySessions;

impl IntoResponse for TooManySessions {
    fn into_response(self) -> Response {
        plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many open sessions",
        )
    }
}

/// GET /mcp: the server's own messages, as a stream.
#[utoipa::path(
    get,
    path = "/mcp",
    tag = "mcp",
    summary = "Open the server's event stream",
    description = "The server's own messages for the session (requests and notifications it sends unasked), as Server-Sent Events, filtered by the policy and DLP. Resumable with `Last-Event-ID` where the server supports it.",
    params(
        ("Mcp-Session-Id" = Option<String>, Header, description = "The session, once `initialize` opened one."),
        ("MCP-Protocol-Version" = Option<String>, Header, description = "The MCP revision the client speaks."),
        ("DPoP" = Option<String>, Header, description = "The DPoP proof (RFC 9449) for `Authorization: DPoP`: `htm`, `htu`, `iat`, `jti`, `ath`, and optionally the call binding `mcp_method`, `tool`, `args_hash`."),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event seen, to resume."),
    ),
    security(("aat" = [])),
    responses(
        (status = 200, description = "The event stream.", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A malformed `Mcp-Session-Id` (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No AAT (`unauthorized`), or one that is malformed, expired, for another audience, or a Bearer AAT where proofs are required (`invalid_token`), or a bad DPoP proof (`invalid_dpop_proof`); `WWW-Authenticate: Bearer resource_metadata=\"…\"` (and `DPoP` when proofs are required). Never cached.", body = ErrorBody),
        (status = 403, description = "`Origin` is not an allowed origin (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`).", body = ErrorBody),
        (status = 405, description = "The server offers no stream."),
        (status = 502, description = "The server could not be reached or answered wrongly (`bad_gateway`).", body = ErrorBody),
        (status = 504, description = "The server did not answer in time (`gateway_timeout`).", body = ErrorBody),
    )
)]
pub(super) async fn open_stream(State(door): State<Arc<Door>>, headers: HeaderMap) -> Response {
    let session = match caller(&door, &headers, &Method::GET) {
        Ok((_, session)) => session,
        Err(response) => return *response,
    };
    let relay = door.relay();
    match &door.server {
        Server::Http(server) => {
            let carried = Carried {
                session: session.as_ref().and_then(|s| s.upstream_id.as_ref()),
                protocol: headers.get(PROTOCOL_VERSION),
                last_event_id: headers.get(LAST_EVENT_ID),
            };
            let posted = match tokio::time::timeout(door.call_timeout(), server.get(carried)).await {
                Ok(Ok(posted)) => posted,
                Ok(Err(why)) => return plain_error(StatusCode::BAD_GATEWAY, "bad_gateway", &why),
                Err(_) => {
                    return plain_error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway_timeout",
                        "the server did not answer",
                    );
                }
            };
            match posted.answer {
                Answer::Stream(events) => stream_response(relay, events, None, None),
                // Whether or not the server explains them in a JSON body (the MCP SDKs' servers
                // do): the session is gone, or the server has no stream to offer.
                Answer::Status(StatusCode::NOT_FOUND) | Answer::Message(StatusCode::NOT_FOUND, _)
                    if session.is_some() =>
                {
                    session_error(&SessionError::Unknown)
                }
                Answer::Status(StatusCode::METHOD_NOT_ALLOWED) | Answer::Message(StatusCode::METHOD_NOT_ALLOWED, _) => {
                    StatusCode::METHOD_NOT_ALLOWED.into_response()
                }
                Answer::Accepted | Answer::Message(..) | Answer::Status(_) => plain_error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the server did not open an event stream",
                ),
            }
        }
        Server::Stdio(_) => {
            let Some(server) = session.and_then(|s| s.stdio.clone()) else {
                return plain_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "no session: send initialize first",
                );
            };
            let events = futures_util::stream::unfold(server, |server| async move {
                let message = server.next_message().await?;
                let event = sse::Event {
                    data: String::from_utf8_lossy(&message).into_owned(),
                    ..sse::Event::default()
                };
                Some((Ok(event), server))
            });
            stream_response(relay, Box::pin(events), None, None)
        }
    }
}

/// DELETE /mcp: the client ends its session.
#[utoipa::path(
    delete,
    path = "/mcp",
    tag = "mcp",
    summary = "End the session",
    description = "Ends the session named by `Mcp-Session-Id` (and the upstream's, or the session's stdio server).",
    params(
        ("Mcp-Session-Id" = Option<String>, Header, description = "The session, once `initialize` opened one."),
        ("MCP-Protocol-Version" = Option<String>, Header, description = "The MCP revision the client speaks."),
        ("DPoP" = Option<String>, Header, description = "The DPoP proof (RFC 9449) for `Authorization: DPoP`: `htm`, `htu`, `iat`, `jti`, `ath`, and optionally the call binding `mcp_method`, `tool`, `args_hash`."),
    ),
    security(("aat" = [])),
    responses(
        (status = 204, description = "Ended."),
        (status = 400, description = "No or a malformed `Mcp-Session-Id` (`invalid_request`).", body = ErrorBody),
        (status = 401, description = "No AAT (`unauthorized`), or one that is malformed, expired, for another audience, or a Bearer AAT where proofs are required (`invalid_token`), or a bad DPoP proof (`invalid_dpop_proof`); `WWW-Authenticate: Bearer resource_metadata=\"…\"` (and `DPoP` when proofs are required). Never cached.", body = ErrorBody),
        (status = 403, description = "`Origin` is not an allowed origin (`forbidden`).", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn end_session(State(door): State<Arc<Door>>, headers: HeaderMap) -> Response {
    let session = match caller(&door, &headers, &Method::DELETE) {
        Ok((_, Some(session))) => session,
        Ok((_, None)) => return plain_error(StatusCode::BAD_REQUEST, "invalid_request", "Mcp-Session-Id is required"),
        Err(response) => return *response,
    };
    door.sessions.close(&session.id);
    match &door.server {
        Server::Http(server) => {
            let carried = Carried {
                session: session.upstream_id.as_ref(),
                protocol: headers.get(PROTOCOL_VERSION),
                last_event_id: None,
            };
            if session.upstream_id.is_some()
                && let Ok(Ok(status)) = tokio::time::timeout(door.call_timeout(), server.delete(carried)).await
                && !status.is_success()
            {
                tracing::info!(%status, "the server did not end its session");
            }
        }
        Server::Stdio(_) => {
            if let Some(server) = &session.stdio {
                tokio::task::block_in_place(|| server.stop());
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Relays a stream of server events to the client. With `request`, the stream answers that
/// request: it ends once the answer went out, and when the answer does not come within
/// `deadline` (or the server's stream fails first), the client gets a JSON-RPC error for it.
/// Without, it is the server's own stream, kept alive by comments until either side ends it.
fn stream_response(
    relay: Arc<Relay>,
    mut events: Events,
    request: Option<String>,
    deadline: Option<Duration>,
) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let end = deadline.map(|d| (tokio::time::Instant::now() + d, d));
        let answered_id = request.as_deref().map(id_key);
        let mut answered = false;
        let failure = loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = sleep_until(end.map(|(at, _)| at)) => {
                    break end.map(|(_, d)| timed_out(d));
                }
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    if tx.send(Bytes::from_static(sse::KEEP_ALIVE)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let event = match next {
                None => break Some("the server ended its stream without answering".to_owned()),
                Some(Err(why)) => break Some(why),
                Some(Ok(event)) => event,
            };
            if event.data.trim().is_empty() {
                continue;
            }
            let relayed = match exchange::server_message(&relay, event.data.as_bytes()) {
                Ok(Some(relayed)) => relayed,
                Ok(None) => continue,
                Err(e) => break Some(format!("the server's answer cannot be relayed: {e}")),
            };
            let answers = answered_id.as_deref().is_some_and(|id| answers_id(&relayed, id));
            if tx.send(sse::encode(event.id.as_deref(), &relayed)).await.is_err() {
                return;
            }
            if answers {
                answered = true;
                break None;
            }
        };
        if let (Some(why), Some(id), false) = (failure, request.as_deref(), answered) {
            tracing::warn!("the server did not answer: {why}");
            let _ = tx.send(sse::encode(None, &internal_error(Some(id), &why))).await;
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Completes at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether `message` is the answer to the request `id` (one spelling, [`id_key`]).
fn answers_id(message: &[u8], id: &str) -> bool {
    std::str::from_utf8(message)
        .ok()
        .and_then(Envelope::parse)
        .is_some_and(|e| e.method.is_none() && e.id.is_some_and(|i| id_key(i.get()) == id))
}

/// The id of a request (JSON text), and whether it is `initialize`.
fn peek(body: &[u8]) -> (Option<String>, bool) {
    let Some(envelope) = std::str::from_utf8(body).ok().and_then(Envelope::parse) else {
        return (None, false);
    };
    let Some(method) = envelope.method.as_deref() else {
        return (None, false);
    };
    let id = envelope.id.map(|id| id.get().to_owned());
    let initialize = id.is_some() && method == "initialize";
    (id, initialize)
}

fn declares_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
}

fn timed_out(deadline: Duration) -> String {
    format!(
        "the server did not answer within {} s (spec.call_timeout)",
        deadline.as_secs_f64()
    )
}

fn refused_by_server(status: StatusCode) -> String {
    format!("the server answered HTTP {}", status.as_u16())
}

/// A JSON-RPC -32603 for the request `id`, answered on the server's behalf.
fn internal_error(id: Option<&str>, why: &str) -> Vec<u8> {
    aip_aat::jsonrpc::error_response(id, ErrorCode::InternalError, Some(serde_json::json!({ "reason": why })))
        .into_bytes()
}

/// The JSON-RPC -32700 for a POST without a message.
fn empty_body() -> Vec<u8> {
    aip_aat::jsonrpc::error_response(
        None,
        ErrorCode::ParseError,
        Some(serde_json::json!({ "reason": "the body is empty: POST one JSON-RPC message" })),
    )
    .into_bytes()
}

fn json_message(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn insert_session(response: &mut Response, session: &Session) {
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_ID, value);
    }
}

fn session_error(error: &SessionError) -> Response {
    match error {
        SessionError::Malformed => plain_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Mcp-Session-Id must be sent once, with one id",
        ),
        SessionError::Unknown => plain_error(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no such session: start a new one with initialize",
        ),
    }
}

/// A non-MCP error: `{"error", "error_description"}` with `status`.
fn plain_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_whatever_their_spelling() {
        assert!(answers_id(
            br#"{"jsonrpc":"2.0","id":"a\u0062","result":{}}"#,
            &id_key(r#""ab""#)
        ));
        assert!(!answers_id(br#"{"jsonrpc":"2.0","id":2,"result":{}}"#, &id_key("1")));
        assert!(!answers_id(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#, &id_key("1")));
        assert_eq!(
            peek(br#"{"jsonrpc":"2.0","id":7,"method":"initialize"}"#),
            (Some("7".into()), true)
        );
        assert_eq!(
            peek(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            (None, false)
        );
    }
}
