//! How the issuer reaches the registry: [`AgentDirectory`], in the words of the registry's
//! API and never of its storage. Two implementations: one over the registry in the same
//! process (in `aip-authority`, where the two services are wired together) and
//! [`RemoteDirectory`] over a registry's HTTP API. The in-process one also offers a
//! [`StandingCheck`], which the issuance transaction runs under the authority lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aip_aat::aid::AgentStatus;
use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use aip_aat::revocation::{RevocationIndex, RevocationList};
use aip_aat::secret::{SecretString, digest as token_digest};
use aip_api::client::{Client, ClientError, Fetched};
use aip_api::registry::{PublishRevocationsRequest, Role, StatusKind, StatusRequest};
use aip_db::Script;
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
    /// Where `GET /oauth/authorize` may send people back to with a code for it.
    pub redirect_uris: Vec<String>,
}

/// A bearer token's holder, as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The access token's id.
    pub token_id: String,
    /// Whether it is an admin token.
    pub admin: bool,
    /// The token itself, for a remote registry that must see it again.
    token: Option<SecretString>,
}

impl Caller {
    /// The holder of the access token `token_id`, an administrator or a reader.
    pub fn new(token_id: String, admin: bool) -> Self {
        Self {
            token_id,
            admin,
            token: None,
        }
    }

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

/// Agents' standing read inside the issuer's own write transaction, under the authority lock
/// every suspension and revocation takes: an issuance committed after such a change,
/// acknowledged by any replica, sees it. Only a registry in the issuer's database can offer
/// one; the statement is the registry's, so the issuer never names the registry's tables.
pub trait StandingCheck: Send + Sync {
    /// Adds to `claim` one statement whose rows name those of `agents` that may not obtain
    /// tokens now: `kind` `agent_suspended` or `agent_revoked`, `value` the agent's id.
    fn push(&self, claim: &mut Script, agents: &[&str]);
}

/// The registry as the issuer uses it.
#[async_trait]
pub trait AgentDirectory: Send + Sync {
    /// The check of agents' standing that issuances run under the authority lock, when the
    /// registry shares the issuer's database; otherwise the status [`AgentDirectory::agent`]
    /// answered is all there is.
    fn standing_check(&self) -> Option<Arc<dyn StandingCheck>> {
        None
    }

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

    /// Lists the tokens, sessions and users of `revocations` as revoked, on behalf of `actor`
    /// (for the audit log); returns the revocation list version.
    async fn publish(&self, actor: &str, revocations: &PublishRevocationsRequest) -> Result<u64, DirectoryError>;

    /// The registry's current revocation list, indexed: what token introspection checks an
    /// AAT against (its user, itself, its session, its agent, its key).
    async fn revocations(&self) -> Result<Arc<RevocationIndex>, DirectoryError>;
}

/// The last revocation list a directory indexed, by its version (or `ETag`), so an unchanged
/// list is not indexed again.
#[derive(Debug, Default)]
pub struct RevocationCache(Mutex<Option<(String, Arc<RevocationIndex>)>>);

impl RevocationCache {
    /// The index of the list with `tag`, if it is the one cached.
    pub fn get(&self, tag: &str) -> Option<Arc<RevocationIndex>> {
        let cached = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|(t, _)| t == tag)
            .map(|(_, index)| index.clone())
    }

    /// The tag of the list cached.
    pub fn tag(&self) -> Option<String> {
        let cached = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cached.as_ref().map(|(tag, _)| tag.clone())
    }

    /// Indexes `list` under `tag`, and returns the index.
    pub fn put(&self, tag: String, list: &RevocationList) -> Arc<RevocationIndex> {
        let index = Arc::new(RevocationIndex::from(list));
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((tag, index.clone()));
        index
    }
}

/// How long an agent record is used without asking the registry again.
const AGENT_CACHE_TTL: Duration = Duration::from_secs(5);
const AGENT_CACHE_MAX: usize = 100_000;

/// Agent records, each with the revocation list version current when it was read: a record
/// older than a status change, rotation or revocation the process knows of is read again.
#[derive(Default)]
pub struct AgentCache(Mutex<HashMap<AgentId, CacheEntry>>);

