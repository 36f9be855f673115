//! The one place call-verification errors become JSON-RPC errors (spec 11, DESIGN §7).
//!
//! | error                                   | code   | message               |
//! |-----------------------------------------|--------|-----------------------|
//! | no AAT                                  | -32015 | AAT required          |
//! | `untrusted_issuer`                      | -32020 | Issuer untrusted      |
//! | `unknown_agent`                         | -32018 | Agent not registered  |
//! | user delegation revoked, `user_auth_stale` | -32019 | Delegation expired |
//! | tool not granted, `delegation_scope_exceeded` | -32017 | AAT capability denied |
//! | every other AAT or proof error          | -32016 | AAT invalid           |
//!
//! `data.aat_error` always carries the precise string; `data.reason` a human sentence.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::proof::ProofError;
use crate::token::{AatError, RevokedBy};

/// A refusal of a tool call on identity grounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call carries no AAT and one is required.
    #[error("AAT required")]
    AatRequired,
    /// The AAT failed validation.
    #[error(transparent)]
    Aat(#[from] AatError),
    /// The per-call proof failed.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The tool is not among the AAT's capabilities.
    #[error("tool not in AAT capabilities")]
    CapabilityDenied {
        /// The agent.
        agent_id: String,
        /// The tools the AAT does grant.
        granted: Vec<String>,
    },
    /// The user delegation does not cover the call (spec 10.3).
    #[error(transparent)]
    Delegation(#[from] DelegationError),
}

/// User-binding failures of spec 10.3.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// The AAT has no `user_binding` and one is required.
    #[error("AAT has no user binding")]
    MissingUserBinding,
    /// The user authenticated too long ago.
    #[error("user authentication is older than {max_auth_age} s")]
    UserAuthStale {
        /// `user_binding.auth_time`.
        auth_time: i64,
        /// The configured maximum age in seconds.
        max_auth_age: u64,
    },
    /// The delegation scope (e.g. `read_only`) does not cover the tool.
    #[error("delegation scope does not cover this tool")]
    ScopeExceeded,
}

impl DelegationError {
    /// The spec 10.3 error string.
    pub fn aat_error(&self) -> &'static str {
        match self {
            Self::MissingUserBinding => "missing_user_binding",
            Self::UserAuthStale { .. } => "user_auth_stale",
            Self::ScopeExceeded => "delegation_scope_exceeded",
        }
    }
}

/// A JSON-RPC 2.0 error object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonRpcError {
    /// Error code.
    pub code: i32,
    /// Short message.
    pub message: &'static str,
    /// Details: `tool`, `reason`, `aat_error` and code-specific members.
    pub data: Value,
}

