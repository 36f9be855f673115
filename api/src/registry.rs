//! Request and response bodies of the registry's HTTP API, shared by the server and clients,
//! and the signed request bodies an agent key makes (registration, rotation, renewal).
//! Requests are strict: unknown members and non-object JSON are refused, in nested objects
//! (`metadata`, public keys) as at the top level.

use aip_aat::aid::{AgentIdentityDocument, AgentStatus, AidMetadata};
use aip_aat::ids::{AgentId, KeyId};
use aip_aat::keys::{Jwk, SignError, Signer};
use aip_aat::request_proof::add_request_proof;
use aip_aat::secret::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What an access token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read agents and revocation data (proxies, dashboards).
    Reader,
}

impl Role {
    /// `admin` or `reader`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "admin" => Some(Self::Admin),
            "reader" => Some(Self::Reader),
            _ => None,
        }
    }
}

/// The status operations of the API: `POST /v1/agents/{id}/{verb}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    /// `suspend`.
    Suspend,
    /// `reactivate`.
    Reactivate,
    /// `revoke` (and `DELETE /v1/agents/{id}`).
    Revoke,
}

impl StatusKind {
    /// The last segment of the endpoint's path.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Reactivate => "reactivate",
            Self::Revoke => "revoke",
        }
    }
}

/// `POST /v1/agents` body for `key`: `fields` (name, capabilities, …) plus the public key and
/// a request proof by `key`.
pub fn registration_body(
    key: &dyn Signer,
    mut fields: serde_json::Value,
    now: i64,
) -> Result<serde_json::Value, SignError> {
    fields["public_key"] = serde_json::to_value(key.public_key().to_jwk()).map_err(SignError::backend)?;
    add_request_proof(key, "POST", "/v1/agents", &mut fields, "proof", &["proof"], now)?;
    Ok(fields)
}

/// `POST /v1/agents/{id}/rotate-key` body: the new key proves possession over the body without
/// both proofs, the current key signs the body without its own proof.
pub fn rotation_body(
    current: &dyn Signer,
    new: &dyn Signer,
    agent_id: &AgentId,
    now: i64,
) -> Result<serde_json::Value, SignError> {
    let path = format!("/v1/agents/{agent_id}/rotate-key");
    let mut body = serde_json::json!({
        "new_public_key": serde_json::to_value(new.public_key().to_jwk()).map_err(SignError::backend)?,
    });
    add_request_proof(
        new,
        "POST",
        &path,
        &mut body,
        "new_key_proof",
        &["proof", "new_key_proof"],
        now,
    )?;
    add_request_proof(current, "POST", &path, &mut body, "proof", &["proof"], now)?;
    Ok(body)
}

/// `POST /v1/agents/{id}/certificate` body, with a proof by the current key.
pub fn renewal_body(key: &dyn Signer, agent_id: &AgentId, now: i64) -> Result<serde_json::Value, SignError> {
    let mut body = serde_json::json!({});
    add_request_proof(
        key,
        "POST",
        &format!("/v1/agents/{agent_id}/certificate"),
        &mut body,
        "proof",
        &["proof"],
        now,
    )?;
    Ok(body)
}

/// `POST /v1/agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    /// Display name (1–128 characters).
    pub name: String,
    /// What the agent does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The agent's public key (OKP/Ed25519 or EC/P-256 JWK).
    #[serde(deserialize_with = "aip_aat::keys::strict_jwk")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub public_key: Jwk,
    /// Platform, version, owner, tags.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "aip_aat::json::option_object"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<AidMetadata>,
    /// Tools the agent may ever be granted (the issuer intersects AAT capabilities with these).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Whether the agent may obtain AATs without a user (the `agent_attestation` grant).
    #[serde(default)]
    pub autonomous: bool,
    /// Request proof signed by the key being registered.
    pub proof: String,
}

/// `POST /v1/agents` response (spec 8.3.1, plus the certificate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterAgentResponse {
    /// The new agent's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Its attested identity document.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub aid: AgentIdentityDocument,
    /// Its certificate (PEM).
    pub certificate: String,
    /// Its certificate followed by the issuing CA certificate (PEM).
    pub certificate_chain: String,
    /// When the registration token used expires, if one was used.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub registration_token_expires_at: Option<OffsetDateTime>,
}

/// A key an agent held before a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviousKeyView {
    /// Its thumbprint.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub thumbprint: KeyId,
    /// End of its grace period.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
}

