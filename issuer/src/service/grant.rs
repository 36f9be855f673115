//! `POST /v1/token`: the request's shape, the agent and its proof of possession, then the
//! grant — `agent_authentication` (with a user), `agent_attestation` (autonomous agents) or
//! `aat_refresh`.

use std::net::IpAddr;

use aip_aat::ids::Jti;
use aip_aat::token::{Capabilities, UserBinding};
use aip_api::checks::{check_name, check_tool_names as check_tools};
use aip_api::issuer::{GrantType, RequestedCapabilities, TokenErrorCode, TokenFormat, TokenRequest, TokenResponse};
use serde_json::json;

use super::capabilities::intersect;
use super::error::{IssuerError, with_details};
use super::mint::{Grant, Mint, grant_name};
use super::refresh::Refresh;
use super::state::Issuer;
use super::tokens::{new_refresh_token, refresh_key};
use super::users::AuthorizedUser;
use crate::challenge::OpenedChallenge;
use crate::config::CHALLENGE_TTL;
use crate::directory::DirectoryAgent;
use crate::store::{SessionChange, SessionRecord, SingleUse};

/// What [`Issuer::start_session`] needs.
pub(super) struct NewSession<'a> {
    pub(super) agent: &'a DirectoryAgent,
    pub(super) audience: &'a str,
    pub(super) user: Option<AuthorizedUser>,
    /// `None` asks for every capability the agent is registered for.
    pub(super) requested: Option<&'a RequestedCapabilities>,
    pub(super) single_use: Vec<SingleUse>,
    /// Whether the grant gives a refresh token.
    pub(super) refresh: bool,
    pub(super) grant: Grant,
    /// The form of the AAT.
    pub(super) format: TokenFormat,
    pub(super) now: i64,
}

impl Issuer {
    /// `POST /v1/token`. `peer` is the client's address, for `local_user`.
    pub async fn token(&self, request: TokenRequest, peer: Option<IpAddr>) -> Result<TokenResponse, IssuerError> {
        let grant = request.grant_type;
        let result = self.token_inner(request, peer).await;
        match &result {
            Ok(_) => metrics::counter!("aip_issuer_tokens_issued_total", "grant" => grant_name(grant)).increment(1),
            Err(e) => {
                let code = serde_json::to_value(e.token_code())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                metrics::counter!("aip_issuer_token_denials_total", "error" => code).increment(1);
            }
        }
        result
    }

    async fn token_inner(&self, request: TokenRequest, peer: Option<IpAddr>) -> Result<TokenResponse, IssuerError> {
        let now = self.clock.now();
        check_name("audience", &request.audience, 256)
            .map_err(|m| IssuerError::token(TokenErrorCode::InvalidRequest, m))?;
        if let Some(requested) = &request.requested_capabilities {
            check_tools("requested_capabilities.tools", &requested.tools)
                .map_err(|m| IssuerError::token(TokenErrorCode::InvalidRequest, m))?;
            for scope in requested.resource_scopes.iter().chain(&requested.allowed_servers) {
                check_name("requested_capabilities", scope, 256)
                    .map_err(|m| IssuerError::token(TokenErrorCode::InvalidRequest, m))?;
            }
        }
        match (
            request.grant_type == GrantType::AatRefresh,
            request.refresh_token.is_some(),
        ) {
            (true, false) => {
                return Err(IssuerError::token(
                    TokenErrorCode::InvalidRequest,
                    "aat_refresh needs refresh_token",
                ));
            }
            (false, true) => {
                return Err(IssuerError::token(
                    TokenErrorCode::InvalidRequest,
                    "refresh_token is only for the aat_refresh grant",
                ));
            }
            _ => {}
        }
        if request.grant_type != GrantType::AgentAuthentication && request.user_authorization.is_some() {
            return Err(IssuerError::token(
                TokenErrorCode::InvalidRequest,
                "user_authorization is only for the agent_authentication grant",
            ));
        }

        let agent = self.registered_agent(&request.agent_id).await?;
        let challenge = self.verify_proof(&request, &agent, now)?;
        let request = &request;
        let grant = Grant::Aip(request.grant_type);
        let deny = |code: TokenErrorCode, description: String| {
            self.deny(&agent, grant, &request.audience, code, description, now)
        };
        self.refuse_inactive(&agent, grant, &request.audience, now).await?;

        if request.grant_type == GrantType::AatRefresh {
            let refresh = Refresh {
                presented: request.refresh_token.as_ref().map(|t| t.expose()).unwrap_or_default(),
                audience: Some(&request.audience),
                tools: request.requested_capabilities.as_ref().map(|r| r.tools.as_slice()),
                single_use: vec![challenge.into()],
                grant,
                format: request.token_format,
            };
            return self.refresh(refresh, &agent, now).await;
        }

        let user = match request.grant_type {
            GrantType::AgentAttestation => {
                if !agent.autonomous {
                    return Err(deny(
                        TokenErrorCode::UserAuthFailed,
                        "agent_attestation is only for agents registered as autonomous; send user_authorization".into(),
                    )
                    .await);
                }
                None
            }
            _ => {
                let Some(authorization) = &request.user_authorization else {
                    return Err(IssuerError::token(
                        TokenErrorCode::InvalidRequest,
                        "agent_authentication needs user_authorization",
                    ));
                };
                match self.authorize_user(authorization, peer, now).await {
                    Ok(user) => Some(user),
                    Err(IssuerError::Token { code, description, .. }) => {
                        return Err(deny(code, description).await);
                    }
                    Err(e) => return Err(e),
                }
            }
        };

        let requested = request.requested_capabilities.as_ref();
        self.start_session(NewSession {
            agent: &agent,
            audience: &request.audience,
            user,
            requested,
            single_use: vec![challenge.into()],
            refresh: true,
            grant,
            format: request.token_format,
            now,
        })
        .await
    }

