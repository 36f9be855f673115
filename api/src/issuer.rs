//! Request and response bodies of the token issuer (spec 9.3–9.4; docs/architecture.md, "Token
//! request").
//!
//! Requests are parsed strictly (`deny_unknown_fields`): a misspelt member is an
//! `invalid_request`, not silently ignored. Secrets (API keys, ID tokens, refresh tokens,
//! AATs) are [`SecretString`]s, so `Debug` output and logs never show them.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use aip_aat::challenge::ChallengeProof;
use aip_aat::ids::AgentId;
use aip_aat::secret::SecretString;

/// `POST /v1/challenge` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The agent asking for a challenge.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
}

/// `POST /v1/challenge` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeResponse {
    /// Single-use challenge to sign.
    pub challenge: String,
    /// When the challenge stops being accepted (at most 60 s after issue).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `grant_type` (spec 9.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// Agent proof of possession plus user authorization.
    AgentAuthentication,
    /// Exchange a refresh token for a new AAT in the same session.
    AatRefresh,
    /// Agent proof of possession only, for agents registered as autonomous.
    AgentAttestation,
}

/// The form of an AAT (`token_format`): a JWT, or the delegable biscuit (docs/decisions.md,
/// "Delegation with biscuits").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TokenFormat {
    /// A compact JWS (`aat+jwt`): the default.
    #[default]
    #[serde(rename = "aat+jwt")]
    Jwt,
    /// A biscuit its holder can delegate from (`aat+biscuit`).
    #[serde(rename = "aat+biscuit")]
    Biscuit,
}

impl TokenFormat {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "aat+jwt",
            Self::Biscuit => "aat+biscuit",
        }
    }

    /// Whether it is the default form, `aat+jwt` (left out of bodies).
    pub fn is_jwt(&self) -> bool {
        *self == Self::Jwt
    }
}

/// `user_authorization` (spec 9.3.4). Token-carrying methods put the credential in `token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UserAuthorization {
    /// A user API key (`aip-ca users create`).
    ApiKey {
        /// The key.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        token: SecretString,
    },
    /// An OpenID Connect ID token from a trusted identity provider.
    OidcIdToken {
        /// The compact ID token.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        token: SecretString,
    },
    /// An OAuth 2.0 access token.
    Oauth2Token {
        /// The access token.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        token: SecretString,
    },
    /// The operating-system user of a loopback client.
    LocalUser {
        /// Numeric user id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        /// Login name.
        username: String,
        /// Host name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
    },
}

/// `requested_capabilities`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestedCapabilities {
    /// Tools wanted.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource scopes wanted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_scopes: Vec<String>,
    /// MCP servers the AAT should be valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_servers: Vec<String>,
}

/// `POST /v1/token` body (spec 9.3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The grant.
    pub grant_type: GrantType,
    /// The agent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Signed challenge.
    #[serde(deserialize_with = "aip_aat::json::object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub proof: ChallengeProof,
    /// The authorizing user; required for `agent_authentication`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "aip_aat::json::option_object"
    )]
    pub user_authorization: Option<UserAuthorization>,
    /// Capabilities wanted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "aip_aat::json::option_object"
    )]
    pub requested_capabilities: Option<RequestedCapabilities>,
    /// The proxy or service the AAT is for; required.
    pub audience: String,
    /// The refresh token, for `aat_refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub refresh_token: Option<SecretString>,
    /// The form of the AAT wanted (`aat+jwt` when absent).
    #[serde(default, skip_serializing_if = "TokenFormat::is_jwt")]
    pub token_format: TokenFormat,
}

/// `capabilities_granted`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantedCapabilities {
    /// Tools in the AAT.
    pub tools: Vec<String>,
    /// Resource scopes in the AAT.
    #[serde(default)]
    pub resource_scopes: Vec<String>,
}

/// `capabilities_denied`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeniedCapabilities {
    /// Requested tools left out.
    pub tools: Vec<String>,
    /// Why.
    pub reason: String,
}

