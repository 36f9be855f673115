//! The agent side of the token issuer (docs/architecture.md, "Token request"): fetches an AAT,
//! keeps it fresh, and signs the per-call proof of possession for each tool call. It talks to
//! the issuer through [`Client`].
//!
//! Protocol, per token: `POST {issuer}/v1/challenge` for a single-use challenge, then
//! `POST {issuer}/v1/token` with the challenge signed by the agent key. The first token uses
//! the `agent_authentication` grant when a user authorization is configured, else
//! `agent_attestation` (autonomous agents). Later tokens use `aat_refresh` with the refresh
//! token of the previous response (refresh tokens rotate: each is good for one use) and a fresh
//! challenge proof; when the issuer refuses a refresh with a 4xx (`invalid_grant`: the session
//! was revoked, or the refresh token was already used), the client authenticates from scratch.
//!
//! Secrets (the AAT, the refresh token, the user's API key or ID token) are
//! [`SecretString`]s: they never appear in `Debug` output or in error messages.
//!
//! ```no_run
//! use std::sync::Arc;
//! use aip_api::agent::{AgentClient, AgentClientConfig};
//! use aip_aat::keys::{Algorithm, KeyPair};
//! use aip_aat::proof::Call;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let key = Arc::new(KeyPair::generate(Algorithm::EdDSA)?);
//! let agent_id = "ag_550e8400-e29b-41d4-a716-446655440000".parse()?;
//! let config = AgentClientConfig::new("http://127.0.0.1:8443", agent_id, "files-proxy");
//! let client = AgentClient::start(key, config).await?;
//!
//! // Keep the AAT fresh in the background until the process shuts down.
//! let refresher = client.clone();
//! tokio::spawn(async move { refresher.run_refresh(std::future::pending()).await });
//!
//! // For each tool call: the AAT and a proof bound to this very call.
//! let args = serde_json::json!({"path": "/etc/hosts"});
//! let (aat, proof) = client.credentials(&Call::tools_call("read_file", Some(&args)))?;
//! # let _ = (aat, proof);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::challenge::ChallengeProof;
use aip_aat::clock::{Clock, SystemClock};
use aip_aat::dpop::{DpopRequest, create_call_dpop_proof, create_dpop_proof};
use aip_aat::ids::{AgentId, fill_random};
use aip_aat::keys::{SignError, Signer};
use aip_aat::proof::{Call, ProofCreateError, create_proof};
use aip_aat::secret::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::client::{Client, ClientError, ClientOptions, RootsError};
use crate::issuer::{
    ChallengeRequest, ChallengeResponse, DeniedCapabilities, GrantType, GrantedCapabilities, RequestedCapabilities,
    TokenErrorCode, TokenErrorResponse, TokenFormat, TokenRequest, TokenResponse, UserAuthorization,
};

/// Default fraction of an AAT's lifetime after which [`AgentClient::run_refresh`] renews it.
pub const DEFAULT_REFRESH_AT: f64 = 0.75;
/// Whole-exchange timeout of one HTTP request to the issuer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for opening a connection to the issuer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay after a failed refresh; it doubles with each further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest retry delay after failed refreshes.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Shortest interval between two scheduled refreshes, whatever lifetime the issuer grants.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time before expiry at which a last retry is forced (see [`AgentClient::run_refresh`]).
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// Lifetimes above this are treated as this for scheduling (the issuer's hard maximum is 24 h).
const MAX_SCHEDULED_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest error description kept from an issuer's error response.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// Where and how an agent gets its AATs.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentClientConfig {
    /// Base URL of the token issuer, e.g. `http://127.0.0.1:8443`.
    pub issuer_url: String,
    /// The agent, as registered.
    pub agent_id: AgentId,
    /// The proxy or service the AAT is for (`audience` of the token request, `aud` of proofs).
    pub audience: String,
    /// Tools to ask for (`requested_capabilities.tools`); `None` asks for everything the agent
    /// may have.
    pub tools: Option<Vec<String>>,
    /// The user the agent acts for (`agent_authentication` grant); `None` for an autonomous
    /// agent (`agent_attestation` grant).
    pub user: Option<UserAuthorization>,
    /// PEM CA certificates to trust, exclusively, for TLS to the issuer; `None` trusts the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Fraction of each AAT's lifetime after which [`AgentClient::run_refresh`] renews it, in
    /// `(0, 1]`; [`DEFAULT_REFRESH_AT`] unless changed.
    pub refresh_at: f64,
    /// The form of AAT to ask for: a JWT unless changed ([`TokenFormat::Biscuit`]: one the agent
    /// can delegate from).
    pub token_format: TokenFormat,
}

