//! Refreshes (`aat_refresh` of `/v1/token`, `refresh_token` of `/oauth/token`): the
//! session's capabilities (narrowed, never widened), a new AAT and the next refresh token; a
//! refresh token presented twice, or by another agent, ends the session.

use aip_aat::token::{AuthMethod, Capabilities, DelegationScope, UserBinding};
use aip_api::issuer::{TokenErrorCode, TokenFormat, TokenResponse};
use aip_api::oauth::OAuthErrorCode;
use aip_db::DbError;

use super::capabilities::allows;
use super::error::IssuerError;
use super::mint::{Grant, Mint};
use super::state::Issuer;
use super::tokens::{new_refresh_token, refresh_key};
use crate::directory::DirectoryAgent;
use crate::store::{SessionChange, SingleUse};

/// A refresh request, from either endpoint.
pub(super) struct Refresh<'a> {
    /// The refresh token presented.
    pub(super) presented: &'a str,
    /// The audience asked for: the session's, if given.
    pub(super) audience: Option<&'a str>,
    /// The tools asked for (a subset of the session's), if given.
    pub(super) tools: Option<&'a [String]>,
    /// The single-use values the request presented.
    pub(super) single_use: Vec<SingleUse>,
    /// Which endpoint's grant it is.
    pub(super) grant: Grant,
    /// The form of the AAT.
    pub(super) format: TokenFormat,
}

impl Issuer {
    pub(super) async fn refresh(
        &self,
        request: Refresh<'_>,
        agent: &DirectoryAgent,
        now: i64,
    ) -> Result<TokenResponse, IssuerError> {
        let invalid = |m: &str| IssuerError::token(TokenErrorCode::InvalidGrant, m);
        if request.presented.is_empty() {
            return Err(invalid("a refresh needs the refresh token"));
        }
        let presented = refresh_key(request.presented);
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
        if request.audience.is_some_and(|audience| audience != session.audience) {
            // `/oauth/token` names the audience `resource`, and RFC 8707 §2 answers a resource
            // the server will not issue for with `invalid_target`.
            return Err(match request.grant {
                Grant::RefreshToken => {
                    IssuerError::oauth(OAuthErrorCode::InvalidTarget, "resource must be the session's audience")
                }
                _ => IssuerError::token(
                    TokenErrorCode::InvalidRequest,
                    "audience must be the session's audience",
                ),
            });
        }
        let mut capabilities: Capabilities =
            serde_json::from_str(&session.capabilities).map_err(|_| DbError::Corrupt("session capabilities"))?;
        let narrowed: Vec<String> = capabilities
            .tools
            .iter()
            .filter(|t| allows(&agent.capabilities, t))
            .filter(|t| {
                request
                    .tools
                    .is_none_or(|tools| tools.iter().any(|wanted| wanted == *t))
            })
            .cloned()
            .collect();
        // What was asked for and not granted: the requested tools the session does not hold
        // (or the agent lost), or without a request, the session's tools the agent lost.
        let asked = request.tools.unwrap_or(&capabilities.tools);
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
        let audience = session.audience.clone();
        self.mint(Mint {
            agent,
            audience: &audience,
            binding,
            capabilities,
            session: &session,
            change,
            single_use: request.single_use,
            refresh_token: Some(refresh_token),
            denied,
            grant: request.grant,
            format: request.format,
            actor: format!("agent:{}", agent.agent_id),
            now,
        })
        .await
    }
}
