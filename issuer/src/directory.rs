//! How the issuer reaches the registry: [`AgentDirectory`], with two implementations —
//! [`LocalDirectory`] over the registry in the same process (what `aip-ca serve` uses) and
//! [`RemoteDirectory`] over a registry's HTTP API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aip_aat::aid::AgentStatus;
use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use aip_registry::api::{PublishRevocationsRequest, RevokedEntryBody, StatusRequest};
use aip_registry::client::{ClientError, RegistryClient};
use aip_registry::service::{Principal, Registry, RegistryError, StatusKind};
use aip_registry::store::{Revocations, Role};
use async_trait::async_trait;

/// What the issuer needs to know about an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryAgent {
    /// Its id.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: AgentStatus,
    /// Current public key (the only one token requests may be signed with).
    pub public_key: PublicKey,
    /// Tools it may ever be granted.
    pub capabilities: Vec<String>,
    /// Whether it may obtain AATs without a user.
    pub autonomous: bool,
}

/// A bearer token's holder, as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The access token's id.
    pub token_id: String,
    /// Whether it is an admin token.
    pub admin: bool,
    /// The token itself, for a remote registry that must see it again.
    token: Option<aip_aat::secret::SecretString>,
}

impl Caller {
    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        if self.admin {
            format!("admin:{}", self.token_id)
        } else {
            format!("reader:{}", self.token_id)
        }
    }
}

/// A directory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The bearer token is not a valid access token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such agent.
    #[error("agent not found")]
    AgentNotFound,
    /// The registry refused the request as invalid or conflicting.
    #[error("{0}")]
    Refused(String),
    /// The registry could not be reached or failed. The source is for logs only.
    #[error("the registry is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<RegistryError> for DirectoryError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unauthorized(m) => Self::Unauthorized(m.into()),
            RegistryError::Forbidden(m) => Self::Forbidden(m.into()),
            RegistryError::AgentNotFound => Self::AgentNotFound,
            RegistryError::InvalidRequest(m) | RegistryError::InvalidProof(m) => Self::Refused(m),
            RegistryError::Conflict(m) => Self::Refused(m.into()),
            e => Self::Unavailable(Box::new(e)),
        }
    }
}

impl From<ClientError> for DirectoryError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api {
                status: 401,
                description,
                ..
            } => Self::Unauthorized(description),
            ClientError::Api {
                status: 403,
                description,
                ..
            } => Self::Forbidden(description),
            ClientError::Api { status: 404, .. } => Self::AgentNotFound,
            ClientError::Api {
                status: 400 | 409,
                description,
                ..
            } => Self::Refused(description),
            e => Self::Unavailable(Box::new(e)),
        }
    }
}

/// The registry as the issuer uses it.
#[async_trait]
pub trait AgentDirectory: Send + Sync {
    /// The agent, if registered. May answer from a cache that the registry's events keep
    /// current.
    async fn agent(&self, agent_id: &AgentId) -> Result<Option<Arc<DirectoryAgent>>, DirectoryError>;

    /// Who holds `token` (an access token).
    async fn authenticate(&self, token: &str) -> Result<Caller, DirectoryError>;

    /// Revokes an agent on behalf of `caller` (an admin).
    async fn revoke_agent(
        &self,
        caller: &Caller,
        agent_id: &AgentId,
        reason: Option<&str>,
    ) -> Result<u64, DirectoryError>;

    /// Lists tokens, sessions and users as revoked; returns the revocation list version.
    async fn publish(&self, actor: &str, subject: &str, revocations: &Revocations) -> Result<u64, DirectoryError>;
}

/// How long an agent record is used without asking the registry again.
const AGENT_CACHE_TTL: Duration = Duration::from_secs(5);
const AGENT_CACHE_MAX: usize = 100_000;

/// Agent records, each with the revocation list version current when it was read: a record
/// older than a status change, rotation or revocation the process knows of is read again.
#[derive(Default)]
struct AgentCache(Mutex<HashMap<AgentId, CacheEntry>>);

