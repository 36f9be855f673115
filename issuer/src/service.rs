//! The issuer's domain logic: challenges, the three grants of `POST /v1/token`, user
//! authorization, capability intersection, AAT minting, refresh-token rotation with reuse
//! detection, users, and revocation. HTTP lives in [`crate::http`].
//!
//! Order of checks for a token request: the body's shape, the agent's existence, the proof of
//! possession (challenge, signature), and only then the agent's status, the user and the
//! capabilities. So an unauthenticated caller learns no more than whether an agent id exists;
//! denials after a valid proof are written to the audit log, earlier failures only to the
//! service log and metrics (no one can fill the audit log without an agent key).

use std::net::IpAddr;
use std::sync::Arc;

use aip_aat::aid::AgentStatus;
use aip_aat::api::{
    ChallengeRequest, ChallengeResponse, CreateUserRequest, CreateUserResponse, DeniedCapabilities, GrantType,
    GrantedCapabilities, RequestedCapabilities, RevokeRequest, RevokeResponse, TokenErrorCode, TokenRequest,
    TokenResponse, UserAuthorization, UserList, UserView,
};
use aip_aat::clock::Clock;
use aip_aat::ids::{AgentId, Jti};
use aip_aat::secret::SecretString;
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UserBinding, encode_aat,
};
use aip_registry::audit::AuditEntry;
use aip_registry::service::{check_text, check_tool_names as check_tools, random_secret, token_digest as digest};
use aip_registry::store::{Revocations, RevokedEntry};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::challenge::{Challenges, KEY_LEN};
use crate::config::{CHALLENGE_TTL, IssuerSettings};
use crate::directory::{AgentDirectory, Caller, DirectoryAgent, DirectoryError};
use crate::keys::SigningKeys;
use crate::oidc::{OidcError, OidcVerifier};
use crate::store::{
    Covered, Issuance, IssuedToken, IssuerStore, Ledger, LedgerError, Refusal, SessionChange, SessionRecord,
    StoreError, UserRecord,
};

/// Prefix of user API keys.
pub const USER_KEY_PREFIX: &str = "aip_uk_";
/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "aip_rf_";

/// A request could not be served. [`crate::http`] maps each variant to a status and an
/// `{"error", "error_description"}` body; `Internal` details are logged, never sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// A token endpoint error (spec 9.4.2).
    #[error("{code:?}: {description}")]
    Token {
        /// The code.
        code: TokenErrorCode,
        /// What went wrong, for the client.
        description: String,
        /// Structured details.
        details: Option<Value>,
    },
    /// Missing or invalid access token (admin endpoints).
    #[error("{0}")]
    Unauthorized(String),
    /// The access token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (admin endpoints).
    #[error("{0}")]
    InvalidRequest(String),
    /// Nothing has this id.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with stored state.
    #[error("{0}")]
    Conflict(String),
    /// Something failed on our side (or the registry is unreachable).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IssuerError {
    fn token(code: TokenErrorCode, description: impl Into<String>) -> Self {
        Self::Token {
            code,
            description: description.into(),
            details: None,
        }
    }

    fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    /// The token-endpoint code this error is reported with.
    pub fn token_code(&self) -> TokenErrorCode {
        match self {
            Self::Token { code, .. } => *code,
            Self::InvalidRequest(_) => TokenErrorCode::InvalidRequest,
            Self::NotFound(_) => TokenErrorCode::AgentNotFound,
            _ => TokenErrorCode::IssuerError,
        }
    }
}

impl From<StoreError> for IssuerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m.into()),
            e => Self::internal(e),
        }
    }
}

impl From<DirectoryError> for IssuerError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Unauthorized(m) => Self::Unauthorized(m),
            DirectoryError::Forbidden(m) => Self::Forbidden(m),
            DirectoryError::AgentNotFound => Self::NotFound("no agent has this id".into()),
            DirectoryError::Refused(m) => Self::Conflict(m),
            e => Self::internal(e),
        }
    }
}

/// The user an AAT is issued for.
struct AuthorizedUser {
    user_id: String,
    method: AuthMethod,
    auth_time: i64,
    tools: Vec<String>,
    scope: DelegationScope,
}

/// Whether `list` grants `tool` (`*` grants any).
fn allows(list: &[String], tool: &str) -> bool {
    list.iter().any(|t| t == "*" || t == tool)
}

fn random_token(prefix: &str) -> Result<SecretString, IssuerError> {
    random_secret(prefix).map_err(IssuerError::internal)
}

/// A new refresh token: [`REFRESH_TOKEN_PREFIX`], a UUID v7 (public and ordered by time), `.`,
/// then 256 random bits.
fn new_refresh_token(clock: &dyn Clock) -> Result<SecretString, IssuerError> {
    let id = Jti::time_ordered(clock).map_err(IssuerError::internal)?;
    random_token(&format!("{REFRESH_TOKEN_PREFIX}{id}."))
}

