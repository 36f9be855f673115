//! The issuer's OAuth 2.1 face (docs/architecture.md, "The OAuth face of the issuer"):
//! `POST /oauth/token` for standard OAuth and MCP clients, introspection (RFC 7662) and
//! revocation (RFC 7009).
//!
//! Every client is a registered agent and authenticates with `private_key_jwt` (RFC 7523 §2.2):
//! a client assertion signed by its current registered key, its `jti` used once across
//! replicas. A DPoP proof (RFC 9449) by that same key makes the token `DPoP`; a proof by any
//! other key is refused. The AAT is bound to the agent key (`cnf.jkt`) either way.
//!
//! The grants end where `POST /v1/token`'s do — the same capability intersection, session,
//! group commit, audit records and revocation checks ([`Issuer::start_session`],
//! [`Issuer::refresh`]) — so the two endpoints cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use aip_aat::client_assertion::{ASSERTION_LEEWAY_SECS, CLIENT_ASSERTION_TYPE, ClientAssertion, ClientAssertionError};
use aip_aat::dpop::{DpopRequest, MAX_DPOP_AGE_SECS, verify_dpop_proof};
use aip_aat::ids::AgentId;
use aip_aat::keys::Algorithm;
use aip_aat::token::{AatClaims, AuthMethod, DelegationScope, UnverifiedAat, Validation};
use aip_aat::validate::RevocationView as _;
use aip_api::checks::{check_name, check_tool_names};
use aip_api::issuer::{RequestedCapabilities, TokenFormat, TokenResponse};
use aip_api::oauth::{
    AuthorizationServerMetadata, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER,
    GRANT_REFRESH_TOKEN, ID_JAG_PROFILE, IntrospectionResponse, OAuthErrorCode, OAuthTokenResponse, TOKEN_TYPE_BEARER,
    TOKEN_TYPE_DPOP,
};
use serde_json::Value;

use super::error::IssuerError;
use super::grant::NewSession;
use super::mint::Grant;
use super::refresh::Refresh;
use super::state::Issuer;
use super::tokens::{REFRESH_TOKEN_PREFIX, refresh_key};
use super::users::AuthorizedUser;
use crate::config::MAX_TOKEN_TTL;
use crate::directory::{Caller, DirectoryAgent};
use crate::oidc::{CLOCK_LEEWAY_SECS, OidcError};
use crate::store::{OnceKind, SingleUse};

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";
/// Path of the authorization endpoint.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// Path of the introspection endpoint.
pub const INTROSPECT_PATH: &str = "/oauth/introspect";
/// Path of the revocation endpoint.
pub const REVOKE_PATH: &str = "/oauth/revoke";
/// Path of the authorization server metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The parameters of a form-encoded OAuth request (`application/x-www-form-urlencoded`). A
/// parameter without a value counts as absent and one given twice is refused (RFC 6749 §3.1,
/// §3.2), except `resource`, which RFC 8707 lets repeat (the grants take one).
#[derive(Clone, Debug, Default)]
pub struct OAuthForm {
    params: BTreeMap<String, String>,
    resources: Vec<String>,
    /// `client_assertion`, read once (not verified).
    assertion: Option<Result<ClientAssertion, ClientAssertionError>>,
}

impl OAuthForm {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, IssuerError> {
        if std::str::from_utf8(body).is_err() {
            return Err(invalid_request("the form is not UTF-8"));
        }
        let mut form = Self::default();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if name == "resource" {
                form.resources.push(value.into_owned());
            } else if form.params.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(invalid_request(format!("{name} is given more than once")));
            }
        }
        form.assertion = form.get("client_assertion").map(ClientAssertion::parse);
        Ok(form)
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The client its assertion names, *unverified*: only for keying per-client rate limits
    /// before the request is served.
    pub fn claimed_client(&self) -> Option<String> {
        Some(self.assertion.as_ref()?.as_ref().ok()?.client().to_owned())
    }

    /// The form of AAT asked for (`token_format`, an extension: `aat+jwt` when absent).
    fn token_format(&self) -> Result<TokenFormat, IssuerError> {
        match self.get("token_format") {
            None | Some("aat+jwt") => Ok(TokenFormat::Jwt),
            Some("aat+biscuit") => Ok(TokenFormat::Biscuit),
            Some(_) => Err(invalid_request("token_format must be aat+jwt or aat+biscuit")),
        }
    }

    fn require(&self, name: &str) -> Result<&str, IssuerError> {
        self.get(name)
            .ok_or_else(|| invalid_request(format!("{name} is required")))
    }
}