/// A cached record, the list version when it was read, and when.
type CacheEntry = (Arc<DirectoryAgent>, u64, Instant);

impl AgentCache {
    fn get(&self, agent_id: &AgentId, version: u64) -> Option<Arc<DirectoryAgent>> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(agent_id)
            .filter(|(_, seen, at)| *seen >= version && at.elapsed() < AGENT_CACHE_TTL)
            .map(|(agent, _, _)| agent.clone())
    }

    fn put(&self, agent: Arc<DirectoryAgent>, version: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= AGENT_CACHE_MAX {
            map.retain(|_, (_, _, at)| at.elapsed() < AGENT_CACHE_TTL);
            if map.len() >= AGENT_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(agent.agent_id.clone(), (agent, version, Instant::now()));
    }

    fn evict(&self, agent_id: &str) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|id, _| id.as_str() != agent_id);
    }
}

/// The registry in the same process.
pub struct LocalDirectory {
    registry: Arc<Registry>,
    cache: AgentCache,
}

impl std::fmt::Debug for LocalDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDirectory").finish_non_exhaustive()
    }
}

impl LocalDirectory {
    /// A directory over `registry`.
    pub fn new(registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            cache: AgentCache::default(),
        })
    }
}

#[async_trait]
impl AgentDirectory for LocalDirectory {
    async fn agent(&self, agent_id: &AgentId) -> Result<Option<Arc<DirectoryAgent>>, DirectoryError> {
        // Read before the record: a change committed meanwhile makes the entry stale at once.
        let version = self.registry.latest_version();
        if let Some(agent) = self.cache.get(agent_id, version) {
            return Ok(Some(agent));
        }
        let stored = self
            .registry
            .store()
            .agent(agent_id)
            .await
            .map_err(|e| DirectoryError::Unavailable(Box::new(e)))?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let public_key =
            PublicKey::from_jwk(&stored.agent.public_key).map_err(|e| DirectoryError::Unavailable(Box::new(e)))?;
        let agent = Arc::new(DirectoryAgent {
            agent_id: stored.agent.agent_id,
            name: stored.agent.name,
            status: stored.status,
            public_key,
            capabilities: stored.agent.capabilities,
            autonomous: stored.agent.autonomous,
        });
        self.cache.put(agent.clone(), version);
        Ok(Some(agent))
    }

    async fn authenticate(&self, token: &str) -> Result<Caller, DirectoryError> {
        match self.registry.authenticate(token).await? {
            Principal::Admin { token_id } => Ok(Caller {
                token_id,
                admin: true,
                token: None,
            }),
            Principal::Reader { token_id } => Ok(Caller {
                token_id,
                admin: false,
                token: None,
            }),
            Principal::Registrar { .. } => Err(DirectoryError::Forbidden(
                "a registration token can only register agents".into(),
            )),
        }
    }

    async fn revoke_agent(
        &self,
        caller: &Caller,
        agent_id: &AgentId,
        reason: Option<&str>,
    ) -> Result<u64, DirectoryError> {
        let principal = if caller.admin {
            Principal::Admin {
                token_id: caller.token_id.clone(),
            }
        } else {
            Principal::Reader {
                token_id: caller.token_id.clone(),
            }
        };
        let request = StatusRequest {
            reason: reason.map(str::to_owned),
            crl_reason: None,
        };
        let changed = self
            .registry
            .change_status(&principal, agent_id, StatusKind::Revoke, &request)
            .await?;
        self.cache.evict(agent_id.as_str());
        Ok(changed.revocation_version)
    }

    async fn publish(&self, actor: &str, subject: &str, revocations: &Revocations) -> Result<u64, DirectoryError> {
        Ok(self
            .registry
            .publish_revocations(actor.to_owned(), subject, revocations)
            .await?)
    }
}

/// A registry reached over HTTP. Agent lookups use a reader (or admin) token; revocations the
/// issuer decides itself (refresh-token reuse) are published with `service` (an admin token).
pub struct RemoteDirectory {
    reader: RegistryClient,
    service: RegistryClient,
    base: String,
    ca_pem: Option<Vec<u8>>,
    cache: AgentCache,
    callers: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl std::fmt::Debug for RemoteDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDirectory")
            .field("registry", &self.base)
            .finish_non_exhaustive()
    }
}