impl AgentClientConfig {
    /// A configuration for `agent_id` getting AATs for `audience` from the issuer at
    /// `issuer_url`: all tools, no user (autonomous agent), system TLS roots, refresh at
    /// [`DEFAULT_REFRESH_AT`] of the lifetime.
    pub fn new(issuer_url: impl Into<String>, agent_id: AgentId, audience: impl Into<String>) -> Self {
        Self {
            issuer_url: issuer_url.into(),
            agent_id,
            audience: audience.into(),
            tools: None,
            user: None,
            ca_pem: None,
            refresh_at: DEFAULT_REFRESH_AT,
            token_format: TokenFormat::Jwt,
        }
    }
}

impl fmt::Debug for AgentClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClientConfig")
            .field("issuer_url", &self.issuer_url)
            .field("agent_id", &self.agent_id)
            .field("audience", &self.audience)
            .field("tools", &self.tools)
            // `UserAuthorization`'s Debug redacts its tokens.
            .field("user", &self.user)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|pem| format!("{} bytes", pem.len())),
            )
            .field("refresh_at", &self.refresh_at)
            .field("token_format", &self.token_format)
            .finish()
    }
}

/// An AAT the issuer handed out. `Debug` shows everything but the token.
#[derive(Clone, Debug)]
pub struct IssuedAat {
    /// The compact AAT.
    pub aat: SecretString,
    /// When the client received it (Unix seconds, by the client's clock).
    pub issued_at: i64,
    /// `issued_at` plus the lifetime the issuer announced (`expires_in`).
    pub expires_at: i64,
    /// What the AAT grants.
    pub capabilities_granted: GrantedCapabilities,
    /// What was asked for and not granted.
    pub capabilities_denied: DeniedCapabilities,
    /// Monotonic time of receipt, for scheduling the refresh.
    received: Instant,
    /// `expires_in`, capped at [`MAX_SCHEDULED_LIFETIME`].
    lifetime: Duration,
}

impl IssuedAat {
    fn from_response(response: TokenResponse, now: i64) -> Self {
        Self {
            aat: response.aat,
            issued_at: now,
            expires_at: now.saturating_add(i64::try_from(response.expires_in).unwrap_or(i64::MAX)),
            capabilities_granted: response.capabilities_granted,
            capabilities_denied: response.capabilities_denied,
            received: Instant::now(),
            lifetime: Duration::from_secs(response.expires_in).min(MAX_SCHEDULED_LIFETIME),
        }
    }

    /// The part of the lifetime the client can count on: JWT times are whole seconds, so the
    /// token may expire up to a second before `expires_in` after receipt.
    fn usable_lifetime(&self) -> Duration {
        self.lifetime.saturating_sub(Duration::from_secs(1))
    }

    /// When `refresh_at` of the usable lifetime has passed.
    fn refresh_due(&self, refresh_at: f64) -> Instant {
        let usable = self.usable_lifetime();
        let after = Duration::try_from_secs_f64(usable.as_secs_f64() * refresh_at)
            .unwrap_or(usable)
            .max(MIN_REFRESH_INTERVAL);
        self.received.checked_add(after).unwrap_or(self.received)
    }

