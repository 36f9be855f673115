//! Revocation: an AAT, a session, a user or an agent (`POST /v1/revoke`), and a session after
//! refresh-token reuse. What the issuer's tables say a revocation covers is published through
//! the registry's revocation list.

use std::future::Future;

use aip_aat::token::MAX_LIFETIME_SECS;
use aip_api::checks::{check_name, check_text, revocation_id};
use aip_api::issuer::{RevokeRequest, RevokeResponse};
use aip_api::registry::{PublishRevocationsRequest, RevokedEntryBody as RevokedEntry};
use aip_db::DbError;
use aip_db::audit::AuditEntry;
use serde_json::json;

use super::error::IssuerError;
use super::state::Issuer;
use crate::directory::{Caller, DirectoryError};
use crate::store::{Covered, IssuerStore};

/// What a `POST /v1/revoke` names when it names none or several.
const ONE_TARGET: &str = "give exactly one of jti, session_id, user_id, agent_id, delegation";

impl Issuer {
    /// Revokes a session after refresh-token reuse; failures are logged (the refresh itself is
    /// refused regardless).
    pub(super) async fn end_session(&self, session_id: &str, reason: &str) {
        let outcome = self
            .revoke_covered(
                "system:issuer",
                "session.revoke",
                &format!("session:{session_id}"),
                Some(reason),
                |store, audit, at| {
                    let session_id = session_id.to_owned();
                    let reason = reason.to_owned();
                    async move {
                        Ok(store
                            .revoke_session(&session_id, Some(&reason), at, &audit)
                            .await?
                            .unwrap_or_default())
                    }
                },
            )
            .await;
        match outcome {
            Ok((covered, _)) => {
                tracing::warn!(
                    session_id,
                    tokens = covered.tokens.len(),
                    "refresh token reuse: session revoked"
                );
            }
            Err(e) => tracing::error!(error = ?e, session_id, "could not revoke a session after refresh token reuse"),
        }
    }

    /// Records a revocation in the issuer's tables (with `action` in the audit log), then
    /// publishes what it covers through the registry.
    async fn revoke_covered<F, Fut>(
        &self,
        actor: &str,
        action: &'static str,
        subject: &str,
        reason: Option<&str>,
        local: F,
    ) -> Result<(Covered, u64), IssuerError>
    where
        F: FnOnce(IssuerStore, AuditEntry, i64) -> Fut,
        Fut: Future<Output = Result<Covered, DbError>>,
    {
        let now = self.clock.now();
        let audit = AuditEntry {
            actor: actor.to_owned(),
            action,
            subject: subject.to_owned(),
            details: json!({"reason": reason}),
        };
        let covered = local(self.store.clone(), audit, now).await?;
        let user = subject.strip_prefix("user:").map(str::to_owned);
        let revocations = PublishRevocationsRequest {
            subject: subject.to_owned(),
            tokens: covered.tokens,
            sessions: covered.sessions,
            users: user.into_iter().collect(),
            reason: reason.map(str::to_owned),
            ..PublishRevocationsRequest::default()
        };
        let version = if revocations.is_empty() {
            0
        } else {
            self.directory.publish(actor, &revocations).await?
        };
        let covered = Covered {
            tokens: revocations.tokens,
            sessions: revocations.sessions,
        };
        Ok((covered, version))
    }

    /// Revokes one AAT this issuer issued, by its `jti`, as `actor`: published through the
    /// registry.
    pub(super) async fn revoke_jti_as(
        &self,
        actor: &str,
        jti: &str,
        reason: Option<&str>,
    ) -> Result<(Covered, u64), IssuerError> {
        let expires_at = self
            .store
            .token_expiry(jti)
            .await?
            .ok_or_else(|| IssuerError::NotFound("no AAT with this jti was issued here".into()))?;
        let covered = Covered {
            tokens: vec![RevokedEntry {
                id: jti.to_owned(),
                expires_at: Some(expires_at),
            }],
            sessions: Vec::new(),
        };
        let revocations = PublishRevocationsRequest {
            subject: format!("aat:{jti}"),
            tokens: covered.tokens.clone(),
            reason: reason.map(str::to_owned),
            ..PublishRevocationsRequest::default()
        };
        let version = self.directory.publish(actor, &revocations).await?;
        Ok((covered, version))
    }

    /// Revokes one block of delegable AATs by its revocation id (lowercase hex), as `actor`:
    /// published through the registry. The block cannot outlive the AAT it was derived from,
    /// minted before now and living at most [`MAX_LIFETIME_SECS`], so the entry is listed until
    /// then.
    async fn revoke_delegation_as(&self, actor: &str, id: &str, reason: Option<&str>) -> Result<u64, IssuerError> {
        let lifetime = i64::try_from(MAX_LIFETIME_SECS).unwrap_or(i64::MAX);
        let revocations = PublishRevocationsRequest {
            subject: format!("delegation:{id}"),
            delegations: vec![RevokedEntry {
                id: id.to_owned(),
                expires_at: Some(self.clock.now().saturating_add(lifetime)),
            }],
            reason: reason.map(str::to_owned),
            ..PublishRevocationsRequest::default()
        };
        Ok(self.directory.publish(actor, &revocations).await?)
    }

