//! What the store keeps and returns: agents, keys, certificates, status changes, events,
//! CRLs, revocations and credentials, and [`StoreError`].

use aip_aat::aid::{AgentStatus, AidMetadata};
use aip_aat::ids::{AgentId, KeyId};
use aip_aat::keys::Jwk;
use aip_api::registry::Role;
use aip_db::DbError;
use serde_json::Value;

use crate::ca::CrlReason;

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
    /// No access or registration token has this id.
    #[error("token not found")]
    TokenNotFound,
    /// The request proof's id was seen before.
    #[error("request proof was already used")]
    ProofReplayed,
    /// The change does not apply to the agent's current state.
    #[error("{0}")]
    Conflict(&'static str),
    /// The new agent's name looks like an existing agent's (the same Unicode TR39 skeleton).
    #[error("the name looks like the name of agent {agent_id}")]
    LooksLike {
        /// The existing agent.
        agent_id: String,
        /// Its name.
        name: String,
    },
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
            DbError::Backend(source) => Self::Backend(source),
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
    /// Where `GET /oauth/authorize` may send people back to (none until an administrator sets
    /// them).
    pub redirect_uris: Vec<String>,
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
    /// Key id of the issuing CA that signed it (`None`: issued before the first renewal of the
    /// issuing CA, by the one current then).
    pub issuer_key_id: Option<String>,
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
    /// Key id of the issuing CA that signed it.
    pub issuer_key_id: String,
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
    /// Expiry (`None`: never).
    pub expires_at: Option<i64>,
}

/// An access token as stored (its digest left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAccessToken {
    /// Public id.
    pub token_id: String,
    /// Role.
    pub role: Role,
    /// Label.
    pub label: Option<String>,
    /// Creation time.
    pub created_at: i64,
    /// Expiry (`None`: never).
    pub expires_at: Option<i64>,
    /// When it was last used, to the minute.
    pub last_used_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A registration token as stored (its digest left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRegistrationToken {
    /// Public id.
    pub token_id: String,
    /// Label.
    pub label: Option<String>,
    /// Registrations left.
    pub uses_remaining: i64,
    /// Creation time.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// When it last registered an agent.
    pub last_used_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
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
    /// Label.
    pub label: Option<String>,
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
    /// Whether it was revoked.
    pub revoked: bool,
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