/// What the database stores for a refresh token, and looks it up by: the token's time-ordered
/// id, `.`, and the SHA-256 of the whole token. New tokens thus land at one end of the table's
/// index instead of on a random page of it. Text without an id (such as a token issued
/// before ids were added) is keyed by its digest alone.
fn refresh_key(token: &str) -> String {
    match token
        .strip_prefix(REFRESH_TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    {
        Some((id, _)) => format!("{id}.{}", digest(token)),
        None => digest(token),
    }
}

fn unix_time(t: i64) -> Result<OffsetDateTime, IssuerError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(IssuerError::internal)
}

/// The token issuer.
pub struct Issuer {
    settings: IssuerSettings,
    directory: Arc<dyn AgentDirectory>,
    store: IssuerStore,
    ledger: Ledger,
    keys: Arc<SigningKeys>,
    challenges: Challenges,
    oidc: OidcVerifier,
    clock: Arc<dyn Clock>,
    /// API-key users by key digest, with when they were read.
    api_keys: std::sync::Mutex<std::collections::HashMap<String, (UserRecord, std::time::Instant)>>,
}

/// How long an API-key user is remembered.
const USER_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer_id", &self.settings.issuer_id)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer over `store`, signing with `keys`, reaching the registry through `directory`.
    /// Starts the issuance writer, so it must run inside a Tokio runtime.
    pub async fn new(
        settings: IssuerSettings,
        directory: Arc<dyn AgentDirectory>,
        store: IssuerStore,
        keys: Arc<SigningKeys>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IssuerError> {
        // A fresh key is offered; the database keeps the first one any replica stored.
        let mut offered = [0u8; KEY_LEN];
        aip_aat::ids::fill_random(&mut offered).map_err(|_| IssuerError::internal(aip_aat::keys::KeyError::Random))?;
        let secret = store.secret("challenge_key", || hex::encode(offered)).await?;
        let key: [u8; KEY_LEN] = hex::decode(&secret)
            .ok()
            .and_then(|k| k.try_into().ok())
            .filter(|k: &[u8; KEY_LEN]| k.iter().any(|b| *b != 0))
            .ok_or_else(|| IssuerError::internal(StoreError::Corrupt("challenge_key")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(IssuerError::internal)?;
        let oidc = OidcVerifier::new(settings.oidc.clone(), http).map_err(IssuerError::internal)?;
        Ok(Self {
            challenges: Challenges::new(&key, CHALLENGE_TTL),
            ledger: Ledger::start(store.clone()),
            settings,
            directory,
            store,
            keys,
            oidc,
            clock,
            api_keys: std::sync::Mutex::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// The signing keys.
    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    /// `POST /v1/challenge`.
    pub async fn challenge(&self, request: &ChallengeRequest) -> Result<ChallengeResponse, IssuerError> {
        self.registered_agent(&request.agent_id).await?;
        let (challenge, expires_at) = self
            .challenges
            .issue(&request.agent_id, self.clock.now())
            .map_err(IssuerError::internal)?;
        Ok(ChallengeResponse {
            challenge,
            expires_at: unix_time(expires_at)?,
        })
    }

    async fn registered_agent(&self, agent_id: &AgentId) -> Result<Arc<DirectoryAgent>, IssuerError> {
        self.directory
            .agent(agent_id)
            .await
            .map_err(IssuerError::from)?
            .ok_or_else(|| IssuerError::token(TokenErrorCode::AgentNotFound, "no agent has this id"))
    }

    /// `POST /v1/token`. `peer` is the client's address, for `local_user`.
    pub async fn token(&self, request: TokenRequest, peer: Option<IpAddr>) -> Result<TokenResponse, IssuerError> {
        let grant = request.grant_type;
        let result = self.token_inner(request, peer).await;
        match &result {
            Ok(_) => metrics::counter!("aip_issuer_tokens_issued_total", "grant" => grant_name(grant)).increment(1),
            Err(e) => {
                let code = serde_json::to_value(e.token_code())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                metrics::counter!("aip_issuer_token_denials_total", "error" => code).increment(1);
            }
        }
        result
    }

    async fn token_inner(&self, request: TokenRequest, peer: Option<IpAddr>) -> Result<TokenResponse, IssuerError> {
        let now = self.clock.now();
        check_text("audience", &request.audience, 256)
            .map_err(|m| IssuerError::token(TokenErrorCode::InvalidRequest, m))?;
        if let Some(requested) = &request.requested_capabilities {
            check_tools("requested_capabilities.tools", &requested.tools)
                .map_err(|m| IssuerError::token(TokenErrorCode::InvalidRequest, m))?;
            for scope in requested.resource_scopes.iter().chain(&requested.allowed_servers) {
                check_text("requested_capabilities", scope, 256)
                    .map_err(|m| IssuerError::token(TokenErrorCode::InvalidRequest, m))?;
            }
        }
        match (
            request.grant_type == GrantType::AatRefresh,
            request.refresh_token.is_some(),
        ) {
            (true, false) => {
                return Err(IssuerError::token(
                    TokenErrorCode::InvalidRequest,
                    "aat_refresh needs refresh_token",
                ));
            }
            (false, true) => {
                return Err(IssuerError::token(
                    TokenErrorCode::InvalidRequest,
                    "refresh_token is only for the aat_refresh grant",
                ));
            }
            _ => {}
        }
        if request.grant_type != GrantType::AgentAuthentication && request.user_authorization.is_some() {
            return Err(IssuerError::token(
                TokenErrorCode::InvalidRequest,
                "user_authorization is only for the agent_authentication grant",
            ));
        }

        let agent = self.registered_agent(&request.agent_id).await?;
        let challenge = self.verify_proof(&request, &agent, now)?;
        let actor = format!("agent:{}", agent.agent_id);
        let request = &request;
        let deny = |code: TokenErrorCode, description: String| {
            self.deny(&agent, request.grant_type, &request.audience, code, description, now)
        };
        match agent.status {
            AgentStatus::Active => {}
            AgentStatus::Suspended => {
                return Err(deny(TokenErrorCode::AgentSuspended, "the agent is suspended".into()).await);
            }
            AgentStatus::Revoked => {
                return Err(deny(TokenErrorCode::AgentRevoked, "the agent is revoked".into()).await);
            }
        }

        if request.grant_type == GrantType::AatRefresh {
            return self.refresh(request, &agent, challenge, now).await;
        }

        let user = match request.grant_type {
            GrantType::AgentAttestation => {
                if !agent.autonomous {
                    return Err(deny(
                        TokenErrorCode::UserAuthFailed,
                        "agent_attestation is only for agents registered as autonomous; send user_authorization".into(),
                    )
                    .await);
                }
                None
            }
            _ => {
                let Some(authorization) = &request.user_authorization else {
                    return Err(IssuerError::token(
                        TokenErrorCode::InvalidRequest,
                        "agent_authentication needs user_authorization",
                    ));
                };
                match self.authorize_user(authorization, peer, now).await {
                    Ok(user) => Some(user),
                    Err(IssuerError::Token { code, description, .. }) => {
                        return Err(deny(code, description).await);
                    }
                    Err(e) => return Err(e),
                }
            }
        };

        let user_tools = user.as_ref().map(|u| u.tools.as_slice());
        let (granted, denied) = intersect(request.requested_capabilities.as_ref(), &agent.capabilities, user_tools);
        if granted.is_empty() {
            let e = deny(
                TokenErrorCode::CapabilitiesDenied,
                "no requested capability can be granted".into(),
            )
            .await;
            return Err(with_details(e, json!({"denied_tools": denied})));
        }
        let requested = request.requested_capabilities.clone().unwrap_or_default();
        let capabilities = Capabilities {
            tools: granted,
            resource_scopes: requested.resource_scopes,
            max_calls_per_session: None,
            allowed_servers: requested.allowed_servers,
        };
        let session_id = format!("ses_{}", Jti::time_ordered(&*self.clock).map_err(IssuerError::internal)?);
        let session = SessionRecord {
            session_id: session_id.clone(),
            agent_id: agent.agent_id.clone(),
            user_id: user.as_ref().map(|u| u.user_id.clone()),
            auth_method: user.as_ref().map(|u| u.method.to_string()),
            auth_time: user.as_ref().map(|u| u.auth_time),
            delegation_scope: user.as_ref().map(|u| u.scope.to_string()),
            audience: request.audience.clone(),
            capabilities: serde_json::to_string(&capabilities).map_err(IssuerError::internal)?,
            created_at: now,
            expires_at: now + self.settings.session_lifetime,
            revoked_at: None,
        };
        let binding = user.map(|u| UserBinding {
            user_id: u.user_id,
            auth_method: u.method,
            auth_time: u.auth_time,
            delegation_scope: Some(u.scope),
        });
        let refresh_token = new_refresh_token(&*self.clock)?;
        let change = SessionChange::New {
            session: session.clone(),
            refresh_digest: refresh_key(refresh_token.expose()),
        };
        self.mint(Mint {
            agent: &agent,
            audience: &request.audience,
            binding,
            capabilities,
            session: &session,
            change,
            challenge,
            refresh_token,
            denied,
            grant: request.grant_type,
            actor,
            now,
        })
        .await
    }

    /// Records a refusal of a request whose agent proved possession of its key, and returns it.
    async fn deny(
        &self,
        agent: &DirectoryAgent,
        grant: GrantType,
        audience: &str,
        code: TokenErrorCode,
        description: String,
        now: i64,
    ) -> IssuerError {
        let entry = AuditEntry {
            actor: format!("agent:{}", agent.agent_id),
            action: "token.deny",
            subject: agent.agent_id.to_string(),
            details: json!({
                "grant": grant_name(grant),
                "error": code,
                "description": description,
                "audience": audience,
            }),
        };
        if let Err(e) = self.ledger.audit(entry, now).await {
            tracing::warn!(error = ?e, "could not audit a token denial");
        }
        IssuerError::token(code, description)
    }

    /// Checks the signed challenge: its shape, time and signature by the agent's current key,
    /// then the challenge itself (issued here, for this agent, unexpired). Single use is
    /// enforced when the token is recorded.
    fn verify_proof(
        &self,
        request: &TokenRequest,
        agent: &DirectoryAgent,
        now: i64,
    ) -> Result<crate::challenge::OpenedChallenge, IssuerError> {
        request
            .proof
            .verify(&agent.public_key, &agent.agent_id, now, CHALLENGE_TTL)
            .map_err(|e| IssuerError::token(TokenErrorCode::InvalidProof, e.to_string()))?;
        self.challenges
            .open(&request.proof.challenge, &agent.agent_id, now)
            .map_err(|e| IssuerError::token(TokenErrorCode::InvalidProof, e.to_string()))
    }

    async fn authorize_user(
        &self,
        authorization: &UserAuthorization,
        peer: Option<IpAddr>,
        now: i64,
    ) -> Result<AuthorizedUser, IssuerError> {
        let failed = |m: &str| IssuerError::token(TokenErrorCode::UserAuthFailed, m);
        let user = match authorization {
            UserAuthorization::ApiKey { token } => {
                let record = self
                    .api_key_user(&digest(token.expose()))
                    .await?
                    .ok_or_else(|| failed("the API key is not valid"))?;
                if record.revoked_at.is_some() {
                    return Err(failed("the user's authorization was revoked"));
                }
                // Revocation is also checked where the token is recorded, authoritatively.
                return Ok(AuthorizedUser {
                    user_id: record.user_id,
                    method: AuthMethod::ApiKey,
                    // An API key is presented with each request: the user authenticated now.
                    auth_time: now,
                    tools: record.delegatable_tools,
                    scope: DelegationScope::from(record.delegation_scope.as_str()),
                });
            }
            UserAuthorization::OidcIdToken { token } => {
                if self.oidc.is_empty() {
                    return Err(failed("no identity provider is trusted for oidc_id_token"));
                }
                let identity = self.oidc.verify(token.expose(), now).await.map_err(|e| match e {
                    e @ OidcError::JwksUnavailable => {
                        tracing::warn!(error = ?e, "identity provider keys unavailable");
                        failed("the identity provider's keys are unavailable; try again")
                    }
                    e => failed(&format!("the ID token was refused: {e}")),
                })?;
                AuthorizedUser {
                    user_id: identity.user_id,
                    method: AuthMethod::Oidc,
                    auth_time: identity.auth_time,
                    tools: identity.delegatable_tools,
                    scope: DelegationScope::Tools,
                }
            }
            UserAuthorization::LocalUser { username, .. } => {
                let Some(tools) = &self.settings.local_user_tools else {
                    return Err(failed("local_user authorization is not enabled on this issuer"));
                };
                if !peer.is_some_and(|ip| ip.is_loopback()) {
                    return Err(failed(
                        "local_user authorization is accepted from loopback clients only",
                    ));
                }
                let valid = !username.is_empty()
                    && username.len() <= 64
                    && username
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !valid {
                    return Err(IssuerError::token(
                        TokenErrorCode::InvalidRequest,
                        "username must be 1-64 letters, digits, _ - or .",
                    ));
                }
                AuthorizedUser {
                    user_id: format!("local:{username}"),
                    method: AuthMethod::Local,
                    auth_time: now,
                    tools: tools.clone(),
                    scope: DelegationScope::Tools,
                }
            }
            UserAuthorization::Oauth2Token { .. } => {
                return Err(failed(
                    "oauth2_token is not supported by this issuer; use oidc_id_token or api_key",
                ));
            }
        };
        // Revocation of these users is checked where the token is recorded, authoritatively
        // and without a read per request here.
        Ok(user)
    }

    /// The user holding an API key, remembered for a few seconds (a revocation in this
    /// process forgets it at once; the issuance transaction checks revocation regardless).
    async fn api_key_user(&self, key_digest: &str) -> Result<Option<UserRecord>, IssuerError> {
        if let Some((user, at)) = self
            .api_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_digest)
            && at.elapsed() < USER_CACHE_TTL
        {
            return Ok(Some(user.clone()));
        }
        let user = self.store.user_by_key(key_digest).await?;
        if let Some(user) = &user {
            let mut cache = self.api_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= 100_000 {
                cache.clear();
            }
            cache.insert(key_digest.to_owned(), (user.clone(), std::time::Instant::now()));
        }
        Ok(user)
    }

    async fn refresh(
        &self,
        request: &TokenRequest,
        agent: &DirectoryAgent,
        challenge: crate::challenge::OpenedChallenge,
        now: i64,
    ) -> Result<TokenResponse, IssuerError> {
        let invalid = |m: &str| IssuerError::token(TokenErrorCode::InvalidGrant, m);
        let presented = request
            .refresh_token
            .as_ref()
            .map(|t| refresh_key(t.expose()))
            .ok_or_else(|| invalid("aat_refresh needs refresh_token"))?;
        let lookup = self
            .store
            .refresh_token(&presented)
            .await?
            .ok_or_else(|| invalid("the refresh token is not valid"))?;
        let session = lookup.session;
        if lookup.used_at.is_some() || session.agent_id != agent.agent_id {
            // A refresh token presented twice, or by another agent, was stolen: end the session.
            self.end_session(&session.session_id, "refresh token reuse").await;
            return Err(invalid("the refresh token was already used; the session is revoked"));
        }
        if session.revoked_at.is_some() || now >= session.expires_at {
            return Err(invalid("the session was revoked or has ended"));
        }
        if request.audience != session.audience {
            return Err(IssuerError::token(
                TokenErrorCode::InvalidRequest,
                "audience must be the session's audience",
            ));
        }
        let mut capabilities: Capabilities =
            serde_json::from_str(&session.capabilities).map_err(|_| StoreError::Corrupt("session capabilities"))?;
        let narrowed: Vec<String> = capabilities
            .tools
            .iter()
            .filter(|t| allows(&agent.capabilities, t))
            .filter(|t| {
                request
                    .requested_capabilities
                    .as_ref()
                    .is_none_or(|r| r.tools.iter().any(|wanted| wanted == *t))
            })
            .cloned()
            .collect();
        let denied: Vec<String> = capabilities
            .tools
            .iter()
            .filter(|t| !narrowed.contains(t))
            .cloned()
            .collect();
        if narrowed.is_empty() {
            return Err(IssuerError::token(
                TokenErrorCode::CapabilitiesDenied,
                "no capability of the session can be granted",
            ));
        }
        capabilities.tools = narrowed;
        let binding = match (&session.user_id, session.auth_time) {
            (Some(user_id), Some(auth_time)) => Some(UserBinding {
                user_id: user_id.clone(),
                auth_method: AuthMethod::from(session.auth_method.as_deref().unwrap_or("api_key")),
                auth_time,
                delegation_scope: session.delegation_scope.as_deref().map(DelegationScope::from),
            }),
            _ => None,
        };
        let refresh_token = new_refresh_token(&*self.clock)?;
        let change = SessionChange::Refresh {
            session_id: session.session_id.clone(),
            presented,
            next: refresh_key(refresh_token.expose()),
        };
        self.mint(Mint {
            agent,
            audience: &request.audience,
            binding,
            capabilities,
            session: &session,
            change,
            challenge,
            refresh_token,
            denied,
            grant: GrantType::AatRefresh,
            actor: format!("agent:{}", agent.agent_id),
            now,
        })
        .await
    }

    async fn mint(&self, m: Mint<'_>) -> Result<TokenResponse, IssuerError> {
        let expires_at = (m.now + self.settings.token_ttl).min(m.session.expires_at);
        let jti = Jti::time_ordered(&*self.clock).map_err(IssuerError::internal)?;
        let signer = self.keys.signer();
        let claims = AatClaims {
            aat_version: AAT_VERSION.into(),
            iss: self.settings.issuer_id.clone(),
            sub: m.agent.agent_id.clone(),
            aud: Audience::one(m.audience),
            iat: m.now,
            exp: expires_at,
            nbf: None,
            jti: jti.clone(),
            agent: AgentClaims {
                id: m.agent.agent_id.clone(),
                name: Some(m.agent.name.clone()),
                public_key_thumbprint: m.agent.public_key.thumbprint().clone(),
                aid_hash: None,
            },
            user_binding: m.binding,
            capabilities: m.capabilities,
            context: ContextClaims {
                session_id: m.session.session_id.clone(),
                policy_hash: None,
                registry_id: self.settings.registry_id.clone(),
            },
            cnf: Some(Confirmation {
                jkt: m.agent.public_key.thumbprint().clone(),
            }),
        };
        let aat = encode_aat(&claims, &**signer).map_err(IssuerError::internal)?;
        let user_id = claims.user_binding.as_ref().map(|b| b.user_id.clone());
        let refresh = matches!(m.change, SessionChange::Refresh { .. });
        let issuance = Issuance {
            challenge: m.challenge,
            token: IssuedToken {
                jti: jti.to_string(),
                agent_id: m.agent.agent_id.clone(),
                user_id: user_id.clone(),
                session_id: m.session.session_id.clone(),
                kid: signer.key_id().to_string(),
                issued_at: m.now,
                expires_at,
            },
            session: m.change,
            audit: AuditEntry {
                actor: m.actor,
                action: if refresh { "token.refresh" } else { "token.issue" },
                subject: jti.to_string(),
                details: json!({
                    "agent_id": m.agent.agent_id,
                    "user_id": user_id,
                    "session_id": m.session.session_id,
                    "audience": m.audience,
                    "tools": claims.capabilities.tools,
                    "exp": expires_at,
                    "kid": signer.key_id(),
                    "grant": grant_name(m.grant),
                }),
            },
        };
        match self.ledger.issue(issuance).await {
            Ok(()) => {}
            Err(LedgerError::Refused(refusal)) => {
                return Err(match refusal {
                    Refusal::ChallengeReplayed => IssuerError::token(
                        TokenErrorCode::InvalidProof,
                        "the challenge was already used; request a new one",
                    ),
                    Refusal::UserRevoked => {
                        self.deny(
                            m.agent,
                            m.grant,
                            m.audience,
                            TokenErrorCode::UserAuthFailed,
                            "the user's authorization was revoked".into(),
                            m.now,
                        )
                        .await
                    }
                    Refusal::RefreshReused => {
                        self.end_session(&m.session.session_id, "refresh token reuse").await;
                        IssuerError::token(
                            TokenErrorCode::InvalidGrant,
                            "the refresh token was already used; the session is revoked",
                        )
                    }
                    Refusal::SessionEnded => {
                        IssuerError::token(TokenErrorCode::InvalidGrant, "the session was revoked or has ended")
                    }
                });
            }
            Err(LedgerError::Store(e)) => return Err(IssuerError::internal(e)),
        }
        let denied_reason = if m.denied.is_empty() {
            "all requested capabilities granted".to_owned()
        } else {
            "not among the agent's registered capabilities or the user's delegatable tools".to_owned()
        };
        Ok(TokenResponse {
            aat: SecretString::new(aat),
            token_type: "aat+jwt".into(),
            expires_in: u64::try_from(expires_at - m.now).unwrap_or(0),
            refresh_token: Some(m.refresh_token),
            capabilities_granted: GrantedCapabilities {
                tools: claims.capabilities.tools,
                resource_scopes: claims.capabilities.resource_scopes,
            },
            capabilities_denied: DeniedCapabilities {
                tools: m.denied,
                reason: denied_reason,
            },
        })
    }

    /// Revokes a session after refresh-token reuse; failures are logged (the refresh itself is
    /// refused regardless).
    async fn end_session(&self, session_id: &str, reason: &str) {
        let outcome = self
            .revoke_covered(
                "system:issuer",
                "session.revoke",
                &format!("session:{session_id}"),
                Some(reason),
                |store, audit, at| {
                    let session_id = session_id.to_owned();
                    let reason = reason.to_owned();
                    async move {
                        Ok(store
                            .revoke_session(&session_id, Some(&reason), at, &audit)
                            .await?
                            .unwrap_or_default())
                    }
                },
            )
            .await;
        match outcome {
            Ok((covered, _)) => {
                tracing::warn!(
                    session_id,
                    tokens = covered.tokens.len(),
                    "refresh token reuse: session revoked"
                );
            }
            Err(e) => tracing::error!(error = ?e, session_id, "could not revoke a session after refresh token reuse"),
        }
    }

    /// Records a revocation in the issuer's tables (with `action` in the audit log), then
    /// publishes what it covers through the registry.
    async fn revoke_covered<F, Fut>(
        &self,
        actor: &str,
        action: &'static str,
        subject: &str,
        reason: Option<&str>,
        local: F,
    ) -> Result<(Covered, u64), IssuerError>
    where
        F: FnOnce(IssuerStore, AuditEntry, i64) -> Fut,
        Fut: Future<Output = Result<Covered, StoreError>>,
    {
        let now = self.clock.now();
        let audit = AuditEntry {
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            details: json!({"reason": reason}),
        };
        let covered = local(self.store.clone(), audit, now).await?;
        let user = subject.strip_prefix("user:").map(str::to_owned);
        let revocations = Revocations {
            tokens: covered.tokens.clone(),
            sessions: covered.sessions.clone(),
            users: user.into_iter().collect(),
            reason: reason.map(str::to_owned),
        };
        let version = if revocations.is_empty() {
            0
        } else {
            self.directory.publish(actor, subject, &revocations).await?
        };
        Ok((covered, version))
    }

    /// `POST /v1/revoke` (admin).
    pub async fn revoke(&self, caller: &Caller, request: RevokeRequest) -> Result<RevokeResponse, IssuerError> {
        if !caller.admin {
            return Err(IssuerError::Forbidden("this operation needs an admin token".into()));
        }
        let reason = request.reason.as_deref();
        if let Some(reason) = reason {
            check_text("reason", reason, 256).map_err(IssuerError::InvalidRequest)?;
        }
        let targets = usize::from(request.jti.is_some())
            + usize::from(request.session_id.is_some())
            + usize::from(request.user_id.is_some())
            + usize::from(request.agent_id.is_some());
        if targets != 1 {
            return Err(IssuerError::InvalidRequest(
                "give exactly one of jti, session_id, user_id, agent_id".into(),
            ));
        }
        let actor = caller.actor();
        let (revoked, id, covered, version) = if let Some(jti) = request.jti {
            check_text("jti", &jti, 256).map_err(IssuerError::InvalidRequest)?;
            let expires_at = self
                .store
                .token_expiry(&jti)
                .await?
                .ok_or_else(|| IssuerError::NotFound("no AAT with this jti was issued here".into()))?;
            let covered = Covered {
                tokens: vec![RevokedEntry {
                    id: jti.clone(),
                    expires_at: Some(expires_at),
                }],
                sessions: Vec::new(),
            };
            let revocations = Revocations {
                tokens: covered.tokens.clone(),
                reason: reason.map(str::to_owned),
                ..Revocations::default()
            };
            let version = self
                .directory
                .publish(&actor, &format!("aat:{jti}"), &revocations)
                .await?;
            ("aat", jti, covered, version)
        } else if let Some(session_id) = request.session_id {
            check_text("session_id", &session_id, 256).map_err(IssuerError::InvalidRequest)?;
            if self.store.session(&session_id).await?.is_none() {
                return Err(IssuerError::NotFound("no session has this id".into()));
            }
            let subject = format!("session:{session_id}");
            let id = session_id.clone();
            let (covered, version) = self
                .revoke_covered(&actor, "session.revoke", &subject, reason, |store, audit, at| {
                    let reason = reason.map(str::to_owned);
                    async move {
                        Ok(store
                            .revoke_session(&id, reason.as_deref(), at, &audit)
                            .await?
                            .unwrap_or_default())
                    }
                })
                .await?;
            ("session", session_id, covered, version)
        } else if let Some(user_id) = request.user_id {
            check_text("user_id", &user_id, 256).map_err(IssuerError::InvalidRequest)?;
            let subject = format!("user:{user_id}");
            let id = user_id.clone();
            self.api_keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, (user, _)| user.user_id != user_id);
            let (covered, version) = self
                .revoke_covered(&actor, "user.revoke", &subject, reason, |store, audit, at| {
                    let reason = reason.map(str::to_owned);
                    async move { store.revoke_user(&id, reason.as_deref(), at, &audit).await }
                })
                .await?;
            ("user", user_id, covered, version)
        } else if let Some(agent_id) = request.agent_id {
            let registry_version = match self.directory.revoke_agent(caller, &agent_id, reason).await {
                Ok(version) => version,
                // Revoked before: still end its sessions below.
                Err(DirectoryError::Refused(_)) => 0,
                Err(e) => return Err(e.into()),
            };
            let subject = format!("agent:{agent_id}");
            let id = agent_id.clone();
            let (covered, version) = self
                .revoke_covered(&actor, "agent.sessions_revoke", &subject, reason, |store, audit, at| {
                    let reason = reason.map(str::to_owned);
                    async move { store.revoke_agent_sessions(&id, reason.as_deref(), at, &audit).await }
                })
                .await?;
            ("agent", agent_id.to_string(), covered, version.max(registry_version))
        } else {
            return Err(IssuerError::InvalidRequest(
                "give exactly one of jti, session_id, user_id, agent_id".into(),
            ));
        };
        Ok(RevokeResponse {
            revoked: revoked.into(),
            id,
            tokens: covered.tokens.len(),
            sessions: covered.sessions.len(),
            revocation_version: version,
        })
    }

    /// `POST /v1/users` (admin): a user with an API key, shown once.
    pub async fn create_user(
        &self,
        caller: &Caller,
        request: CreateUserRequest,
    ) -> Result<CreateUserResponse, IssuerError> {
        if !caller.admin {
            return Err(IssuerError::Forbidden("this operation needs an admin token".into()));
        }
        check_text("user_id", &request.user_id, 256).map_err(IssuerError::InvalidRequest)?;
        if request.user_id.starts_with("local:") {
            return Err(IssuerError::InvalidRequest(
                "user ids starting with local: are reserved for local_user authorization".into(),
            ));
        }
        if request.delegatable_tools.is_empty() {
            return Err(IssuerError::InvalidRequest(
                "delegatable_tools must name at least one tool (or *)".into(),
            ));
        }
        check_tools("delegatable_tools", &request.delegatable_tools).map_err(IssuerError::InvalidRequest)?;
        let scope = request.delegation_scope.unwrap_or_else(|| "tools".into());
        if !matches!(scope.as_str(), "tools" | "read_only") {
            return Err(IssuerError::InvalidRequest(
                "delegation_scope must be tools or read_only".into(),
            ));
        }
        let now = self.clock.now();
        let api_key = random_token(USER_KEY_PREFIX)?;
        let record = UserRecord {
            user_id: request.user_id.clone(),
            delegatable_tools: request.delegatable_tools.clone(),
            delegation_scope: scope.clone(),
            created_at: now,
            revoked_at: None,
        };
        let audit = AuditEntry {
            actor: caller.actor(),
            action: "user.create",
            subject: request.user_id.clone(),
            details: json!({"delegatable_tools": request.delegatable_tools, "delegation_scope": scope}),
        };
        self.store
            .create_user(&record, &digest(api_key.expose()), &audit)
            .await?;
        Ok(CreateUserResponse {
            user_id: request.user_id,
            api_key,
            delegatable_tools: request.delegatable_tools,
            delegation_scope: scope,
        })
    }

    /// `GET /v1/users` (admin).
    pub async fn users(&self, caller: &Caller, after: Option<&str>, limit: u32) -> Result<UserList, IssuerError> {
        if !caller.admin {
            return Err(IssuerError::Forbidden("this operation needs an admin token".into()));
        }
        let users = self.store.users(after.unwrap_or(""), limit).await?;
        let users = users
            .into_iter()
            .map(|u| {
                Ok(UserView {
                    user_id: u.user_id,
                    delegatable_tools: u.delegatable_tools,
                    delegation_scope: u.delegation_scope,
                    created_at: unix_time(u.created_at)?,
                    revoked_at: u.revoked_at.map(unix_time).transpose()?,
                })
            })
            .collect::<Result<_, IssuerError>>()?;
        Ok(UserList { users })
    }

    /// Who holds an access token.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, IssuerError> {
        Ok(self.directory.authenticate(token).await?)
    }

    /// Background work until `shutdown` completes: re-reads the published signing keys and
    /// purges expired challenges, sessions and log entries.
    pub async fn run_background(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut keys = tokio::time::interval(crate::keys::REFRESH_INTERVAL);
        let mut purge = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = keys.tick() => {
                    if let Err(e) = self.keys.refresh(&self.store, self.clock.now()).await {
                        tracing::warn!(error = %e, "re-reading the token signing keys failed");
                    }
                }
                _ = purge.tick() => {
                    if let Err(e) = self.store.purge(self.clock.now()).await {
                        tracing::warn!(error = %e, "purging expired issuer records failed");
                    }
                }
            }
        }
    }
}

