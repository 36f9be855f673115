//! The issuer's settings: its part of `aip.toml` (`[issuer]`, `[issuer.local_user]`,
//! `[issuer.authorize]`, `[[issuer.oidc]]`), and the validated [`IssuerSettings`] it runs with.

use std::path::Path;

use aip_aat::clock::parse_duration;
use serde::{Deserialize, Serialize};

use crate::oidc::OidcProvider;
pub use crate::oidc::{OidcLoginSection, OidcSection};

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
    /// The OAuth authorization-code flow (`GET /oauth/authorize`): off unless enabled.
    #[serde(default, skip_serializing_if = "AuthorizeSection::is_default")]
    pub authorize: AuthorizeSection,
    /// Trusted OpenID Connect identity providers (`oidc_id_token` authorization, and sign-in
    /// for `/oauth/authorize` where a provider has `login` settings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcSection>,
}

/// `[issuer.authorize]`: interactive delegation, where an agent sends a person to
/// `GET /oauth/authorize` to sign in and consent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeSection {
    /// Serve `/oauth/authorize` and the sign-in and consent pages (default: off).
    #[serde(default)]
    pub enabled: bool,
    /// Let people sign in with a user API key (default: off; identity providers with `login`
    /// settings are the usual way).
    #[serde(default)]
    pub api_key_login: bool,
    /// How long a person has to sign in and consent (default 10m; 1m to 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_lifetime: Option<String>,
}

impl AuthorizeSection {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Validated `[issuer.authorize]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeSettings {
    /// Whether `/oauth/authorize` is served.
    pub enabled: bool,
    /// Whether people may sign in with a user API key.
    pub api_key_login: bool,
    /// Seconds a person has to sign in and consent.
    pub request_lifetime: i64,
}

impl Default for AuthorizeSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            api_key_login: false,
            request_lifetime: DEFAULT_REQUEST_LIFETIME,
        }
    }
}

/// How long a person has to sign in and consent, unless configured.
pub const DEFAULT_REQUEST_LIFETIME: i64 = 600;

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
            authorize: AuthorizeSection::default(),
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
    /// The authorization-code flow.
    pub authorize: AuthorizeSettings,
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
            authorize: AuthorizeSettings::default(),
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
        let authorize = authorize_settings(&section.authorize, &oidc)?;
        Ok(Self {
            issuer_id: issuer_id.to_owned(),
            registry_id: Some(issuer_id.to_owned()),
            token_ttl,
            session_lifetime,
            local_user_tools,
            oidc,
            authorize,
        })
    }
}

fn authorize_settings(section: &AuthorizeSection, oidc: &[OidcProvider]) -> Result<AuthorizeSettings, String> {
    let request_lifetime = match &section.request_lifetime {
        None => DEFAULT_REQUEST_LIFETIME,
        Some(text) => {
            let lifetime = parse_duration(text).map_err(|e| format!("issuer.authorize.request_lifetime: {e}"))?;
            if !(60..=3_600).contains(&lifetime) {
                return Err("issuer.authorize.request_lifetime: must be between 1m and 1h".into());
            }
            lifetime
        }
    };
    if section.enabled && !section.api_key_login && !oidc.iter().any(|p| p.login.is_some()) {
        return Err(
            "issuer.authorize.enabled: no way to sign in is configured; set issuer.authorize.api_key_login \
                    = true, or give an [[issuer.oidc]] provider login settings (issuer.oidc[N].login)"
                .into(),
        );
    }
    Ok(AuthorizeSettings {
        enabled: section.enabled,
        api_key_login: section.api_key_login,
        request_lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> IssuerSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn authorize_is_off_by_default_and_needs_a_way_to_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            IssuerSettings::from_section("https://aip.example", &IssuerSection::default(), dir.path()).unwrap();
        assert_eq!(settings.authorize, AuthorizeSettings::default());
        assert!(!settings.authorize.enabled && !settings.authorize.api_key_login);

        let nothing = section("[authorize]\nenabled = true");
        let e = IssuerSettings::from_section("https://aip.example", &nothing, dir.path()).unwrap_err();
        assert!(e.starts_with("issuer.authorize.enabled:"), "{e}");

        let keys = section("[authorize]\nenabled = true\napi_key_login = true\nrequest_lifetime = \"5m\"");
        let settings = IssuerSettings::from_section("https://aip.example", &keys, dir.path()).unwrap();
        assert_eq!(settings.authorize.request_lifetime, 300);
        let long = section("[authorize]\nrequest_lifetime = \"2h\"");
        let e = IssuerSettings::from_section("https://aip.example", &long, dir.path()).unwrap_err();
        assert!(e.starts_with("issuer.authorize.request_lifetime:"), "{e}");
    }

    #[test]
    fn login_settings_are_checked_and_read_the_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let with = |login: &str| {
            section(&format!(
                "[authorize]\nenabled = true\n[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"aip\"\n\
                 jwks_url = \"https://idp.example/jwks\"\n[oidc.login]\n{login}"
            ))
        };
        let settings = IssuerSettings::from_section(
            "https://aip.example",
            &with("client_id = \"aip-login\"\nclient_secret_file = \"secret\""),
            dir.path(),
        )
        .unwrap();
        let login = settings.oidc[0].login.clone().unwrap();
        assert_eq!(login.client_id, "aip-login");
        assert_eq!(login.client_secret.unwrap().expose(), "s3cret");
        assert_eq!(login.display_name, "idp.example");
        assert_eq!(login.scope, "openid");
        assert!(settings.authorize.enabled);

        for (login, member) in [
            ("client_id = \"\"", "issuer.oidc[0].login.client_id"),
            (
                "client_id = \"a\"\nclient_secret_file = \"missing\"",
                "issuer.oidc[0].login.client_secret_file",
            ),
            (
                "client_id = \"a\"\nclient_secret_file = \"empty\"",
                "issuer.oidc[0].login.client_secret_file",
            ),
            (
                "client_id = \"a\"\nscopes = [\"open id\"]",
                "issuer.oidc[0].login.scopes",
            ),
        ] {
            let e = IssuerSettings::from_section("https://aip.example", &with(login), dir.path()).unwrap_err();
            assert!(e.starts_with(member), "{login}: {e}");
        }
        // The secret never shows in Debug output.
        let settings = IssuerSettings::from_section(
            "https://aip.example",
            &with("client_id = \"aip-login\"\nclient_secret_file = \"secret\""),
            dir.path(),
        )
        .unwrap();
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
