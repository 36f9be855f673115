//! JSON-RPC errors: [`ErrorCode`], the one table of every code the proxy and the agent shim
//! answer with (JSON-RPC 2.0 and spec section 11), the one place call-verification errors
//! become JSON-RPC errors ([`jsonrpc_error`], docs/architecture.md "The AAT on the wire"), and
//! the one writer of an error response line ([`error_response`]).
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

use serde_json::{Map, Value, json};

use crate::proof::ProofError;
use crate::token::{AatError, RevokedBy};

/// Every JSON-RPC error code this project answers with, and its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// -32700: the message is not JSON.
    ParseError,
    /// -32600: the message is not a valid request object.
    InvalidRequest,
    /// -32602: the request's params are not what the method takes.
    InvalidParams,
    /// -32603: the message could not be handled.
    InternalError,
    /// -32001: the tool is not allowed, blocked, or its arguments fail validation.
    Forbidden,
    /// -32002: a rate limit (the tool's, or the session's call limit) is exhausted.
    RateLimited,
    /// -32004: a human refused the held call.
    UserDenied,
    /// -32005: nobody answered the held call in time.
    UserTimeout,
    /// -32006: the JSON-RPC method is not allowed.
    MethodNotAllowed,
    /// -32007: an argument names a protected path.
    ProtectedPath,
    /// -32013: the tool's schema does not match its `schema_hash`.
    SchemaMismatch,
    /// -32014: DLP could not scan or redact the message.
    DlpFailed,
    /// -32015: the call carries no AAT and one is required.
    AatRequired,
    /// -32016: the AAT or its proof failed.
    AatInvalid,
    /// -32017: the tool is not among the AAT's capabilities, or its delegation does not cover
    /// it.
    CapabilityDenied,
    /// -32018: the AAT's agent is not registered.
    AgentNotRegistered,
    /// -32019: the user's delegation was revoked or is too old.
    DelegationExpired,
    /// -32020: the AAT's issuer is not trusted.
    IssuerUntrusted,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [Self; 18] = [
        Self::ParseError,
        Self::InvalidRequest,
        Self::InvalidParams,
        Self::InternalError,
        Self::Forbidden,
        Self::RateLimited,
        Self::UserDenied,
        Self::UserTimeout,
        Self::MethodNotAllowed,
        Self::ProtectedPath,
        Self::SchemaMismatch,
        Self::DlpFailed,
        Self::AatRequired,
        Self::AatInvalid,
        Self::CapabilityDenied,
        Self::AgentNotRegistered,
        Self::DelegationExpired,
        Self::IssuerUntrusted,
    ];

    /// The number sent as `error.code`.
    pub const fn code(self) -> i32 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::InvalidParams => -32602,
            Self::InternalError => -32603,
            Self::Forbidden => -32001,
            Self::RateLimited => -32002,
            Self::UserDenied => -32004,
            Self::UserTimeout => -32005,
            Self::MethodNotAllowed => -32006,
            Self::ProtectedPath => -32007,
            Self::SchemaMismatch => -32013,
            Self::DlpFailed => -32014,
            Self::AatRequired => -32015,
            Self::AatInvalid => -32016,
            Self::CapabilityDenied => -32017,
            Self::AgentNotRegistered => -32018,
            Self::DelegationExpired => -32019,
            Self::IssuerUntrusted => -32020,
        }
    }

    /// The text sent as `error.message`.
    pub const fn message(self) -> &'static str {
        match self {
            Self::ParseError => "Parse error",
            Self::InvalidRequest => "Invalid Request",
            Self::InvalidParams => "Invalid params",
            Self::InternalError => "Internal error",
            Self::Forbidden => "Forbidden",
            Self::RateLimited => "Rate limit exceeded",
            Self::UserDenied => "User denied",
            Self::UserTimeout => "User approval timeout",
            Self::MethodNotAllowed => "Method not allowed",
            Self::ProtectedPath => "Access denied: protected path",
            Self::SchemaMismatch => "Schema mismatch",
            Self::DlpFailed => "DLP redaction failed",
            Self::AatRequired => "AAT required",
            Self::AatInvalid => "AAT invalid",
            Self::CapabilityDenied => "AAT capability denied",
            Self::AgentNotRegistered => "Agent not registered",
            Self::DelegationExpired => "Delegation expired",
            Self::IssuerUntrusted => "Issuer untrusted",
        }
    }

    /// The code with this number.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

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

