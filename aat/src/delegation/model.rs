//! What delegation takes and answers: a step asked for ([`Grant`]), a step verified
//! ([`Step`]), and why a chain is refused ([`DelegationError`]).

use crate::ids::{AgentId, KeyId};

/// One delegation step, as the delegator asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The agent the authority is handed to.
    pub delegatee: AgentId,
    /// The thumbprint of the delegatee's key: the key that signs the next step, or the calls.
    pub delegatee_key: KeyId,
    /// The tools handed on: a subset of the delegator's.
    pub tools: Vec<String>,
    /// The audience handed on: a subset of the delegator's.
    pub audience: Vec<String>,
    /// When the delegation ends (Unix seconds): no later than the delegator's.
    pub expires_at: i64,
}

/// One verified delegation step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The agent that signed the step.
    pub delegator: AgentId,
    /// The agent it delegates to.
    pub delegatee: AgentId,
    /// The thumbprint of the delegatee's key.
    pub delegatee_key: KeyId,
    /// The tools handed on.
    pub tools: Vec<String>,
    /// The audience handed on.
    pub audience: Vec<String>,
    /// When the step ends (Unix seconds).
    pub expires_at: i64,
    /// The block's revocation id, in hex.
    pub revocation_id: String,
}

/// Why a delegable AAT could not be made, delegated or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// Not a biscuit this toolkit reads, or a block of the wrong shape.
    #[error("not a valid delegable AAT: {0}")]
    Malformed(String),
    /// The root key id names no issuer signing key.
    #[error("the token's root key is not an issuer signing key")]
    UnknownRoot,
    /// A signature does not verify, or a block is signed by another key than its delegator's,
    /// or is not a delegation block.
    #[error("invalid delegation: {0}")]
    Invalid(String),
    /// A step hands on more than its parent holds.
    #[error("delegation step {step} widens its parent's {what}")]
    Widened {
        /// The step (1 for the first delegation).
        step: usize,
        /// `tools`, `audience` or `lifetime`.
        what: &'static str,
    },
    /// More principals than allowed.
    #[error("the chain has {depth} principals (the user included); at most {max} are allowed")]
    TooDeep {
        /// Principals on the chain.
        depth: u8,
        /// The allowed maximum.
        max: u8,
    },
    /// The token, or one of its steps, has expired.
    #[error("the delegation has expired")]
    Expired,
    /// The delegator does not hold the token (its key is not the last delegatee's).
    #[error("the delegating key does not hold this token: {0}")]
    NotHolder(String),
    /// The token cannot be made (claims or keys unsuitable).
    #[error("a delegable AAT cannot be made: {0}")]
    Build(String),
}

impl DelegationError {
    /// The `aat_error` value reported for this refusal.
    pub fn aat_error(&self) -> &'static str {
        match self {
            Self::TooDeep { .. } => "delegation_too_deep",
            Self::Widened { .. } => "delegation_widened",
            Self::Expired => "aat_expired",
            Self::Malformed(_) | Self::UnknownRoot | Self::Invalid(_) | Self::NotHolder(_) | Self::Build(_) => {
                "delegation_invalid"
            }
        }
    }
}