    /// The last moment for a retry, shortly before expiry: a tenth of the usable lifetime
    /// before it, at most [`MAX_EXPIRY_MARGIN`].
    fn last_chance(&self) -> Instant {
        let usable = self.usable_lifetime();
        let margin = (usable / 10).min(MAX_EXPIRY_MARGIN);
        self.received
            .checked_add(usable.saturating_sub(margin))
            .unwrap_or(self.received)
    }
}

/// Why the client could not get or use an AAT. `Display` is one line and never contains the
/// AAT, the refresh token or the user's credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentClientError {
    /// The configuration is unusable.
    #[error("invalid agent client configuration: {0}")]
    Config(&'static str),
    /// The issuer could not be reached, or the exchange broke off.
    #[error("cannot reach the issuer at {url}: {reason}")]
    Transport {
        /// The URL of the request.
        url: String,
        /// Why (the transport's error chain, without the URL).
        reason: String,
    },
    /// The issuer answered with an error status.
    #[error("the issuer refused the request (HTTP {status}{}): {description}", code_suffix(*error))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The `error` code, when the body was a token-endpoint error response.
        error: Option<TokenErrorCode>,
        /// `error_description` (or the start of a body that was not an error response),
        /// on one line, with any credential of the request blanked out.
        description: String,
    },
    /// The issuer's success response was not what the API promises.
    #[error("unexpected response from the issuer: {0}")]
    Decode(String),
    /// The agent key could not sign the challenge.
    #[error("cannot sign the issuer's challenge: {}", aip_aat::error_chain(.0))]
    Sign(#[from] SignError),
    /// A per-call proof could not be made.
    #[error("cannot make the call proof: {}", aip_aat::error_chain(.0))]
    Proof(#[from] ProofCreateError),
}

impl AgentClientError {
    /// Whether a refused refresh should fall back to full authentication: any 4xx except
    /// those saying "later" (408, 429), after which the refresh token may still be good.
    fn refresh_refused(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

fn code_suffix(error: Option<TokenErrorCode>) -> String {
    error
        .and_then(|code| serde_json::to_value(code).ok())
        .and_then(|value| value.as_str().map(|code| format!(" {code}")))
        .unwrap_or_default()
}

/// Issuer-supplied text made safe for a one-line error message: credentials of the request
/// blanked out, control characters replaced, length bounded.
fn one_line(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    let mut line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    if text.trim().chars().nth(MAX_DESCRIPTION_CHARS).is_some() {
        line.push('…');
    }
    line
}

/// A serde error without the offending value: serde_json quotes mistyped strings (`invalid
/// type: string "…"`), and a token in the wrong member must not end up in a log.
fn json_error(what: &str, error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.split_once('"') {
        Some((head, _)) => format!(
            "{what}: {} (value withheld) at line {} column {}",
            head.trim_end(),
            error.line(),
            error.column()
        ),
        None => format!("{what}: {text}"),
    }
}

/// An error body that is not a [`TokenErrorResponse`] (unknown code, another service's error).
#[derive(Deserialize)]
struct OtherErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

fn refusal(status: u16, body: &[u8], secrets: &[&str]) -> AgentClientError {
    let (error, description) = match serde_json::from_slice::<TokenErrorResponse>(body) {
        Ok(body) => (Some(body.error), body.error_description),
        Err(_) => match serde_json::from_slice::<OtherErrorBody>(body) {
            Ok(other) => (None, format!("{}: {}", other.error, other.error_description)),
            Err(_) => (None, String::from_utf8_lossy(body).into_owned()),
        },
    };
    let mut description = one_line(&description, secrets);
    if description.is_empty() {
        // E.g. a redirect (never followed) or a bare status from a load balancer.
        description = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("no description")
            .to_owned();
    }
    AgentClientError::Refused {
        status,
        error,
        description,
    }
}

/// A failed exchange with the issuer.
fn transport(error: ClientError) -> AgentClientError {
    match error {
        ClientError::Transport { url, reason, .. } => AgentClientError::Transport { url, reason },
        other => AgentClientError::Decode(other.to_string()),
    }
}

/// The credential carried by a user authorization, if any.
fn user_secret(user: &UserAuthorization) -> Option<&str> {
    match user {
        UserAuthorization::ApiKey { token }
        | UserAuthorization::OidcIdToken { token }
        | UserAuthorization::Oauth2Token { token } => Some(token.expose()),
        UserAuthorization::LocalUser { .. } => None,
    }
}

/// The HTTP side: the issuer's [`Client`], the agent key and what every token request repeats.
struct Issuer {
    client: Client,
    key: Arc<dyn Signer>,
    agent_id: AgentId,
    audience: String,
    tools: Option<Vec<String>>,
    user: Option<UserAuthorization>,
    token_format: TokenFormat,
    clock: Arc<dyn Clock>,
}

impl Issuer {
    fn new(key: Arc<dyn Signer>, config: AgentClientConfig, clock: Arc<dyn Clock>) -> Result<Self, AgentClientError> {
        let url = reqwest::Url::parse(&config.issuer_url)
            .map_err(|_| AgentClientError::Config("issuer_url is not a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(AgentClientError::Config(
                "issuer_url must be an http:// or https:// URL",
            ));
        }
        if config.audience.is_empty() {
            return Err(AgentClientError::Config("audience is empty"));
        }
        let options = ClientOptions {
            ca_pem: config.ca_pem,
            connect_timeout: CONNECT_TIMEOUT,
            timeout: Some(REQUEST_TIMEOUT),
            // A redirect would resend the request body (refresh token, API key) elsewhere.
            follow_redirects: false,
            ..ClientOptions::default()
        };
        let client = Client::with_options(&config.issuer_url, None, &options).map_err(|e| match e {
            ClientError::Roots(RootsError::NotPem) => {
                AgentClientError::Config("ca_pem is not a PEM certificate bundle")
            }
            ClientError::Roots(_) => AgentClientError::Config("ca_pem holds no certificate"),
            other => transport(other),
        })?;
        Ok(Self {
            client,
            key,
            agent_id: config.agent_id,
            audience: config.audience,
            tools: config.tools,
            user: config.user,
            token_format: config.token_format,
            clock,
        })
    }

    /// Reads a token-endpoint answer `(status, body)` as `T`; `secrets` are blanked out of any
    /// error text.
    fn read<T: DeserializeOwned>(
        path: &str,
        answer: Result<(u16, Vec<u8>), ClientError>,
        secrets: &[&str],
    ) -> Result<T, AgentClientError> {
        let (status, body) = answer.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &body, secrets));
        }
        serde_json::from_slice(&body).map_err(|e| AgentClientError::Decode(json_error(path, &e)))
    }

    /// The first AAT of a session: `agent_authentication` with the user's authorization, or
    /// `agent_attestation` for an autonomous agent.
    async fn authenticate(&self) -> Result<TokenResponse, AgentClientError> {
        let grant = match self.user {
            Some(_) => GrantType::AgentAuthentication,
            None => GrantType::AgentAttestation,
        };
        self.token(grant, None).await
    }

    /// A fresh challenge, signed, then a token request with `grant`.
    async fn token(
        &self,
        grant: GrantType,
        refresh_token: Option<&SecretString>,
    ) -> Result<TokenResponse, AgentClientError> {
        let request = ChallengeRequest {
            agent_id: self.agent_id.clone(),
        };
        let challenge: ChallengeResponse = Self::read("/v1/challenge", self.client.challenge(&request).await, &[])?;
        let proof = ChallengeProof::create(&*self.key, &challenge.challenge, &self.agent_id, self.clock.now())?;
        let user_authorization = match grant {
            GrantType::AatRefresh => None,
            GrantType::AgentAuthentication | GrantType::AgentAttestation => self.user.clone(),
        };
        let request = TokenRequest {
            grant_type: grant,
            agent_id: self.agent_id.clone(),
            proof,
            user_authorization,
            // Sent on refreshes too, so an issuer that recomputes capabilities on refresh
            // arrives at what the session started with.
            requested_capabilities: self.tools.as_ref().map(|tools| RequestedCapabilities {
                tools: tools.clone(),
                ..Default::default()
            }),
            audience: self.audience.clone(),
            refresh_token: refresh_token.cloned(),
            token_format: self.token_format,
        };
        let mut secrets: Vec<&str> = Vec::new();
        secrets.extend(request.user_authorization.as_ref().and_then(user_secret));
        secrets.extend(refresh_token.map(SecretString::expose));
        let response: TokenResponse = Self::read("/v1/token", self.client.token(&request).await, &secrets)?;
        if response.aat.is_empty() {
            return Err(AgentClientError::Decode("/v1/token: `aat` is empty".into()));
        }
        if response.expires_in == 0 {
            return Err(AgentClientError::Decode("/v1/token: `expires_in` is 0".into()));
        }
        Ok(response)
    }
}

