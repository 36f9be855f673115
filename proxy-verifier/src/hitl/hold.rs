//! A hold as callers see it: the request, its id, how it ended, how it is listed, and why an
//! answer was not taken.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

/// A held call, as the relay describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    /// The tool, as the client named it.
    pub tool: String,
    /// The arguments as shown to approvers: already redacted (DLP) and truncated by the caller.
    pub arguments_preview: String,
    /// `metadata.name` of the policy in force.
    pub policy_name: String,
    /// The rule that caused the hold, e.g. `tool_rules[write_file].action=ask`.
    pub rule: String,
    /// The agent, when an AAT identified it.
    pub agent_id: Option<String>,
}

/// The unguessable id of a hold: `hold_` and 128 random bits in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HoldId(pub(super) String);

impl HoldId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldOutcome {
    /// A human approved the call: forward it.
    Approved,
    /// A human denied it, the hold could not be kept, or the proxy is shutting down: refuse
    /// it (-32004).
    Denied,
    /// Nobody answered within `hitl.timeout_seconds`: apply `on_timeout`
    /// ([`HitlSettings::allow_on_timeout`](crate::policy::HitlSettings::allow_on_timeout)); when denied, refuse with -32005.
    TimedOut,
}

impl HoldOutcome {
    /// `approved`, `denied` or `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
        }
    }
}

/// A pending hold as listed by `GET /v1/hitl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PendingHold {
    /// The hold's id: `hold_` and 32 hex digits.
    #[schema(value_type = String, example = "hold_3f2a9c0d1e8b47a6b5c4d3e2f1a09b8c")]
    pub hold_id: HoldId,
    /// The tool.
    pub tool: String,
    /// The redacted, truncated arguments.
    pub arguments_preview: String,
    /// The policy's name.
    pub policy: String,
    /// The rule that caused the hold.
    pub rule: String,
    /// The agent, when known.
    pub agent_id: Option<String>,
    /// When the hold was made (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it times out (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// Why an answer to a hold was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HitlError {
    /// No hold has this id (never existed, or resolved too long ago to remember).
    #[error("no pending hold has this id")]
    NotFound,
    /// The hold was already resolved; the first answer stands.
    #[error("the hold was already resolved ({})", outcome.as_str())]
    AlreadyResolved {
        /// How it was resolved.
        outcome: HoldOutcome,
    },
}

/// The callback of a hold.
pub type OnResolved = Box<dyn FnOnce(HoldOutcome) + Send>;

/// `hold_` and 128 random bits in hex.
pub(super) fn random_hold_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(format!("hold_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_long() {
        let a = random_hold_id().unwrap();
        let b = random_hold_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "hold_".len() + 32);
    }
}
