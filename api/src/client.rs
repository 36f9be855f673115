//! [`Client`]: the one client of the authority's HTTP API, for operators (`aip-ca`), token
//! issuers running apart from their registry, proxies following revocation, and agents
//! ([`crate::agent::AgentClient`] is built on it).
//!
//! One reqwest connection pool per client, a base URL, an optional bearer token, TLS roots
//! (the system's, or exactly the given PEM bundle), bounded response bodies, and one way to
//! turn an answer into a typed result or a [`ClientError`]. The bearer token is never part of
//! an error; errors carry the URL and the transport's reason (without the URL again).

use std::time::Duration;

use aip_aat::ids::AgentId;
use aip_aat::keys::Jwks;
use aip_aat::secret::SecretString;
use futures_util::{Stream, StreamExt as _};
use reqwest::header::{ACCEPT, ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorBody;
use crate::issuer::{
    ChallengeRequest, CreateUserRequest, CreateUserResponse, RevokeRequest, RevokeResponse, TokenRequest, UserList,
};
use crate::registry::{
    AccessTokenEntry, AccessTokenList, AccessTokenResponse, AgentList, AgentResponse, CertificateResponse,
    CreateAccessTokenRequest, CreateRegistrationTokenRequest, Discovery, PublishRevocationsRequest,
    PublishRevocationsResponse, RedirectUrisRequest, RedirectUrisResponse, RegisterAgentResponse,
    RegistrationTokenEntry, RegistrationTokenList, RegistrationTokenResponse, StatusKind, StatusRequest,
    StatusResponse, WhoAmI,
};

/// Largest response body read unless a call says otherwise.
pub const DEFAULT_MAX_BODY: usize = 32 << 20;
/// Largest server-sent event of the revocation stream (the registry's are a few hundred bytes).
pub const MAX_EVENT_BYTES: usize = 64 << 10;

/// A request to the authority failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TLS roots given cannot be used.
    #[error("CA certificates: {0}")]
    Roots(RootsError),
    /// The authority answered with an error status. `error` and `description` come from its
    /// `{"error","error_description"}` body, or are `http_error` and the start of the body.
    #[error("{status}: {error}: {description}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `error` code.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// The authority could not be reached, or the exchange broke off.
    #[error("cannot reach the registry at {url}: {reason}")]
    Transport {
        /// The URL of the request.
        url: String,
        /// Why (the transport's error chain, without the URL).
        reason: String,
        /// Whether it was the request's time limit that ran out.
        timed_out: bool,
    },
    /// The answer was larger than the call accepts.
    #[error("{url}: larger than {limit} bytes")]
    TooLarge {
        /// The URL of the request.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The answer was not what the API promises.
    #[error("unexpected response from the registry: {0}")]
    Decode(String),
}

/// Why the PEM bundle given as TLS roots cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootsError {
    /// It is not a PEM certificate bundle.
    #[error("not a PEM certificate bundle")]
    NotPem,
    /// It holds no certificate.
    #[error("holds no certificate")]
    Empty,
}

/// How a [`Client`] connects. `Default`: the system's TLS roots, a 10 s connection timeout, a
/// 30 s limit on whole exchanges, redirects followed, bodies up to [`DEFAULT_MAX_BODY`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// PEM CA certificates to trust, exclusively, for TLS; `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Time limit for opening a connection.
    pub connect_timeout: Duration,
    /// Time limit for a whole exchange, unless a call sets its own; `None` for none.
    pub timeout: Option<Duration>,
    /// Whether redirects are followed. Clients that send secrets in bodies or that must not be
    /// sent elsewhere (agents, proxies) turn this off.
    pub follow_redirects: bool,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// Largest response body read.
    pub max_body: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(30)),
            follow_redirects: true,
            user_agent: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// A successful answer read whole: its status, `ETag` and body.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    /// The status (2xx, or 304 for a conditional request).
    status: u16,
    /// The `ETag` header, if any.
    etag: Option<String>,
    /// The body.
    body: Vec<u8>,
}

/// What a conditional request of a changing document got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// `304 Not Modified`: the copy held is current.
    NotModified,
    /// A new copy, with its `ETag`.
    Body {
        /// The document.
        bytes: Vec<u8>,
        /// Its `ETag`, if the authority sent one.
        etag: Option<String>,
    },
}

/// One server-sent event of the revocation stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    /// `id:`: the revocation list version the event produced.
    pub id: String,
    /// `event:`: its kind (`agent_revoked`, …).
    pub event: String,
    /// `data:`: JSON details.
    pub data: String,
}

