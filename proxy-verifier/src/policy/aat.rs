//! `spec.aat` (spec 3.10; docs/architecture.md, "The AAT on the wire"): which Agent
//! Authentication Tokens are accepted and how their capabilities combine with the policy.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::error::{PolicyError, line_of};
use super::raw;
use super::units::{duration_field, parse_duration};

/// `capabilities_mode` (spec 3.10.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilitiesMode {
    /// Tool must be in the AAT and allowed by the policy.
    Intersect,
    /// The AAT replaces `allowed_tools`.
    AatOnly,
    /// The AAT is for identity and audit only.
    PolicyOnly,
}

/// `spec.aat` (spec 3.10; docs/architecture.md, "The AAT on the wire"), validated; enforced by the AAT verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AatSettings {
    /// Whether AATs are validated when present.
    pub enabled: bool,
    /// Whether every tool call needs one.
    pub require: bool,
    /// Whether every call needs a per-call proof.
    pub require_proof: bool,
    /// Whether the AAT's own jti is single-use.
    pub single_use: bool,
    /// How capabilities combine with the policy.
    pub capabilities_mode: CapabilitiesMode,
    /// Accepted `iss` values (empty: any issuer whose key the registry publishes).
    pub trusted_issuers: Vec<String>,
    /// The audience expected in AATs.
    pub audience: String,
    /// Whether the user binding is checked (spec 10.3).
    pub verify_user_binding: bool,
    /// Whether capabilities are checked (`false` behaves like `policy_only`).
    pub verify_capabilities: bool,
    /// Oldest accepted AAT (`iat`).
    pub max_token_age: Duration,
    /// Clock skew tolerated.
    pub clock_skew: Duration,
    /// Longest accepted age of the user's authentication.
    pub max_auth_age: Option<Duration>,
    /// Calls allowed per session.
    pub max_calls_per_session: Option<u64>,
    /// Servers a delegation may reach.
    pub allowed_servers: Vec<String>,
    /// The HTTP header carrying the AAT.
    pub header_name: String,
}

pub(super) fn compile_aat(
    aat: Spanned<raw::Aat>,
    name: &str,
    has_registry: bool,
) -> Result<Option<AatSettings>, PolicyError> {
    let at = line_of(&aat);
    let aat = aat.value;
    let require = aat.require.unwrap_or(false);
    if aat.enabled != Some(true) && !require {
        return Ok(None);
    }
    if !has_registry {
        return Err(PolicyError::invalid_at(
            "spec.aat",
            at,
            "AAT validation needs the issuer keys: enable spec.registry with its endpoint",
        ));
    }
    let capabilities_mode = match aat.capabilities_mode.as_ref().map(|s| s.value.as_str()) {
        None | Some("intersect") => CapabilitiesMode::Intersect,
        Some("aat_only") => CapabilitiesMode::AatOnly,
        Some("policy_only") => CapabilitiesMode::PolicyOnly,
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.aat.capabilities_mode",
                aat.capabilities_mode.as_ref().and_then(line_of),
                format!("unknown mode {other:?}: use intersect, aat_only or policy_only"),
            ));
        }
    };
    let mut trusted_issuers = Vec::new();
    for (i, issuer) in aat.trusted_issuers.iter().flatten().enumerate() {
        if issuer.value.trim().is_empty() {
            return Err(PolicyError::invalid(
                format!("spec.aat.trusted_issuers[{i}]"),
                issuer,
                "must not be empty",
            ));
        }
        trusted_issuers.push(issuer.value.trim().to_owned());
    }
    let validation = aat.validation.unwrap_or_default();
    if validation.verify_signature == Some(false) {
        return Err(PolicyError::invalid_at(
            "spec.aat.validation.verify_signature",
            at,
            "AAT signatures are always verified; remove this setting",
        ));
    }
    let max_auth_age = match &aat.max_auth_age {
        None => None,
        Some(text) => {
            Some(parse_duration(&text.value).map_err(|m| PolicyError::invalid("spec.aat.max_auth_age", text, m))?)
        }
    };
    Ok(Some(AatSettings {
        enabled: true,
        require,
        require_proof: aat.require_proof.unwrap_or(require),
        single_use: aat.single_use.unwrap_or(false),
        capabilities_mode,
        trusted_issuers,
        audience: aat.audience.unwrap_or_else(|| name.to_owned()),
        verify_user_binding: validation.verify_user_binding.unwrap_or(true),
        verify_capabilities: validation.verify_capabilities.unwrap_or(true),
        max_token_age: duration_field(
            "spec.aat.validation.max_token_age",
            validation.max_token_age.as_ref(),
            Duration::from_secs(3600),
        )?,
        clock_skew: duration_field(
            "spec.aat.validation.clock_skew",
            validation.clock_skew.as_ref(),
            Duration::from_secs(30),
        )?,
        max_auth_age,
        max_calls_per_session: aat.max_calls_per_session,
        allowed_servers: aat.allowed_servers.unwrap_or_default(),
        header_name: aat.header_name.unwrap_or_else(|| "X-AIP-AAT".into()),
    }))
}