/// A certificate issued to an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateView {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Thumbprint of the certified key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key_thumbprint: KeyId,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// `valid`, `on_hold`, `revoked`, `superseded` or `expired`.
    pub state: String,
}

/// `GET /v1/agents/{id}` (spec 8.3.2, with registry details).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentResponse {
    /// The agent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Status.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: AgentStatus,
    /// Attested identity document.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub aid: AgentIdentityDocument,
    /// Current public key.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub public_key: Jwk,
    /// Thumbprint of the current key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub public_key_thumbprint: KeyId,
    /// Tools the agent may ever be granted.
    pub capabilities: Vec<String>,
    /// Whether it may obtain AATs without a user.
    pub autonomous: bool,
    /// Why it was last suspended or revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When its status last changed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub status_changed_at: Option<OffsetDateTime>,
    /// Rotated-out keys still inside their grace period.
    pub previous_keys: Vec<PreviousKeyView>,
    /// Certificates issued to it, newest first.
    pub certificates: Vec<CertificateView>,
    /// Where `GET /oauth/authorize` may send people back to with a code for it.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// One agent in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSummary {
    /// The agent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Its name.
    pub name: String,
    /// Status.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: AgentStatus,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Registration time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `GET /v1/agents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentList {
    /// A page of agents, in id order.
    pub agents: Vec<AgentSummary>,
    /// Pass as `after` for the next page (an opaque cursor); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub next: Option<AgentId>,
}

/// `POST /v1/agents/{id}/rotate-key` (spec 8.3.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// The new public key.
    #[serde(deserialize_with = "aip_aat::keys::strict_jwk")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub new_public_key: Jwk,
    /// Request proof by the new key (over the body without both proofs).
    pub new_key_proof: String,
    /// Request proof by the current key (over the body without `proof`).
    pub proof: String,
}

/// `POST /v1/agents/{id}/certificate`: renew with proof of possession of the current key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewCertificateRequest {
    /// Request proof by the current key.
    pub proof: String,
}

/// A newly issued agent certificate (renewal and rotation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateResponse {
    /// The agent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Its (re-)attested identity document.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub aid: AgentIdentityDocument,
    /// Serial of the new certificate.
    pub serial: String,
    /// The certificate (PEM).
    pub certificate: String,
    /// The certificate and the issuing CA certificate (PEM).
    pub certificate_chain: String,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// After a rotation: until when the previous key stays valid.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub previous_key_valid_until: Option<OffsetDateTime>,
}

/// `POST /v1/agents/{id}/suspend|reactivate|revoke` (body optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// Why (recorded, published in the revocation list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For revocation: the CRL reason (`unspecified`, `key_compromise`, `affiliation_changed`,
    /// `superseded`, `cessation_of_operation`, `privilege_withdrawn`); default
    /// `cessation_of_operation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_reason: Option<String>,
}

/// `PUT /v1/agents/{id}/redirect-uris` (admin): the agent's redirect URIs, replacing those
/// registered before (an empty list removes them all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedirectUrisRequest {
    /// Absolute `https` URIs, or `http` on a loopback host; no fragment; at most 10.
    pub redirect_uris: Vec<String>,
}

/// The redirect URIs an agent has now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedirectUrisResponse {
    /// The agent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Its redirect URIs.
    pub redirect_uris: Vec<String>,
}

/// Result of a status change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    /// The agent.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent_id: AgentId,
    /// Status now.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: AgentStatus,
    /// Status before.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub previous_status: AgentStatus,
    /// The revocation list version that publishes the change.
    pub revocation_version: u64,
}

