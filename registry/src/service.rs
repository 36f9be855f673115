//! The registry's domain logic: registration with proof of possession, certificates, key
//! rotation, status changes, and the published revocation data (JSON list, signed list, CRL,
//! event stream). HTTP lives in [`crate::http`]; storage behind [`Store`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aip_aat::aid::{AID_VERSION, AgentIdentityDocument, AgentStatus, AidMetadata};
use aip_aat::clock::Clock;
use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, Jwks, PublicKey, Signer};
use aip_aat::request_proof::{RequestProofClaims, SignedRequest, verify_request_proof};
use aip_aat::secret::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast};

use crate::api::{
    AccessTokenResponse, AgentList, AgentResponse, AgentSummary, CertificateResponse, CertificateView,
    CreateAccessTokenRequest, CreateRegistrationTokenRequest, Discovery, IssuerEndpoints, PreviousKeyView,
    PublishRevocationsRequest, RegisterAgentRequest, RegisterAgentResponse, RegistrationTokenResponse,
    RenewCertificateRequest, RotateKeyRequest, StatusRequest, StatusResponse,
};
use crate::audit::AuditEntry;
use crate::ca::{CertificateAuthority, CrlReason, IssuedCertificate};
use crate::config::RegistrySettings;
use crate::metrics as m;
use crate::store::{
    AgentQuery, KeyRotation, NewAccessToken, NewAgent, NewCertificate, NewRegistrationToken, Nonce,
    RegistrationCredential, Revocations, RevokedEntry, Role, StatusAction, Store, StoreError, StoredAgent,
    StoredCertificate, StoredCrl, StoredEvent, StoredKey,
};

/// Prefix of access tokens (admin and reader).
pub const ACCESS_TOKEN_PREFIX: &str = "aip_at_";
/// Prefix of registration tokens.
pub const REGISTRATION_TOKEN_PREFIX: &str = "aip_rt_";
/// How long an access token's role is remembered without asking the database.
const ACCESS_TOKEN_CACHE: Duration = Duration::from_secs(10);
/// How many events the broadcast channel buffers for slow subscribers (they then catch up
/// from the database).
const EVENT_BUFFER: usize = 1024;

/// A request could not be served. [`crate::http`] maps each variant to a status and an
/// OAuth-style error body; `Internal` details are logged, never sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    InvalidRequest(String),
    /// Missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The proof of possession is missing, invalid or replayed.
    #[error("{0}")]
    InvalidProof(String),
    /// The credential is valid but may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such agent.
    #[error("agent not found")]
    AgentNotFound,
    /// The public key is already registered.
    #[error("this public key is already registered")]
    KeyAlreadyRegistered,
    /// The request conflicts with the agent's state.
    #[error("{0}")]
    Conflict(&'static str),
    /// Something failed on our side.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegistryError {
    fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AgentNotFound => Self::AgentNotFound,
            StoreError::KeyAlreadyRegistered => Self::KeyAlreadyRegistered,
            StoreError::InvalidCredential => Self::Unauthorized("the credential is no longer valid"),
            StoreError::ProofReplayed => Self::InvalidProof("the request proof was already used".into()),
            StoreError::Conflict(m) => Self::Conflict(m),
            e @ (StoreError::Corrupt(_) | StoreError::Backend(_)) => Self::internal(e),
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An administrator.
    Admin {
        /// Access token id.
        token_id: String,
    },
    /// A reader (proxies, dashboards).
    Reader {
        /// Access token id.
        token_id: String,
    },
    /// A holder of a registration token.
    Registrar {
        /// Registration token id.
        token_id: String,
        /// Its digest.
        digest: String,
    },
}

impl Principal {
    /// How the audit log names the principal.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin { token_id } => format!("admin:{token_id}"),
            Self::Reader { token_id } => format!("reader:{token_id}"),
            Self::Registrar { token_id, .. } => format!("registration-token:{token_id}"),
        }
    }

    /// Whether the principal may read agents and revocation data.
    pub fn can_read(&self) -> bool {
        matches!(self, Self::Admin { .. } | Self::Reader { .. })
    }

    /// Refuses anyone but an administrator.
    pub fn require_admin(&self) -> Result<(), RegistryError> {
        match self {
            Self::Admin { .. } => Ok(()),
            _ => Err(RegistryError::Forbidden("this operation needs an admin token")),
        }
    }
}

/// The revocation list as published for one version.
#[derive(Debug)]
pub struct PublishedList {
    /// The list version.
    pub version: u64,
    /// Its `ETag` (quoted).
    pub etag: String,
    /// The JSON document.
    pub json: Vec<u8>,
    /// The same list signed by the registry key (compact JWS).
    pub jws: String,
}