/// Everything [`Issuer::mint`] needs.
struct Mint<'a> {
    agent: &'a DirectoryAgent,
    audience: &'a str,
    binding: Option<UserBinding>,
    capabilities: Capabilities,
    session: &'a SessionRecord,
    change: SessionChange,
    challenge: crate::challenge::OpenedChallenge,
    refresh_token: SecretString,
    denied: Vec<String>,
    grant: GrantType,
    actor: String,
    now: i64,
}

fn grant_name(grant: GrantType) -> &'static str {
    match grant {
        GrantType::AgentAuthentication => "agent_authentication",
        GrantType::AatRefresh => "aat_refresh",
        GrantType::AgentAttestation => "agent_attestation",
    }
}

fn with_details(e: IssuerError, details: Value) -> IssuerError {
    match e {
        IssuerError::Token { code, description, .. } => IssuerError::Token {
            code,
            description,
            details: Some(details),
        },
        e => e,
    }
}

/// Capabilities = requested ∩ the agent's registered capabilities ∩ the user's delegatable
/// tools (spec 9.5). No `requested_capabilities` asks for everything the agent is registered
/// for. Returns (granted, denied).
pub fn intersect(
    requested: Option<&RequestedCapabilities>,
    agent: &[String],
    user: Option<&[String]>,
) -> (Vec<String>, Vec<String>) {
    let wanted: Vec<String> = match requested {
        Some(r) => r.tools.clone(),
        None => agent.to_vec(),
    };
    wanted
        .into_iter()
        .partition(|tool| allows(agent, tool) && user.is_none_or(|u| allows(u, tool)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn refresh_tokens_are_keyed_in_time_order() {
        let first = new_refresh_token(&aip_aat::clock::SystemClock).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_refresh_token(&aip_aat::clock::SystemClock).unwrap();
        let (a, b) = (refresh_key(first.expose()), refresh_key(second.expose()));
        assert!(a < b, "a later token must sort after an earlier one");
        // The key holds the public id and a digest of the whole token, never the secret.
        let secret = first.expose().rsplit_once('.').unwrap().1;
        assert_eq!(secret.len(), 43);
        assert!(!a.contains(secret));
        assert_eq!(a.split_once('.').unwrap().1, digest(first.expose()));
        // Any change to the token changes its key.
        let mut altered = first.expose().to_owned();
        altered.pop();
        altered.push(if first.expose().ends_with('A') { 'B' } else { 'A' });
        assert_ne!(refresh_key(&altered), a);
        // Text without an id is keyed by its digest alone.
        assert_eq!(refresh_key("aip_rf_unknown"), digest("aip_rf_unknown"));
    }

    #[test]
    fn capabilities_are_the_intersection() {
        let requested = RequestedCapabilities {
            tools: tools(&["read_file", "write_file", "exec"]),
            ..Default::default()
        };
        let agent = tools(&["read_file", "write_file"]);
        let user = tools(&["read_file", "exec"]);
        assert_eq!(
            intersect(Some(&requested), &agent, Some(&user)),
            (tools(&["read_file"]), tools(&["write_file", "exec"]))
        );
        // `*` grants any tool, but a requested `*` needs `*` on both sides.
        assert_eq!(
            intersect(Some(&requested), &tools(&["*"]), Some(&tools(&["*"]))),
            (tools(&["read_file", "write_file", "exec"]), vec![])
        );
        let star = RequestedCapabilities {
            tools: tools(&["*"]),
            ..Default::default()
        };
        assert_eq!(
            intersect(Some(&star), &agent, Some(&tools(&["*"]))),
            (vec![], tools(&["*"]))
        );
        // Nothing requested: everything the agent has, within the user's tools; no user
        // (autonomous agents): the agent's capabilities.
        assert_eq!(
            intersect(None, &agent, Some(&user)),
            (tools(&["read_file"]), tools(&["write_file"]))
        );
        assert_eq!(intersect(None, &agent, None), (agent.clone(), vec![]));
        // An explicit empty request grants nothing.
        assert_eq!(
            intersect(Some(&RequestedCapabilities::default()), &agent, None),
            (vec![], vec![])
        );
    }

    #[test]
    fn tool_names_are_checked() {
        assert!(check_tools("t", &tools(&["read_file", "fs:read", "*"])).is_ok());
        assert!(check_tools("t", &tools(&["a", "a"])).is_err());
        assert!(check_tools("t", &tools(&["bad name"])).is_err());
        assert!(check_tools("t", &tools(&[""])).is_err());
    }
}
