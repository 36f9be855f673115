//! The policy document as written (spec 3 and Appendix A): every field optional where the spec
//! says so, unknown fields rejected, and a source location kept wherever a later check may need
//! to point at a line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    #[serde(rename = "apiVersion")]
    pub(crate) api_version: S<String>,
    pub(crate) kind: S<String>,
    pub(crate) metadata: Metadata,
    #[serde(default)]
    pub(crate) spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    pub(crate) name: S<String>,
    pub(crate) version: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) signature: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    pub(crate) mode: Option<S<String>>,
    pub(crate) allowed_tools: Option<Vec<S<String>>>,
    pub(crate) denied_tools: Option<Vec<S<String>>>,
    pub(crate) allowed_methods: Option<Vec<S<String>>>,
    pub(crate) denied_methods: Option<Vec<S<String>>>,
    pub(crate) tool_rules: Option<Vec<ToolRule>>,
    pub(crate) protected_paths: Option<Vec<S<String>>>,
    pub(crate) strict_args_default: Option<bool>,
    pub(crate) dlp: Option<S<Dlp>>,
    pub(crate) identity: Option<S<Identity>>,
    pub(crate) server: Option<Server>,
    pub(crate) registry: Option<S<Registry>>,
    pub(crate) aat: Option<S<Aat>>,
    pub(crate) hitl: Option<Hitl>,
    pub(crate) call_timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolRule {
    pub(crate) tool: S<String>,
    pub(crate) action: Option<S<String>>,
    pub(crate) rate_limit: Option<S<String>>,
    pub(crate) strict_args: Option<bool>,
    pub(crate) schema_hash: Option<S<String>>,
    pub(crate) allow_args: Option<BTreeMap<String, S<String>>>,
}

/// Human-in-the-loop settings (IETF draft 6.2.5).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hitl {
    pub(crate) approvers: Option<Vec<String>>,
    pub(crate) timeout_seconds: Option<S<u64>>,
    pub(crate) on_timeout: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Dlp {
    pub(crate) enabled: Option<bool>,
    pub(crate) scan_requests: Option<bool>,
    pub(crate) scan_responses: Option<bool>,
    pub(crate) detect_encoding: Option<bool>,
    pub(crate) filter_stderr: Option<bool>,
    pub(crate) max_scan_size: Option<S<String>>,
    pub(crate) on_request_match: Option<S<String>>,
    pub(crate) on_redaction_failure: Option<S<String>>,
    pub(crate) log_original_on_failure: Option<bool>,
    pub(crate) patterns: Option<Vec<DlpPattern>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlpPattern {
    pub(crate) name: S<String>,
    pub(crate) regex: S<String>,
    pub(crate) scope: Option<S<String>>,
}

/// v1alpha2 local identity tokens (spec 3.7): parsed so that old policies load, refused when
/// switched on. The fields are read by serde only.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Identity {
    pub(crate) enabled: Option<bool>,
    pub(crate) token_ttl: Option<String>,
    pub(crate) rotation_interval: Option<String>,
    pub(crate) require_token: Option<bool>,
    pub(crate) session_binding: Option<String>,
    pub(crate) nonce_window: Option<String>,
    pub(crate) policy_transition_grace: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) nonce_storage: Option<NonceStorage>,
    pub(crate) keys: Option<IdentityKeys>,
}

