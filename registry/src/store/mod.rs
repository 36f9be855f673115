//! Persistence. [`Store`] is the registry's only way to its tables, by concern: agents, their
//! keys and certificates ([`AgentStore`]), revocation publication ([`RevocationStore`]) and
//! credentials ([`CredentialStore`]). Each mutating method is one write transaction of the
//! authority database (`aip_db::Write`) that also appends to the audit chain, so a failed
//! request changes nothing. [`SqlStore`] implements it for SQLite (the embedded default) and
//! PostgreSQL.

mod sql;

use aip_aat::aid::{AgentStatus, AidMetadata};
use aip_aat::ids::{AgentId, KeyId};
use aip_aat::keys::Jwk;
use aip_aat::revocation::RevocationList;
use aip_api::registry::Role;
use aip_db::DbError;
use aip_db::audit::AuditEntry;
use async_trait::async_trait;
use serde_json::Value;

pub use sql::SqlStore;

use crate::ca::{CrlEntry, CrlReason};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The agent does not exist.
    #[error("agent not found")]
    AgentNotFound,
    /// The public key is already registered (to this or another agent).
    #[error("public key is already registered")]
    KeyAlreadyRegistered,
    /// The registration token is unknown, used up or expired, or the access token was revoked.
    #[error("credential is not valid")]
    InvalidCredential,
    /// The request proof's id was seen before.
    #[error("request proof was already used")]
    ProofReplayed,
    /// The change does not apply to the agent's current state.
    #[error("{0}")]
    Conflict(&'static str),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The database failed. The source is for logs, never for clients.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(what) => Self::Conflict(what),
            DbError::Corrupt(what) => Self::Corrupt(what),
            other => Self::Backend(Box::new(other)),
        }
    }
}

/// An agent to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAgent {
    /// Its id.
    pub agent_id: AgentId,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Owner (email or organisation).
    pub owner: Option<String>,
    /// Tools the agent may ever be granted.
    pub capabilities: Vec<String>,
    /// Whether the agent may obtain AATs without a user (`agent_attestation`).
    pub autonomous: bool,
    /// AID metadata.
    pub metadata: Option<AidMetadata>,
    /// Its public key.
    pub public_key: Jwk,
    /// RFC 7638 thumbprint of the key.
    pub thumbprint: KeyId,
    /// Registration time.
    pub created_at: i64,
}

/// An agent as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAgent {
    /// Registration data (with the *current* key).
    pub agent: NewAgent,
    /// Status.
    pub status: AgentStatus,
    /// Why it was last suspended or revoked.
    pub status_reason: Option<String>,
    /// When the status last changed.
    pub status_changed_at: Option<i64>,
}

/// A key an agent holds or held.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint.
    pub thumbprint: KeyId,
    /// The key.
    pub public_key: Jwk,
    /// When it was registered.
    pub added_at: i64,
    /// For rotated-out keys: end of the grace period.
    pub valid_until: Option<i64>,
}

/// A certificate to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewCertificate {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The agent.
    pub agent_id: AgentId,
    /// Thumbprint of the certified key.
    pub key_thumbprint: KeyId,
    /// Validity start.
    pub not_before: i64,
    /// Validity end.
    pub not_after: i64,
    /// DER.
    pub der: Vec<u8>,
}

/// A certificate as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCertificate {
    /// What was issued.
    pub certificate: NewCertificate,
    /// Revocation or hold: when, and why.
    pub revoked: Option<(i64, CrlReason)>,
    /// For certificates of rotated-out keys: when they stop being valid (end of grace).
    pub superseded_at: Option<i64>,
}

/// Who is registering an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationCredential {
    /// An administrator (access token id).
    Admin {
        /// Token id.
        token_id: String,
    },
    /// A registration token (one use is consumed).
    RegistrationToken {
        /// SHA-256 of the token.
        digest: String,
    },
}

/// A request-proof id to record against reuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nonce {
    /// The proof's `jti`.
    pub jti: String,
    /// When it could no longer be accepted anyway.
    pub expires_at: i64,
}

/// A key rotation (spec 8.3.4).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRotation {
    /// The agent.
    pub agent_id: AgentId,
    /// The key being replaced; must still be the agent's current key.
    pub current: KeyId,
    /// The new key.
    pub new_key: StoredKey,
    /// Until when the old key and its certificates stay valid.
    pub grace_until: i64,
    /// The certificate for the new key.
    pub certificate: NewCertificate,
    /// The proofs' nonces (one per key).
    pub nonces: Vec<Nonce>,
}

/// A status change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusAction {
    /// Suspend an active agent (its certificates go on hold).
    Suspend,
    /// Reactivate a suspended agent (holds are lifted).
    Reactivate,
    /// Revoke the agent for good.
    Revoke(CrlReason),
}