/// A token shown once at creation.
fn new_secret_token(prefix: &str) -> Result<(SecretString, String, String), RegistryError> {
    let token = random_secret(prefix).map_err(RegistryError::internal)?;
    let mut id = [0u8; 6];
    aip_aat::ids::fill_random(&mut id).map_err(RegistryError::internal)?;
    let digest = token_digest(token.expose());
    let token_id = format!("{}{}", &prefix[4..6], hex::encode(id));
    Ok((token, digest, token_id))
}

/// A new high-entropy bearer secret: `prefix` and 32 random bytes in base64url. Store only
/// its [`token_digest`].
pub fn random_secret(prefix: &str) -> Result<SecretString, aip_aat::keys::KeyError> {
    let mut secret = [0u8; 32];
    aip_aat::ids::fill_random(&mut secret).map_err(|_| aip_aat::keys::KeyError::Random)?;
    Ok(SecretString::new(format!("{prefix}{}", base64_url(&secret))))
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of a bearer token: what the database stores.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn unix_time(t: i64) -> Result<OffsetDateTime, RegistryError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(RegistryError::internal)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks free text from a request: not blank, at most `max` characters, no control
/// characters. The error is a message for the client naming `member`.
pub fn check_text(member: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{member} must not be empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{member} is longer than {max} characters"));
    }
    if has_control(value) {
        return Err(format!("{member} must not contain control characters"));
    }
    Ok(())
}

/// Checks a list of tool names: at most 256, each 1-128 characters of letters, digits and
/// `_ - . : / *`, none twice. The error is a message for the client naming `member`.
pub fn check_tool_names(member: &str, tools: &[String]) -> Result<(), String> {
    if tools.len() > 256 {
        return Err(format!("{member} lists more than 256 tools"));
    }
    let mut seen = HashSet::new();
    for tool in tools {
        let valid = !tool.is_empty()
            && tool.len() <= 128
            && tool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/' | b'*'));
        if !valid {
            return Err(format!(
                "{member}: {tool:?} is not a tool name (1-128 characters: letters, digits, _ - . : / *)"
            ));
        }
        if !seen.insert(tool) {
            return Err(format!("{member}: {tool:?} is listed twice"));
        }
    }
    Ok(())
}

fn check_field(member: &str, value: &str, max: usize) -> Result<(), RegistryError> {
    check_text(member, value, max).map_err(RegistryError::InvalidRequest)
}

fn check_capabilities(capabilities: &[String]) -> Result<(), RegistryError> {
    check_tool_names("capabilities", capabilities).map_err(RegistryError::InvalidRequest)
}

fn check_metadata(metadata: &AidMetadata) -> Result<(), RegistryError> {
    for (member, value) in [
        ("metadata.platform", &metadata.platform),
        ("metadata.version", &metadata.version),
        ("metadata.owner", &metadata.owner),
    ] {
        if let Some(value) = value {
            check_field(member, value, 256)?;
        }
    }
    if metadata.tags.len() > 32 {
        return Err(RegistryError::InvalidRequest(
            "metadata.tags has more than 32 tags".into(),
        ));
    }
    for tag in &metadata.tags {
        check_field("metadata.tags", tag, 64)?;
    }
    Ok(())
}

fn check_reason(reason: Option<&str>) -> Result<(), RegistryError> {
    match reason {
        Some(reason) => check_field("reason", reason, 256),
        None => Ok(()),
    }
}

/// The token issuer's public signing keys, which the registry publishes in `GET /v1/jwks`
/// beside its own (the token issuer implements it).
pub trait TokenKeys: Send + Sync {
    /// The keys verifiers must accept now (current and still-needed previous keys).
    fn published_keys(&self) -> Vec<PublicKey>;
}

/// The most entries one `POST /v1/revocations` may list.
pub const MAX_REVOCATION_ENTRIES: usize = 100_000;

