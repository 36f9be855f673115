//! `POST /v1/token`: the request's shape, the agent and its proof of possession, then the
//! grant — `agent_authentication` (with a user), `agent_attestation` (autonomous agents) or
//! `aat_refresh`.

use std::net::IpAddr;

use aip_aat::aid::AgentStatus;
use aip_aat::ids::Jti;
use aip_aat::token::{Capabilities, UserBinding};
use aip_api::checks::{check_name, check_tool_names as check_tools};
use aip_api::issuer::{GrantType, TokenErrorCode, TokenRequest, TokenResponse};
use serde_json::json;

use super::capabilities::intersect;
use super::error::{IssuerError, with_details};
use super::mint::{Mint, grant_name};
use super::state::Issuer;
use super::tokens::{new_refresh_token, refresh_key};
use crate::challenge::OpenedChallenge;
use crate::config::CHALLENGE_TTL;
use crate::directory::DirectoryAgent;
use crate::store::{SessionChange, SessionRecord};

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
        let actor = format!("agent:{}", agent.agent_id);
        let request = &request;
        let deny = |code: TokenErrorCode, description: String| {
            self.deny(&agent, request.grant_type, &request.audience, code, description, now)
        };
        match agent.status {
            AgentStatus::Active => {}
            AgentStatus::Suspended => {
                return Err(deny(TokenErrorCode::AgentSuspended, "the agent is suspended".into()).await);
            }
            AgentStatus::Revoked => {
                return Err(deny(TokenErrorCode::AgentRevoked, "the agent is revoked".into()).await);
            }
        }

        if request.grant_type == GrantType::AatRefresh {
            return self.refresh(request, &agent, challenge, now).await;
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

        let user_tools = user.as_ref().map(|u| u.tools.as_slice());
        let (granted, denied) = intersect(request.requested_capabilities.as_ref(), &agent.capabilities, user_tools);
        if granted.is_empty() {
            let e = deny(
                TokenErrorCode::CapabilitiesDenied,
                "no requested capability can be granted".into(),
            )
            .await;
            return Err(with_details(e, json!({"denied_tools": denied})));
        }
        let requested = request.requested_capabilities.as_ref();
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
            audience: request.audience.clone(),
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
        let refresh_token = new_refresh_token(&*self.clock)?;
        let change = SessionChange::New {
            session: session.clone(),
            refresh_digest: refresh_key(refresh_token.expose()),
        };
        self.mint(Mint {
            agent: &agent,
            audience: &request.audience,
            binding,
            capabilities,
            session: &session,
            change,
            challenge,
            refresh_token,
            denied,
            grant: request.grant_type,
            actor,
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