/// The outcome of a status change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChanged {
    /// The revocation list version it produced.
    pub version: u64,
    /// The status before.
    pub previous: AgentStatus,
    /// The status now.
    pub status: AgentStatus,
}

/// An entry of the revocation event stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The revocation list version it produced (its SSE `id`).
    pub version: u64,
    /// When.
    pub at: i64,
    /// `agent_suspended`, `agent_reactivated`, `agent_revoked`, `agent_key_rotated`.
    pub kind: String,
    /// The agent (or token, session, user).
    pub subject: String,
    /// Details.
    pub data: Value,
}

/// A CRL as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCrl {
    /// CRL number.
    pub crl_number: u64,
    /// The revocation list version it reflects.
    pub revocation_version: u64,
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate.
    pub next_update: i64,
    /// When a new one should be made (half-life, or the next supersession).
    pub refresh_at: i64,
    /// DER.
    pub der: Vec<u8>,
}

/// A token or session to list as revoked, with the time after which listing it no longer
/// matters (the expiry of the last token it covers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The AAT `jti` or the session id.
    pub id: String,
    /// When every token it covers has expired (`None`: keep listing it).
    pub expires_at: Option<i64>,
}

/// Revocations to publish in one list version (one event): tokens, sessions and users, as the
/// token issuer decides them (revoking a user covers that user's live tokens and sessions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    /// AATs, by `jti`.
    pub tokens: Vec<RevokedEntry>,
    /// Sessions.
    pub sessions: Vec<RevokedEntry>,
    /// Users: every AAT of theirs issued at or before the revocation time.
    pub users: Vec<String>,
    /// Why.
    pub reason: Option<String>,
}

impl Revocations {
    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.sessions.is_empty() && self.users.is_empty()
    }

    /// The event kind that announces them: `user_revoked`, `session_revoked` or `aat_revoked`.
    pub fn event_kind(&self) -> &'static str {
        if !self.users.is_empty() {
            "user_revoked"
        } else if !self.sessions.is_empty() {
            "session_revoked"
        } else {
            "aat_revoked"
        }
    }
}

/// A new access token (only its digest is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccessToken {
    /// SHA-256 of the token.
    pub digest: String,
    /// Public id.
    pub token_id: String,
    /// Role.
    pub role: Role,
    /// Label.
    pub label: Option<String>,
    /// Creation time.
    pub created_at: i64,
}

/// A new registration token (only its digest is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRegistrationToken {
    /// SHA-256 of the token.
    pub digest: String,
    /// Public id.
    pub token_id: String,
    /// Registrations it allows.
    pub uses: u32,
    /// Expiry.
    pub expires_at: i64,
    /// Creation time.
    pub created_at: i64,
}

/// A registration token's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationTokenInfo {
    /// Public id.
    pub token_id: String,
    /// Registrations left.
    pub uses_remaining: i64,
    /// Expiry.
    pub expires_at: i64,
}

/// Which agents to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentQuery {
    /// Only agents in this status.
    pub status: Option<AgentStatus>,
    /// Only agents whose id sorts after this one (pagination cursor).
    pub after: Option<AgentId>,
    /// At most this many.
    pub limit: u32,
}

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
        revocations: &Revocations,
        subject: &str,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError>;

    /// The current revocation list version.
    async fn revocation_version(&self) -> Result<u64, StoreError>;

    /// The revocation list (agents, tokens, sessions, users, suspended agents) at `now`.
    async fn revocation_list(&self, now: i64) -> Result<RevocationList, StoreError>;

    /// Events after `version`, in order.
    async fn events_after(&self, version: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// The certificates a CRL made at `now` lists, and the next time a rotated-out
    /// certificate becomes superseded (the CRL must be renewed by then).
    async fn crl_entries(&self, now: i64) -> Result<(Vec<CrlEntry>, Option<i64>), StoreError>;

    /// The most recent CRL.
    async fn latest_crl(&self) -> Result<Option<StoredCrl>, StoreError>;

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

    /// The id and role of the unrevoked access token with this digest.
    async fn access_token(&self, digest: &str) -> Result<Option<(String, Role)>, StoreError>;

    /// Stores a registration token's digest.
    async fn create_registration_token(
        &self,
        token: &NewRegistrationToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// The registration token with this digest.
    async fn registration_token(&self, digest: &str) -> Result<Option<RegistrationTokenInfo>, StoreError>;
}

/// The registry's persistent state.
#[async_trait]
pub trait Store: AgentStore + RevocationStore + CredentialStore {
    /// Whether the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
}
