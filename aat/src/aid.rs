//! Agent Identity Documents (spec 8.2) and their registry attestation (spec 8.2.3).
//!
//! The attestation signs the RFC 8785 form of the document *without* its
//! `registry_attestation` member, as the spec and docs/architecture.md
//! ("Certificates and identity documents") define. Consequently
//! `signed_at` and `expires_at` are not covered by the signature: they are reported, and an
//! expired attestation is refused, but freshness must come from the registry (status lookup
//! or revocation list), never from these two fields alone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::b64;
use crate::ids::{AgentId, KeyId};
use crate::jcs;
use crate::keys::{Jwk, JwkSet, PublicKey, SignError, Signer};

/// The only `aid_version` this toolkit writes and reads.
pub const AID_VERSION: &str = "aip/v1alpha3";
/// Longest AID accepted for verification.
pub const MAX_AID_LEN: usize = 64 * 1024;

/// Registration status of an agent (spec 8.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Operational: AATs may be issued and are accepted.
    Active,
    /// Temporarily disabled; reversible.
    Suspended,
    /// Permanently deactivated.
    Revoked,
}

impl AgentStatus {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentStatus {
    type Err = crate::ids::InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "revoked" => Ok(Self::Revoked),
            _ => Err(crate::ids::InvalidId {
                what: "agent status",
                reason: "expected active, suspended or revoked",
            }),
        }
    }
}

/// An Agent Identity Document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIdentityDocument {
    /// Always [`AID_VERSION`].
    pub aid_version: String,
    /// The agent.
    pub agent_id: AgentId,
    /// Human-readable name.
    pub name: String,
    /// What the agent does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Registration time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Current status.
    pub status: AgentStatus,
    /// The agent's public key.
    #[serde(deserialize_with = "crate::json::object")]
    pub public_key: Jwk,
    /// Free-form facts about the agent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::option_object"
    )]
    pub metadata: Option<AidMetadata>,
    /// The registry's signature; absent only while the document is being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_attestation: Option<RegistryAttestation>,
}

/// `metadata` of an AID (spec 8.2). Read strictly, like the registration request it comes
/// from: a member it does not know is refused, not dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AidMetadata {
    /// Agent platform (`cursor`, `claude-code`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Owner (email or organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `registry_attestation` (spec 8.2.3), plus the `kid` of the registry key that signed,
/// which is not covered by the signature and only selects the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAttestation {
    /// The registry.
    pub registry_id: String,
    /// When the registry signed.
    #[serde(with = "time::serde::rfc3339")]
    pub signed_at: OffsetDateTime,
    /// When the attestation stops being acceptable.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Base64url signature over the canonical AID without this member.
    pub signature: String,
    /// Registry key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<KeyId>,
}