impl CallError {
    /// The JSON-RPC error it is answered with (spec section 11).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::AatRequired => ErrorCode::AatRequired,
            Self::Aat(AatError::UntrustedIssuer { .. }) => ErrorCode::IssuerUntrusted,
            Self::Aat(AatError::UnknownAgent { .. }) => ErrorCode::AgentNotRegistered,
            Self::Aat(AatError::Revoked(RevokedBy::User)) | Self::Delegation(DelegationError::UserAuthStale { .. }) => {
                ErrorCode::DelegationExpired
            }
            Self::CapabilityDenied { .. } | Self::Delegation(DelegationError::ScopeExceeded) => {
                ErrorCode::CapabilityDenied
            }
            Self::Aat(_) | Self::Proof(_) | Self::Delegation(_) => ErrorCode::AatInvalid,
        }
    }
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

/// A JSON-RPC 2.0 error: its code (which gives `code` and `message`) and `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonRpcError {
    /// The code, and with it the message.
    pub code: ErrorCode,
    /// Details: `tool`, `reason`, `aat_error` and code-specific members.
    pub data: Value,
}

/// A JSON-RPC error response, one line without its newline:
/// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"data":…,"message":…}}`. `id` is the request's
/// `id` as sent (JSON text, echoed byte for byte), `null` when the request had none or could not
/// be read; `data` is left out when `None`.
pub fn error_response(id: Option<&str>, code: ErrorCode, data: Option<Value>) -> String {
    let mut error = Map::new();
    error.insert("code".into(), code.code().into());
    error.insert("message".into(), code.message().into());
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{}}}",
        id.unwrap_or("null"),
        Value::Object(error)
    )
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
    let (reason, aat_error): (String, Option<&'static str>) = match error {
        CallError::AatRequired => ("Agent Authentication Token required for this proxy".into(), None),
        CallError::Aat(e @ AatError::UntrustedIssuer { issuer }) => {
            put("issuer", issuer.as_str().into());
            (
                "AAT issuer not in trusted_issuers configuration".into(),
                Some(e.aat_error()),
            )
        }
        CallError::Aat(e @ AatError::UnknownAgent { agent_id }) => {
            put("agent_id", agent_id.as_str().into());
            ("Agent not found in AIP Registry".into(), Some(e.aat_error()))
        }
        CallError::Aat(e @ AatError::Revoked(RevokedBy::User)) => {
            ("User delegation has been revoked".into(), Some(e.aat_error()))
        }
        CallError::Aat(e) => (e.to_string(), Some(e.aat_error())),
        CallError::Proof(e) => (e.to_string(), Some(e.aat_error())),
        CallError::CapabilityDenied { agent_id, granted } => {
            put("agent_id", agent_id.as_str().into());
            put("granted_capabilities", json!(granted));
            ("Tool not in AAT capabilities".into(), None)
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
            ("User delegation has expired".into(), Some(e.aat_error()))
        }
        CallError::Delegation(e) => (e.to_string(), Some(e.aat_error())),
    };
    data.insert("reason".into(), reason.into());
    if let Some(aat_error) = aat_error {
        data.insert("aat_error".into(), aat_error.into());
    }
    JsonRpcError {
        code: error.error_code(),
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
            assert_eq!(rpc.code.code(), code, "{error:?}");
            assert_eq!(rpc.data["aat_error"].as_str(), aat_error, "{error:?}");
            assert_eq!(rpc.data["tool"], "write_file");
            assert!(rpc.data["reason"].is_string());
        }
    }

    #[test]
    fn every_code_is_listed_once_with_its_message() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "{code:?} listed twice");
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
            assert!(!code.message().is_empty());
        }
        assert_eq!(ErrorCode::from_code(-32000), None);
        assert_eq!(ErrorCode::ParseError.code(), -32700);
        assert_eq!(ErrorCode::DlpFailed.message(), "DLP redaction failed");
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
        assert_eq!(rpc.code.message(), "AAT capability denied");
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
