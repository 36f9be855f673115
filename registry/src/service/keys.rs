//! Key rotation (spec 8.3.4) and certificate renewal: requests signed by the agent's current
//! key (and, for a rotation, the new one).

use aip_aat::aid::AgentStatus;
use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use aip_api::registry::{CertificateResponse, RenewCertificateRequest, RotateKeyRequest};
use aip_db::audit::AuditEntry;
use serde_json::{Value, json};

use super::certificates::certificate_record;
use super::error::{RegistryError, unix_time};
use super::state::Registry;
use crate::store::{KeyRotation, StoredKey};

impl Registry {
    /// `POST /v1/agents/{id}/rotate-key`: the current key signs the request, the new key
    /// proves possession too; the old key stays valid for the grace period.
    pub async fn rotate_key(
        &self,
        agent_id: &AgentId,
        request: RotateKeyRequest,
        body: &Value,
    ) -> Result<CertificateResponse, RegistryError> {
        let now = self.clock.now();
        let agent = self.stored_agent(agent_id).await?;
        if agent.status != AgentStatus::Active {
            return Err(RegistryError::Conflict("only an active agent can rotate its key"));
        }
        let current = PublicKey::from_jwk(&agent.agent.public_key).map_err(RegistryError::internal)?;
        let path = format!("/v1/agents/{agent_id}/rotate-key");
        let (_, current_nonce) = self.verify_proof(&request.proof, &current, &path, body, &["proof"], now)?;
        let new_key = PublicKey::from_jwk(&request.new_public_key)
            .map_err(|e| RegistryError::InvalidRequest(format!("new_public_key: {e}")))?;
        if new_key == current {
            return Err(RegistryError::InvalidRequest(
                "new_public_key is the current key".into(),
            ));
        }
        let (_, new_nonce) = self
            .verify_proof(
                &request.new_key_proof,
                &new_key,
                &path,
                body,
                &["proof", "new_key_proof"],
                now,
            )
            .map_err(|e| match e {
                RegistryError::InvalidProof(m) => RegistryError::InvalidProof(format!("new_key_proof: {m}")),
                e => e,
            })?;
        let cert = self.issue_certificate(agent_id, &agent.agent.name, &new_key, now)?;
        let grace_until = now + self.settings.key_grace_period;
        let rotation = KeyRotation {
            agent_id: agent_id.clone(),
            current: current.thumbprint().clone(),
            new_key: StoredKey {
                thumbprint: new_key.thumbprint().clone(),
                public_key: new_key.to_jwk(),
                added_at: now,
                valid_until: None,
            },
            grace_until,
            certificate: certificate_record(&cert, agent_id, &new_key),
            nonces: vec![current_nonce, new_nonce],
        };
        let audit = AuditEntry {
            actor: format!("agent:{agent_id}"),
            action: "agent.rotate_key",
            subject: agent_id.to_string(),
            details: json!({"previous_key": current.thumbprint(), "key": new_key.thumbprint(), "certificate": cert.serial, "previous_key_valid_until": grace_until}),
        };
        let version = self.store.rotate_key(&rotation, &audit).await?;
        self.saw_version(version);
        self.pump.notify_one();
        let mut updated = agent;
        updated.agent.public_key = new_key.to_jwk();
        updated.agent.thumbprint = new_key.thumbprint().clone();
        Ok(CertificateResponse {
            aid: self.attested_aid(&updated)?,
            agent_id: agent_id.clone(),
            serial: cert.serial.clone(),
            certificate_chain: self.chain(&cert),
            not_after: unix_time(cert.not_after)?,
            certificate: cert.pem,
            previous_key_valid_until: Some(unix_time(grace_until)?),
        })
    }

    /// `POST /v1/agents/{id}/certificate`: a fresh certificate for the current key.
    pub async fn renew_certificate(
        &self,
        agent_id: &AgentId,
        request: RenewCertificateRequest,
        body: &Value,
    ) -> Result<CertificateResponse, RegistryError> {
        let now = self.clock.now();
        let agent = self.stored_agent(agent_id).await?;
        if agent.status != AgentStatus::Active {
            return Err(RegistryError::Conflict(
                "only an active agent can renew its certificate",
            ));
        }
        let key = PublicKey::from_jwk(&agent.agent.public_key).map_err(RegistryError::internal)?;
        let path = format!("/v1/agents/{agent_id}/certificate");
        let (_, nonce) = self.verify_proof(&request.proof, &key, &path, body, &["proof"], now)?;
        let cert = self.issue_certificate(agent_id, &agent.agent.name, &key, now)?;
        let certificate = certificate_record(&cert, agent_id, &key);
        let audit = AuditEntry {
            actor: format!("agent:{agent_id}"),
            action: "agent.renew_certificate",
            subject: agent_id.to_string(),
            details: json!({"certificate": cert.serial, "not_after": cert.not_after}),
        };
        self.store.add_certificate(&certificate, &nonce, &audit).await?;
        Ok(CertificateResponse {
            aid: self.attested_aid(&agent)?,
            agent_id: agent_id.clone(),
            serial: cert.serial.clone(),
            certificate_chain: self.chain(&cert),
            not_after: unix_time(cert.not_after)?,
            certificate: cert.pem,
            previous_key_valid_until: None,
        })
    }
}
