//! `spec.registry` (spec 3.9): where issuer keys and revocation data come from, how fresh the
//! data must be, and how the proxy authenticates to the registry.

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::error::{PolicyError, line_of};
use super::raw;
use super::units::duration_field;

/// Revocation source of spec 3.9.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationMode {
    /// Ask the registry on every validation.
    Online,
    /// Poll the list with ETag and follow the SSE stream.
    Cached,
    /// Read the signed list from a file.
    Crl {
        /// The `.jws` file.
        path: PathBuf,
    },
}

/// `spec.registry` (spec 3.9), validated; enforced by the AAT verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The registry's base URL.
    pub endpoint: String,
    /// Revocation source.
    pub revocation: RevocationMode,
    /// Poll or re-read interval.
    pub check_interval: Duration,
    /// Revocation data older than this fails closed.
    pub max_staleness: Duration,
    /// Whether agent keys and revocation status are cached.
    pub cache_enabled: bool,
    /// Cache entry lifetime.
    pub cache_ttl: Duration,
    /// Cache size bound.
    pub cache_max_entries: u64,
    /// CA certificate for the registry's TLS.
    pub ca_cert: Option<PathBuf>,
    /// Bearer token for the registry.
    pub bearer_token: Option<String>,
    /// Issuer keys from this JWKS file instead of `{endpoint}/v1/jwks` (extension
    /// `spec.registry.jwks_file`, for proxies without network access to the registry).
    pub jwks_file: Option<PathBuf>,
}

pub(super) fn compile_registry(registry: Spanned<raw::Registry>) -> Result<Option<RegistrySettings>, PolicyError> {
    let at = line_of(&registry);
    let registry = registry.value;
    if registry.enabled != Some(true) {
        return Ok(None);
    }
    let Some(endpoint) = registry.endpoint else {
        return Err(PolicyError::invalid_at(
            "spec.registry.endpoint",
            at,
            "required when registry.enabled is true",
        ));
    };
    let url = endpoint.value.trim_end_matches('/').to_owned();
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if !(url.starts_with("https://") || loopback) {
        return Err(PolicyError::invalid(
            "spec.registry.endpoint",
            &endpoint,
            "use an https:// URL (plain http only for a loopback registry)",
        ));
    }
    let revocation = registry.revocation.unwrap_or_default();
    let check_interval = duration_field(
        "spec.registry.revocation.check_interval",
        revocation.check_interval.as_ref(),
        Duration::from_secs(30),
    )?;
    at_least_a_second(
        "spec.registry.revocation.check_interval",
        revocation.check_interval.as_ref(),
        check_interval,
    )?;
    let mode = match revocation.mode.as_ref().map(|s| s.value.as_str()) {
        None | Some("cached") => RevocationMode::Cached,
        Some("online") => RevocationMode::Online,
        Some("crl") => match revocation.crl_path {
            Some(path) => RevocationMode::Crl { path: path.into() },
            None => {
                return Err(PolicyError::invalid_at(
                    "spec.registry.revocation.crl_path",
                    revocation.mode.as_ref().and_then(line_of),
                    "required when mode is crl",
                ));
            }
        },
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.registry.revocation.mode",
                revocation.mode.as_ref().and_then(line_of),
                format!("unknown mode {other:?}: use online, cached or crl"),
            ));
        }
    };
    let max_staleness = duration_field(
        "spec.registry.revocation.max_staleness",
        revocation.max_staleness.as_ref(),
        check_interval.saturating_mul(5),
    )?;
    if max_staleness < check_interval {
        return Err(PolicyError::invalid_at(
            "spec.registry.revocation.max_staleness",
            revocation.max_staleness.as_ref().and_then(line_of),
            "must be at least check_interval",
        ));
    }
    let jwks_file = match registry.jwks_file {
        Some(path) if path.value.trim().is_empty() => {
            return Err(PolicyError::invalid(
                "spec.registry.jwks_file",
                &path,
                "must be the path of a JWKS file, or be left out to fetch the keys from the endpoint",
            ));
        }
        Some(path) => Some(PathBuf::from(path.value.trim())),
        None => None,
    };
    let cache = registry.cache.unwrap_or_default();
    let cache_ttl = duration_field("spec.registry.cache.ttl", cache.ttl.as_ref(), Duration::from_secs(300))?;
    at_least_a_second("spec.registry.cache.ttl", cache.ttl.as_ref(), cache_ttl)?;
    let tls = registry.tls.unwrap_or_default();
    if tls.client_cert.is_some() || tls.client_key.is_some() {
        return Err(PolicyError::invalid_at(
            "spec.registry.tls.client_cert",
            at,
            "mutual TLS to the registry is not supported: use auth.type bearer",
        ));
    }
    let ca_cert = tls.ca_cert.map(PathBuf::from);
    let auth = registry.auth.unwrap_or_default();
    let from_env = match &auth.token_env {
        Some(name) if auth.token.is_some() || auth.api_key.is_some() => {
            return Err(PolicyError::invalid(
                "spec.registry.auth.token_env",
                name,
                "give the token either in the policy or in an environment variable, not both",
            ));
        }
        Some(name) => match std::env::var(name.value.trim()) {
            Ok(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
            _ => {
                return Err(PolicyError::invalid(
                    "spec.registry.auth.token_env",
                    name,
                    format!("the environment variable {} is not set (or empty)", name.value.trim()),
                ));
            }
        },
        None => None,
    };
    let bearer_token = match auth.kind.as_ref().map(|k| k.value.as_str()) {
        None | Some("bearer" | "api_key") if from_env.is_some() => from_env,
        None => auth.token.or(auth.api_key),
        Some("bearer") => auth.token,
        Some("api_key") => auth.api_key,
        Some("mtls") => {
            return Err(PolicyError::invalid_at(
                "spec.registry.auth.type",
                auth.kind.as_ref().and_then(line_of),
                "mutual TLS to the registry is not supported: use bearer",
            ));
        }
        Some(other) => {
            return Err(PolicyError::invalid_at(
                "spec.registry.auth.type",
                auth.kind.as_ref().and_then(line_of),
                format!("unsupported type {other:?}: use bearer or api_key"),
            ));
        }
    };
    Ok(Some(RegistrySettings {
        endpoint: url,
        revocation: mode,
        check_interval,
        max_staleness,
        cache_enabled: cache.enabled.unwrap_or(true),
        cache_ttl,
        cache_max_entries: cache.max_entries.unwrap_or(10_000),
        ca_cert,
        bearer_token,
        jwks_file,
    }))
}

/// Refuses a registry interval under one second: the registry would be polled in a loop.
fn at_least_a_second(field: &str, value: Option<&Spanned<String>>, interval: Duration) -> Result<(), PolicyError> {
    if interval < Duration::from_secs(1) {
        return Err(PolicyError::invalid_at(
            field,
            value.and_then(line_of),
            "must be at least 1s",
        ));
    }
    Ok(())
}