impl RemoteDirectory {
    /// The registry at `base`; `service_token` must be an admin access token of that registry.
    pub fn new(base: &str, service_token: &str, ca_pem: Option<&[u8]>) -> Result<Self, DirectoryError> {
        let client = RegistryClient::with_roots(base, Some(service_token.to_owned()), ca_pem)?;
        Ok(Self {
            reader: client.clone(),
            service: client,
            base: base.to_owned(),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            cache: AgentCache::default(),
            callers: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl AgentDirectory for RemoteDirectory {
    async fn agent(&self, agent_id: &AgentId) -> Result<Option<Arc<DirectoryAgent>>, DirectoryError> {
        if let Some(agent) = self.cache.get(agent_id, 0) {
            return Ok(Some(agent));
        }
        let response = match self.reader.agent(agent_id).await {
            Ok(response) => response,
            Err(ClientError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let public_key =
            PublicKey::from_jwk(&response.public_key).map_err(|e| DirectoryError::Unavailable(Box::new(e)))?;
        let agent = Arc::new(DirectoryAgent {
            agent_id: response.agent_id,
            name: response.aid.name,
            status: response.status,
            public_key,
            capabilities: response.capabilities,
            autonomous: response.autonomous,
        });
        self.cache.put(agent.clone(), 0);
        Ok(Some(agent))
    }

    async fn authenticate(&self, token: &str) -> Result<Caller, DirectoryError> {
        if let Some((caller, at)) = self
            .callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&aip_registry::service::token_digest(token))
            && at.elapsed() < Duration::from_secs(10)
        {
            return Ok(caller.clone());
        }
        let client = RegistryClient::with_roots(&self.base, Some(token.to_owned()), self.ca_pem.as_deref())?;
        let who = client.whoami().await?;
        let admin = match Role::from_name(&who.role) {
            Some(Role::Admin) => true,
            Some(Role::Reader) => false,
            None => {
                return Err(DirectoryError::Forbidden(
                    "a registration token can only register agents".into(),
                ));
            }
        };
        let caller = Caller {
            token_id: who.token_id,
            admin,
            token: Some(aip_aat::secret::SecretString::new(token)),
        };
        self.callers.lock().unwrap_or_else(PoisonError::into_inner).insert(
            aip_registry::service::token_digest(token),
            (caller.clone(), Instant::now()),
        );
        Ok(caller)
    }

    async fn revoke_agent(
        &self,
        caller: &Caller,
        agent_id: &AgentId,
        reason: Option<&str>,
    ) -> Result<u64, DirectoryError> {
        let token = caller
            .token
            .as_ref()
            .ok_or_else(|| DirectoryError::Unauthorized("no access token".into()))?;
        let client = RegistryClient::with_roots(&self.base, Some(token.expose().to_owned()), self.ca_pem.as_deref())?;
        let request = StatusRequest {
            reason: reason.map(str::to_owned),
            crl_reason: None,
        };
        let changed = client.change_status(agent_id, StatusKind::Revoke, &request).await?;
        self.cache.evict(agent_id.as_str());
        Ok(changed.revocation_version)
    }

    async fn publish(&self, _actor: &str, subject: &str, revocations: &Revocations) -> Result<u64, DirectoryError> {
        let entry = |e: &aip_registry::store::RevokedEntry| RevokedEntryBody {
            id: e.id.clone(),
            expires_at: e.expires_at,
        };
        let request = PublishRevocationsRequest {
            subject: subject.to_owned(),
            tokens: revocations.tokens.iter().map(entry).collect(),
            sessions: revocations.sessions.iter().map(entry).collect(),
            users: revocations.users.clone(),
            reason: revocations.reason.clone(),
        };
        Ok(self.service.publish_revocations(&request).await?.revocation_version)
    }
}