/// The authority at a base URL, authenticating with an optional bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<SecretString>,
    max_body: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the authority at `base` (e.g. `http://127.0.0.1:8443`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_roots(base, token, None)
    }

    /// As [`Client::new`], but trusting exactly the PEM CA certificates in `ca_pem` for TLS
    /// instead of the system's roots (for an authority behind a private CA).
    pub fn with_roots(base: &str, token: Option<String>, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let options = ClientOptions {
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            ..ClientOptions::default()
        };
        Self::with_options(base, token, &options)
    }

    /// A client with these options.
    pub fn with_options(base: &str, token: Option<String>, options: &ClientOptions) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder().connect_timeout(options.connect_timeout);
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        if !options.follow_redirects {
            builder = builder.redirect(reqwest::redirect::Policy::none());
        }
        if let Some(agent) = &options.user_agent {
            builder = builder.user_agent(agent);
        }
        if let Some(pem) = &options.ca_pem {
            let roots =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|_| ClientError::Roots(RootsError::NotPem))?;
            if roots.is_empty() {
                return Err(ClientError::Roots(RootsError::Empty));
            }
            builder = builder.tls_certs_only(roots);
        }
        let http = builder.build().map_err(|e| transport(&base, e, options.timeout))?;
        Ok(Self {
            http,
            base,
            token: token.filter(|t| !t.is_empty()).map(SecretString::new),
            max_body: options.max_body,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str, authenticated: bool) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) if authenticated => builder.bearer_auth(token.expose()),
            _ => builder,
        }
    }

    /// Sends `builder` for `path` and reads the answer, at most `limit` bytes of body. A
    /// success or a 304 is an [`Answer`]; any other status is `Err((status, body))` for the
    /// caller to interpret.
    async fn exchange(
        &self,
        builder: reqwest::RequestBuilder,
        path: &str,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<Result<Answer, (StatusCode, Vec<u8>)>, ClientError> {
        let url = self.url(path);
        let builder = match timeout {
            Some(timeout) => builder.timeout(timeout),
            None => builder,
        };
        let mut response = builder.send().await.map_err(|e| transport(&url, e, timeout))?;
        let status = response.status();
        let too_large = || ClientError::TooLarge {
            url: url.clone(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, e, timeout))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            Ok(Ok(Answer {
                status: status.as_u16(),
                etag,
                body,
            }))
        } else {
            Ok(Err((status, body)))
        }
    }

    /// Sends `builder` and reads a success, turning an error status into [`ClientError::Api`].
    async fn send(&self, builder: reqwest::RequestBuilder, path: &str) -> Result<Answer, ClientError> {
        self.exchange(builder, path, self.max_body, None)
            .await?
            .map_err(|(status, body)| api_error(status, &body))
    }

    async fn json<T: DeserializeOwned>(&self, builder: reqwest::RequestBuilder, path: &str) -> Result<T, ClientError> {
        let answer = self.send(builder, path).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, path, true).json(body), path).await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::DELETE, path, true), path).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path, true).query(query), path)
            .await
    }

    /// `POST`s `body` as JSON to `path` without the bearer token and returns the answer's
    /// status and body, whatever the status, so the caller can read an endpoint's own error
    /// format (the token endpoint's, spec 9.4.2).
    async fn post_unauthenticated<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let builder = self.request(Method::POST, path, false).json(body);
        Ok(match self.exchange(builder, path, self.max_body, None).await? {
            Ok(answer) => (answer.status, answer.body),
            Err((status, body)) => (status.as_u16(), body),
        })
    }

    // The registry.

    /// `POST /v1/agents` with a body already carrying its proof
    /// ([`crate::registry::registration_body`]).
    pub async fn register_agent(&self, body: &serde_json::Value) -> Result<RegisterAgentResponse, ClientError> {
        self.post("/v1/agents", body).await
    }

    /// `GET /v1/agents/{id}`.
    pub async fn agent(&self, agent_id: &AgentId) -> Result<AgentResponse, ClientError> {
        self.get(&format!("/v1/agents/{agent_id}"), &[]).await
    }

    /// `GET /v1/agents`: a page of at most `limit` agents, optionally in one status, after an
    /// agent id.
    pub async fn agents(
        &self,
        status: Option<&str>,
        after: Option<&AgentId>,
        limit: u32,
    ) -> Result<AgentList, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(status) = status {
            query.push(("status", status.to_owned()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        self.get("/v1/agents", &query).await
    }

    /// Suspends, reactivates or revokes an agent.
    pub async fn change_status(
        &self,
        agent_id: &AgentId,
        kind: StatusKind,
        request: &StatusRequest,
    ) -> Result<StatusResponse, ClientError> {
        self.post(&format!("/v1/agents/{agent_id}/{}", kind.verb()), request)
            .await
    }

    /// `PUT /v1/agents/{id}/redirect-uris` (admin): replaces the agent's redirect URIs.
    pub async fn set_redirect_uris(
        &self,
        agent_id: &AgentId,
        request: &RedirectUrisRequest,
    ) -> Result<RedirectUrisResponse, ClientError> {
        let path = format!("/v1/agents/{agent_id}/redirect-uris");
        self.json(self.request(Method::PUT, &path, true).json(request), &path)
            .await
    }

    /// `POST /v1/agents/{id}/rotate-key` with a body carrying both proofs
    /// ([`crate::registry::rotation_body`]).
    pub async fn rotate_key(
        &self,
        agent_id: &AgentId,
        body: &serde_json::Value,
    ) -> Result<CertificateResponse, ClientError> {
        self.post(&format!("/v1/agents/{agent_id}/rotate-key"), body).await
    }

    /// `POST /v1/agents/{id}/certificate` with a body carrying its proof
    /// ([`crate::registry::renewal_body`]).
    pub async fn renew_certificate(
        &self,
        agent_id: &AgentId,
        body: &serde_json::Value,
    ) -> Result<CertificateResponse, ClientError> {
        self.post(&format!("/v1/agents/{agent_id}/certificate"), body).await
    }

    /// `POST /v1/registration-tokens`.
    pub async fn create_registration_token(
        &self,
        request: &CreateRegistrationTokenRequest,
    ) -> Result<RegistrationTokenResponse, ClientError> {
        self.post("/v1/registration-tokens", request).await
    }

    /// `GET /v1/registration-tokens`.
    pub async fn registration_tokens(&self) -> Result<RegistrationTokenList, ClientError> {
        self.get("/v1/registration-tokens", &[]).await
    }

    /// `DELETE /v1/registration-tokens/{id}`.
    pub async fn revoke_registration_token(&self, token_id: &str) -> Result<RegistrationTokenEntry, ClientError> {
        self.delete(&format!("/v1/registration-tokens/{}", path_segment(token_id)))
            .await
    }

    /// `POST /v1/access-tokens`.
    pub async fn create_access_token(
        &self,
        request: &CreateAccessTokenRequest,
    ) -> Result<AccessTokenResponse, ClientError> {
        self.post("/v1/access-tokens", request).await
    }

    /// `GET /v1/access-tokens`.
    pub async fn access_tokens(&self) -> Result<AccessTokenList, ClientError> {
        self.get("/v1/access-tokens", &[]).await
    }

    /// `DELETE /v1/access-tokens/{id}`.
    pub async fn revoke_access_token(&self, token_id: &str) -> Result<AccessTokenEntry, ClientError> {
        self.delete(&format!("/v1/access-tokens/{}", path_segment(token_id)))
            .await
    }

    /// `POST /v1/revocations` (admin): tokens, sessions and users a token issuer revoked.
    pub async fn publish_revocations(
        &self,
        request: &PublishRevocationsRequest,
    ) -> Result<PublishRevocationsResponse, ClientError> {
        self.post("/v1/revocations", request).await
    }

    /// `GET /v1/whoami`: the id and role of the client's token.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get("/v1/whoami", &[]).await
    }

    /// `GET /v1/crl` (DER).
    pub async fn crl(&self) -> Result<Vec<u8>, ClientError> {
        Ok(self
            .send(self.request(Method::GET, "/v1/crl", true), "/v1/crl")
            .await?
            .body)
    }

    /// `GET /v1/crl/{key id}` (DER): the CRL of one issuing CA, current or retired, by the
    /// RFC 7638 thumbprint of its key.
    pub async fn issuer_crl(&self, key_id: &str) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/crl/{key_id}");
        Ok(self.send(self.request(Method::GET, &path, true), &path).await?.body)
    }

    /// `GET /v1/jwks`.
    pub async fn jwks(&self) -> Result<Jwks, ClientError> {
        self.get("/v1/jwks", &[]).await
    }

    /// `GET /.well-known/aip-configuration`.
    pub async fn discovery(&self) -> Result<Discovery, ClientError> {
        self.get("/.well-known/aip-configuration", &[]).await
    }

    /// `GET /.well-known/oauth-authorization-server` (RFC 8414).
    pub async fn authorization_server_metadata(
        &self,
    ) -> Result<crate::oauth::AuthorizationServerMetadata, ClientError> {
        self.get("/.well-known/oauth-authorization-server", &[]).await
    }

    // The token issuer's administration.

    /// `POST /v1/users` (admin): a user with an API key, shown once.
    pub async fn create_user(&self, request: &CreateUserRequest) -> Result<CreateUserResponse, ClientError> {
        self.post("/v1/users", request).await
    }

    /// `GET /v1/users` (admin): a page of at most `limit` users, by id, after the cursor
    /// `after` (a previous page's `next`).
    pub async fn users(&self, after: Option<&str>, limit: u32) -> Result<UserList, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        self.get("/v1/users", &query).await
    }

    /// `POST /v1/revoke` (admin): an AAT, a session, a user or an agent.
    pub async fn revoke(&self, request: &RevokeRequest) -> Result<RevokeResponse, ClientError> {
        self.post("/v1/revoke", request).await
    }

    // The token endpoints, as an agent uses them: no bearer token, and the answer whatever its
    // status (errors have the token endpoint's own format).

    /// `POST /v1/challenge`: the status and body of the answer.
    pub async fn challenge(&self, request: &ChallengeRequest) -> Result<(u16, Vec<u8>), ClientError> {
        self.post_unauthenticated("/v1/challenge", request).await
    }

    /// `POST /v1/token`: the status and body of the answer.
    pub async fn token(&self, request: &TokenRequest) -> Result<(u16, Vec<u8>), ClientError> {
        self.post_unauthenticated("/v1/token", request).await
    }

    // Revocation data, as proxies follow it: bounded answers, per-call time limits.

    /// `GET /v1/jwks` without the bearer token (the key set is public), at most `limit` bytes,
    /// within `timeout`.
    pub async fn jwks_document(&self, timeout: Duration, limit: usize) -> Result<Vec<u8>, ClientError> {
        let path = "/v1/jwks";
        let builder = self.request(Method::GET, path, false);
        match self.exchange(builder, path, limit, Some(timeout)).await? {
            Ok(answer) if answer.status != 304 => Ok(answer.body),
            Ok(answer) => Err(status_only(answer.status)),
            Err((status, body)) => Err(api_error(status, &body)),
        }
    }

    /// `GET /v1/revocations` with the bearer token, at most `limit` bytes, within `timeout`;
    /// with `etag`, conditional (`If-None-Match`).
    pub async fn revocations_since(
        &self,
        etag: Option<&str>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Fetched, ClientError> {
        let path = "/v1/revocations";
        let mut builder = self.request(Method::GET, path, true);
        if let Some(etag) = etag {
            builder = builder.header(IF_NONE_MATCH, etag);
        }
        match self.exchange(builder, path, limit, Some(timeout)).await? {
            Ok(answer) if answer.status == 304 && etag.is_some() => Ok(Fetched::NotModified),
            Ok(answer) if answer.status == 304 => Err(status_only(304)),
            Ok(answer) => Ok(Fetched::Body {
                bytes: answer.body,
                etag: answer.etag,
            }),
            Err((status, body)) => Err(api_error(status, &body)),
        }
    }

    /// Opens `GET /v1/revocations/stream` with the bearer token, resuming after list version
    /// `after` (`Last-Event-ID`); the connection must be answered within `timeout`. The events
    /// follow until the authority closes the stream; an event larger than
    /// [`MAX_EVENT_BYTES`] ends it with an error.
    pub async fn revocation_events(
        &self,
        after: u64,
        timeout: Duration,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ClientError>> + use<>, ClientError> {
        use eventsource_stream::Eventsource as _;

        let path = "/v1/revocations/stream";
        let url = self.url(path);
        let builder = self
            .request(Method::GET, path, true)
            .header(ACCEPT, "text/event-stream")
            .header("Last-Event-ID", after.to_string());
        let response = tokio::time::timeout(timeout, builder.send())
            .await
            .map_err(|_| ClientError::Transport {
                url: url.clone(),
                reason: format!("no answer within {} s", timeout.as_secs()),
                timed_out: true,
            })?
            .map_err(|e| transport(&url, e, Some(timeout)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_only(status.as_u16()));
        }
        let mut guard = EventSizeGuard::default();
        let events = response
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) if guard.feed(&bytes) => Ok(bytes),
                Ok(_) => Err(StreamFault::TooLarge),
                Err(e) => Err(StreamFault::Transport(aip_aat::error_chain(&e.without_url()))),
            })
            .eventsource()
            .map(move |event| match event {
                Ok(event) => Ok(StreamEvent {
                    id: event.id,
                    event: event.event,
                    data: event.data,
                }),
                Err(e) => Err(ClientError::Transport {
                    url: url.clone(),
                    reason: format!("event stream: {e}"),
                    timed_out: false,
                }),
            });
        Ok(events)
    }
}

