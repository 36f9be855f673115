//! Minting an AAT for a grant, recording it through the ledger (which refuses a replayed
//! challenge, a revoked user, a reused refresh token or an ended session), and auditing
//! denials.

use aip_aat::aid::AgentStatus;
use aip_aat::delegation;
use aip_aat::ids::Jti;
use aip_aat::secret::SecretString;
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, Capabilities, Confirmation, ContextClaims, UserBinding, encode_aat,
};
use aip_api::issuer::{DeniedCapabilities, GrantType, GrantedCapabilities, TokenErrorCode, TokenFormat, TokenResponse};
use aip_api::oauth::OAuthErrorCode;
use aip_db::audit::AuditEntry;
use serde_json::json;

use super::error::IssuerError;
use super::state::Issuer;
use crate::directory::DirectoryAgent;
use crate::store::{Issuance, IssuedToken, LedgerError, OnceKind, Refusal, SessionChange, SessionRecord, SingleUse};

/// Everything [`Issuer::mint`] needs.
pub(super) struct Mint<'a> {
    pub(super) agent: &'a DirectoryAgent,
    pub(super) audience: &'a str,
    pub(super) binding: Option<UserBinding>,
    pub(super) capabilities: Capabilities,
    pub(super) session: &'a SessionRecord,
    pub(super) change: SessionChange,
    pub(super) single_use: Vec<SingleUse>,
    pub(super) refresh_token: Option<SecretString>,
    pub(super) denied: Vec<String>,
    pub(super) grant: Grant,
    pub(super) format: TokenFormat,
    pub(super) actor: String,
    pub(super) now: i64,
}

pub(super) fn grant_name(grant: GrantType) -> &'static str {
    match grant {
        GrantType::AgentAuthentication => "agent_authentication",
        GrantType::AatRefresh => "aat_refresh",
        GrantType::AgentAttestation => "agent_attestation",
    }
}