    /// Revokes a session, and the AATs of it, as `actor`.
    pub(super) async fn revoke_session_as(
        &self,
        actor: &str,
        session_id: &str,
        reason: &str,
    ) -> Result<(), IssuerError> {
        let subject = format!("session:{session_id}");
        self.revoke_covered(actor, "session.revoke", &subject, Some(reason), |store, audit, at| {
            let (session_id, reason) = (session_id.to_owned(), reason.to_owned());
            async move {
                Ok(store
                    .revoke_session(&session_id, Some(&reason), at, &audit)
                    .await?
                    .unwrap_or_default())
            }
        })
        .await?;
        Ok(())
    }

    /// `POST /v1/revoke` (admin).
    pub async fn revoke(&self, caller: &Caller, request: RevokeRequest) -> Result<RevokeResponse, IssuerError> {
        if !caller.admin {
            return Err(IssuerError::Forbidden("this operation needs an admin token".into()));
        }
        let reason = request.reason.as_deref();
        if let Some(reason) = reason {
            check_text("reason", reason, 256).map_err(IssuerError::InvalidRequest)?;
        }
        let targets = usize::from(request.jti.is_some())
            + usize::from(request.session_id.is_some())
            + usize::from(request.user_id.is_some())
            + usize::from(request.agent_id.is_some())
            + usize::from(request.delegation.is_some());
        if targets != 1 {
            return Err(IssuerError::InvalidRequest(ONE_TARGET.into()));
        }
        let actor = caller.actor();
        let (revoked, id, covered, version) = if let Some(jti) = request.jti {
            check_name("jti", &jti, 256).map_err(IssuerError::InvalidRequest)?;
            let (covered, version) = self.revoke_jti_as(&actor, &jti, reason).await?;
            ("aat", jti, covered, version)
        } else if let Some(session_id) = request.session_id {
            check_name("session_id", &session_id, 256).map_err(IssuerError::InvalidRequest)?;
            if self.store.session(&session_id).await?.is_none() {
                return Err(IssuerError::NotFound("no session has this id".into()));
            }
            let subject = format!("session:{session_id}");
            let id = session_id.clone();
            let (covered, version) = self
                .revoke_covered(&actor, "session.revoke", &subject, reason, |store, audit, at| {
                    let reason = reason.map(str::to_owned);
                    async move {
                        Ok(store
                            .revoke_session(&id, reason.as_deref(), at, &audit)
                            .await?
                            .unwrap_or_default())
                    }
                })
                .await?;
            ("session", session_id, covered, version)
        } else if let Some(user_id) = request.user_id {
            check_name("user_id", &user_id, 256).map_err(IssuerError::InvalidRequest)?;
            let subject = format!("user:{user_id}");
            let id = user_id.clone();
            self.api_keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, (user, _)| user.user_id != user_id);
            let (covered, version) = self
                .revoke_covered(&actor, "user.revoke", &subject, reason, |store, audit, at| {
                    let reason = reason.map(str::to_owned);
                    async move { store.revoke_user(&id, reason.as_deref(), at, &audit).await }
                })
                .await?;
            ("user", user_id, covered, version)
        } else if let Some(agent_id) = request.agent_id {
            let registry_version = match self.directory.revoke_agent(caller, &agent_id, reason).await {
                Ok(version) => version,
                // Revoked before: still end its sessions below.
                Err(DirectoryError::Refused(_)) => 0,
                Err(e) => return Err(e.into()),
            };
            let subject = format!("agent:{agent_id}");
            let id = agent_id.clone();
            let (covered, version) = self
                .revoke_covered(&actor, "agent.sessions_revoke", &subject, reason, |store, audit, at| {
                    let reason = reason.map(str::to_owned);
                    async move { store.revoke_agent_sessions(&id, reason.as_deref(), at, &audit).await }
                })
                .await?;
            ("agent", agent_id.to_string(), covered, version.max(registry_version))
        } else if let Some(delegation) = request.delegation {
            let id = revocation_id("delegation", &delegation).map_err(IssuerError::InvalidRequest)?;
            let version = self.revoke_delegation_as(&actor, &id, reason).await?;
            ("delegation", id, Covered::default(), version)
        } else {
            return Err(IssuerError::InvalidRequest(ONE_TARGET.into()));
        };
        Ok(RevokeResponse {
            revoked: revoked.into(),
            id,
            tokens: covered.tokens.len(),
            sessions: covered.sessions.len(),
            revocation_version: version,
        })
    }
}