/// The registry.
pub struct Registry {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    registry_key: Arc<dyn Signer>,
    settings: RegistrySettings,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    pump: Notify,
    published: Mutex<Option<Arc<PublishedList>>>,
    crl: Mutex<Option<Arc<StoredCrl>>>,
    crl_generation: tokio::sync::Mutex<()>,
    /// Recently seen access tokens: digest → (principal, when it was looked up).
    access_tokens: Mutex<std::collections::HashMap<String, (Principal, std::time::Instant)>>,
    /// The token issuer served beside the registry.
    token_issuer: OnceLock<(Arc<dyn TokenKeys>, IssuerEndpoints)>,
    /// The newest revocation list version this process knows of (its own writes at once,
    /// other replicas' within the event poll interval).
    latest_version: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry_id", &self.settings.registry_id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry over `store`, issuing with `ca` and attesting with `registry_key`.
    pub fn new(
        store: Arc<dyn Store>,
        ca: CertificateAuthority,
        registry_key: Arc<dyn Signer>,
        settings: RegistrySettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            ca: Arc::new(ca),
            registry_key,
            settings,
            clock,
            events: broadcast::channel(EVENT_BUFFER).0,
            pump: Notify::new(),
            published: Mutex::new(None),
            crl: Mutex::new(None),
            crl_generation: tokio::sync::Mutex::new(()),
            access_tokens: Mutex::new(std::collections::HashMap::new()),
            token_issuer: OnceLock::new(),
            latest_version: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn saw_version(&self, version: u64) {
        self.latest_version
            .fetch_max(version, std::sync::atomic::Ordering::AcqRel);
    }

    /// The newest revocation list version this process knows of: every agent status change,
    /// key rotation and revocation moves it. Changes made through this registry count at once,
    /// changes made by replicas once [`Registry::run_background`] has seen their events. Caches
    /// of agent records compare it to decide whether they are still current.
    pub fn latest_version(&self) -> u64 {
        self.latest_version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Announces the token issuer served beside the registry: its keys join `GET /v1/jwks`
    /// and its endpoints the discovery document. Only the first call has an effect.
    pub fn attach_token_issuer(&self, keys: Arc<dyn TokenKeys>, endpoints: IssuerEndpoints) {
        let _ = self.token_issuer.set((keys, endpoints));
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The certificate authority.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Who a bearer token belongs to. Access tokens are remembered for a few seconds, so
    /// busy clients do not cost a database read per request.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, RegistryError> {
        let digest = token_digest(token);
        if token.starts_with(ACCESS_TOKEN_PREFIX) {
            if let Some((principal, seen)) = self
                .access_tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&digest)
                && seen.elapsed() < ACCESS_TOKEN_CACHE
            {
                return Ok(principal.clone());
            }
            let principal = match self.store.access_token(&digest).await? {
                Some((token_id, Role::Admin)) => Principal::Admin { token_id },
                Some((token_id, Role::Reader)) => Principal::Reader { token_id },
                None => return Err(RegistryError::Unauthorized("unknown or revoked access token")),
            };
            let mut cache = self.access_tokens.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= 10_000 {
                cache.retain(|_, (_, seen)| seen.elapsed() < ACCESS_TOKEN_CACHE);
            }
            cache.insert(digest, (principal.clone(), std::time::Instant::now()));
            return Ok(principal);
        }
        if token.starts_with(REGISTRATION_TOKEN_PREFIX) {
            return match self.store.registration_token(&digest).await? {
                Some(t) if t.uses_remaining > 0 && t.expires_at > self.clock.now() => Ok(Principal::Registrar {
                    token_id: t.token_id,
                    digest,
                }),
                Some(_) => Err(RegistryError::Unauthorized("registration token is used up or expired")),
                None => Err(RegistryError::Unauthorized("unknown registration token")),
            };
        }
        Err(RegistryError::Unauthorized("unrecognized bearer token"))
    }

    fn verify_proof(
        &self,
        proof: &str,
        key: &PublicKey,
        path: &str,
        body: &Value,
        exclude: &[&str],
        now: i64,
    ) -> Result<(RequestProofClaims, Nonce), RegistryError> {
        let request = SignedRequest {
            method: "POST",
            path,
            body,
            exclude,
        };
        let max_age = self.settings.request_proof_max_age;
        let claims = verify_request_proof(proof, key, &request, now, max_age)
            .map_err(|e| RegistryError::InvalidProof(e.to_string()))?;
        let nonce = Nonce {
            jti: claims.jti.to_string(),
            expires_at: claims.iat + max_age + aip_aat::request_proof::MAX_FUTURE_SECS,
        };
        Ok((claims, nonce))
    }

    fn issue_certificate(
        &self,
        agent_id: &AgentId,
        name: &str,
        key: &PublicKey,
        now: i64,
    ) -> Result<IssuedCertificate, RegistryError> {
        let cert = self
            .ca
            .issue_agent_certificate(
                agent_id,
                name,
                key,
                now,
                now + self.settings.agent_cert_validity,
                &self.settings.crl_url(),
            )
            .map_err(RegistryError::internal)?;
        metrics::counter!(m::CERTIFICATES_ISSUED).increment(1);
        Ok(cert)
    }

    fn chain(&self, cert: &IssuedCertificate) -> String {
        format!("{}{}", cert.pem, self.ca.issuing_pem())
    }

    fn attested_aid(&self, agent: &StoredAgent) -> Result<AgentIdentityDocument, RegistryError> {
        let mut aid = AgentIdentityDocument {
            aid_version: AID_VERSION.into(),
            agent_id: agent.agent.agent_id.clone(),
            name: agent.agent.name.clone(),
            description: agent.agent.description.clone(),
            created_at: unix_time(agent.agent.created_at)?,
            status: agent.status,
            public_key: agent.agent.public_key.clone(),
            metadata: agent.agent.metadata.clone(),
            registry_attestation: None,
        };
        let ttl = u64::try_from(self.settings.attestation_ttl).unwrap_or(0);
        aid.attest(&*self.registry_key, &self.settings.registry_id, self.clock.now(), ttl)
            .map_err(RegistryError::internal)?;
        Ok(aid)
    }

    /// Registers an agent (`POST /v1/agents`); `body` is the request as received, which the
    /// proof covers.
    pub async fn register(
        &self,
        principal: &Principal,
        request: RegisterAgentRequest,
        body: &Value,
    ) -> Result<RegisterAgentResponse, RegistryError> {
        let credential = match principal {
            Principal::Admin { token_id } => RegistrationCredential::Admin {
                token_id: token_id.clone(),
            },
            Principal::Registrar { digest, .. } => RegistrationCredential::RegistrationToken { digest: digest.clone() },
            Principal::Reader { .. } => return Err(RegistryError::Forbidden("a reader token cannot register agents")),
        };
        let now = self.clock.now();
        check_field("name", &request.name, 128)?;
        if let Some(description) = &request.description {
            check_field("description", description, 1024)?;
        }
        if let Some(metadata) = &request.metadata {
            check_metadata(metadata)?;
        }
        check_capabilities(&request.capabilities)?;
        let key = PublicKey::from_jwk(&request.public_key)
            .map_err(|e| RegistryError::InvalidRequest(format!("public_key: {e}")))?;
        let (_, nonce) = self.verify_proof(&request.proof, &key, "/v1/agents", body, &["proof"], now)?;

        let agent_id = AgentId::random().map_err(RegistryError::internal)?;
        let name = request.name.trim().to_owned();
        let cert = self.issue_certificate(&agent_id, &name, &key, now)?;
        let agent = NewAgent {
            agent_id: agent_id.clone(),
            name,
            description: request.description,
            owner: request.metadata.as_ref().and_then(|m| m.owner.clone()),
            capabilities: request.capabilities,
            autonomous: request.autonomous,
            metadata: request.metadata,
            public_key: key.to_jwk(),
            thumbprint: key.thumbprint().clone(),
            created_at: now,
        };
        let certificate = certificate_record(&cert, &agent_id, &key);
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "agent.register",
            subject: agent_id.to_string(),
            details: json!({
                "name": agent.name,
                "key": agent.thumbprint,
                "certificate": cert.serial,
                "capabilities": agent.capabilities,
                "autonomous": agent.autonomous,
            }),
        };
        let token_expiry = self
            .store
            .register_agent(&agent, &certificate, &credential, &nonce, &audit)
            .await?;
        metrics::counter!(m::AGENTS_REGISTERED).increment(1);
        let stored = StoredAgent {
            agent,
            status: AgentStatus::Active,
            status_reason: None,
            status_changed_at: None,
        };
        Ok(RegisterAgentResponse {
            aid: self.attested_aid(&stored)?,
            agent_id,
            certificate_chain: self.chain(&cert),
            certificate: cert.pem,
            registration_token_expires_at: token_expiry.map(unix_time).transpose()?,
        })
    }

