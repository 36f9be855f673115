//! Agent certificates: issued by the CA, recorded by the store, shown by the API.

use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use aip_api::registry::CertificateView;

use super::error::{RegistryError, unix_time};
use super::state::Registry;
use crate::ca::{CrlReason, IssuedCertificate};
use crate::metrics as m;
use crate::store::{NewCertificate, StoredCertificate};

impl Registry {
    pub(super) fn issue_certificate(
        &self,
        agent_id: &AgentId,
        name: &str,
        key: &PublicKey,
        now: i64,
    ) -> Result<IssuedCertificate, RegistryError> {
        let cert = self
            .ca
            .issue_agent_certificate(
                agent_id,
                name,
                key,
                now,
                now + self.settings.agent_cert_validity,
                &self.settings.crl_url(),
            )
            .map_err(RegistryError::internal)?;
        metrics::counter!(m::CERTIFICATES_ISSUED).increment(1);
        Ok(cert)
    }

    pub(super) fn chain(&self, cert: &IssuedCertificate) -> String {
        format!("{}{}", cert.pem, self.ca.issuing_pem())
    }
}

/// What the store keeps of an issued certificate.
pub(super) fn certificate_record(cert: &IssuedCertificate, agent_id: &AgentId, key: &PublicKey) -> NewCertificate {
    NewCertificate {
        serial: cert.serial.clone(),
        agent_id: agent_id.clone(),
        key_thumbprint: key.thumbprint().clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        der: cert.der.clone(),
        issuer_key_id: Some(cert.issuer_key_id.clone()),
    }
}

pub(super) fn certificate_view(c: &StoredCertificate, now: i64) -> Result<CertificateView, RegistryError> {
    let state = match (c.revoked, c.superseded_at) {
        (Some((_, CrlReason::CertificateHold)), _) => "on_hold",
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= now => "superseded",
        _ if c.certificate.not_after <= now => "expired",
        _ => "valid",
    };
    Ok(CertificateView {
        serial: c.certificate.serial.clone(),
        key_thumbprint: c.certificate.key_thumbprint.clone(),
        not_before: unix_time(c.certificate.not_before)?,
        not_after: unix_time(c.certificate.not_after)?,
        state: state.into(),
    })
}
