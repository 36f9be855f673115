//! OpenID Connect ID tokens as user authorization (`{"type":"oidc_id_token","token":"…"}`), and
//! Identity Assertion JWT Authorization Grants (ID-JAG) from the same identity providers.
//!
//! Each trusted identity provider is one `[[issuer.oidc]]` section, validated into an
//! [`OidcProvider`]. An [`OidcVerifier`] holds them with their key sets and turns a compact ID
//! token into an [`OidcIdentity`]:
//!
//! 1. At most [`MAX_ID_TOKEN_BYTES`]; the header and the *unverified* payload are read only for
//!    `alg`, `kid`, `typ` and `iss`; a `typ` of `oauth-id-jag+jwt` is refused (an ID-JAG is not
//!    an ID token). `alg` must be on a fixed allowlist (RSA PKCS#1 v1.5 and PSS,
//!    ECDSA P-256/P-384, Ed25519): `none` and `HS*` can never pass, whatever the key set holds.
//! 2. The provider is the one whose `issuer` equals `iss` byte for byte.
//! 3. The key is the provider's JWK with that `kid`; its `kty`/`crv`/`alg`/`use` must fit the
//!    header's `alg`. Symmetric (`oct`) keys in a key set are never used.
//! 4. jsonwebtoken (aws-lc-rs backend) verifies the signature and checks `iss`, `aud` (string or
//!    array containing the provider's audience) and the presence of `exp`.
//! 5. Times are checked here against the caller's `now` (not the system clock) with
//!    [`CLOCK_LEEWAY_SECS`] of leeway: `exp` (required), `nbf` (if present), `iat` (required by
//!    OpenID Connect Core §2, may not lie in the future), `auth_time` (if present).
//! 6. The user id is `sub` or `email` (an `email` needs `email_verified` absent or true).
//!
//! No `nonce` is checked for `oidc_id_token`: the token is presented by an agent, not returned
//! to a relying party that started the login, so there is no nonce to compare with. A provider
//! with `login` settings also signs people in for `/oauth/authorize`, with the authority as the
//! relying party: [`OidcVerifier::verify_login`] checks such an ID token the same way, with
//! the login client id as the audience and the sign-in's `nonce`.
//!
//! [`OidcVerifier::verify_id_jag`] verifies an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant,
//! MCP enterprise-managed authorization) into an [`IdJag`] with the same key handling, for
//! providers with `id_jag = true` only: header `typ` `oauth-id-jag+jwt`, `aud` = this
//! authority's issuer identifier, `jti` and `client_id` required, at most one `resource`, and
//! a lifetime of at most [`MAX_ID_JAG_LIFETIME_SECS`]. Its own method lists every check.
//!
//! Key sets from a file are read once by [`OidcVerifier::new`]. Key sets from a URL are fetched
//! on first use and cached per provider for [`JWKS_CACHE_SECS`]; a token with an unknown `kid`
//! causes a refetch, but a provider's key set is fetched at most once per
//! [`JWKS_REFETCH_COOLDOWN_SECS`] however many unknown `kid`s arrive, so a flood of forged
//! tokens cannot make the authority hammer the identity provider. When a refresh fails the
//! previous key set stays in use for up to [`JWKS_STALE_LIMIT_SECS`]. Cache ages are measured
//! with the same injected `now` as token times.
//!
//! Error messages ([`OidcError`]'s `Display`) are safe to return to clients: they never contain
//! the token, claim values (other than a shortened `iss`) or transport details, which are
//! logged with `tracing` instead.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aip_aat::secret::SecretString;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

/// Largest ID token or ID-JAG accepted, in bytes.
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp`, `nbf`, `iat` and `auth_time`, in seconds.
pub const CLOCK_LEEWAY_SECS: i64 = 60;
/// How long a key set fetched from a URL is used before it is fetched again, in seconds.
pub const JWKS_CACHE_SECS: i64 = 600;
/// Least time between two fetches of one provider's key set, in seconds.
pub const JWKS_REFETCH_COOLDOWN_SECS: i64 = 30;
/// How long a fetched key set stays usable while refreshing it fails, in seconds.
pub const JWKS_STALE_LIMIT_SECS: i64 = 3600;
/// Time limit for fetching a key set (connection, headers and body).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set document accepted (file or URL), in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Longest user id accepted, in characters.
pub const MAX_USER_ID_CHARS: usize = 256;
/// The header `typ` of an Identity Assertion JWT Authorization Grant.
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// Longest lifetime (`exp` − `iat`) of an ID-JAG accepted, in seconds: ID-JAGs are short-lived
/// (MCP enterprise-managed authorization §6.4.2), and the token endpoint remembers each `jti`
/// until its `exp`.
pub const MAX_ID_JAG_LIFETIME_SECS: i64 = 3_600;
/// Longest ID-JAG `jti` or `client_id` accepted, in characters.
pub const MAX_ID_JAG_CLAIM_CHARS: usize = 1_024;
/// Longest ID-JAG `resource` accepted, in characters.
pub const MAX_RESOURCE_CHARS: usize = 2_048;
/// Longest ID-JAG `scope` accepted, in bytes.
pub const MAX_SCOPE_BYTES: usize = 4_096;

/// Signature algorithms an ID token may use. Fixed here, never taken from configuration or the
/// token: no `none`, no `HS*`.
const ALLOWED_ALGORITHMS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Longest `iss` quoted in [`OidcError::UntrustedIssuer`], in characters.
const MAX_QUOTED_ISSUER_CHARS: usize = 128;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// `[[issuer.oidc]]`: one trusted identity provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's `iss` value, exactly.
    pub issuer: String,
    /// The `aud` ID tokens must carry (the client id registered with the provider).
    pub audience: String,
    /// JWKS file, relative to the authority directory (exactly one of `jwks_file`, `jwks_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (`https://`, or `http://` on loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Claim that becomes `user_id`: `sub` (default) or `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// Tools users of this provider may delegate (default: any, `["*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegatable_tools: Option<Vec<String>>,
    /// Whether the provider may issue Identity Assertion JWT Authorization Grants (ID-JAG) to
    /// this authority (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_jag: Option<bool>,
    /// Sign-in for `/oauth/authorize` through this provider (the authority as its relying
    /// party); absent: the provider only vouches for `oidc_id_token` authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<OidcLoginSection>,
}

/// `[issuer.oidc.login]`: the authority's registration as a client of the provider. The
/// provider's endpoints come from its discovery document
/// (`{issuer}/.well-known/openid-configuration`); the redirect URI to register with it is
/// `{public URL}/oauth/callback`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcLoginSection {
    /// The client id the provider gave the authority (the `aud` of its ID tokens).
    pub client_id: String,
    /// File holding the client secret, relative to the authority directory (absent: a public
    /// client, authenticated by PKCE alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The name on the sign-in button (default: the issuer's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Scopes asked for (default: `openid`, and `email` when `user_claim` is `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// Validated login settings of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcLogin {
    /// The authority's client id at the provider.
    pub client_id: String,
    /// The client secret, when the authority is a confidential client there.
    pub client_secret: Option<SecretString>,
    /// The name people see.
    pub display_name: String,
    /// The `scope` parameter sent (always with `openid`).
    pub scope: String,
}

