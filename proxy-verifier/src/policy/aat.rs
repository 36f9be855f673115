//! `spec.aat` (spec 3.10; docs/architecture.md, "The AAT on the wire"): which Agent
//! Authentication Tokens are accepted and how their capabilities combine with the policy.

use std::path::PathBuf;
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

/// `spec.aat.replay_store`: where used proof identifiers are remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayStore {
    /// A directory shared by the proxies of this host; `None`: the default one (unset setting).
    Local(Option<PathBuf>),
    /// A Redis server shared across hosts.
    Redis {
        /// `redis://[user:password@]host[:port][/db]`, as written.
        url: String,
        /// `host:port/db`, for logs: never the credentials.
        name: String,
    },
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
    /// Whether `audience` was written in the policy (`spec.aat.audience`) rather than taken
    /// from `metadata.name`.
    pub audience_set: bool,
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
    /// Where used proof identifiers are remembered.
    pub replay_store: ReplayStore,
    /// `delegation.max_depth`: principals a delegable AAT's chain may have, the user included
    /// (2 to 4; default 3, spec D.7).
    pub max_delegation_depth: u8,
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
    let max_delegation_depth = match aat.delegation.as_ref().and_then(|d| d.max_depth) {
        None => aip_aat::delegation::DEFAULT_MAX_DEPTH,
        Some(depth) if aip_aat::delegation::MAX_DEPTH_RANGE.contains(&depth) => depth,
        Some(depth) => {
            return Err(PolicyError::invalid_at(
                "spec.aat.delegation.max_depth",
                at,
                format!("{depth} is outside 2 to 4 (principals on a chain, the user included)"),
            ));
        }
    };
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
        audience_set: aat.audience.is_some(),
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
        replay_store: match &aat.replay_store {
            None => ReplayStore::Local(None),
            Some(text) => {
                replay_store(&text.value).map_err(|m| PolicyError::invalid("spec.aat.replay_store", text, m))?
            }
        },
        max_delegation_depth,
    }))
}

/// `replay_store`: an absolute directory, or `redis://[user:password@]host[:port][/db]`. The
/// message never repeats the value (it may hold a password).
fn replay_store(text: &str) -> Result<ReplayStore, String> {
    const FORMS: &str = "use an absolute directory path or redis://host:port[/db]";
    let text = text.trim();
    if text.starts_with('/') {
        return Ok(ReplayStore::Local(Some(PathBuf::from(text))));
    }
    let Some((scheme, _)) = text.split_once("://") else {
        return Err(format!("not a directory path or a URL: {FORMS}"));
    };
    if scheme.eq_ignore_ascii_case("rediss") {
        return Err("TLS to Redis (rediss://) is not supported: use redis:// on a private network".into());
    }
    if !scheme.eq_ignore_ascii_case("redis") {
        return Err(format!("unknown scheme {scheme:?}: {FORMS}"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a valid redis:// URL ({e}): {FORMS}"))?;
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err(format!("the URL names no host: {FORMS}")),
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("the URL may not have a query or a fragment: {FORMS}"));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db
            .parse::<u16>()
            .map_err(|_| format!("the database after the port must be a number: {FORMS}"))?,
    };
    let port = url.port().unwrap_or(6379);
    Ok(ReplayStore::Redis {
        url: text.to_owned(),
        name: format!("{host}:{port}/{db}"),
    })
}