    /// Starts a session for `s.agent` (and its user): capabilities = requested ∩ agent ∩ user
    /// (refused, and audited, when nothing is left), the session record, and its first AAT with
    /// a refresh token when the grant gives one.
    pub(super) async fn start_session(&self, s: NewSession<'_>) -> Result<TokenResponse, IssuerError> {
        let NewSession {
            agent,
            audience,
            user,
            requested,
            single_use,
            refresh,
            grant,
            format,
            now,
        } = s;
        let user_tools = user.as_ref().map(|u| u.tools.as_slice());
        let (granted, denied) = intersect(requested, &agent.capabilities, user_tools);
        if granted.is_empty() {
            let e = self
                .deny(
                    agent,
                    grant,
                    audience,
                    TokenErrorCode::CapabilitiesDenied,
                    "no requested capability can be granted".into(),
                    now,
                )
                .await;
            return Err(with_details(e, json!({"denied_tools": denied})));
        }
        let capabilities = Capabilities {
            tools: granted,
            resource_scopes: requested.map(|r| r.resource_scopes.clone()).unwrap_or_default(),
            max_calls_per_session: None,
            allowed_servers: requested.map(|r| r.allowed_servers.clone()).unwrap_or_default(),
        };
        let session = SessionRecord {
            session_id: format!(
                "ses_{}",
                Jti::time_ordered(&*self.clock).map_err(IssuerError::internal)?
            ),
            agent_id: agent.agent_id.clone(),
            user_id: user.as_ref().map(|u| u.user_id.clone()),
            auth_method: user.as_ref().map(|u| u.method.to_string()),
            auth_time: user.as_ref().map(|u| u.auth_time),
            delegation_scope: user.as_ref().map(|u| u.scope.to_string()),
            audience: audience.to_owned(),
            capabilities: serde_json::to_string(&capabilities).map_err(IssuerError::internal)?,
            created_at: now,
            expires_at: now + self.settings.session_lifetime,
            revoked_at: None,
        };
        let binding = user.map(|u| UserBinding {
            user_id: u.user_id,
            auth_method: u.method,
            auth_time: u.auth_time,
            delegation_scope: Some(u.scope),
        });
        let refresh_token = refresh.then(|| new_refresh_token(&*self.clock)).transpose()?;
        let change = SessionChange::New {
            session: session.clone(),
            refresh_digest: refresh_token.as_ref().map(|t| refresh_key(t.expose())),
        };
        self.mint(Mint {
            agent,
            audience,
            binding,
            capabilities,
            session: &session,
            change,
            single_use,
            refresh_token,
            denied,
            grant,
            format,
            actor: format!("agent:{}", agent.agent_id),
            now,
        })
        .await
    }

    /// Checks the signed challenge: its shape, time and signature by the agent's current key,
    /// then the challenge itself (issued here, for this agent, unexpired). Single use is
    /// enforced when the token is recorded.
    fn verify_proof(
        &self,
        request: &TokenRequest,
        agent: &DirectoryAgent,
        now: i64,
    ) -> Result<OpenedChallenge, IssuerError> {
        request
            .proof
            .verify(&agent.public_key, &agent.agent_id, now, CHALLENGE_TTL)
            .map_err(|e| IssuerError::token(TokenErrorCode::InvalidProof, e.to_string()))?;
        self.challenges
            .open(&request.proof.challenge, &agent.agent_id, now)
            .map_err(|e| IssuerError::token(TokenErrorCode::InvalidProof, e.to_string()))
    }
}
