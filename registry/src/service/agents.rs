//! Agents: registration with proof of possession, their records and attested identity
//! documents, listing, and status changes (suspend, reactivate, revoke).

use aip_aat::aid::{AID_VERSION, AgentIdentityDocument, AgentStatus};
use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use aip_aat::request_proof::{RequestProofClaims, SignedRequest, verify_request_proof};
use aip_api::checks::{check_redirect_uris, imitation};
use aip_api::registry::{
    AgentList, AgentResponse, AgentSummary, PreviousKeyView, RedirectUrisRequest, RedirectUrisResponse,
    RegisterAgentRequest, RegisterAgentResponse, StatusKind, StatusRequest, StatusResponse,
};
use aip_db::audit::AuditEntry;
use serde_json::{Value, json};

use super::certificates::{certificate_record, certificate_view};
use super::checks::{check_capabilities, check_field, check_metadata, check_name_field, check_reason};
use super::error::{RegistryError, unix_time};
use super::principal::Principal;
use super::state::Registry;
use crate::ca::CrlReason;
use crate::metrics as m;
use crate::store::{AgentQuery, NewAgent, Nonce, RegistrationCredential, StatusAction, StoreError, StoredAgent};

impl Registry {
    pub(super) fn verify_proof(
        &self,
        proof: &str,
        key: &PublicKey,
        path: &str,
        body: &Value,
        exclude: &[&str],
        now: i64,
    ) -> Result<(RequestProofClaims, Nonce), RegistryError> {
        let request = SignedRequest {
            method: "POST",
            path,
            body,
            exclude,
        };
        let max_age = self.settings.request_proof_max_age;
        let claims = verify_request_proof(proof, key, &request, now, max_age)
            .map_err(|e| RegistryError::InvalidProof(e.to_string()))?;
        let nonce = Nonce {
            jti: claims.jti.to_string(),
            expires_at: claims.iat + max_age + aip_aat::request_proof::MAX_FUTURE_SECS,
        };
        Ok((claims, nonce))
    }

    pub(super) fn attested_aid(&self, agent: &StoredAgent) -> Result<AgentIdentityDocument, RegistryError> {
        let mut aid = AgentIdentityDocument {
            aid_version: AID_VERSION.into(),
            agent_id: agent.agent.agent_id.clone(),
            name: agent.agent.name.clone(),
            description: agent.agent.description.clone(),
            created_at: unix_time(agent.agent.created_at)?,
            status: agent.status,
            public_key: agent.agent.public_key.clone(),
            metadata: agent.agent.metadata.clone(),
            registry_attestation: None,
        };
        let ttl = u64::try_from(self.settings.attestation_ttl).unwrap_or(0);
        aid.attest(&*self.registry_key, &self.settings.registry_id, self.clock.now(), ttl)
            .map_err(RegistryError::internal)?;
        Ok(aid)
    }

