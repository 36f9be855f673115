//! The issuer's settings, from `[issuer]` in `aip.toml` (`aip_registry::config::IssuerSection`).

use std::path::Path;

use aip_registry::config::{IssuerSection, parse_duration};

use crate::oidc::OidcProvider;

/// The longest AAT lifetime any configuration may set (spec 14.8.3).
pub const MAX_TOKEN_TTL: i64 = 24 * 3_600;
/// The longest session any configuration may set.
pub const MAX_SESSION_LIFETIME: i64 = 30 * 86_400;
/// How long a challenge stays valid (at most 60 s, DESIGN §6).
pub const CHALLENGE_TTL: i64 = 60;

/// Validated issuer settings.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    /// `iss` of the AATs (the authority's public URL).
    pub issuer_id: String,
    /// `context.registry_id` of the AATs.
    pub registry_id: Option<String>,
    /// AAT lifetime in seconds.
    pub token_ttl: i64,
    /// How long a session may be refreshed, in seconds.
    pub session_lifetime: i64,
    /// Tools a `local_user` may delegate; `None` when `local_user` is disabled.
    pub local_user_tools: Option<Vec<String>>,
    /// Trusted identity providers.
    pub oidc: Vec<OidcProvider>,
}

impl IssuerSettings {
    /// Settings with the defaults (15 min tokens, 24 h sessions, no local users, no IdPs).
    pub fn new(issuer_id: impl Into<String>) -> Self {
        Self {
            issuer_id: issuer_id.into(),
            registry_id: None,
            token_ttl: 900,
            session_lifetime: 86_400,
            local_user_tools: None,
            oidc: Vec::new(),
        }
    }

    /// Validates `[issuer]`; `base_dir` resolves relative JWKS files. Errors name the member.
    pub fn from_section(issuer_id: &str, section: &IssuerSection, base_dir: &Path) -> Result<Self, String> {
        let token_ttl = parse_duration(&section.token_ttl).map_err(|e| format!("issuer.token_ttl: {e}"))?;
        if !(60..=MAX_TOKEN_TTL).contains(&token_ttl) {
            return Err("issuer.token_ttl: must be between 1m and 24h".into());
        }
        let session_lifetime =
            parse_duration(&section.session_lifetime).map_err(|e| format!("issuer.session_lifetime: {e}"))?;
        if !(token_ttl..=MAX_SESSION_LIFETIME).contains(&session_lifetime) {
            return Err("issuer.session_lifetime: must be at least token_ttl and at most 30d".into());
        }
        let local_user_tools = section.local_user.enabled.then(|| {
            section
                .local_user
                .delegatable_tools
                .clone()
                .unwrap_or_else(|| vec!["*".into()])
        });
        let oidc = section
            .oidc
            .iter()
            .enumerate()
            .map(|(i, s)| OidcProvider::from_section(i, s, base_dir))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            issuer_id: issuer_id.to_owned(),
            registry_id: Some(issuer_id.to_owned()),
            token_ttl,
            session_lifetime,
            local_user_tools,
            oidc,
        })
    }
}