/// `POST /v1/registration-tokens` (admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRegistrationTokenRequest {
    /// How many registrations it allows (1–10 000).
    pub uses: u32,
    /// Lifetime in seconds (60 s – 30 days).
    pub expires_in: u64,
    /// A label for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A new registration token; the token is shown only here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationTokenResponse {
    /// The token (send as `Authorization: Bearer`).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: SecretString,
    /// Its public id (appears in the audit log).
    pub token_id: String,
    /// Registrations it allows.
    pub uses: u32,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `POST /v1/access-tokens` (admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAccessTokenRequest {
    /// `admin` or `reader`.
    pub role: String,
    /// A label for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Lifetime in seconds (60 s – 10 years); without it the token does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A new access token; the token is shown only here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessTokenResponse {
    /// The token (send as `Authorization: Bearer`).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: SecretString,
    /// Its public id.
    pub token_id: String,
    /// `admin` or `reader`.
    pub role: String,
    /// Expiry, when it has one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// An access token as listed and as revoked: never the token or its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessTokenEntry {
    /// Its public id.
    pub token_id: String,
    /// `admin` or `reader`.
    pub role: String,
    /// A label for people.
    pub label: Option<String>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires (`null`: never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last used, to the minute (`null`: not yet).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked (`null`: it was not).
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `GET /v1/access-tokens` (admin): every access token, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessTokenList {
    /// The tokens.
    pub access_tokens: Vec<AccessTokenEntry>,
}

/// A registration token as listed and as revoked: never the token or its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationTokenEntry {
    /// Its public id.
    pub token_id: String,
    /// A label for people.
    pub label: Option<String>,
    /// Registrations it still allows.
    pub uses_remaining: u64,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it last registered an agent (`null`: never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked (`null`: it was not).
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// `GET /v1/registration-tokens` (admin): every registration token, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationTokenList {
    /// The tokens.
    pub registration_tokens: Vec<RegistrationTokenEntry>,
}

/// `GET /.well-known/aip-configuration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Discovery {
    /// Registry identifier.
    pub registry_id: String,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Agent registration and lookup.
    pub agents_endpoint: String,
    /// Registry (and issuer) keys.
    pub jwks_uri: String,
    /// X.509 CRL (DER; `.pem` for PEM).
    pub crl_uri: String,
    /// Revocation list (JSON).
    pub revocations_uri: String,
    /// Signed revocation list (JWS).
    pub revocations_jws_uri: String,
    /// Revocation events (Server-Sent Events).
    pub revocations_stream_uri: String,
    /// Signature algorithms in use.
    pub algorithms: Vec<String>,
    /// AID version.
    pub aid_version: String,
    /// The token issuer served beside the registry, when there is one.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    // `aip-ca serve` always serves the issuer beside the registry.
    #[cfg_attr(feature = "openapi", schema(value_type = IssuerEndpoints))]
    pub issuer: Option<IssuerEndpoints>,
}

/// The token issuer's part of the discovery document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuerEndpoints {
    /// The `iss` of the AATs it issues.
    pub issuer: String,
    /// `POST` a challenge request.
    pub challenge_endpoint: String,
    /// `POST` a token request.
    pub token_endpoint: String,
    /// `POST` a revocation (admin).
    pub revocation_endpoint: String,
    /// The issuer's OAuth authorization server metadata (RFC 8414), for standard OAuth clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_authorization_server: Option<String>,
}

/// One token, session or delegation in [`PublishRevocationsRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokedEntryBody {
    /// The `jti`, session id or revocation id.
    pub id: String,
    /// When the last token it covers expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// `POST /v1/revocations` (admin): how a token issuer running apart from the registry
/// publishes the tokens, sessions and users it revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishRevocationsRequest {
    /// What was revoked, for the event and the audit log (`user:<id>`, `session:<id>`, …).
    pub subject: String,
    /// AATs.
    #[serde(default)]
    pub tokens: Vec<RevokedEntryBody>,
    /// Sessions.
    #[serde(default)]
    pub sessions: Vec<RevokedEntryBody>,
    /// Users.
    #[serde(default)]
    pub users: Vec<String>,
    /// Blocks of delegable AATs, by revocation id (lowercase hex): every token that carries
    /// one is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegations: Vec<RevokedEntryBody>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PublishRevocationsRequest {
    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.sessions.is_empty() && self.users.is_empty() && self.delegations.is_empty()
    }

    /// How many entries it lists.
    pub fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.users.len() + self.delegations.len()
    }

    /// The event kind that announces them: `user_revoked`, `session_revoked`,
    /// `delegation_revoked` or `aat_revoked`.
    pub fn event_kind(&self) -> &'static str {
        if !self.users.is_empty() {
            "user_revoked"
        } else if !self.sessions.is_empty() {
            "session_revoked"
        } else if !self.delegations.is_empty() {
            "delegation_revoked"
        } else {
            "aat_revoked"
        }
    }
}

/// `POST /v1/revocations` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishRevocationsResponse {
    /// The revocation list version that lists them.
    pub revocation_version: u64,
}

/// `GET /v1/whoami`: the access token presented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// Its id.
    pub token_id: String,
    /// `admin` or `reader`.
    pub role: String,
}