/// The ID token claim that becomes the user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserClaim {
    /// `sub`: the provider's stable subject identifier (the default).
    Sub,
    /// `email`: refused when `email_verified` is present and not true.
    Email,
}

impl UserClaim {
    fn name(self) -> &'static str {
        match self {
            Self::Sub => "sub",
            Self::Email => "email",
        }
    }
}

/// Where a provider's JSON Web Key Set comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read once when the verifier is built (already resolved against the authority
    /// directory).
    File(PathBuf),
    /// An `https://` URL (`http://` only on loopback), fetched on first use and cached.
    Url(String),
}

/// One trusted OpenID Connect provider: the validated form of an `[[issuer.oidc]]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcProvider {
    /// The provider's `iss` value; tokens must carry exactly this string.
    pub issuer: String,
    /// The audience (client id) ID tokens must be issued for.
    pub audience: String,
    /// The provider's signing keys.
    pub jwks: JwksSource,
    /// The claim that becomes the user id.
    pub user_claim: UserClaim,
    /// Tools this provider's users may delegate (`["*"]`: any).
    pub delegatable_tools: Vec<String>,
    /// Whether the provider may issue ID-JAGs to this authority ([`OidcVerifier::verify_id_jag`]).
    pub id_jag: bool,
    /// Sign-in for `/oauth/authorize`, when configured.
    pub login: Option<OidcLogin>,
}

impl OidcProvider {
    /// Validates one `[[issuer.oidc]]` section; relative `jwks_file` paths resolve against
    /// `base_dir` (the authority directory).
    ///
    /// Errors name the member, e.g. `issuer.oidc[0].jwks_url: …`: `issuer` and `audience` must be
    /// non-empty; exactly one of `jwks_file` and `jwks_url` must be set; `jwks_url` must be
    /// `https://` (`http://` only for the loopback hosts `127.0.0.1`, `[::1]`, `localhost`) and
    /// carry no credentials; `user_claim` must be `sub` or `email` (default `sub`);
    /// `delegatable_tools` defaults to `["*"]` and may not contain empty names; `id_jag`
    /// defaults to `false`, and `true` needs an `issuer` that is an RFC 8414 issuer identifier
    /// (`https://` without query or fragment; `http://` only on loopback).
    pub fn from_section(index: usize, section: &OidcSection, base_dir: &Path) -> Result<Self, String> {
        let member = |name: &str| format!("issuer.oidc[{index}].{name}");
        if section.issuer.trim().is_empty() {
            return Err(format!("{}: must not be empty", member("issuer")));
        }
        if section.audience.trim().is_empty() {
            return Err(format!("{}: must not be empty", member("audience")));
        }
        let jwks = match (&section.jwks_file, &section.jwks_url) {
            (Some(file), None) => {
                if file.as_os_str().is_empty() {
                    return Err(format!("{}: must not be empty", member("jwks_file")));
                }
                JwksSource::File(base_dir.join(file))
            }
            (None, Some(url)) => {
                check_jwks_url(url).map_err(|reason| format!("{}: {reason}", member("jwks_url")))?;
                JwksSource::Url(url.clone())
            }
            _ => {
                return Err(format!(
                    "issuer.oidc[{index}]: set exactly one of jwks_file and jwks_url"
                ));
            }
        };
        let user_claim = match section.user_claim.as_deref() {
            None | Some("sub") => UserClaim::Sub,
            Some("email") => UserClaim::Email,
            Some(other) => {
                return Err(format!(
                    "{}: must be \"sub\" or \"email\", not {other:?}",
                    member("user_claim")
                ));
            }
        };
        let delegatable_tools = match &section.delegatable_tools {
            None => vec!["*".to_owned()],
            Some(tools) => {
                if tools.iter().any(|t| t.trim().is_empty()) {
                    return Err(format!("{}: tool names must not be empty", member("delegatable_tools")));
                }
                tools.clone()
            }
        };
        let id_jag = section.id_jag.unwrap_or(false);
        if id_jag {
            check_issuer_identifier(&section.issuer)
                .map_err(|reason| format!("{}: needs `issuer` to be {reason}", member("id_jag")))?;
        }
        let login = section
            .login
            .as_ref()
            .map(|login| login_settings(index, login, &section.issuer, user_claim, base_dir))
            .transpose()?;
        Ok(Self {
            issuer: section.issuer.clone(),
            audience: section.audience.clone(),
            jwks,
            user_claim,
            delegatable_tools,
            id_jag,
            login,
        })
    }
}

/// An RFC 8414 §2 issuer identifier: an `https://` URL (here also `http://` on loopback, as
/// for key sets) with no query, fragment or credentials.
fn check_issuer_identifier(issuer: &str) -> Result<(), &'static str> {
    const WHAT: &str = "an https:// URL without query or fragment (RFC 8414 issuer identifier)";
    let url = reqwest::Url::parse(issuer).map_err(|_| WHAT)?;
    if !url_scheme_allowed(&url)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(WHAT);
    }
    Ok(())
}

/// Validates `issuer.oidc[index].login`, reading the client secret file.
fn login_settings(
    index: usize,
    section: &OidcLoginSection,
    issuer: &str,
    user_claim: UserClaim,
    base_dir: &Path,
) -> Result<OidcLogin, String> {
    let member = |name: &str| format!("issuer.oidc[{index}].login.{name}");
    if section.client_id.trim().is_empty() || section.client_id.len() > 256 {
        return Err(format!("{}: must be 1-256 characters", member("client_id")));
    }
    let parsed = reqwest::Url::parse(issuer).map_err(|_| format!("issuer.oidc[{index}].issuer: not a URL"))?;
    if !url_scheme_allowed(&parsed) || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "issuer.oidc[{index}].issuer: sign-in needs an https:// issuer (http:// only on loopback) without query or fragment"
        ));
    }
    let client_secret = match &section.client_secret_file {
        None => None,
        Some(file) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: cannot read {}: {e}", member("client_secret_file"), path.display()))?;
            let secret = text.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                return Err(format!("{}: {} is empty", member("client_secret_file"), path.display()));
            }
            Some(SecretString::new(secret))
        }
    };
    let display_name = match &section.display_name {
        Some(name) => {
            aip_api::checks::check_name(&member("display_name"), name, 64)?;
            name.clone()
        }
        None => parsed.host_str().unwrap_or(issuer).to_owned(),
    };
    let scopes = match &section.scopes {
        Some(scopes) => {
            if scopes
                .iter()
                .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
            {
                return Err(format!("{}: scopes are printable ASCII words", member("scopes")));
            }
            scopes.clone()
        }
        None if user_claim == UserClaim::Email => vec!["openid".into(), "email".into()],
        None => vec!["openid".into()],
    };
    let mut scope = vec!["openid".to_owned()];
    scope.extend(scopes.into_iter().filter(|s| s != "openid"));
    Ok(OidcLogin {
        client_id: section.client_id.clone(),
        client_secret,
        display_name,
        scope: scope.join(" "),
    })
}

/// `https://` with a host, or `http://` on a loopback host; no user info.
fn check_jwks_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a valid URL")?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not contain credentials");
    }
    if url_scheme_allowed(&parsed) {
        Ok(())
    } else if parsed.scheme() == "http" {
        Err("http:// is allowed only for loopback hosts (127.0.0.1, [::1], localhost); use https://")
    } else {
        Err("must be an https:// URL")
    }
}