#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NonceStorage {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) clock_skew: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityKeys {
    pub(crate) signing_algorithm: Option<String>,
    pub(crate) key_source: Option<String>,
    pub(crate) key_path: Option<String>,
    pub(crate) rotation_period: Option<String>,
    pub(crate) jwks_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) enabled: Option<bool>,
    pub(crate) listen: Option<S<String>>,
    pub(crate) failover_mode: Option<S<String>>,
    pub(crate) timeout: Option<S<String>>,
    pub(crate) tls: Option<Tls>,
    pub(crate) fail_open_constraints: Option<FailOpenConstraints>,
    pub(crate) endpoints: Option<Endpoints>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailOpenConstraints {
    pub(crate) allowed_tools: Option<Vec<String>>,
    pub(crate) max_duration: Option<S<String>>,
    pub(crate) max_requests: Option<u64>,
    pub(crate) alert_webhook: Option<String>,
    pub(crate) require_local_policy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoints {
    pub(crate) validate: Option<String>,
    /// v1alpha2 identity-token endpoints: the proxy serves neither (revocation and keys live
    /// in the registry), so the paths are accepted and unused.
    #[allow(dead_code)]
    pub(crate) revoke: Option<String>,
    #[allow(dead_code)]
    pub(crate) jwks: Option<String>,
    pub(crate) health: Option<String>,
    pub(crate) metrics: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registry {
    pub(crate) enabled: Option<bool>,
    pub(crate) endpoint: Option<S<String>>,
    pub(crate) tls: Option<RegistryTls>,
    pub(crate) cache: Option<RegistryCache>,
    pub(crate) revocation: Option<Revocation>,
    pub(crate) auth: Option<RegistryAuth>,
    /// Issuer keys from a JWKS file instead of `{endpoint}/v1/jwks` (extension, for proxies
    /// without network access to the registry).
    pub(crate) jwks_file: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryTls {
    pub(crate) ca_cert: Option<String>,
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryCache {
    pub(crate) enabled: Option<bool>,
    pub(crate) ttl: Option<S<String>>,
    pub(crate) max_entries: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revocation {
    pub(crate) check_interval: Option<S<String>>,
    pub(crate) mode: Option<S<String>>,
    pub(crate) crl_path: Option<String>,
    /// Revocation data older than this fails closed (extension; default 5 × check_interval).
    pub(crate) max_staleness: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryAuth {
    #[serde(rename = "type")]
    pub(crate) kind: Option<S<String>>,
    pub(crate) token: Option<String>,
    pub(crate) api_key: Option<String>,
    /// The name of an environment variable holding the token (extension): keeps the token
    /// out of the policy file.
    pub(crate) token_env: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Aat {
    pub(crate) enabled: Option<bool>,
    pub(crate) require: Option<bool>,
    pub(crate) validation: Option<AatValidation>,
    pub(crate) capabilities_mode: Option<S<String>>,
    pub(crate) trusted_issuers: Option<Vec<S<String>>>,
    pub(crate) header_name: Option<String>,
    /// The audience this proxy expects (default `metadata.name`; docs/architecture.md, "The
    /// proxy's link to the authority").
    pub(crate) audience: Option<String>,
    /// Per-call proofs (docs/architecture.md, "The AAT on the wire"); default true when `require` is true.
    pub(crate) require_proof: Option<bool>,
    /// Spec 7.5.3 step 9 applied literally to the AAT's own jti.
    pub(crate) single_use: Option<bool>,
    /// Spec 10.3 `user_auth_stale`: the longest accepted user authentication age.
    pub(crate) max_auth_age: Option<S<String>>,
    /// Spec 10.3: calls allowed per AAT session.
    pub(crate) max_calls_per_session: Option<u64>,
    /// Spec 10.3: servers (audiences) a delegation may reach.
    pub(crate) allowed_servers: Option<Vec<String>>,
    /// Where used proof identifiers are kept: a directory, or `redis://…` (docs/architecture.md,
    /// "The AAT on the wire").
    pub(crate) replay_store: Option<S<String>>,
    /// Multi-hop delegation (spec D.7; docs/decisions.md, "Delegation with biscuits").
    pub(crate) delegation: Option<AatDelegation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AatDelegation {
    /// Principals a delegable AAT's chain may have, the user included: 2 to 4.
    pub(crate) max_depth: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AatValidation {
    pub(crate) verify_signature: Option<bool>,
    pub(crate) verify_user_binding: Option<bool>,
    pub(crate) verify_capabilities: Option<bool>,
    pub(crate) max_token_age: Option<S<String>>,
    pub(crate) clock_skew: Option<S<String>>,
}