/// An attestation could not be made or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// The document is not a well-formed AID.
    #[error("malformed AID: {0}")]
    Malformed(&'static str),
    /// The document carries no `registry_attestation`.
    #[error("AID has no registry attestation")]
    MissingAttestation,
    /// No registry key matches the attestation.
    #[error("no registry key matches the attestation")]
    UnknownKey,
    /// The signature does not verify.
    #[error("registry attestation signature is invalid")]
    SignatureInvalid,
    /// `expires_at` has passed.
    #[error("registry attestation expired")]
    Expired,
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl AgentIdentityDocument {
    /// Signs the document as the registry: sets `registry_attestation` over the canonical
    /// form of everything else, valid from `now` for `ttl_secs`.
    pub fn attest(
        &mut self,
        signer: &dyn Signer,
        registry_id: &str,
        now: i64,
        ttl_secs: u64,
    ) -> Result<(), AttestationError> {
        self.registry_attestation = None;
        let signed_at =
            OffsetDateTime::from_unix_timestamp(now).map_err(|_| AttestationError::Malformed("time out of range"))?;
        let expires_at =
            OffsetDateTime::from_unix_timestamp(now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)))
                .map_err(|_| AttestationError::Malformed("time out of range"))?;
        let canonical = jcs::to_vec(self).map_err(|_| AttestationError::Malformed("not canonicalizable"))?;
        let signature = b64::encode(signer.sign(&canonical)?);
        self.registry_attestation = Some(RegistryAttestation {
            registry_id: registry_id.to_owned(),
            signed_at,
            expires_at,
            signature,
            kid: Some(signer.key_id().clone()),
        });
        Ok(())
    }

    /// Verifies an attested AID given as JSON text against the registry's keys and returns it.
    ///
    /// The signature is checked over the document exactly as received (minus the
    /// attestation), so members this version does not model still count. Duplicate member
    /// names are refused, as RFC 8785 requires.
    pub fn verify_attested(json: &str, registry_keys: &JwkSet, now: i64) -> Result<Self, AttestationError> {
        if json.len() > MAX_AID_LEN {
            return Err(AttestationError::Malformed("document too large"));
        }
        let mut value = jcs::parse_strict(json).map_err(|_| AttestationError::Malformed("not I-JSON"))?;
        let object = value
            .as_object_mut()
            .ok_or(AttestationError::Malformed("not a JSON object"))?;
        let attestation = object
            .remove("registry_attestation")
            .ok_or(AttestationError::MissingAttestation)?;
        let attestation: RegistryAttestation =
            crate::json::from_value(attestation).map_err(|_| AttestationError::Malformed("registry_attestation"))?;
        let canonical = jcs::to_vec(&value).map_err(|_| AttestationError::Malformed("not canonicalizable"))?;
        let signature =
            b64::decode(&attestation.signature).ok_or(AttestationError::Malformed("signature is not base64url"))?;

        let verifies = |key: &PublicKey| key.verify(key.algorithm(), &canonical, &signature).is_ok();
        match &attestation.kid {
            Some(kid) => {
                let key = registry_keys.get(kid).ok_or(AttestationError::UnknownKey)?;
                if !verifies(key) {
                    return Err(AttestationError::SignatureInvalid);
                }
            }
            None if registry_keys.is_empty() => return Err(AttestationError::UnknownKey),
            None => {
                if !registry_keys.iter().any(verifies) {
                    return Err(AttestationError::SignatureInvalid);
                }
            }
        }
        if attestation.expires_at.unix_timestamp() < now {
            return Err(AttestationError::Expired);
        }
        let mut aid: Self = crate::json::from_value(value).map_err(|_| AttestationError::Malformed("AID members"))?;
        if aid.aid_version != AID_VERSION {
            return Err(AttestationError::Malformed("unsupported aid_version"));
        }
        aid.registry_attestation = Some(attestation);
        Ok(aid)
    }

    /// Hex SHA-256 of the canonical document, attestation included: the AAT's
    /// `agent.aid_hash`.
    pub fn hash(&self) -> Result<String, jcs::CanonicalError> {
        jcs::sha256_hex(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, KeyPair};

    const NOW: i64 = 1_770_000_000;

    fn aid(agent: &KeyPair) -> AgentIdentityDocument {
        AgentIdentityDocument {
            aid_version: AID_VERSION.into(),
            agent_id: "ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap(),
            name: "code review agent".into(),
            description: Some("Reviews pull requests".into()),
            created_at: OffsetDateTime::from_unix_timestamp(NOW - 86_400).unwrap(),
            status: AgentStatus::Active,
            public_key: agent.public_key().to_jwk(),
            metadata: Some(AidMetadata {
                owner: Some("dev@example.com".into()),
                ..Default::default()
            }),
            registry_attestation: None,
        }
    }

    fn attested(registry: &KeyPair) -> String {
        let mut doc = aid(&KeyPair::generate(Algorithm::EdDSA).unwrap());
        doc.attest(registry, "https://registry.aip.example", NOW, 3_600)
            .unwrap();
        serde_json::to_string(&doc).unwrap()
    }

    #[test]
    fn attestation_round_trip_for_both_algorithms() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let registry = KeyPair::generate(alg).unwrap();
            let keys = JwkSet::from_keys([registry.public_key()]);
            let json = attested(&registry);
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["registry_attestation"]["signed_at"], "2026-02-02T02:40:00Z");
            assert_eq!(value["registry_attestation"]["kid"], registry.key_id().as_str());
            let verified = AgentIdentityDocument::verify_attested(&json, &keys, NOW + 10).unwrap();
            assert_eq!(verified.name, "code review agent");
            assert_eq!(verified.hash().unwrap().len(), 64);
        }
    }

    #[test]
    fn any_change_to_the_document_breaks_the_signature() {
        let registry = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let keys = JwkSet::from_keys([registry.public_key()]);
        let json = attested(&registry);
        for (member, value) in [
            ("status", serde_json::json!("suspended")),
            ("name", serde_json::json!("other agent")),
            ("unmodelled_extension", serde_json::json!(true)),
        ] {
            let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
            doc[member] = value;
            let result = AgentIdentityDocument::verify_attested(&doc.to_string(), &keys, NOW);
            assert!(
                matches!(result, Err(AttestationError::SignatureInvalid)),
                "{member}: {result:?}"
            );
        }
        let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        doc["public_key"]["x"] = KeyPair::generate(Algorithm::EdDSA)
            .unwrap()
            .public_key()
            .to_jwk()
            .x
            .unwrap()
            .into();
        assert!(matches!(
            AgentIdentityDocument::verify_attested(&doc.to_string(), &keys, NOW),
            Err(AttestationError::SignatureInvalid)
        ));
    }

    #[test]
    fn wrong_key_expiry_and_shape_are_refused() {
        let registry = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let json = attested(&registry);
        let strangers = JwkSet::from_keys([KeyPair::generate(Algorithm::EdDSA).unwrap().public_key()]);
        assert!(matches!(
            AgentIdentityDocument::verify_attested(&json, &strangers, NOW),
            Err(AttestationError::UnknownKey)
        ));
        let keys = JwkSet::from_keys([registry.public_key()]);
        assert!(matches!(
            AgentIdentityDocument::verify_attested(&json, &keys, NOW + 3_601),
            Err(AttestationError::Expired)
        ));
        let unsigned = serde_json::to_string(&aid(&registry)).unwrap();
        assert!(matches!(
            AgentIdentityDocument::verify_attested(&unsigned, &keys, NOW),
            Err(AttestationError::MissingAttestation)
        ));
        let duplicated = json.replacen("{", "{\"name\":\"x\",", 1);
        assert!(matches!(
            AgentIdentityDocument::verify_attested(&duplicated, &keys, NOW),
            Err(AttestationError::Malformed(_))
        ));
        assert!(matches!(
            AgentIdentityDocument::verify_attested("[]", &keys, NOW),
            Err(AttestationError::Malformed(_))
        ));
    }

    #[test]
    fn attestation_without_kid_is_checked_against_every_registry_key() {
        let registry = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let other = KeyPair::generate(Algorithm::ES256).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&attested(&registry)).unwrap();
        doc["registry_attestation"].as_object_mut().unwrap().remove("kid");
        let both = JwkSet::from_keys([other.public_key(), registry.public_key()]);
        assert!(AgentIdentityDocument::verify_attested(&doc.to_string(), &both, NOW).is_ok());
        let only_other = JwkSet::from_keys([other.public_key()]);
        assert!(matches!(
            AgentIdentityDocument::verify_attested(&doc.to_string(), &only_other, NOW),
            Err(AttestationError::SignatureInvalid)
        ));
    }
}