/// Whether a provider URL may be used: `https://` with a host, or `http://` on a loopback host.
pub(crate) fn url_scheme_allowed(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        // The URL parser has normalised the host: lower case, IPv6 in brackets.
        "http" => url.host_str().is_some_and(|host| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Results and errors
// ---------------------------------------------------------------------------------------------

/// A verified ID token's user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The user id: the `sub` or `email` claim, as configured for the provider.
    pub user_id: String,
    /// When the user authenticated (Unix seconds): `auth_time`, or `iat` when absent.
    pub auth_time: i64,
    /// The provider's issuer.
    pub issuer: String,
    /// Tools this provider's users may delegate.
    pub delegatable_tools: Vec<String>,
}

/// A verified Identity Assertion JWT Authorization Grant ([`OidcVerifier::verify_id_jag`]).
///
/// What the token endpoint still has to check: `client_id` against the authenticated client,
/// `jti` used once until `exp`, and `cnf_jkt` (when present) against the DPoP proof's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdJag {
    /// The identity provider's issuer (the grant's `iss`).
    pub issuer: String,
    /// The user id: `sub` or `email`, as configured for the provider.
    pub user_id: String,
    /// When the user authenticated (Unix seconds): `auth_time`, or `iat` when absent.
    pub auth_time: i64,
    /// The client the grant was issued for, as the authority knows it (`client_id`).
    pub client_id: String,
    /// The grant's unique id (`jti`).
    pub jti: String,
    /// When the grant expires (Unix seconds): how long its `jti` must be remembered.
    pub exp: i64,
    /// The one resource (RFC 8707) the grant names, if any: the AAT's audience.
    pub resource: Option<String>,
    /// The scopes the grant names (`scope`, split at spaces, without duplicates); empty when it
    /// names none.
    pub scopes: Vec<String>,
    /// `cnf.jkt`: the grant is bound to this key (JWK SHA-256 thumbprint) and may only be
    /// redeemed with a DPoP proof by it.
    pub cnf_jkt: Option<String>,
    /// Tools this provider's users may delegate.
    pub delegatable_tools: Vec<String>,
}

/// Why an ID token or an ID-JAG was refused, or a verifier could not be built. `Display` is
/// safe to send to clients; it says "the token", so callers name the kind of token around it
/// (for example "the ID token was refused: the token has expired").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// No OpenID Connect provider is configured.
    #[error("OpenID Connect ID tokens are not accepted: no identity provider is configured")]
    NoProviders,
    /// The token is longer than [`MAX_ID_TOKEN_BYTES`].
    #[error("the token is larger than {MAX_ID_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not a compact JWS with JSON header and payload, or a claim of the wrong JSON type.
    #[error("the token is malformed")]
    Malformed,
    /// The header's `alg` is not on the allowlist (e.g. `none`, `HS256`).
    #[error("the token's signature algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// The header carries `crit` extensions, none of which are understood.
    #[error("the token uses critical header extensions that are not supported")]
    UnsupportedCritical,
    /// No configured provider has this `iss` (shortened, control characters escaped).
    #[error("the token's issuer {issuer:?} is not trusted")]
    UntrustedIssuer {
        /// The token's `iss`, at most 128 characters.
        issuer: String,
    },
    /// The provider's key set has no key with the token's `kid`.
    #[error("the token's signing key is not in the identity provider's key set")]
    UnknownKey,
    /// The key with the token's `kid` does not fit the token's `alg`.
    #[error("the identity provider's key does not fit the token's signature algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is more than the leeway in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf`, `iat` or `auth_time` is more than the leeway in the future.
    #[error("the token is not yet valid")]
    NotYetValid,
    /// `aud` does not contain the provider's audience (ID token), or is not exactly this
    /// authority's issuer identifier (ID-JAG).
    #[error("the token is not issued for this authority (audience mismatch)")]
    WrongAudience,
    /// A required claim is absent.
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type, or the user id is empty, too long or has control characters.
    #[error("the token's `{0}` claim is invalid")]
    InvalidClaim(&'static str),
    /// `email` is the user claim and `email_verified` is present and not true.
    #[error("the token's email address is not verified")]
    EmailNotVerified,
    /// No configured provider has `id_jag = true`.
    #[error("identity assertion grants (ID-JAG) are not accepted: no identity provider is enabled for them")]
    NoIdJagProviders,
    /// The header's `typ` is not `oauth-id-jag+jwt` where an ID-JAG is expected.
    #[error("the token is not an identity assertion grant: its header `typ` must be \"oauth-id-jag+jwt\"")]
    NotAnIdJag,
    /// An ID-JAG (header `typ` `oauth-id-jag+jwt`) was presented as an ID token.
    #[error("the token is an identity assertion grant (ID-JAG), not an ID token")]
    NotAnIdToken,
    /// The provider that signed the ID-JAG is trusted for ID tokens but not enabled
    /// (`id_jag = true`) for identity assertion grants.
    #[error("the identity provider {issuer:?} is not enabled for identity assertion grants")]
    IdJagNotEnabled {
        /// The grant's `iss`, at most 128 characters.
        issuer: String,
    },
    /// The ID-JAG's `resource` names more than one resource; an AAT has exactly one audience.
    #[error("the token names more than one `resource`; an AAT is issued for exactly one audience")]
    MultipleResources,
    /// The ID-JAG lives longer than [`MAX_ID_JAG_LIFETIME_SECS`] (`exp` − `iat`).
    #[error("the token's lifetime (exp - iat) is longer than {MAX_ID_JAG_LIFETIME_SECS} seconds")]
    LifetimeTooLong,
    /// The token carries a claim whose meaning this authority cannot honour (for example
    /// `authorization_details`, or a `cnf` confirmation other than `jkt`).
    #[error("the token's `{0}` claim is not supported")]
    UnsupportedClaim(&'static str),
    /// A sign-in's ID token carries another `nonce` than the sign-in sent, or none.
    #[error("the ID token does not belong to this sign-in (nonce mismatch)")]
    NonceMismatch,
    /// The provider's key set could not be fetched (details are logged).
    #[error("the identity provider's signing keys are unavailable")]
    JwksUnavailable,
    /// Building the verifier: a key set file could not be read.
    #[error("cannot read JWKS file {}", path.display())]
    JwksFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Building the verifier: a key set file is not a usable JWK Set.
    #[error("JWKS file {} is invalid: {reason}", path.display())]
    JwksFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Building the verifier: two providers have the same issuer.
    #[error("OpenID Connect issuer {issuer:?} is configured twice")]
    DuplicateIssuer {
        /// The issuer.
        issuer: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Key sets
// ---------------------------------------------------------------------------------------------

/// The key types an allowed algorithm can verify with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            Self::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Self::P256 => alg == Algorithm::ES256,
            Self::P384 => alg == Algorithm::ES384,
            Self::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable verification key from a JWK Set.
struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl VerifyKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The signature keys of one JWK Set; keys for other uses or of other types are left out.
struct KeySet {
    keys: Vec<VerifyKey>,
}

enum Selection<'a> {
    Found(&'a DecodingKey),
    Unknown,
    Mismatch,
}

impl KeySet {
    /// Parses a JWK Set document. Keys that are not signature keys of a supported type (for
    /// example `oct`, encryption or P-521 keys) are skipped; the error is for documents that are
    /// not a JWK Set at all.
    fn parse(bytes: &[u8]) -> Result<Self, &'static str> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("larger than 256 KiB");
        }
        let document: Document = serde_json::from_slice(bytes).map_err(|_| "not a JSON JWK Set")?;
        let total = document.keys.len();
        let keys: Vec<VerifyKey> = document.keys.into_iter().filter_map(verify_key).collect();
        if keys.len() < total {
            tracing::debug!(
                total,
                usable = keys.len(),
                "skipped JWKs that are not supported signature keys"
            );
        }
        Ok(Self { keys })
    }

    /// The key for a token's `kid` and `alg`, or why there is none.
    fn key_for(&self, unverified: &Unverified) -> Result<&DecodingKey, OidcError> {
        match self.select(unverified.kid.as_deref(), unverified.alg) {
            Selection::Found(key) => Ok(key),
            Selection::Unknown => Err(OidcError::UnknownKey),
            Selection::Mismatch => Err(OidcError::KeyMismatch),
        }
    }

    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
                if named.peek().is_none() {
                    return Selection::Unknown;
                }
                match named.find(|k| k.fits(alg)) {
                    Some(key) => Selection::Found(&key.key),
                    None => Selection::Mismatch,
                }
            }
            // Without a `kid`, only an unambiguous key will do.
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Selection::Found(&key.key),
                    _ => Selection::Unknown,
                }
            }
        }
    }
}