fn invalid_request(description: impl Into<String>) -> IssuerError {
    IssuerError::oauth(OAuthErrorCode::InvalidRequest, description)
}

fn invalid_client(description: impl Into<String>) -> IssuerError {
    IssuerError::oauth(OAuthErrorCode::InvalidClient, description)
}

/// An agent that authenticated with its client assertion.
pub(crate) struct AuthenticatedClient {
    /// The agent.
    pub(crate) agent: Arc<DirectoryAgent>,
    /// Its assertion's `jti`, to record as used with what the request does.
    pub(crate) assertion: SingleUse,
}

impl Issuer {
    /// The issuer identifier (the authority's public URL) with `path` after it.
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.settings.issuer_id.trim_end_matches('/'))
    }

    /// The authorization server metadata (RFC 8414).
    pub fn oauth_metadata(&self) -> AuthorizationServerMetadata {
        let strings = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        let algorithms = strings(&Algorithm::CLIENT_NAMES);
        let mut grants = vec![GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN];
        if self.settings.authorize.enabled {
            grants.insert(1, GRANT_AUTHORIZATION_CODE);
        }
        let mut profiles = Vec::new();
        if self.oidc.accepts_id_jag() {
            grants.insert(1, GRANT_JWT_BEARER);
            profiles.push(ID_JAG_PROFILE.to_owned());
        }
        AuthorizationServerMetadata {
            issuer: self.settings.issuer_id.clone(),
            authorization_endpoint: self.endpoint(AUTHORIZE_PATH),
            token_endpoint: self.endpoint(TOKEN_PATH),
            introspection_endpoint: self.endpoint(INTROSPECT_PATH),
            revocation_endpoint: self.endpoint(REVOKE_PATH),
            jwks_uri: self.endpoint("/v1/jwks"),
            grant_types_supported: strings(&grants),
            response_types_supported: strings(&["code"]),
            code_challenge_methods_supported: strings(&["S256"]),
            authorization_response_iss_parameter_supported: true,
            token_endpoint_auth_methods_supported: strings(&["private_key_jwt"]),
            token_endpoint_auth_signing_alg_values_supported: algorithms.clone(),
            introspection_endpoint_auth_methods_supported: strings(&["bearer"]),
            revocation_endpoint_auth_methods_supported: strings(&["private_key_jwt", "bearer"]),
            dpop_signing_alg_values_supported: algorithms,
            authorization_grant_profiles_supported: profiles,
            scopes_supported: None,
        }
    }

    /// `POST /oauth/token`: the grant named by `grant_type`, for the client its assertion
    /// authenticates, bound by a DPoP proof when `dpop` (the `DPoP` header) is given.
    pub async fn oauth_token(&self, form: &OAuthForm, dpop: Option<&str>) -> Result<OAuthTokenResponse, IssuerError> {
        let result = self.oauth_token_inner(form, dpop).await;
        match &result {
            Ok((_, grant)) => {
                metrics::counter!("aip_issuer_tokens_issued_total", "grant" => grant.name()).increment(1);
            }
            Err(e) => {
                let (code, _) = e.oauth_error();
                metrics::counter!("aip_issuer_token_denials_total", "error" => code.as_str()).increment(1);
            }
        }
        let (response, _) = result?;
        Ok(OAuthTokenResponse {
            scope: response.capabilities_granted.tools.join(" "),
            access_token: response.aat,
            token_type: if dpop.is_some() {
                TOKEN_TYPE_DPOP
            } else {
                TOKEN_TYPE_BEARER
            }
            .to_owned(),
            expires_in: response.expires_in,
            refresh_token: response.refresh_token,
            token_format: response.token_format,
        })
    }

    async fn oauth_token_inner(
        &self,
        form: &OAuthForm,
        dpop: Option<&str>,
    ) -> Result<(TokenResponse, Grant), IssuerError> {
        let grant = match form.require("grant_type")? {
            GRANT_CLIENT_CREDENTIALS => Grant::ClientCredentials,
            GRANT_JWT_BEARER => Grant::IdentityAssertion,
            GRANT_AUTHORIZATION_CODE => Grant::AuthorizationCode,
            GRANT_REFRESH_TOKEN => Grant::RefreshToken,
            _ => {
                return Err(IssuerError::oauth(
                    OAuthErrorCode::UnsupportedGrantType,
                    "grant_type must be client_credentials, urn:ietf:params:oauth:grant-type:jwt-bearer, \
                     authorization_code or refresh_token",
                ));
            }
        };
        let now = self.clock.now();
        let client = self.authenticate_client(form, now).await?;
        let mut single_use = vec![client.assertion];
        if let Some(proof) = dpop {
            single_use.push(self.check_dpop(proof, &client.agent, now)?);
        }
        let agent = &*client.agent;
        let response = match grant {
            Grant::ClientCredentials => self.client_credentials(form, agent, single_use, now).await?,
            Grant::IdentityAssertion => {
                self.identity_assertion(form, agent, single_use, dpop.is_some(), now)
                    .await?
            }
            Grant::RefreshToken => {
                self.refuse_inactive(agent, grant, "", now).await?;
                let requested = scope(form)?;
                let audience = match form.resources.as_slice() {
                    [] => None,
                    [one] => Some(one.as_str()),
                    _ => return Err(one_resource()),
                };
                let refresh = Refresh {
                    presented: form.require("refresh_token")?,
                    audience,
                    tools: requested.as_ref().map(|r| r.tools.as_slice()),
                    single_use,
                    grant,
                    format: form.token_format()?,
                };
                self.refresh(refresh, agent, now).await?
            }
            Grant::AuthorizationCode if self.settings.authorize.enabled => {
                self.authorization_code(form, agent, single_use, now).await?
            }
            Grant::AuthorizationCode | Grant::Aip(_) => {
                return Err(IssuerError::oauth(
                    OAuthErrorCode::UnsupportedGrantType,
                    "this grant type is not enabled on this issuer",
                ));
            }
        };
        Ok((response, grant))
    }

    /// Authenticates the client by its assertion (`private_key_jwt`): the agent named by `iss`
    /// = `sub` (and `client_id`, when sent), signed by its current registered key, for this
    /// issuer. The agent's status is checked by the grant, which audits the refusal.
    pub(crate) async fn authenticate_client(
        &self,
        form: &OAuthForm,
        now: i64,
    ) -> Result<AuthenticatedClient, IssuerError> {
        match form.get("client_assertion_type") {
            Some(CLIENT_ASSERTION_TYPE) => {}
            Some(_) => {
                return Err(invalid_client(format!(
                    "client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
                )));
            }
            None => {
                return Err(invalid_client(
                    "client authentication is required: private_key_jwt (client_assertion_type and client_assertion)",
                ));
            }
        }
        if form.get("client_secret").is_some() {
            return Err(invalid_client(
                "only private_key_jwt client authentication is accepted; send no client_secret",
            ));
        }
        let assertion = match &form.assertion {
            None => return Err(invalid_client("client_assertion is required")),
            Some(Err(e)) => return Err(invalid_client(e.to_string())),
            Some(Ok(assertion)) => assertion,
        };
        let claimed = assertion.client();
        if form.get("client_id").is_some_and(|id| id != claimed) {
            return Err(invalid_client(
                "client_id is not the client named by the client assertion",
            ));
        }
        let agent_id: AgentId = claimed
            .parse()
            .map_err(|_| invalid_client("the client assertion's iss is not an agent id"))?;
        let agent = match self.registered_agent(&agent_id).await {
            Ok(agent) => agent,
            Err(IssuerError::NotFound(_)) => return Err(invalid_client("no agent is registered with this id")),
            Err(e) => return Err(e),
        };
        let issuer = self.settings.issuer_id.as_str();
        let token_endpoint = self.endpoint(TOKEN_PATH);
        let slashed = format!("{issuer}/");
        let mut audiences = vec![issuer, token_endpoint.as_str()];
        // A bare origin and the same with a trailing slash name one server (RFC 3986 §6.2.3);
        // clients that keep the issuer as a parsed URL send the latter.
        if is_bare_origin(issuer) {
            audiences.push(&slashed);
        }
        let claims = assertion
            .verify(&agent.public_key, &audiences, now)
            .map_err(|e| invalid_client(e.to_string()))?;
        let assertion = SingleUse::of(
            OnceKind::ClientAssertion,
            &[agent.agent_id.as_str(), &claims.jti],
            claims.exp.saturating_add(ASSERTION_LEEWAY_SECS),
        );
        Ok(AuthenticatedClient { agent, assertion })
    }

    /// Checks a DPoP proof of a token request: valid for this endpoint, and by the agent's own
    /// registered key, since the AAT will be bound to that key.
    fn check_dpop(&self, proof: &str, agent: &DirectoryAgent, now: i64) -> Result<SingleUse, IssuerError> {
        let invalid = |m: String| IssuerError::oauth(OAuthErrorCode::InvalidDpopProof, m);
        let uri = self.endpoint(TOKEN_PATH);
        let request = DpopRequest {
            method: "POST",
            uri: &uri,
            access_token: None,
        };
        let verified = verify_dpop_proof(proof, &request, now).map_err(|e| invalid(e.to_string()))?;
        if &verified.jkt != agent.public_key.thumbprint() {
            return Err(invalid(
                "the DPoP proof is signed by another key than the agent's registered key".into(),
            ));
        }
        Ok(SingleUse::of(
            OnceKind::DpopProof,
            &[verified.jkt.as_str(), &verified.claims.jti],
            verified.claims.iat.saturating_add(MAX_DPOP_AGE_SECS),
        ))
    }

    /// `client_credentials` (RFC 6749 §4.4): an autonomous AAT for the agent, as the
    /// `agent_attestation` grant gives; no refresh token (§4.4.3).
    async fn client_credentials(
        &self,
        form: &OAuthForm,
        agent: &DirectoryAgent,
        single_use: Vec<SingleUse>,
        now: i64,
    ) -> Result<TokenResponse, IssuerError> {
        let grant = Grant::ClientCredentials;
        let audience = resource(form)?;
        let requested = scope(form)?;
        self.refuse_inactive(agent, grant, &audience, now).await?;
        if !agent.autonomous {
            return Err(self
                .deny_oauth(
                    agent,
                    grant,
                    &audience,
                    OAuthErrorCode::UnauthorizedClient,
                    "client_credentials is only for agents registered as autonomous; an agent acting for a user \
                     uses the authorization code or an identity assertion grant"
                        .into(),
                    now,
                )
                .await);
        }
        self.start_session(NewSession {
            format: form.token_format()?,
            agent,
            audience: &audience,
            user: None,
            requested: requested.as_ref(),
            single_use,
            refresh: false,
            grant,
            now,
        })
        .await
    }

    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` with an Identity Assertion Authorization
    /// Grant (ID-JAG) of a trusted IdP (`assertion`): a user-bound AAT for the agent the grant
    /// was issued to, its audience the grant's `resource`, its tools what the request asks
    /// (within the grant's scopes) ∩ the agent's ∩ what the IdP's users may delegate. No
    /// refresh token: the IdP issues a new grant instead.
    async fn identity_assertion(
        &self,
        form: &OAuthForm,
        agent: &DirectoryAgent,
        mut single_use: Vec<SingleUse>,
        dpop: bool,
        now: i64,
    ) -> Result<TokenResponse, IssuerError> {
        let grant = Grant::IdentityAssertion;
        let assertion = form.require("assertion")?;
        let requested = scope(form)?;
        let id_jag = match self.oidc.verify_id_jag(assertion, &self.settings.issuer_id, now).await {
            Ok(id_jag) => id_jag,
            Err(OidcError::JwksUnavailable) => {
                tracing::warn!("identity provider keys unavailable for an identity assertion grant");
                return Err(IssuerError::oauth(
                    OAuthErrorCode::InvalidGrant,
                    "the identity provider's keys are unavailable; try again",
                ));
            }
            Err(e) => {
                let description = format!("the identity assertion grant was refused: {e}");
                return Err(self
                    .deny_oauth(agent, grant, "", OAuthErrorCode::InvalidGrant, description, now)
                    .await);
            }
        };
        let audience = match (&id_jag.resource, form.resources.as_slice()) {
            (_, [_, _, ..]) => return Err(one_resource()),
            (Some(granted), []) => check_resource(granted)?,
            (Some(granted), [asked]) if asked == granted => check_resource(granted)?,
            (Some(_), [_]) => {
                return Err(IssuerError::oauth(
                    OAuthErrorCode::InvalidTarget,
                    "resource is not the resource the grant names",
                ));
            }
            (None, _) => resource(form)?,
        };
        let refuse = |description: &str| {
            self.deny_oauth(
                agent,
                grant,
                &audience,
                OAuthErrorCode::InvalidGrant,
                description.into(),
                now,
            )
        };
        if id_jag.client_id != agent.agent_id.as_str() {
            return Err(refuse("the grant was issued to another client").await);
        }
        if let Some(bound) = &id_jag.cnf_jkt
            && (!dpop || bound != agent.public_key.thumbprint().as_str())
        {
            return Err(refuse("the grant is bound to a key: redeem it with a DPoP proof by that key").await);
        }
        self.refuse_inactive(agent, grant, &audience, now).await?;
        // What the request asks for, within what the grant names; never more than the grant.
        let tools = match (requested, id_jag.scopes.is_empty()) {
            (Some(asked), false) => Some(
                asked
                    .tools
                    .into_iter()
                    .filter(|tool| id_jag.scopes.contains(tool))
                    .collect(),
            ),
            (Some(asked), true) => Some(asked.tools),
            (None, false) => Some(id_jag.scopes.clone()),
            (None, true) => None,
        };
        let requested = tools.map(|tools| RequestedCapabilities {
            tools,
            ..RequestedCapabilities::default()
        });
        single_use.push(SingleUse::of(
            OnceKind::IdentityGrant,
            &[&id_jag.issuer, &id_jag.jti],
            id_jag.exp.saturating_add(CLOCK_LEEWAY_SECS),
        ));
        let user = AuthorizedUser {
            user_id: id_jag.user_id,
            method: AuthMethod::Oidc,
            auth_time: id_jag.auth_time,
            tools: id_jag.delegatable_tools,
            scope: DelegationScope::Tools,
        };
        self.start_session(NewSession {
            format: form.token_format()?,
            agent,
            audience: &audience,
            user: Some(user),
            requested: requested.as_ref(),
            single_use,
            refresh: false,
            grant,
            now,
        })
        .await
    }

    /// `authorization_code` (RFC 6749 §4.1.3, RFC 7636): the code `/oauth/authorize` gave the
    /// agent, redeemed by that agent with the PKCE verifier and the same `redirect_uri`, once →
    /// the user-bound AAT the person consented to, and a refresh token.
    async fn authorization_code(
        &self,
        form: &OAuthForm,
        agent: &DirectoryAgent,
        mut single_use: Vec<SingleUse>,
        now: i64,
    ) -> Result<TokenResponse, IssuerError> {
        let grant = Grant::AuthorizationCode;
        let code = form.require("code")?;
        let redirect_uri = form.require("redirect_uri")?;
        let verifier = form.require("code_verifier")?;
        let redeemed = self
            .redeem_code(agent, code, redirect_uri, verifier, now)
            .await
            .map_err(|e| IssuerError::oauth(OAuthErrorCode::InvalidGrant, e.oauth_error().1))?;
        match form.resources.as_slice() {
            [] => {}
            [asked] if *asked == redeemed.audience => {}
            [_] => {
                return Err(IssuerError::oauth(
                    OAuthErrorCode::InvalidTarget,
                    "resource is not the resource the code was issued for",
                ));
            }
            _ => return Err(one_resource()),
        }
        self.refuse_inactive(agent, grant, &redeemed.audience, now).await?;
        single_use.push(SingleUse::of(
            OnceKind::AuthorizationCode,
            &[&redeemed.single_use.id],
            redeemed.single_use.expires_at,
        ));
        let requested = RequestedCapabilities {
            tools: redeemed.tools,
            ..RequestedCapabilities::default()
        };
        self.start_session(NewSession {
            format: form.token_format()?,
            agent,
            audience: &redeemed.audience,
            user: Some(redeemed.user),
            requested: Some(&requested),
            single_use,
            refresh: true,
            grant,
            now,
        })
        .await
    }

    /// `POST /oauth/introspect` (RFC 7662), for a reader or admin: whether `token` (an AAT or
    /// a refresh token of this issuer) is active, and its claims when it is.
    pub async fn introspect(&self, _caller: &Caller, token: &str) -> Result<IntrospectionResponse, IssuerError> {
        let now = self.clock.now();
        if token.starts_with(REFRESH_TOKEN_PREFIX) {
            return self.introspect_refresh_token(token, now).await;
        }
        let Some(claims) = self.live_aat(token).await? else {
            return Ok(IntrospectionResponse::inactive());
        };
        let Value::Object(map) = serde_json::to_value(&claims).map_err(IssuerError::internal)? else {
            return Err(IssuerError::internal(aip_db::DbError::Corrupt("AAT claims")));
        };
        Ok(IntrospectionResponse {
            active: true,
            scope: Some(claims.capabilities.tools.join(" ")),
            client_id: Some(claims.agent.id.to_string()),
            claims: map,
        })
    }

    /// The claims of `token` if it is an AAT this issuer signed that is still good: unexpired,
    /// neither it nor its user, session or agent revoked, its agent active and holding the key
    /// the token is bound to.
    async fn live_aat(&self, token: &str) -> Result<Option<AatClaims>, IssuerError> {
        let Ok(unverified) = UnverifiedAat::parse(token) else {
            return Ok(None);
        };
        let Some(audience) = unverified
            .claimed_audience()
            .and_then(|aud| aud.as_slice().first().cloned())
        else {
            return Ok(None);
        };
        let validation = Validation::new(audience)
            .with_trusted_issuers([self.settings.issuer_id.clone()])
            .with_max_lifetime(u64::try_from(MAX_TOKEN_TTL).unwrap_or(u64::MAX));
        let Ok(verified) = unverified.verify(&*self.keys, &*self.clock, &validation) else {
            return Ok(None);
        };
        let now = self.clock.now();
        let revocations = self.directory.revocations().await?;
        if verified.check_revocation(&*revocations, now).is_err() {
            return Ok(None);
        }
        let claims = verified.claims();
        let Some(agent) = self.directory.agent(&claims.agent.id).await? else {
            return Ok(None);
        };
        let bound = claims.confirmation_thumbprint();
        let key_held = agent.public_key.thumbprint() == bound
            || revocations
                .key_valid_until(&claims.agent.id, bound)
                .is_some_and(|until| now <= until);
        if agent.status != aip_aat::aid::AgentStatus::Active || !key_held {
            return Ok(None);
        }
        Ok(Some(claims.clone()))
    }

    async fn introspect_refresh_token(&self, token: &str, now: i64) -> Result<IntrospectionResponse, IssuerError> {
        let Some(lookup) = self.store.refresh_token(&refresh_key(token)).await? else {
            return Ok(IntrospectionResponse::inactive());
        };
        let session = lookup.session;
        let live = lookup.used_at.is_none() && session.revoked_at.is_none() && now < session.expires_at;
        let agent = self.directory.agent(&session.agent_id).await?;
        let revoked_user = match &session.user_id {
            Some(user) => self
                .directory
                .revocations()
                .await?
                .user_revoked_at(user)
                .is_some_and(|at| session.created_at <= at),
            None => false,
        };
        let agent_active = agent.is_some_and(|a| a.status == aip_aat::aid::AgentStatus::Active);
        if !live || !agent_active || revoked_user {
            return Ok(IntrospectionResponse::inactive());
        }
        let tools = serde_json::from_str::<aip_aat::token::Capabilities>(&session.capabilities)
            .map(|c| c.tools.join(" "))
            .map_err(|_| IssuerError::internal(aip_db::DbError::Corrupt("session capabilities")))?;
        let mut claims = serde_json::Map::new();
        claims.insert("token_type".into(), "refresh_token".into());
        claims.insert("sub".into(), session.agent_id.to_string().into());
        claims.insert("aud".into(), session.audience.clone().into());
        claims.insert("exp".into(), session.expires_at.into());
        claims.insert("iat".into(), session.created_at.into());
        claims.insert("iss".into(), self.settings.issuer_id.clone().into());
        if let Some(user) = &session.user_id {
            claims.insert("username".into(), user.clone().into());
        }
        Ok(IntrospectionResponse {
            active: true,
            scope: Some(tools),
            client_id: Some(session.agent_id.to_string()),
            claims,
        })
    }

    /// `POST /oauth/revoke` (RFC 7009): an agent revokes its own AAT or refresh token (a
    /// refresh token ends its session, with the AATs of it), authenticated by its client
    /// assertion; an admin (`admin`) revokes any. A token that is not valid, or already
    /// expired, is answered as revoked: there is nothing left to revoke.
    pub async fn oauth_revoke(&self, form: &OAuthForm, admin: Option<&Caller>) -> Result<(), IssuerError> {
        let token = form.require("token")?;
        let now = self.clock.now();
        let (actor, client) = match admin {
            Some(caller) => (caller.actor(), None),
            None => {
                let client = self.authenticate_client(form, now).await?;
                if !self.store.use_once(&client.assertion).await? {
                    return Err(invalid_client("the client assertion was already used"));
                }
                (format!("agent:{}", client.agent.agent_id), Some(client.agent))
            }
        };
        let not_theirs = || {
            IssuerError::oauth(
                OAuthErrorCode::UnauthorizedClient,
                "the token was not issued to this client",
            )
        };
        if token.starts_with(REFRESH_TOKEN_PREFIX) {
            let Some(lookup) = self.store.refresh_token(&refresh_key(token)).await? else {
                return Ok(());
            };
            let session = lookup.session;
            if client.as_ref().is_some_and(|agent| agent.agent_id != session.agent_id) {
                return Err(not_theirs());
            }
            if session.revoked_at.is_none() {
                self.revoke_session_as(&actor, &session.session_id, "revoked by its client")
                    .await?;
            }
            return Ok(());
        }
        let Some(claims) = self.live_aat(token).await? else {
            return Ok(());
        };
        if client.as_ref().is_some_and(|agent| agent.agent_id != claims.agent.id) {
            return Err(not_theirs());
        }
        self.revoke_jti_as(&actor, claims.jti.as_str(), Some("revoked by its client"))
            .await?;
        Ok(())
    }
}

/// The AAT's audience: the one `resource` (RFC 8707), an absolute URI without a fragment.
fn resource(form: &OAuthForm) -> Result<String, IssuerError> {
    let invalid = |m: String| IssuerError::oauth(OAuthErrorCode::InvalidTarget, m);
    match form.resources.as_slice() {
        [] => Err(invalid(
            "resource is required: the URI of the server the token is for (RFC 8707)".into(),
        )),
        [one] => check_resource(one),
        _ => Err(one_resource()),
    }
}

/// A resource fit to be an AAT's audience: an absolute URI without a fragment.
fn check_resource(value: &str) -> Result<String, IssuerError> {
    let invalid = |m: String| IssuerError::oauth(OAuthErrorCode::InvalidTarget, m);
    check_name("resource", value, 256).map_err(invalid)?;
    if !is_absolute_uri(value) || value.contains('#') {
        return Err(invalid("resource must be an absolute URI without a fragment".into()));
    }
    Ok(value.to_owned())
}

fn one_resource() -> IssuerError {
    IssuerError::oauth(
        OAuthErrorCode::InvalidTarget,
        "give one resource: an AAT has one audience",
    )
}

/// `scope`: space-separated tool names (RFC 6749 §3.3); `None` asks for every tool the agent
/// is registered for.
fn scope(form: &OAuthForm) -> Result<Option<RequestedCapabilities>, IssuerError> {
    let Some(scope) = form.get("scope") else {
        return Ok(None);
    };
    let tools: Vec<String> = scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    check_tool_names("scope", &tools).map_err(|m| IssuerError::oauth(OAuthErrorCode::InvalidScope, m))?;
    if tools.is_empty() {
        return Ok(None);
    }
    Ok(Some(RequestedCapabilities {
        tools,
        ..RequestedCapabilities::default()
    }))
}

/// RFC 3986 §4.3: a scheme (a letter, then letters, digits, `+`, `-`, `.`), `:`, and more.
fn is_absolute_uri(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !value.chars().any(char::is_whitespace)
}

/// `scheme://authority` with no path.
fn is_bare_origin(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_refuse_repeated_parameters_but_not_resources() {
        let form =
            OAuthForm::parse(b"grant_type=client_credentials&scope=a+b&resource=x:1&resource=x:2&empty=").unwrap();
        assert_eq!(form.get("scope"), Some("a b"));
        assert_eq!(form.get("empty"), None);
        assert_eq!(form.resources.len(), 2);
        let e = OAuthForm::parse(b"scope=a&scope=b").unwrap_err();
        assert_eq!(e.oauth_error().0, OAuthErrorCode::InvalidRequest);
        assert!(
            OAuthForm::parse(b"scope=%FF").is_ok(),
            "percent-decoded bytes are decoded lossily"
        );
        assert!(OAuthForm::parse(&[0xff]).is_err());
    }

    #[test]
    fn resources_are_one_absolute_uri() {
        let form = |body: &str| OAuthForm::parse(body.as_bytes()).unwrap();
        assert_eq!(
            resource(&form("resource=https%3A%2F%2Fmcp.example%2Fmcp")).unwrap(),
            "https://mcp.example/mcp"
        );
        assert_eq!(resource(&form("resource=urn:aip:files")).unwrap(), "urn:aip:files");
        for bad in [
            "",
            "resource=files-proxy",
            "resource=https://a/%23frag",
            "resource=a:1&resource=b:2",
        ] {
            assert_eq!(
                resource(&form(bad)).unwrap_err().oauth_error().0,
                OAuthErrorCode::InvalidTarget,
                "{bad}"
            );
        }
    }

    #[test]
    fn scopes_are_tool_names() {
        let form = |body: &str| OAuthForm::parse(body.as_bytes()).unwrap();
        assert_eq!(
            scope(&form("scope=read_file+write_file")).unwrap().unwrap().tools,
            ["read_file", "write_file"]
        );
        assert!(scope(&form("")).unwrap().is_none());
        assert_eq!(
            scope(&form("scope=a%22b")).unwrap_err().oauth_error().0,
            OAuthErrorCode::InvalidScope
        );
    }

    #[test]
    fn bare_origins() {
        assert!(is_bare_origin("http://127.0.0.1:8443"));
        assert!(!is_bare_origin("https://example.com/aip"));
    }
}