impl std::fmt::Debug for AgentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCache").finish_non_exhaustive()
    }
}

/// A cached record, the list version when it was read, and when.
type CacheEntry = (Arc<DirectoryAgent>, u64, Instant);

impl AgentCache {
    /// The record of `agent_id`, if one read at list version `version` or later is still fresh.
    pub fn get(&self, agent_id: &AgentId, version: u64) -> Option<Arc<DirectoryAgent>> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(agent_id)
            .filter(|(_, seen, at)| *seen >= version && at.elapsed() < AGENT_CACHE_TTL)
            .map(|(agent, _, _)| agent.clone())
    }

    /// Remembers `agent`, read at list version `version`.
    pub fn put(&self, agent: Arc<DirectoryAgent>, version: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= AGENT_CACHE_MAX {
            map.retain(|_, (_, _, at)| at.elapsed() < AGENT_CACHE_TTL);
            if map.len() >= AGENT_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(agent.agent_id.clone(), (agent, version, Instant::now()));
    }

    /// Forgets `agent_id`.
    pub fn evict(&self, agent_id: &str) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|id, _| id.as_str() != agent_id);
    }
}

/// A registry reached over HTTP. Agent lookups use a reader (or admin) token; revocations the
/// issuer decides itself (refresh-token reuse) are published with `service` (an admin token).
pub struct RemoteDirectory {
    reader: Client,
    service: Client,
    base: String,
    ca_pem: Option<Vec<u8>>,
    cache: AgentCache,
    callers: Mutex<HashMap<String, (Caller, Instant)>>,
    revocations: RevocationCache,
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
        let client = Client::with_roots(base, Some(service_token.to_owned()), ca_pem)?;
        Ok(Self {
            reader: client.clone(),
            service: client,
            base: base.to_owned(),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            cache: AgentCache::default(),
            callers: Mutex::new(HashMap::new()),
            revocations: RevocationCache::default(),
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
            redirect_uris: response.redirect_uris,
        });
        self.cache.put(agent.clone(), 0);
        Ok(Some(agent))
    }

    async fn authenticate(&self, token: &str) -> Result<Caller, DirectoryError> {
        if let Some((caller, at)) = self
            .callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&token_digest(token))
            && at.elapsed() < Duration::from_secs(10)
        {
            return Ok(caller.clone());
        }
        let client = Client::with_roots(&self.base, Some(token.to_owned()), self.ca_pem.as_deref())?;
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
            token: Some(SecretString::new(token)),
        };
        self.callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token_digest(token), (caller.clone(), Instant::now()));
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
        let client = Client::with_roots(&self.base, Some(token.expose().to_owned()), self.ca_pem.as_deref())?;
        let request = StatusRequest {
            reason: reason.map(str::to_owned),
            crl_reason: None,
        };
        let changed = client.change_status(agent_id, StatusKind::Revoke, &request).await?;
        self.cache.evict(agent_id.as_str());
        Ok(changed.revocation_version)
    }

    async fn publish(&self, _actor: &str, revocations: &PublishRevocationsRequest) -> Result<u64, DirectoryError> {
        Ok(self.service.publish_revocations(revocations).await?.revocation_version)
    }

    async fn revocations(&self) -> Result<Arc<RevocationIndex>, DirectoryError> {
        let tag = self.revocations.tag();
        match self
            .reader
            .revocations_since(tag.as_deref(), Duration::from_secs(5), MAX_REVOCATION_LIST_BYTES)
            .await?
        {
            Fetched::NotModified => tag
                .and_then(|tag| self.revocations.get(&tag))
                .ok_or_else(|| DirectoryError::Unavailable("the registry answered 304 to a first request".into())),
            Fetched::Body { bytes, etag } => {
                let list: RevocationList =
                    serde_json::from_slice(&bytes).map_err(|e| DirectoryError::Unavailable(Box::new(e)))?;
                let tag = etag.unwrap_or_else(|| list.version.to_string());
                Ok(self.revocations.put(tag, &list))
            }
        }
    }
}

/// Largest revocation list read from a registry.
const MAX_REVOCATION_LIST_BYTES: usize = 256 << 20;