/// A usable signature key from one JWK, or `None` to skip it.
fn verify_key(value: Value) -> Option<VerifyKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        // Keys for HMAC or encryption, or with an unknown `alg`, are not signature keys here.
        Some(key_alg) => {
            let alg = Algorithm::try_from(key_alg).ok()?;
            if !ALLOWED_ALGORITHMS.iter().any(|(_, allowed)| *allowed == alg) {
                return None;
            }
            Some(alg)
        }
    };
    let (kind, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => (KeyKind::Rsa, DecodingKey::from_rsa_components(&p.n, &p.e).ok()?),
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, len) = match p.curve {
                EllipticCurve::P256 => (KeyKind::P256, 32),
                EllipticCurve::P384 => (KeyKind::P384, 48),
                _ => return None,
            };
            let coordinate_ok = |c: &str| URL_SAFE_NO_PAD.decode(c).is_ok_and(|b| b.len() == len);
            if !coordinate_ok(&p.x) || !coordinate_ok(&p.y) {
                return None;
            }
            (kind, DecodingKey::from_ec_components(&p.x, &p.y).ok()?)
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || URL_SAFE_NO_PAD.decode(&p.x).map(|b| b.len()).ok() != Some(32) {
                return None;
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_components(&p.x).ok()?)
        }
        // Symmetric keys never verify an ID token; unknown key types are skipped.
        _ => return None,
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return None;
    }
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        kind,
        alg,
        key,
    })
}

/// The key-set state of a provider whose keys come from a URL.
#[derive(Default)]
struct UrlCache {
    keys: Option<Arc<KeySet>>,
    /// `now` of the last successful fetch.
    fetched_at: i64,
    /// `now` of the last fetch attempt, successful or not.
    attempted_at: Option<i64>,
}

impl UrlCache {
    /// Whether another fetch may start at `now`. A clock that went backwards allows one (and
    /// resets the cooldown), rather than blocking fetches until it catches up.
    fn may_fetch(&self, now: i64) -> bool {
        self.attempted_at
            .is_none_or(|at| now < at || now.saturating_sub(at) >= JWKS_REFETCH_COOLDOWN_SECS)
    }

    fn is_fresh(&self, now: i64) -> bool {
        let age = now.saturating_sub(self.fetched_at);
        self.keys.is_some() && (0..JWKS_CACHE_SECS).contains(&age)
    }

    /// The cached keys, unless they are older than the stale limit.
    fn usable(&self, now: i64) -> Option<Arc<KeySet>> {
        let age = now.saturating_sub(self.fetched_at);
        self.keys.clone().filter(|_| age <= JWKS_STALE_LIMIT_SECS)
    }

    async fn refresh(&mut self, http: &reqwest::Client, issuer: &str, url: &str, now: i64) {
        self.attempted_at = Some(now);
        if let Some(keys) = fetch_jwks(http, issuer, url).await {
            self.keys = Some(Arc::new(keys));
            self.fetched_at = now;
        }
    }
}

/// Fetches and parses a key set; failures are logged (they may name hosts and transport errors
/// that clients must not see) and give `None`.
async fn fetch_jwks(http: &reqwest::Client, issuer: &str, url: &str) -> Option<KeySet> {
    match tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch_jwks_body(http, url)).await {
        Ok(Ok(body)) => match KeySet::parse(&body) {
            Ok(keys) => {
                if keys.keys.is_empty() {
                    tracing::warn!(issuer, url, "OIDC JWKS has no usable signature keys");
                }
                tracing::info!(issuer, url, keys = keys.keys.len(), "fetched OIDC JWKS");
                Some(keys)
            }
            Err(reason) => {
                tracing::warn!(issuer, url, reason, "OIDC JWKS fetch: invalid document");
                None
            }
        },
        Ok(Err(reason)) => {
            tracing::warn!(issuer, url, reason = %reason, "OIDC JWKS fetch failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                issuer,
                url,
                timeout_secs = JWKS_FETCH_TIMEOUT.as_secs(),
                "OIDC JWKS fetch timed out"
            );
            None
        }
    }
}

