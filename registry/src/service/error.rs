//! [`RegistryError`]: why a request could not be served.

use time::OffsetDateTime;

use crate::store::StoreError;

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
    /// Nothing is published at this address (e.g. no issuing CA has this key id).
    #[error("{0}")]
    NotFound(&'static str),
    /// No access or registration token has this id.
    #[error("token not found")]
    TokenNotFound,
    /// The public key is already registered.
    #[error("this public key is already registered")]
    KeyAlreadyRegistered,
    /// The request conflicts with the agent's state.
    #[error("{0}")]
    Conflict(&'static str),
    /// The name looks like an existing agent's; the text names that agent.
    #[error("{0}")]
    LooksLike(String),
    /// Something failed on our side.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegistryError {
    pub(super) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AgentNotFound => Self::AgentNotFound,
            StoreError::KeyAlreadyRegistered => Self::KeyAlreadyRegistered,
            StoreError::TokenNotFound => Self::TokenNotFound,
            StoreError::InvalidCredential => Self::Unauthorized("the credential is no longer valid"),
            StoreError::ProofReplayed => Self::InvalidProof("the request proof was already used".into()),
            StoreError::Conflict(m) => Self::Conflict(m),
            e @ StoreError::LooksLike { .. } => Self::LooksLike(e.to_string()),
            e @ (StoreError::Corrupt(_) | StoreError::Backend(_)) => Self::internal(e),
        }
    }
}

/// A stored Unix time as a timestamp of the API.
pub(super) fn unix_time(t: i64) -> Result<OffsetDateTime, RegistryError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(RegistryError::internal)
}