/// The grant an AAT is minted for: one of `POST /v1/token`'s, or of `POST /oauth/token`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// A `/v1/token` grant.
    Aip(GrantType),
    /// `client_credentials`.
    ClientCredentials,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` with an ID-JAG.
    IdentityAssertion,
    /// `authorization_code`.
    AuthorizationCode,
    /// `refresh_token`.
    RefreshToken,
}

impl Grant {
    /// Its name in audit records and metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Aip(grant) => grant_name(grant),
            Self::ClientCredentials => "client_credentials",
            Self::IdentityAssertion => "jwt_bearer",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
        }
    }

    /// Whether it continues a session rather than starting one.
    fn is_refresh(self) -> bool {
        matches!(self, Self::Aip(GrantType::AatRefresh) | Self::RefreshToken)
    }
}

impl Issuer {
    pub(super) async fn mint(&self, m: Mint<'_>) -> Result<TokenResponse, IssuerError> {
        let expires_at = (m.now + self.settings.token_ttl).min(m.session.expires_at);
        let jti = Jti::time_ordered(&*self.clock).map_err(IssuerError::internal)?;
        let signer = self.keys.signer();
        let claims = AatClaims {
            aat_version: AAT_VERSION.into(),
            iss: self.settings.issuer_id.clone(),
            sub: m.agent.agent_id.clone(),
            aud: Audience::one(m.audience),
            iat: m.now,
            exp: expires_at,
            nbf: None,
            jti: jti.clone(),
            agent: AgentClaims {
                id: m.agent.agent_id.clone(),
                name: Some(m.agent.name.clone()),
                public_key_thumbprint: m.agent.public_key.thumbprint().clone(),
                aid_hash: None,
            },
            user_binding: m.binding,
            capabilities: m.capabilities,
            context: ContextClaims {
                session_id: m.session.session_id.clone(),
                policy_hash: None,
                registry_id: self.settings.registry_id.clone(),
            },
            cnf: Some(Confirmation {
                jkt: m.agent.public_key.thumbprint().clone(),
            }),
        };
        let aat = match m.format {
            TokenFormat::Jwt => encode_aat(&claims, &**signer).map_err(IssuerError::internal)?,
            TokenFormat::Biscuit => delegation::mint(&claims, signer).map_err(IssuerError::internal)?,
        };
        let user_id = claims.user_binding.as_ref().map(|b| b.user_id.clone());
        let refresh = matches!(m.change, SessionChange::Refresh { .. });
        let issuance = Issuance {
            single_use: m.single_use,
            token: IssuedToken {
                jti: jti.to_string(),
                agent_id: m.agent.agent_id.clone(),
                user_id: user_id.clone(),
                session_id: m.session.session_id.clone(),
                kid: signer.key_id().to_string(),
                issued_at: m.now,
                expires_at,
            },
            session: m.change,
            audit: AuditEntry {
                actor: m.actor,
                action: if refresh { "token.refresh" } else { "token.issue" },
                subject: jti.to_string(),
                details: json!({
                    "agent_id": m.agent.agent_id,
                    "user_id": user_id,
                    "session_id": m.session.session_id,
                    "audience": m.audience,
                    "tools": claims.capabilities.tools,
                    "exp": expires_at,
                    "kid": signer.key_id(),
                    "grant": m.grant.name(),
                    "token_format": m.format.as_str(),
                }),
            },
        };
        match self.ledger.issue(issuance).await {
            Ok(()) => {}
            Err(LedgerError::Refused(refusal)) => {
                // Refusals of the agent's or the user's standing are audited as denials.
                let (code, description) = match refusal {
                    Refusal::Replayed(kind) => return Err(replayed(kind)),
                    Refusal::RefreshReused => {
                        self.end_session(&m.session.session_id, "refresh token reuse").await;
                        return Err(IssuerError::token(
                            TokenErrorCode::InvalidGrant,
                            "the refresh token was already used; the session is revoked",
                        ));
                    }
                    Refusal::SessionEnded => {
                        return Err(IssuerError::token(
                            TokenErrorCode::InvalidGrant,
                            "the session was revoked or has ended",
                        ));
                    }
                    Refusal::UserRevoked => (TokenErrorCode::UserAuthFailed, "the user's authorization was revoked"),
                    Refusal::AgentSuspended => (TokenErrorCode::AgentSuspended, "the agent is suspended"),
                    Refusal::AgentRevoked => (TokenErrorCode::AgentRevoked, "the agent is revoked"),
                };
                return Err(self
                    .deny(m.agent, m.grant, m.audience, code, description.into(), m.now)
                    .await);
            }
            Err(LedgerError::Store(e)) => return Err(IssuerError::internal(e)),
        }
        let denied_reason = if m.denied.is_empty() {
            "all requested capabilities granted".to_owned()
        } else if m.grant.is_refresh() {
            "not held by the session, or no longer among the agent's registered capabilities".to_owned()
        } else {
            "not among the agent's registered capabilities or the user's delegatable tools".to_owned()
        };
        Ok(TokenResponse {
            aat: SecretString::new(aat),
            token_type: m.format.as_str().into(),
            token_format: m.format,
            expires_in: u64::try_from(expires_at - m.now).unwrap_or(0),
            refresh_token: m.refresh_token,
            capabilities_granted: GrantedCapabilities {
                tools: claims.capabilities.tools,
                resource_scopes: claims.capabilities.resource_scopes,
            },
            capabilities_denied: DeniedCapabilities {
                tools: m.denied,
                reason: denied_reason,
            },
        })
    }

    /// Records a refusal of a request whose agent proved possession of its key, and returns it.
    pub(super) async fn deny(
        &self,
        agent: &DirectoryAgent,
        grant: Grant,
        audience: &str,
        code: TokenErrorCode,
        description: String,
        now: i64,
    ) -> IssuerError {
        self.audit_denial(agent, grant, audience, json!(code), &description, now)
            .await;
        IssuerError::token(code, description)
    }

    /// [`Self::deny`] for the OAuth refusals without a spec 9.4.2 code.
    pub(super) async fn deny_oauth(
        &self,
        agent: &DirectoryAgent,
        grant: Grant,
        audience: &str,
        code: OAuthErrorCode,
        description: String,
        now: i64,
    ) -> IssuerError {
        self.audit_denial(agent, grant, audience, json!(code.as_str()), &description, now)
            .await;
        IssuerError::oauth(code, description)
    }

    async fn audit_denial(
        &self,
        agent: &DirectoryAgent,
        grant: Grant,
        audience: &str,
        error: serde_json::Value,
        description: &str,
        now: i64,
    ) {
        let entry = AuditEntry {
            actor: format!("agent:{}", agent.agent_id),
            action: "token.deny",
            subject: agent.agent_id.to_string(),
            details: json!({
                "grant": grant.name(),
                "error": error,
                "description": description,
                "audience": audience,
            }),
        };
        if let Err(e) = self.ledger.audit(entry, now).await {
            tracing::warn!(error = ?e, "could not audit a token denial");
        }
    }

    /// Refuses (and audits) a request of an agent that is suspended or revoked.
    pub(super) async fn refuse_inactive(
        &self,
        agent: &DirectoryAgent,
        grant: Grant,
        audience: &str,
        now: i64,
    ) -> Result<(), IssuerError> {
        let (code, description) = match agent.status {
            AgentStatus::Active => return Ok(()),
            AgentStatus::Suspended => (TokenErrorCode::AgentSuspended, "the agent is suspended"),
            AgentStatus::Revoked => (TokenErrorCode::AgentRevoked, "the agent is revoked"),
        };
        Err(self.deny(agent, grant, audience, code, description.into(), now).await)
    }
}

/// The refusal of a single-use value presented again.
fn replayed(kind: OnceKind) -> IssuerError {
    match kind {
        OnceKind::Challenge => IssuerError::token(
            TokenErrorCode::InvalidProof,
            "the challenge was already used; request a new one",
        ),
        OnceKind::ClientAssertion => {
            IssuerError::oauth(OAuthErrorCode::InvalidClient, "the client assertion was already used")
        }
        OnceKind::DpopProof => IssuerError::oauth(OAuthErrorCode::InvalidDpopProof, "the DPoP proof was already used"),
        OnceKind::AuthorizationCode => {
            IssuerError::oauth(OAuthErrorCode::InvalidGrant, "the authorization code was already used")
        }
        OnceKind::IdentityGrant => IssuerError::oauth(
            OAuthErrorCode::InvalidGrant,
            "the identity assertion grant was already used",
        ),
    }
}