async fn fetch_jwks_body(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = http
        .get(url)
        .timeout(JWKS_FETCH_TIMEOUT)
        .header(reqwest::header::ACCEPT, "application/json, application/jwk-set+json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    // Redirects are followed by the client; the place they lead must pass the same rule.
    if !url_scheme_allowed(response.url()) {
        return Err(format!("redirected to a disallowed URL {}", response.url()));
    }
    if !response.status().is_success() {
        return Err(format!("HTTP status {}", response.status()));
    }
    if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
        return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading body: {e}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------------------------

enum Keys {
    Static(Arc<KeySet>),
    /// A tokio mutex: held across the fetch, so concurrent first uses share one request.
    Url {
        url: String,
        cache: Mutex<UrlCache>,
    },
}

struct ProviderState {
    provider: OidcProvider,
    keys: Keys,
}

/// Verifies ID tokens from the configured providers. `Send + Sync`; share it behind an `Arc`.
pub struct OidcVerifier {
    providers: Vec<ProviderState>,
    http: reqwest::Client,
}

impl fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcVerifier")
            .field(
                "issuers",
                &self
                    .providers
                    .iter()
                    .map(|p| p.provider.issuer.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What the unverified header and payload say; used only to choose the provider and key.
struct Unverified {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    iss: String,
}

/// The claims read after verification; ID tokens use the first group only. Values are kept as
/// JSON to report type errors precisely.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    auth_time: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    email: Option<Value>,
    #[serde(default)]
    email_verified: Option<Value>,
    // ID-JAG only (`aud` of ID tokens is checked by jsonwebtoken).
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    jti: Option<Value>,
    #[serde(default)]
    client_id: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    authorization_details: Option<Value>,
    #[serde(default)]
    cnf: Option<Value>,
    #[serde(default)]
    nonce: Option<Value>,
    #[serde(default)]
    azp: Option<Value>,
}

/// What a sign-in's ID token must carry besides what every ID token must.
struct LoginCheck<'a> {
    issuer: &'a str,
    client_id: &'a str,
    nonce: &'a str,
}

impl OidcVerifier {
    /// Builds a verifier. Key set files are read now (an unreadable or invalid file, or one with
    /// no usable signature key, is an error); key sets from URLs are fetched on first use.
    /// Two providers with the same issuer are refused.
    pub fn new(providers: Vec<OidcProvider>, http: reqwest::Client) -> Result<Self, OidcError> {
        let mut issuers = HashSet::new();
        let mut states = Vec::with_capacity(providers.len());
        for provider in providers {
            if !issuers.insert(provider.issuer.clone()) {
                return Err(OidcError::DuplicateIssuer {
                    issuer: provider.issuer,
                });
            }
            let keys = match &provider.jwks {
                JwksSource::File(path) => Keys::Static(Arc::new(load_jwks_file(path)?)),
                JwksSource::Url(url) => Keys::Url {
                    url: url.clone(),
                    cache: Mutex::new(UrlCache::default()),
                },
            };
            states.push(ProviderState { provider, keys });
        }
        Ok(Self {
            providers: states,
            http,
        })
    }

    /// Whether any provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Whether any provider is enabled for ID-JAGs (`id_jag = true`).
    pub fn accepts_id_jag(&self) -> bool {
        self.providers.iter().any(|p| p.provider.id_jag)
    }

    /// Verifies `id_token` at Unix time `now` and returns its user.
    ///
    /// A token whose header `typ` is `oauth-id-jag+jwt` is refused ([`OidcError::NotAnIdToken`]):
    /// an ID-JAG is a grant for the token endpoint, never an ID token.
    pub async fn verify(&self, id_token: &str, now: i64) -> Result<OidcIdentity, OidcError> {
        self.verify_checked(id_token, now, None).await
    }

    /// Verifies the ID token of a sign-in the authority started as relying party: as
    /// [`OidcVerifier::verify`], but issued by `issuer`, for the audience `client_id` (with
    /// `azp`, when present, equal to it), and carrying `nonce`.
    pub async fn verify_login(
        &self,
        id_token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<OidcIdentity, OidcError> {
        let check = LoginCheck {
            issuer,
            client_id,
            nonce,
        };
        self.verify_checked(id_token, now, Some(check)).await
    }

    async fn verify_checked(
        &self,
        id_token: &str,
        now: i64,
        login: Option<LoginCheck<'_>>,
    ) -> Result<OidcIdentity, OidcError> {
        if self.providers.is_empty() {
            return Err(OidcError::NoProviders);
        }
        if id_token.len() > MAX_ID_TOKEN_BYTES {
            return Err(OidcError::TooLarge);
        }
        let unverified = read_unverified(id_token)?;
        if typ_is(unverified.typ.as_deref(), ID_JAG_TYP) {
            return Err(OidcError::NotAnIdToken);
        }
        if login.as_ref().is_some_and(|l| l.issuer != unverified.iss) {
            return Err(OidcError::UntrustedIssuer {
                issuer: quote_issuer(&unverified.iss),
            });
        }
        let state = self.provider(&unverified.iss)?;
        let provider = &state.provider;
        let keys = self.key_set(state, &unverified, now).await?;
        let key = keys.key_for(&unverified)?;
        // A sign-in's ID token is issued to the authority's client id; others to the audience
        // configured for `oidc_id_token` authorization.
        let audience = login.as_ref().map_or(provider.audience.as_str(), |l| l.client_id);
        let claims = decode_claims(id_token, key, unverified.alg, provider, Some(audience))?;
        let times = check_times(&claims, now)?;
        if let Some(login) = &login {
            match &claims.nonce {
                Some(Value::String(nonce)) if constant_time_eq(nonce.as_bytes(), login.nonce.as_bytes()) => {}
                _ => return Err(OidcError::NonceMismatch),
            }
            match &claims.azp {
                None => {}
                Some(Value::String(azp)) if azp == login.client_id => {}
                Some(_) => return Err(OidcError::WrongAudience),
            }
        }
        let user_id = user_id(&claims, provider.user_claim)?;
        Ok(OidcIdentity {
            user_id,
            auth_time: times.auth_time,
            issuer: provider.issuer.clone(),
            delegatable_tools: provider.delegatable_tools.clone(),
        })
    }

    /// Verifies an Identity Assertion JWT Authorization Grant (ID-JAG,
    /// draft-ietf-oauth-identity-assertion-authz-grant; MCP enterprise-managed authorization)
    /// presented to this authority, whose issuer identifier is `issuer_id`, at Unix time `now`.
    ///
    /// Checks, in order: size; header `alg` on the allowlist (never `none` or `HS*`), no `crit`,
    /// `typ` = `oauth-id-jag+jwt` (an RFC 7515 media type: case-insensitive, `application/`
    /// optional); `iss` = a configured provider (byte for byte) that has `id_jag = true`; the
    /// signature by that provider's key (`kid`); `aud` = `issuer_id` (a string or a one-element
    /// array; a trailing `/` is tolerated when `issuer_id` is a bare origin); `exp` (required,
    /// not passed), `iat` (required, not in the future), `nbf` and `auth_time` (not in the
    /// future), all with [`CLOCK_LEEWAY_SECS`]; `exp` − `iat` at most
    /// [`MAX_ID_JAG_LIFETIME_SECS`]; `sub`, `jti` and `client_id` (required strings); the user
    /// id by the provider's `user_claim` (`email` needs `email_verified` absent or true);
    /// `resource` (optional absolute URI, or a one-element array of one); `scope` (optional
    /// space-separated string); `cnf` (optional, only `{"jkt"}`); `authorization_details` is
    /// refused.
    ///
    /// Left to the caller (the token endpoint): that `client_id` is the authenticated client,
    /// that `jti` is used once until `exp`, that `cnf.jkt` (when present) is the DPoP key, and
    /// what to grant from `resource` and `scopes`.
    pub async fn verify_id_jag(&self, token: &str, issuer_id: &str, now: i64) -> Result<IdJag, OidcError> {
        if !self.accepts_id_jag() {
            return Err(OidcError::NoIdJagProviders);
        }
        if token.len() > MAX_ID_TOKEN_BYTES {
            return Err(OidcError::TooLarge);
        }
        let unverified = read_unverified(token)?;
        if !typ_is(unverified.typ.as_deref(), ID_JAG_TYP) {
            return Err(OidcError::NotAnIdJag);
        }
        let state = self.provider(&unverified.iss)?;
        let provider = &state.provider;
        if !provider.id_jag {
            return Err(OidcError::IdJagNotEnabled {
                issuer: quote_issuer(&provider.issuer),
            });
        }
        let keys = self.key_set(state, &unverified, now).await?;
        let key = keys.key_for(&unverified)?;
        let claims = decode_claims(token, key, unverified.alg, provider, None)?;

        check_id_jag_audience(claims.aud.as_ref(), issuer_id)?;
        let times = check_times(&claims, now)?;
        if times.exp.saturating_sub(times.iat) > MAX_ID_JAG_LIFETIME_SECS {
            return Err(OidcError::LifetimeTooLong);
        }
        // The draft requires `sub` whichever claim names the user here.
        string_claim(claims.sub.as_ref(), "sub", MAX_USER_ID_CHARS)?;
        let user_id = user_id(&claims, provider.user_claim)?;
        let jti = string_claim(claims.jti.as_ref(), "jti", MAX_ID_JAG_CLAIM_CHARS)?;
        let client_id = string_claim(claims.client_id.as_ref(), "client_id", MAX_ID_JAG_CLAIM_CHARS)?;
        if claims.authorization_details.is_some() {
            return Err(OidcError::UnsupportedClaim("authorization_details"));
        }
        let resource = id_jag_resource(claims.resource.as_ref())?;
        let scopes = id_jag_scopes(claims.scope.as_ref())?;
        let cnf_jkt = id_jag_cnf_jkt(claims.cnf.as_ref())?;
        Ok(IdJag {
            issuer: provider.issuer.clone(),
            user_id,
            auth_time: times.auth_time,
            client_id,
            jti,
            exp: times.exp,
            resource,
            scopes,
            cnf_jkt,
            delegatable_tools: provider.delegatable_tools.clone(),
        })
    }

    /// The provider whose `issuer` is `iss`, byte for byte.
    fn provider(&self, iss: &str) -> Result<&ProviderState, OidcError> {
        self.providers
            .iter()
            .find(|p| p.provider.issuer == iss)
            .ok_or_else(|| OidcError::UntrustedIssuer {
                issuer: quote_issuer(iss),
            })
    }

    /// The provider's key set: static, or from the URL cache, refetched (within the cooldown)
    /// when stale or when it has no key with the token's `kid`.
    async fn key_set(
        &self,
        state: &ProviderState,
        unverified: &Unverified,
        now: i64,
    ) -> Result<Arc<KeySet>, OidcError> {
        match &state.keys {
            Keys::Static(keys) => Ok(Arc::clone(keys)),
            Keys::Url { url, cache } => {
                let issuer = &state.provider.issuer;
                let (kid, alg) = (unverified.kid.as_deref(), unverified.alg);
                let mut cache = cache.lock().await;
                if !cache.is_fresh(now) && cache.may_fetch(now) {
                    cache.refresh(&self.http, issuer, url, now).await;
                }
                let mut keys = cache.usable(now).ok_or(OidcError::JwksUnavailable)?;
                if matches!(keys.select(kid, alg), Selection::Unknown) && cache.may_fetch(now) {
                    tracing::info!(issuer = %issuer, "unknown OIDC key id; fetching the JWKS again");
                    cache.refresh(&self.http, issuer, url, now).await;
                    keys = cache.usable(now).ok_or(OidcError::JwksUnavailable)?;
                }
                Ok(keys)
            }
        }
    }
}

/// Verifies the signature and `iss` with jsonwebtoken (aws-lc-rs), and `aud` when `audience` is
/// given (ID tokens; ID-JAG audiences are checked by [`check_id_jag_audience`]). Times, `exp`
/// included, are checked afterwards by [`check_times`] against the injected `now`: jsonwebtoken
/// would use the system clock (and report an `exp` of the wrong type as missing).
fn decode_claims(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    provider: &OidcProvider,
    audience: Option<&str>,
) -> Result<Claims, OidcError> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    match audience {
        Some(audience) => {
            validation.validate_aud = true;
            validation.set_required_spec_claims(&["iss", "aud"]);
            validation.set_audience(&[audience]);
        }
        None => {
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["iss"]);
        }
    }
    validation.set_issuer(&[provider.issuer.as_str()]);
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| map_jwt_error(&provider.issuer, e.kind()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn load_jwks_file(path: &Path) -> Result<KeySet, OidcError> {
    let bytes = std::fs::read(path).map_err(|source| OidcError::JwksFileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let keys = KeySet::parse(&bytes).map_err(|reason| OidcError::JwksFileInvalid {
        path: path.to_owned(),
        reason,
    })?;
    if keys.keys.is_empty() {
        return Err(OidcError::JwksFileInvalid {
            path: path.to_owned(),
            reason: "no usable signature key",
        });
    }
    Ok(keys)
}

/// Reads `alg`, `kid`, `typ` and `iss` without verifying anything.
fn read_unverified(token: &str) -> Result<Unverified, OidcError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        typ: Option<String>,
        #[serde(default)]
        crit: Option<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Payload {
        #[serde(default)]
        iss: Option<Value>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| OidcError::Malformed);
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| OidcError::Malformed)?;
    let alg = ALLOWED_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == header.alg)
        .map(|(_, alg)| *alg)
        .ok_or(OidcError::UnsupportedAlgorithm)?;
    if header.crit.is_some() {
        return Err(OidcError::UnsupportedCritical);
    }
    let payload: Payload = serde_json::from_slice(&decode(payload)?).map_err(|_| OidcError::Malformed)?;
    let iss = match payload.iss {
        Some(Value::String(iss)) => iss,
        Some(_) => return Err(OidcError::InvalidClaim("iss")),
        None => return Err(OidcError::MissingClaim("iss")),
    };
    Ok(Unverified {
        alg,
        kid: header.kid,
        typ: header.typ,
        iss,
    })
}

/// `iss` as quoted in an error: at most [`MAX_QUOTED_ISSUER_CHARS`] characters.
fn quote_issuer(iss: &str) -> String {
    let mut quoted: String = iss.chars().take(MAX_QUOTED_ISSUER_CHARS).collect();
    if quoted.len() < iss.len() {
        quoted.push('…');
    }
    quoted
}

fn map_jwt_error(issuer: &str, kind: &ErrorKind) -> OidcError {
    tracing::debug!(issuer, error = ?kind, "OIDC ID token refused");
    match kind {
        ErrorKind::InvalidSignature => OidcError::BadSignature,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::InvalidIssuer => OidcError::UntrustedIssuer {
            issuer: quote_issuer(issuer),
        },
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim(spec_claim(claim)),
        ErrorKind::InvalidClaimFormat(claim) => OidcError::InvalidClaim(spec_claim(claim)),
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => OidcError::KeyMismatch,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(issuer, error = ?kind, "OIDC provider key is unusable");
            OidcError::BadSignature
        }
        _ => OidcError::Malformed,
    }
}

