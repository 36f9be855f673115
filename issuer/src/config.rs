//! The issuer's settings: its part of `aip.toml` (`[issuer]`, `[issuer.local_user]`,
//! `[[issuer.oidc]]`), and the validated [`IssuerSettings`] it runs with.

use std::path::Path;

use aip_aat::clock::parse_duration;
use serde::{Deserialize, Serialize};

use crate::oidc::OidcProvider;
pub use crate::oidc::OidcSection;

/// The longest AAT lifetime any configuration may set (spec 14.8.3).
pub const MAX_TOKEN_TTL: i64 = 24 * 3_600;
/// The longest session any configuration may set.
pub const MAX_SESSION_LIFETIME: i64 = 30 * 86_400;
/// How long a challenge stays valid (at most 60 s).
pub const CHALLENGE_TTL: i64 = 60;

/// `[issuer]` of `aip.toml`: the token issuer's settings, as written. [`IssuerSettings::from_section`]
/// validates them, naming the member at fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// Lifetime of the AATs issued (at most 24 h).
    #[serde(default = "default_token_ttl")]
    pub token_ttl: String,
    /// How long a session can be refreshed after its first AAT (at most 30 days).
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: String,
    /// `local_user` authorization: off unless enabled; only ever from loopback clients.
    #[serde(default)]
    pub local_user: LocalUserSection,
    /// Trusted OpenID Connect identity providers (`oidc_id_token` authorization).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcSection>,
}

fn default_token_ttl() -> String {
    "15m".into()
}
fn default_session_lifetime() -> String {
    "24h".into()
}

impl Default for IssuerSection {
    fn default() -> Self {
        Self {
            token_ttl: default_token_ttl(),
            session_lifetime: default_session_lifetime(),
            local_user: LocalUserSection::default(),
            oidc: Vec::new(),
        }
    }
}

/// `[issuer.local_user]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUserSection {
    /// Accept `local_user` authorization from loopback clients.
    #[serde(default)]
    pub enabled: bool,
    /// Tools a local user may delegate (default: any, `["*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegatable_tools: Option<Vec<String>>,
}

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