/// The error of a failed exchange: the transport's reason without the URL (which the error
/// names once), or the time limit that ran out.
fn transport(url: &str, error: reqwest::Error, timeout: Option<Duration>) -> ClientError {
    let timed_out = error.is_timeout();
    let reason = match timeout {
        Some(limit) if timed_out => format!("no answer within {} ms", limit.as_millis()),
        _ => aip_aat::error_chain(&error.without_url()),
    };
    ClientError::Transport {
        url: url.to_owned(),
        reason,
        timed_out,
    }
}

/// [`ClientError::Api`] from an error answer: its `{"error","error_description"}` body, or
/// `http_error` and the start of whatever the body is.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let (error, description) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => (body.error, body.error_description),
        Err(_) => (
            "http_error".to_owned(),
            String::from_utf8_lossy(body).chars().take(200).collect(),
        ),
    };
    ClientError::Api {
        status: status.as_u16(),
        error,
        description,
    }
}

/// [`ClientError::Api`] for a status whose body is not read.
fn status_only(status: u16) -> ClientError {
    ClientError::Api {
        status,
        error: "http_error".into(),
        description: String::new(),
    }
}

/// Why the event stream's bytes were cut off.
#[derive(Debug, thiserror::Error)]
enum StreamFault {
    #[error("{0}")]
    Transport(String),
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Bounds the bytes between two event boundaries (blank lines) of a server-sent event stream,
/// so an authority that never ends an event cannot make the parser buffer without end.
#[derive(Default)]
struct EventSizeGuard {
    since_boundary: usize,
    after_newline: bool,
}

impl EventSizeGuard {
    /// Counts `chunk`; `false` once an event grows past [`MAX_EVENT_BYTES`].
    fn feed(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            match byte {
                b'\n' if self.after_newline => self.since_boundary = 0,
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
            self.since_boundary += 1;
            if self.since_boundary > MAX_EVENT_BYTES {
                return false;
            }
        }
        true
    }
}

/// `value` as one URL path segment: every byte but ASCII letters, digits, `-` and `_`
/// percent-encoded, so a value cannot name another path.
fn path_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_size_is_bounded_between_blank_lines() {
        let mut guard = EventSizeGuard::default();
        let event = b"id: 7\nevent: agent.revoked\ndata: {}\n\n";
        for _ in 0..10_000 {
            assert!(guard.feed(event));
            assert!(guard.feed(b":\n\n"));
        }
        let mut guard = EventSizeGuard::default();
        assert!(guard.feed(b"data: "));
        let long = vec![b'x'; MAX_EVENT_BYTES];
        assert!(!guard.feed(&long));
        // CRLF line ends count as boundaries too.
        let mut guard = EventSizeGuard::default();
        for _ in 0..MAX_EVENT_BYTES {
            assert!(guard.feed(b"id: 1\r\n\r\n"));
        }
    }

    #[test]
    fn error_answers_are_read_from_their_body() {
        let error = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"agent_not_found","error_description":"no agent has this id"}"#,
        );
        assert_eq!(error.to_string(), "404: agent_not_found: no agent has this id");
        let other = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(other.to_string(), "502: http_error: <html>bad gateway</html>");
    }

    #[test]
    fn the_token_never_shows() {
        let client = Client::new("http://127.0.0.1:1/", Some("aip_at_s3cret".into())).unwrap();
        assert_eq!(client.base(), "http://127.0.0.1:1");
        assert!(!format!("{client:?}").contains("s3cret"));
        assert!(Client::with_roots("http://x", None, Some(b"not pem")).is_err());
    }

    #[test]
    fn a_path_segment_cannot_name_another_path() {
        assert_eq!(path_segment("at0a1b2c3d4e5f"), "at0a1b2c3d4e5f");
        assert_eq!(path_segment("../agents/x"), "%2E%2E%2Fagents%2Fx");
        assert_eq!(path_segment("a b?c"), "a%20b%3Fc");
    }
}