/// The static name of a registered claim jsonwebtoken reports.
fn spec_claim(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "unknown",
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds; fractions are truncated downwards.
fn numeric_date(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= i64::MIN as f64 && *f <= i64::MAX as f64)
                .map(|f| f.floor() as i64)
        }),
        _ => None,
    }
}

/// The checked times of a token.
struct Times {
    exp: i64,
    iat: i64,
    /// `auth_time`, or `iat` when absent.
    auth_time: i64,
}

/// `exp` (required, not passed), `iat` (required, not in the future), `nbf` and `auth_time` (if
/// present, not in the future), each with [`CLOCK_LEEWAY_SECS`].
fn check_times(claims: &Claims, now: i64) -> Result<Times, OidcError> {
    let date = |value: &Option<Value>, name: &'static str| -> Result<Option<i64>, OidcError> {
        value
            .as_ref()
            .map(|v| numeric_date(v).ok_or(OidcError::InvalidClaim(name)))
            .transpose()
    };
    let exp = date(&claims.exp, "exp")?.ok_or(OidcError::MissingClaim("exp"))?;
    let iat = date(&claims.iat, "iat")?.ok_or(OidcError::MissingClaim("iat"))?;
    let auth_time = date(&claims.auth_time, "auth_time")?;
    let latest = now.saturating_add(CLOCK_LEEWAY_SECS);
    if now > exp.saturating_add(CLOCK_LEEWAY_SECS) {
        return Err(OidcError::Expired);
    }
    if iat > latest {
        return Err(OidcError::NotYetValid);
    }
    if date(&claims.nbf, "nbf")?.is_some_and(|nbf| nbf > latest) {
        return Err(OidcError::NotYetValid);
    }
    if auth_time.is_some_and(|t| t > latest) {
        return Err(OidcError::NotYetValid);
    }
    Ok(Times {
        exp,
        iat,
        auth_time: auth_time.unwrap_or(iat),
    })
}