    async fn stored_agent(&self, agent_id: &AgentId) -> Result<StoredAgent, RegistryError> {
        self.store.agent(agent_id).await?.ok_or(RegistryError::AgentNotFound)
    }

    /// `GET /v1/agents/{id}`.
    pub async fn agent(&self, agent_id: &AgentId) -> Result<AgentResponse, RegistryError> {
        let now = self.clock.now();
        let agent = self.stored_agent(agent_id).await?;
        let keys = self.store.agent_keys(agent_id).await?;
        let certificates = self.store.certificates(agent_id).await?;
        let previous_keys = keys
            .iter()
            .filter_map(|k| k.valid_until.filter(|until| *until > now).map(|until| (k, until)))
            .map(|(k, until)| {
                Ok(PreviousKeyView {
                    thumbprint: k.thumbprint.clone(),
                    valid_until: unix_time(until)?,
                })
            })
            .collect::<Result<_, RegistryError>>()?;
        let certificates = certificates
            .iter()
            .map(|c| certificate_view(c, now))
            .collect::<Result<_, _>>()?;
        Ok(AgentResponse {
            aid: self.attested_aid(&agent)?,
            agent_id: agent_id.clone(),
            status: agent.status,
            public_key: agent.agent.public_key.clone(),
            public_key_thumbprint: agent.agent.thumbprint.clone(),
            capabilities: agent.agent.capabilities.clone(),
            autonomous: agent.agent.autonomous,
            status_reason: agent.status_reason.clone(),
            status_changed_at: agent.status_changed_at.map(unix_time).transpose()?,
            previous_keys,
            certificates,
        })
    }

