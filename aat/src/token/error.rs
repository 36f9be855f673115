//! AAT validation failures, each mapped to its spec 11.2 `aat_error` string.

use crate::aid::AgentStatus;

/// Which revocation entry covers a token (spec 7.5.3 step 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokedBy {
    /// The agent is revoked.
    Agent,
    /// The token's `jti` is revoked.
    Token,
    /// The token's session is revoked.
    Session,
    /// The user revoked their delegation after the token was issued (spec 10.5).
    User,
    /// A block of the delegable AAT's chain is revoked by its revocation id.
    Delegation,
}

/// Why an AAT was refused. [`AatError::aat_error`] gives the spec's error string; the
/// `Display` text is for logs and `reason` fields and never contains the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AatError {
    /// Step 1: not a well-formed AAT (JWS shape, `typ`, required claims and their types).
    #[error("malformed AAT: {0}")]
    Malformed(&'static str),
    /// Step 2: `aat_version` is not `aip/v1alpha3`.
    #[error("unsupported aat_version")]
    UnsupportedVersion,
    /// Step 3: `iss` is not a trusted issuer.
    #[error("issuer {issuer:?} is not trusted")]
    UntrustedIssuer {
        /// The token's `iss`.
        issuer: String,
    },
    /// Step 4: no key for the issuer and `kid` (or no `kid`).
    #[error("no signing key is known for this issuer and kid")]
    UnknownSigningKey,
    /// Step 4: the algorithm is not allowed, does not match the key, or the signature fails.
    #[error("signature invalid: {0}")]
    SignatureInvalid(&'static str),
    /// Step 5: `nbf` (or `iat`) is in the future beyond the allowed clock skew.
    #[error("AAT is not valid yet")]
    NotYetValid,
    /// Step 5: `exp` has passed beyond the allowed clock skew.
    #[error("AAT expired")]
    Expired,
    /// Step 5: `exp - iat` exceeds the maximum lifetime (at most 24 h, spec 14.8.3).
    #[error("AAT lifetime of {lifetime} s exceeds the maximum of {max} s")]
    LifetimeTooLong {
        /// `exp - iat`.
        lifetime: i64,
        /// The configured maximum.
        max: u64,
    },
    /// Step 6: the expected audience is not in `aud`.
    #[error("AAT audience does not include this service")]
    AudienceMismatch,
    /// Step 7: the token, its session, its agent or its user delegation is revoked.
    #[error("AAT revoked ({0:?})")]
    Revoked(RevokedBy),
    /// Step 8: the registry does not know the agent.
    #[error("agent is not registered")]
    UnknownAgent {
        /// The token's `agent.id`.
        agent_id: String,
    },
    /// Step 8: the registry holds a different key for the agent.
    #[error("agent key does not match the registry")]
    AgentKeyMismatch,
    /// Step 8: the agent is suspended or revoked.
    #[error("agent is {0}")]
    AgentInactive(AgentStatus),
    /// Step 9: the `jti` was already used (single-use mode).
    #[error("AAT jti was already used")]
    ReplayDetected,
    /// A delegable AAT's chain does not verify (`delegation_invalid`, `delegation_widened`,
    /// `delegation_too_deep`, `aat_expired`).
    #[error("{reason}")]
    Delegation {
        /// Its `aat_error`.
        code: &'static str,
        /// Why, for logs and `reason` fields.
        reason: String,
    },
}

impl AatError {
    /// The `aat_error` string of spec 11.2.
    pub fn aat_error(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_aat",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UntrustedIssuer { .. } => "untrusted_issuer",
            Self::UnknownSigningKey => "unknown_signing_key",
            Self::SignatureInvalid(_) => "signature_invalid",
            Self::NotYetValid => "not_yet_valid",
            // A token valid for longer than allowed is treated as expired (spec 14.8.3).
            Self::Expired | Self::LifetimeTooLong { .. } => "aat_expired",
            Self::AudienceMismatch => "audience_mismatch",
            Self::Revoked(_) => "aat_revoked",
            Self::UnknownAgent { .. } => "unknown_agent",
            Self::AgentKeyMismatch => "agent_key_mismatch",
            Self::AgentInactive(_) => "agent_inactive",
            Self::ReplayDetected => "replay_detected",
            Self::Delegation { code, .. } => code,
        }
    }
}