fn user_id(claims: &Claims, user_claim: UserClaim) -> Result<String, OidcError> {
    let value = match user_claim {
        UserClaim::Sub => &claims.sub,
        UserClaim::Email => {
            // Absent means the provider makes no statement (some only issue verified
            // addresses); present, it must be true (some providers send the string "true").
            match &claims.email_verified {
                None | Some(Value::Bool(true)) => {}
                Some(Value::String(s)) if s == "true" => {}
                Some(_) => return Err(OidcError::EmailNotVerified),
            }
            &claims.email
        }
    };
    string_claim(value.as_ref(), user_claim.name(), MAX_USER_ID_CHARS)
}

/// A required string claim: not empty, at most `max_chars` characters, no control characters.
fn string_claim(value: Option<&Value>, name: &'static str, max_chars: usize) -> Result<String, OidcError> {
    let text = match value {
        Some(Value::String(text)) => text,
        Some(_) => return Err(OidcError::InvalidClaim(name)),
        None => return Err(OidcError::MissingClaim(name)),
    };
    if text.is_empty() || text.chars().count() > max_chars || text.chars().any(char::is_control) {
        return Err(OidcError::InvalidClaim(name));
    }
    Ok(text.clone())
}

// ---------------------------------------------------------------------------------------------
// ID-JAG claims
// ---------------------------------------------------------------------------------------------

/// RFC 7515 §4.1.9: `typ` is a media type, compared case-insensitively, whose `application/`
/// prefix may be left out.
fn typ_is(typ: Option<&str>, expected: &str) -> bool {
    let Some(typ) = typ else { return false };
    let typ = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    typ.eq_ignore_ascii_case(expected)
}

/// `aud` must be this authority's issuer identifier: a string, or an array of exactly one
/// (draft-ietf-oauth-identity-assertion-authz-grant, processing rules).
fn check_id_jag_audience(aud: Option<&Value>, issuer_id: &str) -> Result<(), OidcError> {
    let aud = match aud {
        None => return Err(OidcError::MissingClaim("aud")),
        Some(Value::String(aud)) => aud,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(aud)] => aud,
            _ => return Err(OidcError::WrongAudience),
        },
        Some(_) => return Err(OidcError::InvalidClaim("aud")),
    };
    if audience_matches(aud, issuer_id) {
        Ok(())
    } else {
        Err(OidcError::WrongAudience)
    }
}

/// Equal byte for byte, or differing only by a trailing `/` after a bare origin
/// (`https://aip.example` and `https://aip.example/` name the same issuer).
fn audience_matches(aud: &str, issuer_id: &str) -> bool {
    if aud == issuer_id {
        return true;
    }
    let (short, long) = if aud.len() < issuer_id.len() {
        (aud, issuer_id)
    } else {
        (issuer_id, aud)
    };
    long.strip_suffix('/') == Some(short) && is_bare_origin(short)
}

/// `scheme://host[:port]` with nothing after it, written as the URL parser writes it.
fn is_bare_origin(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "https" | "http") && url.as_str().strip_suffix('/') == Some(text) && url.path() == "/"
    })
}

/// `resource` (RFC 8707 §2: an absolute URI without fragment), as a string or an array of one.
fn id_jag_resource(value: Option<&Value>) -> Result<Option<String>, OidcError> {
    let uri = match value {
        None => return Ok(None),
        Some(Value::String(uri)) => uri,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(uri)] => uri,
            [_, _, ..] => return Err(OidcError::MultipleResources),
            _ => return Err(OidcError::InvalidClaim("resource")),
        },
        Some(_) => return Err(OidcError::InvalidClaim("resource")),
    };
    let well_formed = uri.chars().count() <= MAX_RESOURCE_CHARS
        && !uri.chars().any(|c| c.is_control() || c.is_whitespace())
        && reqwest::Url::parse(uri).is_ok_and(|url| url.fragment().is_none());
    if well_formed {
        Ok(Some(uri.clone()))
    } else {
        Err(OidcError::InvalidClaim("resource"))
    }
}

/// `scope` (RFC 6749 §3.3): space-separated scope tokens of printable ASCII other than `"` and
/// `\`; duplicates are dropped, order is kept.
fn id_jag_scopes(value: Option<&Value>) -> Result<Vec<String>, OidcError> {
    let scope = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(scope)) if scope.len() <= MAX_SCOPE_BYTES => scope,
        Some(_) => return Err(OidcError::InvalidClaim("scope")),
    };
    let nqchar = |b: u8| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
    let mut seen = HashSet::new();
    let mut scopes = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if !token.bytes().all(nqchar) {
            return Err(OidcError::InvalidClaim("scope"));
        }
        if seen.insert(token) {
            scopes.push(token.to_owned());
        }
    }
    Ok(scopes)
}