    /// `GET /v1/agents`.
    pub async fn agents(&self, query: &AgentQuery) -> Result<AgentList, RegistryError> {
        let limit = query.limit.clamp(1, 1000);
        let mut page = self
            .store
            .agents(&AgentQuery {
                limit: limit + 1,
                ..query.clone()
            })
            .await?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        let next = if more {
            page.last().map(|a| a.agent.agent_id.clone())
        } else {
            None
        };
        let agents = page
            .into_iter()
            .map(|a| {
                Ok(AgentSummary {
                    created_at: unix_time(a.agent.created_at)?,
                    agent_id: a.agent.agent_id,
                    name: a.agent.name,
                    status: a.status,
                    owner: a.agent.owner,
                })
            })
            .collect::<Result<_, RegistryError>>()?;
        Ok(AgentList { agents, next })
    }

    /// `POST /v1/agents/{id}/rotate-key`: the current key signs the request, the new key
    /// proves possession too; the old key stays valid for the grace period.
    pub async fn rotate_key(
        &self,
        agent_id: &AgentId,
        request: RotateKeyRequest,
        body: &Value,
    ) -> Result<CertificateResponse, RegistryError> {
        let now = self.clock.now();
        let agent = self.stored_agent(agent_id).await?;
        if agent.status != AgentStatus::Active {
            return Err(RegistryError::Conflict("only an active agent can rotate its key"));
        }
        let current = PublicKey::from_jwk(&agent.agent.public_key).map_err(RegistryError::internal)?;
        let path = format!("/v1/agents/{agent_id}/rotate-key");
        let (_, current_nonce) = self.verify_proof(&request.proof, &current, &path, body, &["proof"], now)?;
        let new_key = PublicKey::from_jwk(&request.new_public_key)
            .map_err(|e| RegistryError::InvalidRequest(format!("new_public_key: {e}")))?;
        if new_key == current {
            return Err(RegistryError::InvalidRequest(
                "new_public_key is the current key".into(),
            ));
        }
        let (_, new_nonce) = self
            .verify_proof(
                &request.new_key_proof,
                &new_key,
                &path,
                body,
                &["proof", "new_key_proof"],
                now,
            )
            .map_err(|e| match e {
                RegistryError::InvalidProof(m) => RegistryError::InvalidProof(format!("new_key_proof: {m}")),
                e => e,
            })?;
        let cert = self.issue_certificate(agent_id, &agent.agent.name, &new_key, now)?;
        let grace_until = now + self.settings.key_grace_period;
        let rotation = KeyRotation {
            agent_id: agent_id.clone(),
            current: current.thumbprint().clone(),
            new_key: StoredKey {
                thumbprint: new_key.thumbprint().clone(),
                public_key: new_key.to_jwk(),
                added_at: now,
                valid_until: None,
            },
            grace_until,
            certificate: certificate_record(&cert, agent_id, &new_key),
            nonces: vec![current_nonce, new_nonce],
        };
        let audit = AuditEntry {
            actor: format!("agent:{agent_id}"),
            action: "agent.rotate_key",
            subject: agent_id.to_string(),
            details: json!({"previous_key": current.thumbprint(), "key": new_key.thumbprint(), "certificate": cert.serial, "previous_key_valid_until": grace_until}),
        };
        let version = self.store.rotate_key(&rotation, &audit).await?;
        self.saw_version(version);
        self.pump.notify_one();
        let mut updated = agent;
        updated.agent.public_key = new_key.to_jwk();
        updated.agent.thumbprint = new_key.thumbprint().clone();
        Ok(CertificateResponse {
            aid: self.attested_aid(&updated)?,
            agent_id: agent_id.clone(),
            serial: cert.serial.clone(),
            certificate_chain: self.chain(&cert),
            not_after: unix_time(cert.not_after)?,
            certificate: cert.pem,
            previous_key_valid_until: Some(unix_time(grace_until)?),
        })
    }

    /// `POST /v1/agents/{id}/certificate`: a fresh certificate for the current key.
    pub async fn renew_certificate(
        &self,
        agent_id: &AgentId,
        request: RenewCertificateRequest,
        body: &Value,
    ) -> Result<CertificateResponse, RegistryError> {
        let now = self.clock.now();
        let agent = self.stored_agent(agent_id).await?;
        if agent.status != AgentStatus::Active {
            return Err(RegistryError::Conflict(
                "only an active agent can renew its certificate",
            ));
        }
        let key = PublicKey::from_jwk(&agent.agent.public_key).map_err(RegistryError::internal)?;
        let path = format!("/v1/agents/{agent_id}/certificate");
        let (_, nonce) = self.verify_proof(&request.proof, &key, &path, body, &["proof"], now)?;
        let cert = self.issue_certificate(agent_id, &agent.agent.name, &key, now)?;
        let certificate = certificate_record(&cert, agent_id, &key);
        let audit = AuditEntry {
            actor: format!("agent:{agent_id}"),
            action: "agent.renew_certificate",
            subject: agent_id.to_string(),
            details: json!({"certificate": cert.serial, "not_after": cert.not_after}),
        };
        self.store.add_certificate(&certificate, &nonce, &audit).await?;
        Ok(CertificateResponse {
            aid: self.attested_aid(&agent)?,
            agent_id: agent_id.clone(),
            serial: cert.serial.clone(),
            certificate_chain: self.chain(&cert),
            not_after: unix_time(cert.not_after)?,
            certificate: cert.pem,
            previous_key_valid_until: None,
        })
    }

