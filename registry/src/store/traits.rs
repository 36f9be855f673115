//! The store's traits, by concern: [`AgentStore`], [`RevocationStore`], [`CredentialStore`],
//! and [`Store`], all of them.

use aip_aat::ids::AgentId;
use aip_aat::revocation::RevocationList;
use aip_api::registry::PublishRevocationsRequest;
use aip_db::audit::AuditEntry;
use async_trait::async_trait;

use super::records::{
    AgentQuery, KeyRotation, NewAccessToken, NewAgent, NewCertificate, NewRegistrationToken, Nonce,
    RegistrationCredential, RegistrationTokenInfo, StatusAction, StatusChanged, StoreError, StoredAccessToken,
    StoredAgent, StoredCertificate, StoredCrl, StoredEvent, StoredKey, StoredRegistrationToken,
};
use crate::ca::CrlEntry;

/// Agents, their keys and certificates, and the nonces of their signed requests.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Creates an agent with its key and first certificate. Consumes a use of a registration
    /// token; records the proof nonce. Returns the registration token's expiry, if one was used.
    async fn register_agent(
        &self,
        agent: &NewAgent,
        certificate: &NewCertificate,
        credential: &RegistrationCredential,
        nonce: &Nonce,
        audit: &AuditEntry,
    ) -> Result<Option<i64>, StoreError>;

    /// The agent, if registered.
    async fn agent(&self, agent_id: &AgentId) -> Result<Option<StoredAgent>, StoreError>;

    /// Agents in id order.
    async fn agents(&self, query: &AgentQuery) -> Result<Vec<StoredAgent>, StoreError>;

    /// Every key the agent held, newest first.
    async fn agent_keys(&self, agent_id: &AgentId) -> Result<Vec<StoredKey>, StoreError>;

    /// Every certificate issued to the agent, newest first.
    async fn certificates(&self, agent_id: &AgentId) -> Result<Vec<StoredCertificate>, StoreError>;

    /// Replaces an active agent's key (see [`KeyRotation`]); emits an `agent_key_rotated`
    /// event. Returns the new list version.
    async fn rotate_key(&self, rotation: &KeyRotation, audit: &AuditEntry) -> Result<u64, StoreError>;

    /// Records a renewed certificate for an active agent's current key.
    async fn add_certificate(
        &self,
        certificate: &NewCertificate,
        nonce: &Nonce,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Suspends, reactivates or revokes an agent; updates its certificates' revocation state
    /// and emits an event.
    async fn change_status(
        &self,
        agent_id: &AgentId,
        action: StatusAction,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StatusChanged, StoreError>;

    /// Replaces the redirect URIs of an agent that is not revoked, and appends `audit`.
    async fn set_redirect_uris(
        &self,
        agent_id: &AgentId,
        redirect_uris: &[String],
        at: i64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// Deletes request nonces that expired before `now`; returns how many.
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;
}

/// What the registry publishes about revocation: the list, its events, the CRL.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Lists tokens, sessions and users as revoked (already listed ones are kept as they are)
    /// and emits one event naming them. Returns the new list version.
    async fn publish_revocations(
        &self,
        revocations: &PublishRevocationsRequest,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError>;

    /// The current revocation list version.
    async fn revocation_version(&self) -> Result<u64, StoreError>;

    /// Calls `wake` whenever a new list version may have been committed by another replica,
    /// for as long as the future runs; returns at once where the database cannot announce
    /// versions (SQLite), and replicas then poll.
    async fn watch_versions(&self, wake: &(dyn Fn() + Send + Sync));

    /// The revocation list (agents, tokens, sessions, users, suspended agents) at `now`.
    async fn revocation_list(&self, now: i64) -> Result<RevocationList, StoreError>;

    /// Events after `version`, in order.
    async fn events_after(&self, version: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// The certificates a CRL of the issuing CA `issuer` made at `now` lists, and the next
    /// time a rotated-out certificate it signed becomes superseded (the CRL must be renewed by
    /// then). `current`: `issuer` is the current issuing CA, which also answers for
    /// certificates recorded without an issuer (issued before any renewal).
    async fn crl_entries(
        &self,
        now: i64,
        issuer: &str,
        current: bool,
    ) -> Result<(Vec<CrlEntry>, Option<i64>), StoreError>;

    /// The most recent CRL signed by the issuing CA `issuer`.
    async fn latest_crl(&self, issuer: &str) -> Result<Option<StoredCrl>, StoreError>;

    /// Records that the issuing CA `previous` is being retired: certificates recorded without
    /// an issuer (signed before any renewal, so by it) are labelled as its, with `audit`, in
    /// one transaction. Returns how many were labelled.
    async fn retire_issuing_ca(&self, previous: &str, at: i64, audit: &AuditEntry) -> Result<u64, StoreError>;

    /// Allocates the next CRL number; returns it with the current revocation version.
    async fn next_crl_number(&self) -> Result<(u64, u64), StoreError>;

    /// Stores a CRL.
    async fn save_crl(&self, crl: &StoredCrl) -> Result<(), StoreError>;
}

/// Access tokens and registration tokens, kept as digests.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores an access token's digest.
    async fn create_access_token(&self, token: &NewAccessToken, audit: &AuditEntry) -> Result<(), StoreError>;

    /// The unrevoked access token with this digest.
    async fn access_token(&self, digest: &str) -> Result<Option<StoredAccessToken>, StoreError>;

    /// Records that the access token `token_id` was used at `at` (upkeep: no lock, no audit).
    async fn touch_access_token(&self, token_id: &str, at: i64) -> Result<(), StoreError>;

    /// Every access token, oldest first.
    async fn access_tokens(&self) -> Result<Vec<StoredAccessToken>, StoreError>;

    /// Revokes the access token `token_id` at `at` and appends `audit`, unless it is already
    /// revoked (then nothing changes). Refuses with [`StoreError::Conflict`] to revoke the
    /// last unexpired admin token. Returns the token as it is now.
    async fn revoke_access_token(
        &self,
        token_id: &str,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StoredAccessToken, StoreError>;

    /// Stores a registration token's digest.
    async fn create_registration_token(
        &self,
        token: &NewRegistrationToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// The registration token with this digest.
    async fn registration_token(&self, digest: &str) -> Result<Option<RegistrationTokenInfo>, StoreError>;

    /// Every registration token, oldest first.
    async fn registration_tokens(&self) -> Result<Vec<StoredRegistrationToken>, StoreError>;

    /// Revokes the registration token `token_id` at `at` and appends `audit`, unless it is
    /// already revoked (then nothing changes). Returns the token as it is now.
    async fn revoke_registration_token(
        &self,
        token_id: &str,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StoredRegistrationToken, StoreError>;
}

/// The registry's persistent state.
#[async_trait]
pub trait Store: AgentStore + RevocationStore + CredentialStore {
    /// Whether the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
}
