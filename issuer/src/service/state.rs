//! The [`Issuer`]: its settings, the registry it reaches through an [`AgentDirectory`], its
//! store and ledger, signing keys, challenges, identity providers, the authorization-code
//! flow's sealer and relying party, and clock; challenges; and its background work.

use std::future::Future;
use std::sync::Arc;

use aip_aat::clock::Clock;
use aip_aat::ids::AgentId;
use aip_api::issuer::{ChallengeRequest, ChallengeResponse, TokenErrorCode};
use aip_db::DbError;

use super::error::{IssuerError, unix_time};
use crate::challenge::{Challenges, KEY_LEN};
use crate::config::{CHALLENGE_TTL, IssuerSettings};
use crate::directory::{AgentDirectory, Caller, DirectoryAgent};
use crate::keys::SigningKeys;
use crate::oidc::OidcVerifier;
use crate::relying_party::RelyingParty;
use crate::seal::{SEAL_KEY_LEN, Sealer};
use crate::store::{IssuerStore, Ledger, UserRecord};

/// How long an API-key user is remembered.
pub(super) const USER_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The token issuer.
pub struct Issuer {
    pub(crate) settings: IssuerSettings,
    pub(crate) directory: Arc<dyn AgentDirectory>,
    pub(crate) store: IssuerStore,
    pub(crate) ledger: Ledger,
    pub(crate) keys: Arc<SigningKeys>,
    pub(crate) challenges: Challenges,
    pub(crate) oidc: OidcVerifier,
    pub(crate) clock: Arc<dyn Clock>,
    /// Seals what the authorization-code flow hands to browsers and agents.
    pub(crate) sealer: Sealer,
    /// Signs people in at the identity providers with `login` settings.
    pub(crate) relying_party: RelyingParty,
    /// API-key users by key digest, with when they were read.
    pub(crate) api_keys: std::sync::Mutex<std::collections::HashMap<String, (UserRecord, std::time::Instant)>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer_id", &self.settings.issuer_id)
            .finish_non_exhaustive()
    }
}

/// The sealer over the key every replica shares (created by the first replica to start).
async fn sealer(store: &IssuerStore) -> Result<Sealer, IssuerError> {
    let mut offered = [0u8; SEAL_KEY_LEN];
    aip_aat::ids::fill_random(&mut offered).map_err(|_| IssuerError::internal(aip_aat::keys::KeyError::Random))?;
    let secret = store.secret("authorize_key", || hex::encode(offered)).await?;
    let key: [u8; SEAL_KEY_LEN] = hex::decode(&secret)
        .ok()
        .and_then(|k| k.try_into().ok())
        .filter(|k: &[u8; SEAL_KEY_LEN]| k.iter().any(|b| *b != 0))
        .ok_or_else(|| IssuerError::internal(DbError::Corrupt("authorize_key")))?;
    Ok(Sealer::new(&key))
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
            .ok_or_else(|| IssuerError::internal(DbError::Corrupt("challenge_key")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(IssuerError::internal)?;
        let oidc = OidcVerifier::new(settings.oidc.clone(), http).map_err(IssuerError::internal)?;
        let sealer = sealer(&store).await?;
        let relying_party = RelyingParty::new().map_err(IssuerError::internal)?;
        Ok(Self {
            challenges: Challenges::new(&key, CHALLENGE_TTL),
            ledger: Ledger::start(store.clone(), directory.standing_check()),
            settings,
            directory,
            store,
            keys,
            oidc,
            clock,
            sealer,
            relying_party,
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

    pub(crate) async fn registered_agent(&self, agent_id: &AgentId) -> Result<Arc<DirectoryAgent>, IssuerError> {
        self.directory
            .agent(agent_id)
            .await
            .map_err(IssuerError::from)?
            .ok_or_else(|| IssuerError::token(TokenErrorCode::AgentNotFound, "no agent has this id"))
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