    /// Suspends, reactivates or revokes an agent (admin).
    pub async fn change_status(
        &self,
        principal: &Principal,
        agent_id: &AgentId,
        action: StatusKind,
        request: &StatusRequest,
    ) -> Result<StatusResponse, RegistryError> {
        principal.require_admin()?;
        check_reason(request.reason.as_deref())?;
        let action = match (action, request.crl_reason.as_deref()) {
            (StatusKind::Revoke, None) => StatusAction::Revoke(CrlReason::CessationOfOperation),
            (StatusKind::Revoke, Some(name)) => StatusAction::Revoke(CrlReason::from_revocation_name(name).ok_or_else(|| {
                RegistryError::InvalidRequest(format!(
                    "crl_reason {name:?} is not one of unspecified, key_compromise, affiliation_changed, superseded, \
                     cessation_of_operation, privilege_withdrawn"
                ))
            })?),
            (_, Some(_)) => return Err(RegistryError::InvalidRequest("crl_reason applies to revocation only".into())),
            (StatusKind::Suspend, None) => StatusAction::Suspend,
            (StatusKind::Reactivate, None) => StatusAction::Reactivate,
        };
        let now = self.clock.now();
        let (verb, details) = match action {
            StatusAction::Suspend => ("agent.suspend", json!({"reason": request.reason})),
            StatusAction::Reactivate => ("agent.reactivate", json!({"reason": request.reason})),
            StatusAction::Revoke(r) => (
                "agent.revoke",
                json!({"reason": request.reason, "crl_reason": r.name()}),
            ),
        };
        let audit = AuditEntry {
            actor: principal.actor(),
            action: verb,
            subject: agent_id.to_string(),
            details,
        };
        let changed = self
            .store
            .change_status(agent_id, action, request.reason.as_deref(), now, &audit)
            .await?;
        self.saw_version(changed.version);
        self.pump.notify_one();
        metrics::counter!(m::STATUS_CHANGES, "status" => changed.status.as_str()).increment(1);
        Ok(StatusResponse {
            agent_id: agent_id.clone(),
            status: changed.status,
            previous_status: changed.previous,
            revocation_version: changed.version,
        })
    }

