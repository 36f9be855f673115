//! The forms (`application/x-www-form-urlencoded`) of the OAuth endpoints and of the
//! interactive flow's pages, as the OpenAPI description ([`crate::openapi`]) names them. The
//! handlers read them parameter by parameter ([`crate::service::OAuthForm`], the flow's
//! `Params`); these types say which parameters they read, and nothing builds them.
#![allow(dead_code)]

use utoipa::ToSchema;

/// The form of `POST /oauth/token`. Which members a grant needs is in `grant_type`'s
/// description.
#[derive(ToSchema)]
pub(crate) struct OAuthTokenForm {
    /// `client_credentials`, `urn:ietf:params:oauth:grant-type:jwt-bearer`,
    /// `authorization_code` or `refresh_token`.
    grant_type: String,
    /// The agent id (optional: the assertion's `sub` names it).
    client_id: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    client_assertion_type: String,
    /// The `private_key_jwt` assertion (RFC 7523 §2.2), signed by the agent's registered key,
    /// `aud` = the issuer identifier, single-use `jti`.
    client_assertion: String,
    /// The jwt-bearer grant's Identity Assertion Authorization Grant (ID-JAG).
    assertion: Option<String>,
    /// The authorization code (`authorization_code`).
    code: Option<String>,
    /// The redirect URI the code was sent to (`authorization_code`).
    redirect_uri: Option<String>,
    /// The PKCE verifier (`authorization_code`).
    code_verifier: Option<String>,
    /// The refresh token (`refresh_token`).
    refresh_token: Option<String>,
    /// The AAT's audience (RFC 8707); single.
    resource: Option<String>,
    /// Tool names, space-separated: the capabilities asked for.
    scope: Option<String>,
    /// `aat+jwt` (default) or `aat+biscuit` for the delegable form.
    token_format: Option<String>,
}

/// The form of `POST /oauth/introspect`.
#[derive(ToSchema)]
pub(crate) struct OAuthTokenOnlyForm {
    /// The token to introspect.
    token: String,
}

/// The form of `POST /oauth/revoke` (RFC 7009 §2.1).
#[derive(ToSchema)]
pub(crate) struct OAuthRevokeForm {
    /// The AAT or refresh token to revoke.
    token: String,
    /// `access_token` or `refresh_token` (a hint).
    token_type_hint: Option<String>,
    /// The agent's `private_key_jwt` client authentication, without an admin bearer token.
    client_assertion_type: Option<String>,
    /// The `private_key_jwt` assertion by the agent whose token it is.
    client_assertion: Option<String>,
    /// The agent id.
    client_id: Option<String>,
}

/// The form of `POST /oauth/login`.
#[derive(ToSchema)]
pub(crate) struct AuthorizeLoginForm {
    /// The sealed authorization request the sign-in page carries.
    request: String,
    /// A user API key, to sign in with it (where `api_key_login` is enabled).
    api_key: Option<String>,
    /// The index of the trusted identity provider to sign in at.
    provider: Option<u32>,
}

/// The form of `POST /oauth/consent`.
#[derive(ToSchema)]
pub(crate) struct AuthorizeConsentForm {
    /// The sealed consent the consent page carries.
    consent: String,
    /// `approve` or `deny`.
    decision: String,
}