/// `POST /v1/token` success response (spec 9.4.1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The AAT.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub aat: SecretString,
    /// The form of the AAT: `aat+jwt`, or `aat+biscuit` when asked for.
    pub token_type: String,
    /// The same, under the name requests use (absent from older authorities: `aat+jwt`).
    #[serde(default)]
    pub token_format: TokenFormat,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Single-use refresh token for the next `aat_refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub refresh_token: Option<SecretString>,
    /// What the AAT grants.
    pub capabilities_granted: GrantedCapabilities,
    /// What was asked for and not granted.
    pub capabilities_denied: DeniedCapabilities,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("capabilities_granted", &self.capabilities_granted)
            .field("capabilities_denied", &self.capabilities_denied)
            .finish_non_exhaustive()
    }
}

/// `error` codes of the token endpoint (spec 9.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenErrorCode {
    /// Malformed request.
    InvalidRequest,
    /// Proof of possession failed.
    InvalidProof,
    /// Agent not registered.
    AgentNotFound,
    /// Agent suspended.
    AgentSuspended,
    /// Agent revoked.
    AgentRevoked,
    /// User authorization failed.
    UserAuthFailed,
    /// Every requested capability was denied.
    CapabilitiesDenied,
    /// The refresh token is unknown, already used, expired, or its session was revoked
    /// (RFC 6749 §5.2; an extension of the spec 9.4.2 list).
    InvalidGrant,
    /// Internal issuer error.
    IssuerError,
}

impl TokenErrorCode {
    /// The HTTP status that goes with the code (spec 9.4.2).
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest | Self::InvalidGrant => 400,
            Self::InvalidProof | Self::UserAuthFailed => 401,
            Self::AgentNotFound => 404,
            Self::AgentSuspended | Self::AgentRevoked | Self::CapabilitiesDenied => 403,
            Self::IssuerError => 500,
        }
    }
}

/// Error body of the token endpoint (spec 9.4.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenErrorResponse {
    /// Machine-readable code.
    pub error: TokenErrorCode,
    /// Human-readable explanation, free of internal details.
    pub error_description: String,
    /// Structured details, when useful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_details: Option<serde_json::Value>,
}

/// `POST /v1/revoke` body (admin): exactly one of `jti`, `session_id`, `user_id`, `agent_id`,
/// `delegation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One AAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A session: its refresh token and every AAT of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// A user: every session and AAT of theirs, and any later token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// An agent: revoked in the registry, with every session and AAT of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub agent_id: Option<AgentId>,
    /// One block of delegable AATs, by its revocation id (hex): every token derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<String>,
    /// Why (published in the revocation list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/revoke` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeResponse {
    /// `aat`, `session`, `user`, `agent` or `delegation`.
    pub revoked: String,
    /// The id revoked.
    pub id: String,
    /// Live AATs now listed as revoked.
    pub tokens: usize,
    /// Sessions ended.
    pub sessions: usize,
    /// The revocation list version that lists them.
    pub revocation_version: u64,
}

/// `POST /v1/users` body (admin): a user who authorizes agents with an API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The user's id (an email address or an opaque id).
    pub user_id: String,
    /// Tools the user may delegate to agents (`*`: any).
    pub delegatable_tools: Vec<String>,
    /// `tools` (default) or `read_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_scope: Option<String>,
}

/// `POST /v1/users` response: the API key is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserResponse {
    /// The user's id.
    pub user_id: String,
    /// The user's API key (`user_authorization` type `api_key`).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub api_key: SecretString,
    /// Tools the user may delegate.
    pub delegatable_tools: Vec<String>,
    /// The delegation scope of the user's AATs.
    pub delegation_scope: String,
}

/// A user, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// The user's id.
    pub user_id: String,
    /// Tools the user may delegate.
    pub delegatable_tools: Vec<String>,
    /// The delegation scope of the user's AATs.
    pub delegation_scope: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Revocation time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `GET /v1/users` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    /// A page of users, in id order.
    pub users: Vec<UserView>,
    /// Pass as `after` for the next page (an opaque cursor); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use aip_aat::keys::{Algorithm, KeyPair};

    #[test]
    fn the_token_format_is_named_only_when_it_is_not_the_default() {
        assert_eq!(serde_json::to_value(TokenFormat::Biscuit).unwrap(), "aat+biscuit");
        assert_eq!(serde_json::to_value(TokenFormat::Jwt).unwrap(), "aat+jwt");
        assert!(serde_json::from_value::<TokenFormat>(serde_json::json!("aat+cbor")).is_err());
        let answer: TokenResponse = serde_json::from_value(serde_json::json!({
            "aat": "x", "token_type": "aat+jwt", "expires_in": 60,
            "capabilities_granted": {"tools": []}, "capabilities_denied": {"tools": [], "reason": ""}
        }))
        .unwrap();
        assert_eq!(answer.token_format, TokenFormat::Jwt, "absent from older authorities");
    }

    #[test]
    fn token_request_wire_form() {
        let agent: AgentId = "ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let request = TokenRequest {
            grant_type: GrantType::AgentAuthentication,
            agent_id: agent.clone(),
            proof: ChallengeProof::create(&key, "c", &agent, 1).unwrap(),
            user_authorization: Some(UserAuthorization::ApiKey {
                token: SecretString::new("k-secret"),
            }),
            requested_capabilities: Some(RequestedCapabilities {
                tools: vec!["read_file".into()],
                ..Default::default()
            }),
            audience: "proxy".into(),
            refresh_token: None,
            token_format: TokenFormat::Jwt,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["grant_type"], "agent_authentication");
        assert_eq!(json["proof"]["type"], "signed_challenge");
        assert_eq!(
            json["user_authorization"],
            serde_json::json!({"type": "api_key", "token": "k-secret"})
        );
        assert!(!format!("{request:?}").contains("k-secret"));
        let back: TokenRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn unknown_members_are_refused() {
        let text = r#"{"agent_id":"ag_550e8400-e29b-41d4-a716-446655440000","extra":1}"#;
        assert!(serde_json::from_str::<ChallengeRequest>(text).is_err());
        let nested = r#"{"type":"api_key","token":"k","scope":"all"}"#;
        assert!(serde_json::from_str::<UserAuthorization>(nested).is_err());
        let local = r#"{"type":"local_user","username":"dev","uid":501}"#;
        assert!(matches!(
            serde_json::from_str(local),
            Ok(UserAuthorization::LocalUser { uid: Some(501), .. })
        ));
    }

    #[test]
    fn error_statuses() {
        assert_eq!(TokenErrorCode::InvalidProof.http_status(), 401);
        assert_eq!(TokenErrorCode::AgentSuspended.http_status(), 403);
        assert_eq!(
            serde_json::to_string(&TokenErrorCode::UserAuthFailed).unwrap(),
            "\"user_auth_failed\""
        );
    }
}
