//! Where the registry and the token issuer meet in one process: [`LocalDirectory`], the
//! issuer's [`AgentDirectory`] over the registry itself, and [`IssuerKeys`], the registry's
//! [`TokenKeys`] over the issuer's signing keys.

use std::sync::Arc;

use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use aip_aat::revocation::RevocationIndex;
use aip_api::registry::{PublishRevocationsRequest, StatusKind, StatusRequest};
use aip_db::Script;
use aip_issuer::directory::{
    AgentCache, AgentDirectory, Caller, DirectoryAgent, DirectoryError, RevocationCache, StandingCheck,
};
use aip_issuer::keys::SigningKeys;
use aip_registry::service::{Principal, Registry, RegistryError, TokenKeys};
use aip_registry::store::SqlStore;
use async_trait::async_trait;

/// The registry in the same process, as the issuer sees it.
pub struct LocalDirectory {
    registry: Arc<Registry>,
    cache: AgentCache,
    revocations: RevocationCache,
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
            revocations: RevocationCache::default(),
        })
    }
}

/// How the issuer reads a registry failure.
fn directory_error(e: RegistryError) -> DirectoryError {
    match e {
        RegistryError::Unauthorized(m) => DirectoryError::Unauthorized(m.into()),
        RegistryError::Forbidden(m) => DirectoryError::Forbidden(m.into()),
        RegistryError::AgentNotFound => DirectoryError::AgentNotFound,
        RegistryError::InvalidRequest(m) | RegistryError::InvalidProof(m) => DirectoryError::Refused(m),
        RegistryError::Conflict(m) => DirectoryError::Refused(m.into()),
        e => DirectoryError::Unavailable(Box::new(e)),
    }
}

/// The registry's statement of agents' standing, run in the issuer's transactions (both
/// services share one database here).
#[derive(Debug)]
struct RegistryStanding;

impl StandingCheck for RegistryStanding {
    fn push(&self, claim: &mut Script, agents: &[&str]) {
        SqlStore::push_inactive_agents(claim, agents);
    }
}

#[async_trait]
impl AgentDirectory for LocalDirectory {
    fn standing_check(&self) -> Option<Arc<dyn StandingCheck>> {
        Some(Arc::new(RegistryStanding))
    }

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
            redirect_uris: stored.redirect_uris,
        });
        self.cache.put(agent.clone(), version);
        Ok(Some(agent))
    }

    async fn authenticate(&self, token: &str) -> Result<Caller, DirectoryError> {
        match self.registry.authenticate(token).await.map_err(directory_error)? {
            Principal::Admin { token_id } => Ok(Caller::new(token_id, true)),
            Principal::Reader { token_id } => Ok(Caller::new(token_id, false)),
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
            .await
            .map_err(directory_error)?;
        self.cache.evict(agent_id.as_str());
        Ok(changed.revocation_version)
    }

    async fn publish(&self, actor: &str, revocations: &PublishRevocationsRequest) -> Result<u64, DirectoryError> {
        self.registry
            .publish_revocations(actor.to_owned(), revocations)
            .await
            .map_err(directory_error)
    }

    async fn revocations(&self) -> Result<Arc<RevocationIndex>, DirectoryError> {
        let published = self.registry.published_list().await.map_err(directory_error)?;
        let tag = published.version.to_string();
        Ok(match self.revocations.get(&tag) {
            Some(index) => index,
            None => self.revocations.put(tag, &published.list),
        })
    }
}

/// The issuer's signing keys, which the registry publishes in `GET /v1/jwks` beside its own.
#[derive(Debug)]
pub struct IssuerKeys(pub Arc<SigningKeys>);

impl TokenKeys for IssuerKeys {
    fn published_keys(&self) -> Vec<PublicKey> {
        self.0.published_keys()
    }
}