    /// Registers an agent (`POST /v1/agents`); `body` is the request as received, which the
    /// proof covers.
    pub async fn register(
        &self,
        principal: &Principal,
        request: RegisterAgentRequest,
        body: &Value,
    ) -> Result<RegisterAgentResponse, RegistryError> {
        let credential = match principal {
            Principal::Admin { token_id } => RegistrationCredential::Admin {
                token_id: token_id.clone(),
            },
            Principal::Registrar { digest, .. } => RegistrationCredential::RegistrationToken { digest: digest.clone() },
            Principal::Reader { .. } => return Err(RegistryError::Forbidden("a reader token cannot register agents")),
        };
        let now = self.clock.now();
        check_name_field("name", &request.name, 128)?;
        if let Some(description) = &request.description {
            check_field("description", description, 1024)?;
        }
        if let Some(metadata) = &request.metadata {
            check_metadata(metadata)?;
        }
        check_capabilities(&request.capabilities)?;
        let key = PublicKey::from_jwk(&request.public_key)
            .map_err(|e| RegistryError::InvalidRequest(format!("public_key: {e}")))?;
        let (_, nonce) = self.verify_proof(&request.proof, &key, "/v1/agents", body, &["proof"], now)?;

        let agent_id = AgentId::random().map_err(RegistryError::internal)?;
        let name = request.name.trim().to_owned();
        let cert = self.issue_certificate(&agent_id, &name, &key, now)?;
        let agent = NewAgent {
            agent_id: agent_id.clone(),
            name,
            description: request.description,
            owner: request.metadata.as_ref().and_then(|m| m.owner.clone()),
            capabilities: request.capabilities,
            autonomous: request.autonomous,
            metadata: request.metadata,
            public_key: key.to_jwk(),
            thumbprint: key.thumbprint().clone(),
            created_at: now,
        };
        let certificate = certificate_record(&cert, &agent_id, &key);
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "agent.register",
            subject: agent_id.to_string(),
            details: json!({
                "name": agent.name,
                "key": agent.thumbprint,
                "certificate": cert.serial,
                "capabilities": agent.capabilities,
                "autonomous": agent.autonomous,
            }),
        };
        let token_expiry = self
            .store
            .register_agent(&agent, &certificate, &credential, &nonce, &audit)
            .await
            .map_err(|e| match e {
                StoreError::LooksLike { agent_id, name } => RegistryError::LooksLike(imitation(
                    "name",
                    &agent.name,
                    &name,
                    &format!("the name of agent {agent_id}"),
                )),
                e => e.into(),
            })?;
        metrics::counter!(m::AGENTS_REGISTERED).increment(1);
        let stored = StoredAgent {
            agent,
            status: AgentStatus::Active,
            status_reason: None,
            status_changed_at: None,
            redirect_uris: Vec::new(),
        };
        Ok(RegisterAgentResponse {
            aid: self.attested_aid(&stored)?,
            agent_id,
            certificate_chain: self.chain(&cert),
            certificate: cert.pem,
            registration_token_expires_at: token_expiry.map(unix_time).transpose()?,
        })
    }

    pub(super) async fn stored_agent(&self, agent_id: &AgentId) -> Result<StoredAgent, RegistryError> {
        self.store.agent(agent_id).await?.ok_or(RegistryError::AgentNotFound)
    }

    /// `GET /v1/agents/{id}`.
    pub async fn agent(&self, agent_id: &AgentId) -> Result<AgentResponse, RegistryError> {
        let now = self.clock.now();
        let agent = self.stored_agent(agent_id).await?;
        let keys = self.store.agent_keys(agent_id).await?;
        let certificates = self.store.certificates(agent_id).await?;
        let previous_keys = keys
            .iter()
            .filter_map(|k| k.valid_until.filter(|until| *until > now).map(|until| (k, until)))
            .map(|(k, until)| {
                Ok(PreviousKeyView {
                    thumbprint: k.thumbprint.clone(),
                    valid_until: unix_time(until)?,
                })
            })
            .collect::<Result<_, RegistryError>>()?;
        let certificates = certificates
            .iter()
            .map(|c| certificate_view(c, now))
            .collect::<Result<_, _>>()?;
        Ok(AgentResponse {
            aid: self.attested_aid(&agent)?,
            agent_id: agent_id.clone(),
            status: agent.status,
            public_key: agent.agent.public_key.clone(),
            public_key_thumbprint: agent.agent.thumbprint.clone(),
            capabilities: agent.agent.capabilities.clone(),
            autonomous: agent.agent.autonomous,
            status_reason: agent.status_reason.clone(),
            status_changed_at: agent.status_changed_at.map(unix_time).transpose()?,
            previous_keys,
            certificates,
            redirect_uris: agent.redirect_uris.clone(),
        })
    }

    /// `GET /v1/agents`.
    pub async fn agents(&self, query: &AgentQuery) -> Result<AgentList, RegistryError> {
        let limit = query.limit.clamp(1, aip_api::MAX_PAGE);
        let mut page = self
            .store
            .agents(&AgentQuery {
                limit: limit + 1,
                ..query.clone()
            })
            .await?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        let next = if more {
            page.last().map(|a| a.agent.agent_id.clone())
        } else {
            None
        };
        let agents = page
            .into_iter()
            .map(|a| {
                Ok(AgentSummary {
                    created_at: unix_time(a.agent.created_at)?,
                    agent_id: a.agent.agent_id,
                    name: a.agent.name,
                    status: a.status,
                    owner: a.agent.owner,
                })
            })
            .collect::<Result<_, RegistryError>>()?;
        Ok(AgentList { agents, next })
    }

    /// `PUT /v1/agents/{id}/redirect-uris` (admin): replaces the agent's redirect URIs. A
    /// revoked agent's cannot change.
    pub async fn set_redirect_uris(
        &self,
        principal: &Principal,
        agent_id: &AgentId,
        request: RedirectUrisRequest,
    ) -> Result<RedirectUrisResponse, RegistryError> {
        principal.require_admin()?;
        check_redirect_uris("redirect_uris", &request.redirect_uris).map_err(RegistryError::InvalidRequest)?;
        let audit = AuditEntry {
            actor: principal.actor(),
            action: "agent.set_redirect_uris",
            subject: agent_id.to_string(),
            details: json!({"redirect_uris": request.redirect_uris}),
        };
        self.store
            .set_redirect_uris(agent_id, &request.redirect_uris, self.clock.now(), &audit)
            .await?;
        Ok(RedirectUrisResponse {
            agent_id: agent_id.clone(),
            redirect_uris: request.redirect_uris,
        })
    }

    /// Suspends, reactivates or revokes an agent (admin).
    pub async fn change_status(
        &self,
        principal: &Principal,
        agent_id: &AgentId,
        action: StatusKind,
        request: &StatusRequest,
    ) -> Result<StatusResponse, RegistryError> {
        principal.require_admin()?;
        check_reason(request.reason.as_deref())?;
        let action = match (action, request.crl_reason.as_deref()) {
            (StatusKind::Revoke, None) => StatusAction::Revoke(CrlReason::CessationOfOperation),
            (StatusKind::Revoke, Some(name)) => StatusAction::Revoke(CrlReason::from_revocation_name(name).ok_or_else(|| {
                RegistryError::InvalidRequest(format!(
                    "crl_reason {name:?} is not one of unspecified, key_compromise, affiliation_changed, superseded, \
                     cessation_of_operation, privilege_withdrawn"
                ))
            })?),
            (_, Some(_)) => return Err(RegistryError::InvalidRequest("crl_reason applies to revocation only".into())),
            (StatusKind::Suspend, None) => StatusAction::Suspend,
            (StatusKind::Reactivate, None) => StatusAction::Reactivate,
        };
        let now = self.clock.now();
        let (verb, details) = match action {
            StatusAction::Suspend => ("agent.suspend", json!({"reason": request.reason})),
            StatusAction::Reactivate => ("agent.reactivate", json!({"reason": request.reason})),
            StatusAction::Revoke(r) => (
                "agent.revoke",
                json!({"reason": request.reason, "crl_reason": r.name()}),
            ),
        };
        let audit = AuditEntry {
            actor: principal.actor(),
            action: verb,
            subject: agent_id.to_string(),
            details,
        };
        let changed = self
            .store
            .change_status(agent_id, action, request.reason.as_deref(), now, &audit)
            .await?;
        self.saw_version(changed.version);
        self.pump.notify_one();
        metrics::counter!(m::STATUS_CHANGES, "status" => changed.status.as_str()).increment(1);
        Ok(StatusResponse {
            agent_id: agent_id.clone(),
            status: changed.status,
            previous_status: changed.previous,
            revocation_version: changed.version,
        })
    }
}