/// Maps a refusal to its JSON-RPC error; `tool` is the called tool when known.
pub fn jsonrpc_error(error: &CallError, tool: Option<&str>) -> JsonRpcError {
    let mut data = Map::new();
    if let Some(tool) = tool {
        data.insert("tool".into(), tool.into());
    }
    let mut put = |k: &str, v: Value| {
        data.insert(k.to_owned(), v);
    };
    let (code, message, reason, aat_error): (i32, &'static str, String, Option<&'static str>) = match error {
        CallError::AatRequired => (
            -32015,
            "AAT required",
            "Agent Authentication Token required for this proxy".into(),
            None,
        ),
        CallError::Aat(e @ AatError::UntrustedIssuer { issuer }) => {
            put("issuer", issuer.as_str().into());
            (
                -32020,
                "Issuer untrusted",
                "AAT issuer not in trusted_issuers configuration".into(),
                Some(e.aat_error()),
            )
        }
        CallError::Aat(e @ AatError::UnknownAgent { agent_id }) => {
            put("agent_id", agent_id.as_str().into());
            (
                -32018,
                "Agent not registered",
                "Agent not found in AIP Registry".into(),
                Some(e.aat_error()),
            )
        }
        CallError::Aat(e @ AatError::Revoked(RevokedBy::User)) => (
            -32019,
            "Delegation expired",
            "User delegation has been revoked".into(),
            Some(e.aat_error()),
        ),
        CallError::Aat(e) => (-32016, "AAT invalid", e.to_string(), Some(e.aat_error())),
        CallError::Proof(e) => (-32016, "AAT invalid", e.to_string(), Some(e.aat_error())),
        CallError::CapabilityDenied { agent_id, granted } => {
            put("agent_id", agent_id.as_str().into());
            put("granted_capabilities", json!(granted));
            (
                -32017,
                "AAT capability denied",
                "Tool not in AAT capabilities".into(),
                None,
            )
        }
        CallError::Delegation(
            e @ DelegationError::UserAuthStale {
                auth_time,
                max_auth_age,
            },
        ) => {
            let when = time::OffsetDateTime::from_unix_timestamp(*auth_time)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            put("user_auth_time", when.map_or(Value::from(*auth_time), Value::from));
            put("max_auth_age", (*max_auth_age).into());
            (
                -32019,
                "Delegation expired",
                "User delegation has expired".into(),
                Some(e.aat_error()),
            )
        }
        CallError::Delegation(e @ DelegationError::ScopeExceeded) => {
            (-32017, "AAT capability denied", e.to_string(), Some(e.aat_error()))
        }
        CallError::Delegation(e) => (-32016, "AAT invalid", e.to_string(), Some(e.aat_error())),
    };
    data.insert("reason".into(), reason.into());
    if let Some(aat_error) = aat_error {
        data.insert("aat_error".into(), aat_error.into());
    }
    JsonRpcError {
        code,
        message,
        data: Value::Object(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_spec_section_11() {
        let cases: Vec<(CallError, i32, Option<&str>)> = vec![
            (CallError::AatRequired, -32015, None),
            (
                AatError::SignatureInvalid("x").into(),
                -32016,
                Some("signature_invalid"),
            ),
            (
                AatError::UntrustedIssuer {
                    issuer: "https://evil".into(),
                }
                .into(),
                -32020,
                Some("untrusted_issuer"),
            ),
            (
                AatError::UnknownAgent {
                    agent_id: "ag_x".into(),
                }
                .into(),
                -32018,
                Some("unknown_agent"),
            ),
            (AatError::Revoked(RevokedBy::User).into(), -32019, Some("aat_revoked")),
            (AatError::Revoked(RevokedBy::Agent).into(), -32016, Some("aat_revoked")),
            (ProofError::Replayed.into(), -32016, Some("proof_replayed")),
            (
                CallError::CapabilityDenied {
                    agent_id: "ag_x".into(),
                    granted: vec!["a".into()],
                },
                -32017,
                None,
            ),
            (
                DelegationError::UserAuthStale {
                    auth_time: 0,
                    max_auth_age: 86_400,
                }
                .into(),
                -32019,
                Some("user_auth_stale"),
            ),
            (
                DelegationError::ScopeExceeded.into(),
                -32017,
                Some("delegation_scope_exceeded"),
            ),
            (
                DelegationError::MissingUserBinding.into(),
                -32016,
                Some("missing_user_binding"),
            ),
        ];
        for (error, code, aat_error) in cases {
            let rpc = jsonrpc_error(&error, Some("write_file"));
            assert_eq!(rpc.code, code, "{error:?}");
            assert_eq!(rpc.data["aat_error"].as_str(), aat_error, "{error:?}");
            assert_eq!(rpc.data["tool"], "write_file");
            assert!(rpc.data["reason"].is_string());
        }
    }

    #[test]
    fn code_specific_members() {
        let rpc = jsonrpc_error(
            &AatError::UntrustedIssuer {
                issuer: "https://evil".into(),
            }
            .into(),
            None,
        );
        assert_eq!(rpc.data["issuer"], "https://evil");
        assert!(rpc.data.get("tool").is_none());
        let rpc = jsonrpc_error(
            &CallError::CapabilityDenied {
                agent_id: "ag_x".into(),
                granted: vec!["read_file".into()],
            },
            Some("rm"),
        );
        assert_eq!(rpc.data["granted_capabilities"], json!(["read_file"]));
        assert_eq!(rpc.message, "AAT capability denied");
        let rpc = jsonrpc_error(
            &DelegationError::UserAuthStale {
                auth_time: 1_771_408_800,
                max_auth_age: 86_400,
            }
            .into(),
            None,
        );
        assert_eq!(rpc.data["user_auth_time"], "2026-02-18T10:00:00Z");
    }
}
