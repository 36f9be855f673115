//! The `aat_refresh` grant: the session's capabilities (narrowed, never widened), a new AAT and
//! the next refresh token; a refresh token presented twice, or by another agent, ends the
//! session.

use aip_aat::token::{AuthMethod, Capabilities, DelegationScope, UserBinding};
use aip_api::issuer::{GrantType, TokenErrorCode, TokenRequest, TokenResponse};
use aip_db::DbError;

use super::capabilities::allows;
use super::error::IssuerError;
use super::mint::Mint;
use super::state::Issuer;
use super::tokens::{new_refresh_token, refresh_key};
use crate::challenge::OpenedChallenge;
use crate::directory::DirectoryAgent;
use crate::store::SessionChange;

impl Issuer {
    pub(super) async fn refresh(
        &self,
        request: &TokenRequest,
        agent: &DirectoryAgent,
        challenge: OpenedChallenge,
        now: i64,
    ) -> Result<TokenResponse, IssuerError> {
        let invalid = |m: &str| IssuerError::token(TokenErrorCode::InvalidGrant, m);
        let presented = request
            .refresh_token
            .as_ref()
            .map(|t| refresh_key(t.expose()))
            .ok_or_else(|| invalid("aat_refresh needs refresh_token"))?;
        let lookup = self
            .store
            .refresh_token(&presented)
            .await?
            .ok_or_else(|| invalid("the refresh token is not valid"))?;
        let session = lookup.session;
        if lookup.used_at.is_some() || session.agent_id != agent.agent_id {
            // A refresh token presented twice, or by another agent, was stolen: end the session.
            self.end_session(&session.session_id, "refresh token reuse").await;
            return Err(invalid("the refresh token was already used; the session is revoked"));
        }
        if session.revoked_at.is_some() || now >= session.expires_at {
            return Err(invalid("the session was revoked or has ended"));
        }
        if request.audience != session.audience {
            return Err(IssuerError::token(
                TokenErrorCode::InvalidRequest,
                "audience must be the session's audience",
            ));
        }
        let mut capabilities: Capabilities =
            serde_json::from_str(&session.capabilities).map_err(|_| DbError::Corrupt("session capabilities"))?;
        let narrowed: Vec<String> = capabilities
            .tools
            .iter()
            .filter(|t| allows(&agent.capabilities, t))
            .filter(|t| {
                request
                    .requested_capabilities
                    .as_ref()
                    .is_none_or(|r| r.tools.iter().any(|wanted| wanted == *t))
            })
            .cloned()
            .collect();
        // What was asked for and not granted: the requested tools the session does not hold
        // (or the agent lost), or without a request, the session's tools the agent lost.
        let asked = match &request.requested_capabilities {
            Some(requested) => &requested.tools,
            None => &capabilities.tools,
        };
        let denied: Vec<String> = asked.iter().filter(|t| !narrowed.contains(t)).cloned().collect();
        if narrowed.is_empty() {
            return Err(IssuerError::token(
                TokenErrorCode::CapabilitiesDenied,
                "no capability of the session can be granted",
            ));
        }
        capabilities.tools = narrowed;
        let binding = match (&session.user_id, session.auth_time) {
            (Some(user_id), Some(auth_time)) => Some(UserBinding {
                user_id: user_id.clone(),
                auth_method: AuthMethod::from(session.auth_method.as_deref().unwrap_or("api_key")),
                auth_time,
                delegation_scope: session.delegation_scope.as_deref().map(DelegationScope::from),
            }),
            _ => None,
        };
        let refresh_token = new_refresh_token(&*self.clock)?;
        let change = SessionChange::Refresh {
            session_id: session.session_id.clone(),
            presented,
            next: refresh_key(refresh_token.expose()),
        };
        self.mint(Mint {
            agent,
            audience: &request.audience,
            binding,
            capabilities,
            session: &session,
            change,
            challenge,
            refresh_token,
            denied,
            grant: GrantType::AatRefresh,
            actor: format!("agent:{}", agent.agent_id),
            now,
        })
        .await
    }
}