/// `cnf` (RFC 7800): only `{"jkt": <JWK SHA-256 thumbprint>}` (RFC 9449 §6.1); another
/// confirmation method could not be honoured.
fn id_jag_cnf_jkt(value: Option<&Value>) -> Result<Option<String>, OidcError> {
    let cnf = match value {
        None => return Ok(None),
        Some(Value::Object(cnf)) => cnf,
        Some(_) => return Err(OidcError::InvalidClaim("cnf")),
    };
    if cnf.keys().any(|k| k != "jkt") {
        return Err(OidcError::UnsupportedClaim("cnf"));
    }
    match cnf.get("jkt") {
        Some(Value::String(jkt)) if jkt.len() == 43 && URL_SAFE_NO_PAD.decode(jkt).is_ok_and(|b| b.len() == 32) => {
            Ok(Some(jkt.clone()))
        }
        _ => Err(OidcError::InvalidClaim("cnf")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn section() -> OidcSection {
        OidcSection {
            issuer: "https://idp.example".into(),
            audience: "aip".into(),
            jwks_file: None,
            jwks_url: Some("https://idp.example/jwks".into()),
            user_claim: None,
            delegatable_tools: None,
            id_jag: None,
            login: None,
        }
    }

    #[test]
    fn loopback_http_only() {
        for ok in [
            "https://idp.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/k",
            "http://localhost/k",
        ] {
            assert!(check_jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example/jwks",
            "ftp://127.0.0.1/",
            "https://u:p@idp.example/",
            "jwks",
            "http://10.0.0.1/",
        ] {
            assert!(check_jwks_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let p = OidcProvider::from_section(0, &section(), Path::new("/a")).unwrap();
        assert_eq!(p.user_claim, UserClaim::Sub);
        assert_eq!(p.delegatable_tools, vec!["*".to_owned()]);
        assert!(!p.id_jag, "ID-JAGs are off unless enabled");
    }

    #[test]
    fn id_jag_needs_an_issuer_identifier() {
        let with = |issuer: &str| {
            let section = OidcSection {
                issuer: issuer.into(),
                id_jag: Some(true),
                ..section()
            };
            OidcProvider::from_section(3, &section, Path::new("/a"))
        };
        assert!(with("https://idp.example").unwrap().id_jag);
        assert!(with("https://idp.example/tenant/v2.0").unwrap().id_jag);
        assert!(with("http://127.0.0.1:9000").unwrap().id_jag);
        for bad in [
            "idp.example",
            "http://idp.example",
            "https://idp.example?x=1",
            "https://idp.example#f",
            "https://u:p@idp.example",
        ] {
            let error = with(bad).unwrap_err();
            assert!(
                error.starts_with("issuer.oidc[3].id_jag: needs `issuer`"),
                "{bad}: {error}"
            );
        }
        // Without id_jag, the issuer stays free-form (some providers' ID tokens carry a bare host).
        let section = OidcSection {
            issuer: "idp.example".into(),
            ..section()
        };
        assert!(!OidcProvider::from_section(0, &section, Path::new("/a")).unwrap().id_jag);
    }

    #[test]
    fn typ_is_a_media_type() {
        assert!(typ_is(Some("oauth-id-jag+jwt"), ID_JAG_TYP));
        assert!(typ_is(Some("OAuth-ID-JAG+JWT"), ID_JAG_TYP));
        assert!(typ_is(Some("application/oauth-id-jag+jwt"), ID_JAG_TYP));
        assert!(typ_is(Some("Application/oauth-id-jag+jwt"), ID_JAG_TYP));
        assert!(!typ_is(None, ID_JAG_TYP));
        assert!(!typ_is(Some("JWT"), ID_JAG_TYP));
        assert!(!typ_is(Some("oauth-id-jag+jwt "), ID_JAG_TYP));
        assert!(!typ_is(Some("text/oauth-id-jag+jwt"), ID_JAG_TYP));
        assert!(!typ_is(Some("application/application/oauth-id-jag+jwt"), ID_JAG_TYP));
        assert!(!typ_is(Some("é"), ID_JAG_TYP));
    }

    #[test]
    fn audience_tolerates_a_slash_after_a_bare_origin_only() {
        let id = "https://aip.example:8443";
        assert!(audience_matches(id, id));
        assert!(audience_matches("https://aip.example:8443/", id));
        assert!(audience_matches(id, "https://aip.example:8443/"));
        assert!(audience_matches("https://aip.example", "https://aip.example/"));
        assert!(!audience_matches("https://aip.example:8443//", id));
        assert!(!audience_matches("https://aip.example:8443/x", id));
        assert!(!audience_matches(
            "https://AIP.example:8443/",
            "https://AIP.example:8443/x"
        ));
        // With a path, only the exact string.
        assert!(audience_matches(
            "https://aip.example/tenant",
            "https://aip.example/tenant"
        ));
        assert!(!audience_matches(
            "https://aip.example/tenant/",
            "https://aip.example/tenant"
        ));
        // Not written as the URL parser writes it: no tolerance.
        assert!(!audience_matches("https://AIP.example/", "https://AIP.example"));
        assert!(!audience_matches("https://aip.example:443/", "https://aip.example:443"));
        assert!(!audience_matches("aip/", "aip"));
        assert!(!audience_matches("", "/"));
    }

    #[test]
    fn scopes_are_space_separated_scope_tokens() {
        let scopes = |v: Value| id_jag_scopes(Some(&v));
        assert_eq!(id_jag_scopes(None).unwrap(), Vec::<String>::new());
        assert_eq!(scopes(json!("")).unwrap(), Vec::<String>::new());
        assert_eq!(
            scopes(json!("read_file  list_directory read_file")).unwrap(),
            vec!["read_file".to_owned(), "list_directory".to_owned()]
        );
        for bad in [
            json!("a\tb"),
            json!("a \"b\""),
            json!("a\\b"),
            json!("é"),
            json!(["a"]),
            json!(1),
        ] {
            assert!(
                matches!(scopes(bad.clone()), Err(OidcError::InvalidClaim("scope"))),
                "{bad}"
            );
        }
        assert!(scopes(json!("a ".repeat(MAX_SCOPE_BYTES / 2 + 1))).is_err());
    }

    #[test]
    fn one_resource_uri() {
        let resource = |v: Value| id_jag_resource(Some(&v));
        assert_eq!(id_jag_resource(None).unwrap(), None);
        let uri = "https://mcp.example/mcp";
        assert_eq!(resource(json!(uri)).unwrap().as_deref(), Some(uri));
        assert_eq!(resource(json!([uri])).unwrap().as_deref(), Some(uri));
        assert_eq!(
            resource(json!("urn:example:tools")).unwrap().as_deref(),
            Some("urn:example:tools")
        );
        assert!(matches!(
            resource(json!([uri, "https://b.example"])),
            Err(OidcError::MultipleResources)
        ));
        assert!(matches!(resource(json!([uri, uri])), Err(OidcError::MultipleResources)));
        for bad in [
            json!([]),
            json!([1]),
            json!(7),
            json!("mcp-server"),
            json!("https://mcp.example/#frag"),
            json!(" https://mcp.example/"),
            json!("https://mcp.example/a b"),
            json!(format!("https://mcp.example/{}", "x".repeat(MAX_RESOURCE_CHARS))),
        ] {
            assert!(
                matches!(resource(bad.clone()), Err(OidcError::InvalidClaim("resource"))),
                "{bad}"
            );
        }
    }

    #[test]
    fn cnf_only_by_jwk_thumbprint() {
        let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
        let cnf = |v: Value| id_jag_cnf_jkt(Some(&v));
        assert_eq!(id_jag_cnf_jkt(None).unwrap(), None);
        assert_eq!(cnf(json!({ "jkt": jkt })).unwrap().as_deref(), Some(jkt));
        assert!(matches!(
            cnf(json!({"x5t#S256": jkt})),
            Err(OidcError::UnsupportedClaim("cnf"))
        ));
        assert!(matches!(
            cnf(json!({"jkt": jkt, "x5t#S256": jkt})),
            Err(OidcError::UnsupportedClaim("cnf"))
        ));
        for bad in [json!({}), json!({"jkt": "short"}), json!({"jkt": 1}), json!(jkt)] {
            assert!(matches!(cnf(bad.clone()), Err(OidcError::InvalidClaim("cnf"))), "{bad}");
        }
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&serde_json::json!(12)), Some(12));
        assert_eq!(numeric_date(&serde_json::json!(12.9)), Some(12));
        assert_eq!(numeric_date(&serde_json::json!("12")), None);
    }

    #[test]
    fn issuer_quote_is_bounded() {
        let long = "x".repeat(1000);
        assert_eq!(quote_issuer(&long).chars().count(), MAX_QUOTED_ISSUER_CHARS + 1);
        assert_eq!(quote_issuer("short"), "short");
    }

    #[test]
    fn oct_keys_are_never_used() {
        let jwks = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"}]}"#;
        let set = KeySet::parse(jwks).unwrap();
        assert!(set.keys.is_empty());
    }
}