    /// Creates a registration token (admin).
    pub async fn create_registration_token(
        &self,
        principal: &Principal,
        request: &CreateRegistrationTokenRequest,
    ) -> Result<RegistrationTokenResponse, RegistryError> {
        principal.require_admin()?;
        if !(1..=10_000).contains(&request.uses) {
            return Err(RegistryError::InvalidRequest("uses must be between 1 and 10000".into()));
        }
        if !(60..=30 * 86_400).contains(&request.expires_in) {
            return Err(RegistryError::InvalidRequest(
                "expires_in must be between 60 s and 30 days".into(),
            ));
        }
        let now = self.clock.now();
        let expires_at = now + i64::try_from(request.expires_in).unwrap_or(0);
        let (token, digest, token_id) = new_secret_token(REGISTRATION_TOKEN_PREFIX)?;
        let record = NewRegistrationToken {
            digest,
            token_id: token_id.clone(),
            uses: request.uses,
            expires_at,
            created_at: now,
        };
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "registration_token.create",
            subject: token_id.clone(),
            details: json!({"uses": request.uses, "expires_at": expires_at}),
        };
        self.store.create_registration_token(&record, &audit).await?;
        Ok(RegistrationTokenResponse {
            token,
            token_id,
            uses: request.uses,
            expires_at: unix_time(expires_at)?,
        })
    }

    /// Creates an access token (admin).
    pub async fn create_access_token(
        &self,
        principal: &Principal,
        request: &CreateAccessTokenRequest,
    ) -> Result<AccessTokenResponse, RegistryError> {
        principal.require_admin()?;
        let role = Role::from_name(&request.role)
            .ok_or_else(|| RegistryError::InvalidRequest(format!("role {:?} is not admin or reader", request.role)))?;
        if let Some(label) = &request.label {
            check_field("label", label, 64)?;
        }
        let (token, token_id) = self
            .issue_access_token(role, request.label.clone(), principal.actor())
            .await?;
        Ok(AccessTokenResponse {
            token,
            token_id,
            role: role.as_str().into(),
        })
    }

    /// Creates an access token on behalf of `actor` (also used by `init`).
    pub async fn issue_access_token(
        &self,
        role: Role,
        label: Option<String>,
        actor: String,
    ) -> Result<(SecretString, String), RegistryError> {
        let (token, digest, token_id) = new_secret_token(ACCESS_TOKEN_PREFIX)?;
        let now = self.clock.now();
        let record = NewAccessToken {
            digest,
            token_id: token_id.clone(),
            role,
            label: label.clone(),
            created_at: now,
        };
        let audit = AuditEntry {
            actor,
            action: "access_token.create",
            subject: token_id.clone(),
            details: json!({"role": role.as_str(), "label": label}),
        };
        self.store.create_access_token(&record, &audit).await?;
        Ok((token, token_id))
    }

    /// The revocation list, its JSON and its signed form, for the current version.
    pub async fn published_list(&self) -> Result<Arc<PublishedList>, RegistryError> {
        let version = self.store.revocation_version().await?;
        if let Some(cached) = self.published.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && cached.version >= version
        {
            return Ok(cached.clone());
        }
        let list = self.store.revocation_list(self.clock.now()).await?;
        let json = serde_json::to_vec(&list).map_err(RegistryError::internal)?;
        let jws = list.sign(&*self.registry_key).map_err(RegistryError::internal)?;
        let published = Arc::new(PublishedList {
            version: list.version,
            etag: format!("\"{}\"", list.version),
            json,
            jws,
        });
        metrics::gauge!(m::REVOCATION_VERSION).set(list.version as f64);
        let mut cache = self.published.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.as_ref().is_none_or(|c| c.version < published.version) {
            *cache = Some(published.clone());
        }
        Ok(published)
    }

    /// The current CRL (DER), made anew when revocations changed or it is half-way to
    /// `nextUpdate` (or a rotated-out certificate became superseded).
    pub async fn crl(self: &Arc<Self>) -> Result<Arc<StoredCrl>, RegistryError> {
        let version = self.store.revocation_version().await?;
        let now = self.clock.now();
        let fresh = |c: &StoredCrl| c.revocation_version >= version && now < c.refresh_at;
        if let Some(cached) = self.crl.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && fresh(cached)
        {
            return Ok(cached.clone());
        }
        let _one_at_a_time = self.crl_generation.lock().await;
        let crl = match self.store.latest_crl().await? {
            Some(latest) if fresh(&latest) => Arc::new(latest),
            _ => Arc::new(self.generate_crl(now).await?),
        };
        *self.crl.lock().unwrap_or_else(PoisonError::into_inner) = Some(crl.clone());
        Ok(crl)
    }

    async fn generate_crl(self: &Arc<Self>, now: i64) -> Result<StoredCrl, RegistryError> {
        let (crl_number, revocation_version) = self.store.next_crl_number().await?;
        let (entries, next_supersession) = self.store.crl_entries(now).await?;
        let validity = self.settings.crl_validity;
        let refresh_at = next_supersession.map_or(now + validity / 2, |t| t.min(now + validity / 2));
        let ca = self.ca.clone();
        let started = std::time::Instant::now();
        let der = tokio::task::spawn_blocking(move || ca.sign_crl(crl_number, now, now + validity, &entries))
            .await
            .map_err(RegistryError::internal)?
            .map_err(RegistryError::internal)?;
        metrics::histogram!(m::CRL_GENERATION_SECONDS).record(started.elapsed().as_secs_f64());
        let crl = StoredCrl {
            crl_number,
            revocation_version,
            this_update: now,
            next_update: now + validity,
            refresh_at,
            der,
        };
        self.store.save_crl(&crl).await?;
        Ok(crl)
    }

    /// The registry's public key and the token issuer's (`GET /v1/jwks`).
    pub fn jwks(&self) -> Jwks {
        let issuer_keys = self
            .token_issuer
            .get()
            .map(|(keys, _)| keys.published_keys())
            .unwrap_or_default();
        Jwks::from_keys(std::iter::once(self.registry_key.public_key()).chain(issuer_keys.iter()))
    }

    /// Lists tokens, sessions and users as revoked in one new list version, announced by one
    /// event; `actor` and `subject` go to the audit log. Already listed entries stay as they
    /// were. Returns the new version.
    pub async fn publish_revocations(
        &self,
        actor: String,
        subject: &str,
        revocations: &Revocations,
    ) -> Result<u64, RegistryError> {
        check_field("subject", subject, 300)?;
        check_reason(revocations.reason.as_deref())?;
        if revocations.is_empty() {
            return Err(RegistryError::InvalidRequest("nothing to revoke".into()));
        }
        let count = revocations.tokens.len() + revocations.sessions.len() + revocations.users.len();
        if count > MAX_REVOCATION_ENTRIES {
            return Err(RegistryError::InvalidRequest(format!(
                "at most {MAX_REVOCATION_ENTRIES} entries per request"
            )));
        }
        for (member, id) in revocations
            .tokens
            .iter()
            .map(|e| ("tokens[].id", &e.id))
            .chain(revocations.sessions.iter().map(|e| ("sessions[].id", &e.id)))
            .chain(revocations.users.iter().map(|u| ("users[]", u)))
        {
            check_field(member, id, 256)?;
        }
        let audit = AuditEntry {
            actor,
            action: "revocation.publish",
            subject: subject.to_owned(),
            details: json!({
                "tokens": revocations.tokens.len(),
                "sessions": revocations.sessions.len(),
                "users": revocations.users,
                "reason": revocations.reason,
            }),
        };
        let version = self
            .store
            .publish_revocations(revocations, subject, self.clock.now(), &audit)
            .await?;
        self.saw_version(version);
        self.pump.notify_one();
        metrics::counter!(m::STATUS_CHANGES, "status" => revocations.event_kind()).increment(1);
        Ok(version)
    }

    /// `POST /v1/revocations` (admin): revocations decided by a token issuer running apart.
    pub async fn publish_revocations_request(
        &self,
        principal: &Principal,
        request: PublishRevocationsRequest,
    ) -> Result<u64, RegistryError> {
        principal.require_admin()?;
        let entry = |e: crate::api::RevokedEntryBody| RevokedEntry {
            id: e.id,
            expires_at: e.expires_at,
        };
        let revocations = Revocations {
            tokens: request.tokens.into_iter().map(entry).collect(),
            sessions: request.sessions.into_iter().map(entry).collect(),
            users: request.users,
            reason: request.reason,
        };
        self.publish_revocations(principal.actor(), &request.subject, &revocations)
            .await
    }

    /// The discovery document.
    pub fn discovery(&self) -> Discovery {
        let base = &self.settings.public_url;
        Discovery {
            registry_id: self.settings.registry_id.clone(),
            trust_domain: self.settings.trust_domain.clone(),
            agents_endpoint: format!("{base}/v1/agents"),
            jwks_uri: format!("{base}/v1/jwks"),
            crl_uri: format!("{base}/v1/crl"),
            revocations_uri: format!("{base}/v1/revocations"),
            revocations_jws_uri: format!("{base}/v1/revocations.jws"),
            revocations_stream_uri: format!("{base}/v1/revocations/stream"),
            algorithms: vec![Algorithm::EdDSA.as_str().into(), Algorithm::ES256.as_str().into()],
            aid_version: AID_VERSION.into(),
            issuer: self.token_issuer.get().map(|(_, endpoints)| endpoints.clone()),
        }
    }

    /// Live events; pair with [`Registry::events_after`] to catch up first.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.events.subscribe()
    }

    /// Stored events after `version`.
    pub async fn events_after(&self, version: u64, limit: u32) -> Result<Vec<StoredEvent>, RegistryError> {
        Ok(self.store.events_after(version, limit).await?)
    }

    /// The current revocation list version.
    pub async fn revocation_version(&self) -> Result<u64, RegistryError> {
        Ok(self.store.revocation_version().await?)
    }

    /// Background work until `shutdown` completes: publishes events (from this process or any
    /// replica sharing the database) to stream subscribers, and purges expired nonces.
    pub async fn run_background(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last = loop {
            match self.store.revocation_version().await {
                Ok(v) => {
                    self.saw_version(v);
                    break v;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the revocation version; retrying");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut purge = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = self.pump.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = purge.tick() => {
                    if let Err(e) = self.store.purge_expired(self.clock.now()).await {
                        tracing::warn!(error = %e, "purging expired nonces failed");
                    }
                }
            }
            loop {
                match self.store.events_after(last, 1000).await {
                    Ok(events) if events.is_empty() => break,
                    Ok(events) => {
                        for event in events {
                            last = event.version;
                            self.saw_version(last);
                            // No subscribers is not an error.
                            let _ = self.events.send(Arc::new(event));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading revocation events failed");
                        break;
                    }
                }
            }
        }
    }
}

/// The status operations of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    /// `suspend`.
    Suspend,
    /// `reactivate`.
    Reactivate,
    /// `revoke` (and `DELETE`).
    Revoke,
}

/// What the store keeps of an issued certificate.
fn certificate_record(cert: &IssuedCertificate, agent_id: &AgentId, key: &PublicKey) -> NewCertificate {
    NewCertificate {
        serial: cert.serial.clone(),
        agent_id: agent_id.clone(),
        key_thumbprint: key.thumbprint().clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        der: cert.der.clone(),
    }
}

fn certificate_view(c: &StoredCertificate, now: i64) -> Result<CertificateView, RegistryError> {
    let state = match (c.revoked, c.superseded_at) {
        (Some((_, CrlReason::CertificateHold)), _) => "on_hold",
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= now => "superseded",
        _ if c.certificate.not_after <= now => "expired",
        _ => "valid",
    };
    Ok(CertificateView {
        serial: c.certificate.serial.clone(),
        key_thumbprint: c.certificate.key_thumbprint.clone(),
        not_before: unix_time(c.certificate.not_before)?,
        not_after: unix_time(c.certificate.not_after)?,
        state: state.into(),
    })
}
