//! The token issuer's OAuth 2.1 face as data: authorization server metadata (RFC 8414), the
//! token endpoint's answers and errors (RFC 6749 §5), introspection (RFC 7662).
//!
//! Requests to these endpoints are form-encoded (`application/x-www-form-urlencoded`), as the
//! standards say, so they have no types here: the parameter names are the constants below.

use aip_aat::secret::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::issuer::TokenFormat;

/// `grant_type` of the client credentials grant (RFC 6749 §4.4).
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// `grant_type` of the JWT bearer grant (RFC 7523 §2.1), which carries an ID-JAG.
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grant_type` of the authorization code grant (RFC 6749 §4.1).
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// `grant_type` of a refresh (RFC 6749 §6).
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// The authorization grant profile of ID-JAGs (`authorization_grant_profiles_supported`).
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// `token_type` of a token bound to a DPoP key (RFC 9449 §5).
pub const TOKEN_TYPE_DPOP: &str = "DPoP";
/// `token_type` of a bearer token (RFC 6750).
pub const TOKEN_TYPE_BEARER: &str = "Bearer";

/// Authorization server metadata (RFC 8414 §2), at `/.well-known/oauth-authorization-server`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthorizationServerMetadata {
    /// The issuer identifier: the authority's public URL, exactly as clients compare it.
    pub issuer: String,
    /// Where a human delegates to an agent (the authorization-code flow).
    pub authorization_endpoint: String,
    /// `POST /oauth/token`.
    pub token_endpoint: String,
    /// `POST /oauth/introspect`.
    pub introspection_endpoint: String,
    /// `POST /oauth/revoke`.
    pub revocation_endpoint: String,
    /// The issuer's signing keys.
    pub jwks_uri: String,
    /// Grant types the token endpoint takes.
    pub grant_types_supported: Vec<String>,
    /// `["code"]`.
    pub response_types_supported: Vec<String>,
    /// `["S256"]`.
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the authorization response carries `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    /// `["private_key_jwt"]`.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms of client assertions.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// How clients authenticate to the introspection endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// How clients authenticate to the revocation endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms of DPoP proofs (RFC 9449 §5.1).
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// Grant profiles (ID-JAG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_grant_profiles_supported: Vec<String>,
    /// Scopes (tool names), where the issuer knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
}

/// A successful token answer (RFC 6749 §5.1); the access token is an AAT.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthTokenResponse {
    /// The AAT.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub access_token: SecretString,
    /// `DPoP` when the request carried a DPoP proof, else `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The tools granted, space-separated.
    pub scope: String,
    /// For the sessions of the authorization-code grant only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub refresh_token: Option<SecretString>,
    /// The form of the AAT, when the request asked for the delegable one (`aat+biscuit`).
    #[serde(default, skip_serializing_if = "TokenFormat::is_jwt")]
    pub token_format: TokenFormat,
}

/// The `error` of an OAuth error answer (RFC 6749 §5.2, RFC 8707 §2, RFC 9449 §5, RFC 7009).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed (unknown, suspended or revoked agent, bad assertion).
    InvalidClient,
    /// The grant (ID-JAG, code, refresh token) is invalid, expired, used or for another client.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// No requested scope can be granted, or a scope is malformed.
    InvalidScope,
    /// The `resource` is missing or unacceptable (RFC 8707).
    InvalidTarget,
    /// The DPoP proof is invalid, replayed or by another key than the client's (RFC 9449).
    InvalidDpopProof,
    /// Revocation of a token type the server does not revoke (RFC 7009 §2.2.1).
    UnsupportedTokenType,
    /// Something failed on the server's side.
    ServerError,
}

impl OAuthErrorCode {
    /// The HTTP status of the answer: 401 for `invalid_client`, 500 for `server_error`, else
    /// 400 (RFC 6749 §5.2).
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::ServerError => 500,
            _ => 400,
        }
    }

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
        }
    }
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthErrorBody {
    /// The code.
    pub error: OAuthErrorCode,
    /// What went wrong, free of internal details.
    pub error_description: String,
}

/// An introspection answer (RFC 7662 §2.2): `{"active": false}`, or `active: true` with the
/// AAT's claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntrospectionResponse {
    /// Whether the token is one this issuer issued and is still good: signed by its key,
    /// unexpired, and neither it nor its session, user or agent revoked.
    pub active: bool,
    /// The granted tools, space-separated, when active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The agent, when active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The AAT's claims (`iss`, `sub`, `aud`, `exp`, `iat`, `jti`, `cnf`, …), when active.
    #[serde(default, flatten)]
    pub claims: Map<String, Value>,
}

impl IntrospectionResponse {
    /// The answer for a token that is not active.
    pub fn inactive() -> Self {
        Self {
            active: false,
            scope: None,
            client_id: None,
            claims: Map::new(),
        }
    }
}