struct Inner {
    issuer: Issuer,
    refresh_at: f64,
    /// The refresh token of the last response. The lock also serializes refreshes: two
    /// concurrent uses of one refresh token would look like token theft to the issuer.
    refresh_token: Mutex<Option<SecretString>>,
    current: watch::Sender<Arc<IssuedAat>>,
    errors: watch::Sender<Option<Arc<AgentClientError>>>,
}

/// An agent's AAT, fetched from the token issuer and kept fresh. Cheap to clone: clones share
/// the token, the refresh token and the HTTP connection pool.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("AgentClient")
            .field("issuer", &self.inner.issuer.client.base())
            .field("agent_id", &self.inner.issuer.agent_id)
            .field("audience", &self.inner.issuer.audience)
            .field("expires_at", &current.expires_at)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Fetches the first AAT, signing with `key` (the agent's registered key); `Err` if the
    /// configuration is unusable, or the issuer refuses or cannot be reached.
    pub async fn start(key: Arc<dyn Signer>, config: AgentClientConfig) -> Result<Self, AgentClientError> {
        Self::start_with_clock(key, config, Arc::new(SystemClock)).await
    }

    /// As [`AgentClient::start`], reading the time for challenge and call proofs (and for
    /// [`IssuedAat::issued_at`]) from `clock`. Refresh scheduling uses tokio's monotonic clock.
    pub async fn start_with_clock(
        key: Arc<dyn Signer>,
        config: AgentClientConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AgentClientError> {
        let refresh_at = config.refresh_at;
        let in_range = refresh_at > 0.0 && refresh_at <= 1.0;
        if !in_range {
            return Err(AgentClientError::Config("refresh_at must be in (0, 1]"));
        }
        let issuer = Issuer::new(key, config, clock)?;
        let mut response = issuer.authenticate().await?;
        let refresh_token = response.refresh_token.take();
        let first = IssuedAat::from_response(response, issuer.clock.now());
        Ok(Self {
            inner: Arc::new(Inner {
                issuer,
                refresh_at,
                refresh_token: Mutex::new(refresh_token),
                current: watch::Sender::new(Arc::new(first)),
                errors: watch::Sender::new(None),
            }),
        })
    }

    /// The current AAT.
    pub fn current(&self) -> Arc<IssuedAat> {
        self.inner.current.borrow().clone()
    }

    /// The current AAT and a proof for `call` bound to it, to send together as
    /// `_aip_aat` / `_aip_proof` (or `X-AIP-AAT` / `X-AIP-Proof`). Each proof is single-use.
    ///
    /// The AAT is returned even when it has expired because refreshing failed; the receiving
    /// proxy refuses it then, and [`AgentClient::subscribe_errors`] says why.
    pub fn credentials(&self, call: &Call<'_>) -> Result<(SecretString, String), AgentClientError> {
        let current = self.current();
        let issuer = &self.inner.issuer;
        let proof = create_proof(
            &*issuer.key,
            current.aat.expose(),
            call,
            &issuer.audience,
            issuer.clock.now(),
        )?;
        Ok((current.aat.clone(), proof))
    }

    /// The current AAT and a DPoP proof (RFC 9449) of an HTTP request with `method` to `uri`
    /// that carries it, bound to `call` when given: to send as `Authorization: DPoP` and
    /// `DPoP` to an MCP front door (docs/architecture.md, "The AAT on the wire"). Each proof
    /// is single-use.
    pub fn dpop_credentials(
        &self,
        method: &str,
        uri: &str,
        call: Option<&Call<'_>>,
    ) -> Result<(SecretString, String), AgentClientError> {
        let current = self.current();
        let issuer = &self.inner.issuer;
        let request = DpopRequest {
            method,
            uri,
            access_token: Some(current.aat.expose()),
        };
        let now = issuer.clock.now();
        let proof = match call {
            Some(call) => create_call_dpop_proof(&*issuer.key, &request, call, now)?,
            None => create_dpop_proof(&*issuer.key, &request, now)?,
        };
        Ok((current.aat.clone(), proof))
    }

    /// Gets a new AAT now: the `aat_refresh` grant, or full authentication when there is no
    /// refresh token or the issuer refuses the refresh with a 4xx (other than 408 and 429).
    /// Subscribers see the new token. When another refresh finishes while this one waits for
    /// it, its token is returned instead of asking again.
    pub async fn refresh(&self) -> Result<Arc<IssuedAat>, AgentClientError> {
        let before = self.current();
        let mut refresh_token = self.inner.refresh_token.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&before, &current) {
            return Ok(current);
        }
        let issuer = &self.inner.issuer;
        let mut response = match refresh_token.as_ref() {
            Some(token) => match issuer.token(GrantType::AatRefresh, Some(token)).await {
                Err(e) if e.refresh_refused() => {
                    // The refresh token is dead (revoked session, reuse, expiry); start over.
                    *refresh_token = None;
                    issuer.authenticate().await?
                }
                // On other failures the issuer may not have seen the refresh token: keep it.
                other => other?,
            },
            None => issuer.authenticate().await?,
        };
        *refresh_token = response.refresh_token.take();
        let issued = Arc::new(IssuedAat::from_response(response, issuer.clock.now()));
        self.inner.current.send_replace(issued.clone());
        drop(refresh_token);
        Ok(issued)
    }

    /// Keeps the AAT fresh until `shutdown` resolves: renews it once `refresh_at` of its
    /// lifetime has passed (measured from receipt, less a second for the issuer's whole-second
    /// `exp`). After a failed renewal it retries with exponential backoff — a random delay
    /// ("full jitter") of up to 1 s, doubling with each further failure up to 60 s — but
    /// always tries once more shortly before the AAT expires, and keeps retrying after that.
    ///
    /// It never gives up and never returns an error: each failure is published to
    /// [`AgentClient::subscribe_errors`], cleared on the next success. A token obtained by a
    /// concurrent [`AgentClient::refresh`] restarts the schedule.
    pub async fn run_refresh(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tokens = self.subscribe();
        let mut failures: u32 = 0;
        loop {
            let current = tokens.borrow_and_update().clone();
            let wake = if failures == 0 {
                current.refresh_due(self.inner.refresh_at)
            } else {
                let now = Instant::now();
                let retry = now.checked_add(backoff(failures)).unwrap_or(now);
                let deadline = current.last_chance();
                if now < deadline { retry.min(deadline) } else { retry }
            };
            tokio::select! {
                () = &mut shutdown => return,
                Ok(()) = tokens.changed() => {
                    // Someone else renewed the token: schedule from the new one.
                    failures = 0;
                    self.inner.errors.send_if_modified(clear);
                    continue;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let outcome = tokio::select! {
                () = &mut shutdown => return,
                outcome = self.refresh() => outcome,
            };
            match outcome {
                Ok(_) => {
                    failures = 0;
                    self.inner.errors.send_if_modified(clear);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.inner.errors.send_replace(Some(Arc::new(e)));
                }
            }
        }
    }

    /// Follows token changes, so a long-running shim always sends the newest AAT.
    pub fn subscribe(&self) -> watch::Receiver<Arc<IssuedAat>> {
        self.inner.current.subscribe()
    }

    /// Follows the outcome of [`AgentClient::run_refresh`]: the error of its last failed
    /// attempt, or `None` once a renewal succeeds. Each failure is a new value, so a shim can
    /// log them as they come (`changed().await`).
    pub fn subscribe_errors(&self) -> watch::Receiver<Option<Arc<AgentClientError>>> {
        self.inner.errors.subscribe()
    }
}

/// Clears a published error; reports whether there was one (for `send_if_modified`).
fn clear(error: &mut Option<Arc<AgentClientError>>) -> bool {
    error.take().is_some()
}

/// A delegated AAT as its holder presents it (`aip-ca delegate --out`, docs/issuer.md,
/// "Delegable AATs"): the chain a delegator handed this agent, with this agent's own key, the
/// key the chain's last step names. Nothing to fetch or refresh: when the delegation ends, the
/// delegator makes a new one.
pub struct DelegatedCredentials {
    token: SecretString,
    key: Arc<dyn Signer>,
    audience: String,
    clock: Arc<dyn Clock>,
}

impl DelegatedCredentials {
    /// `token` held with `key`, for the proxy `audience`. Refuses a token that is not in the
    /// delegable form; the chain itself is the verifier's to check.
    pub fn new(
        token: SecretString,
        key: Arc<dyn Signer>,
        audience: impl Into<String>,
    ) -> Result<Self, AgentClientError> {
        if !aip_aat::delegation::is_delegable(token.expose().trim()) {
            return Err(AgentClientError::Config("not a delegated AAT (aat+biscuit)"));
        }
        Ok(Self {
            token: SecretString::new(token.expose().trim()),
            key,
            audience: audience.into(),
            clock: Arc::new(SystemClock),
        })
    }

    /// The same, with the time read from `clock` (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The delegated AAT and a proof for `call` signed with the agent's key, as
    /// [`AgentClient::credentials`] gives them.
    pub fn credentials(&self, call: &Call<'_>) -> Result<(SecretString, String), AgentClientError> {
        let proof = create_proof(&*self.key, self.token.expose(), call, &self.audience, self.clock.now())?;
        Ok((self.token.clone(), proof))
    }

    /// The delegated AAT and a DPoP proof of an HTTP request with `method` to `uri`, signed
    /// with the agent's key, as [`AgentClient::dpop_credentials`] gives them.
    pub fn dpop_credentials(
        &self,
        method: &str,
        uri: &str,
        call: Option<&Call<'_>>,
    ) -> Result<(SecretString, String), AgentClientError> {
        let request = DpopRequest {
            method,
            uri,
            access_token: Some(self.token.expose()),
        };
        let now = self.clock.now();
        let proof = match call {
            Some(call) => create_call_dpop_proof(&*self.key, &request, call, now)?,
            None => create_dpop_proof(&*self.key, &request, now)?,
        };
        Ok((self.token.clone(), proof))
    }
}

impl fmt::Debug for DelegatedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelegatedCredentials")
            .field("token", &"[redacted]")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The delay before retry number `failures` (1, 2, …): uniformly random up to
/// `FIRST_RETRY * 2^(failures-1)`, capped at [`MAX_RETRY`] ("full jitter"). Without randomness
/// from the operating system the cap itself is used.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let cap = FIRST_RETRY.saturating_mul(1 << exponent).min(MAX_RETRY);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    let mut bytes = [0u8; 8];
    match fill_random(&mut bytes) {
        Ok(()) => Duration::from_millis(u64::from_le_bytes(bytes) % cap_ms.saturating_add(1)),
        Err(_) => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegated_credentials_sign_with_the_holders_key_and_never_show_the_token() {
        use aip_aat::keys::{Algorithm, KeyPair};
        let key = Arc::new(KeyPair::generate(Algorithm::EdDSA).unwrap());
        let token = "En0KEwoEMTIzNBgDIgkKBwgKEgMYgAgSJAgAEiD_not_a_real_biscuit_but_one_string";
        let refused = DelegatedCredentials::new(SecretString::new("a.b.c"), key.clone(), "files").unwrap_err();
        assert!(matches!(refused, AgentClientError::Config(_)), "{refused}");

        let held = DelegatedCredentials::new(SecretString::new(format!("{token}\n")), key.clone(), "files").unwrap();
        let (aat, proof) = held
            .dpop_credentials("POST", "https://tools.example/mcp", None)
            .unwrap();
        assert_eq!(aat.expose(), token, "the token is presented trimmed and unchanged");
        let request = DpopRequest {
            method: "POST",
            uri: "https://tools.example/mcp",
            access_token: Some(token),
        };
        let verified = aip_aat::dpop::verify_dpop_proof(&proof, &request, SystemClock.now()).unwrap();
        assert_eq!(&verified.jkt, key.key_id());
        let (aat, proof) = held.credentials(&Call::tools_call("read_file", None)).unwrap();
        assert_eq!(aat.expose(), token);
        assert_eq!(proof.split('.').count(), 3);
        assert!(!format!("{held:?}").contains(token));
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        for (failures, cap) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60), (u32::MAX, 60)] {
            for _ in 0..50 {
                assert!(backoff(failures) <= Duration::from_secs(cap), "{failures}");
            }
        }
        // Full jitter: not always the cap.
        assert!((0..50).any(|_| backoff(7) < Duration::from_secs(59)));
    }

    #[test]
    fn schedule_follows_the_lifetime() {
        let received = Instant::now();
        let aat = IssuedAat {
            aat: SecretString::new("t"),
            issued_at: 0,
            expires_at: 901,
            capabilities_granted: GrantedCapabilities::default(),
            capabilities_denied: DeniedCapabilities::default(),
            received,
            lifetime: Duration::from_secs(901),
        };
        assert_eq!(aat.refresh_due(0.75), received + Duration::from_secs(675));
        assert_eq!(aat.last_chance(), received + Duration::from_secs(895));
        let short = IssuedAat {
            lifetime: Duration::from_secs(5),
            ..aat
        };
        assert_eq!(short.refresh_due(0.5), received + Duration::from_secs(2));
        assert_eq!(short.last_chance(), received + Duration::from_millis(3600));
        let tiny = IssuedAat {
            lifetime: Duration::from_secs(1),
            ..short
        };
        assert_eq!(tiny.refresh_due(0.75), received + MIN_REFRESH_INTERVAL);
    }

    #[test]
    fn error_text_is_one_line_without_secrets() {
        let body = br#"{"error":"invalid_grant","error_description":"token r-secret\nreused"}"#;
        let error = refusal(400, body, &["r-secret", ""]);
        assert_eq!(
            error.to_string(),
            "the issuer refused the request (HTTP 400 invalid_grant): token <redacted> reused"
        );
        let other = refusal(502, b"<html>bad gateway</html>", &[]);
        assert!(matches!(other, AgentClientError::Refused { error: None, .. }));
        assert_eq!(
            other.to_string(),
            "the issuer refused the request (HTTP 502): <html>bad gateway</html>"
        );
        let unknown = refusal(400, br#"{"error":"slow_down","error_description":"later"}"#, &[]);
        assert!(unknown.to_string().ends_with("slow_down: later"));
        let redirect = refusal(307, b"", &[]);
        assert_eq!(
            redirect.to_string(),
            "the issuer refused the request (HTTP 307): Temporary Redirect"
        );
        assert!(one_line(&"x".repeat(1000), &[]).chars().count() <= MAX_DESCRIPTION_CHARS + 1);

        let bad: Result<TokenResponse, _> = serde_json::from_str(r#"{"aat":"t","expires_in":"eyJ-secret"}"#);
        let text = json_error("/v1/token", &bad.err().unwrap());
        assert!(!text.contains("eyJ-secret"), "{text}");
        assert!(text.starts_with("/v1/token: invalid type"), "{text}");
    }
}
