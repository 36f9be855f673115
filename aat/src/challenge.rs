//! The signed-challenge proof of possession of the token request (spec 9.3.3).
//!
//! The agent signs the RFC 8785 form of `{"agent_id", "challenge", "timestamp"}`
//! (`timestamp` in Unix seconds) with its key. The proof object carries the `timestamp` it
//! signed — the spec's example omits it, but a verifier cannot rebuild the signed bytes
//! without it. Single use and expiry of the challenge itself are the issuer's business.

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::ids::AgentId;
use crate::jcs;
use crate::keys::{Algorithm, PublicKey, SignError, Signer};

/// The `type` of a signed-challenge proof.
pub const SIGNED_CHALLENGE: &str = "signed_challenge";
/// How far an agent's clock may run ahead of the issuer's.
pub const MAX_FUTURE_SECS: i64 = 30;

/// `proof` of a token request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeProof {
    /// Always `signed_challenge`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The challenge the issuer handed out.
    pub challenge: String,
    /// Base64url signature.
    pub signature: String,
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// The Unix time that was signed.
    pub timestamp: i64,
}

/// Why a signed-challenge proof was refused (all map to `invalid_proof`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeProofError {
    /// `type` is not `signed_challenge`.
    #[error("proof type must be signed_challenge")]
    WrongType,
    /// The algorithm is not the agent key's.
    #[error("proof algorithm does not match the agent key")]
    AlgorithmMismatch,
    /// `timestamp` is older than allowed.
    #[error("proof timestamp is too old")]
    Stale,
    /// `timestamp` is in the future.
    #[error("proof timestamp is in the future")]
    FromFuture,
    /// The signature does not verify.
    #[error("proof signature is invalid")]
    BadSignature,
}

#[derive(Serialize)]
struct Signed<'a> {
    agent_id: &'a AgentId,
    challenge: &'a str,
    timestamp: i64,
}

impl ChallengeProof {
    /// Signs `challenge` for `agent_id` at time `now`.
    pub fn create(signer: &dyn Signer, challenge: &str, agent_id: &AgentId, now: i64) -> Result<Self, SignError> {
        let bytes = jcs::to_vec(&Signed {
            agent_id,
            challenge,
            timestamp: now,
        })
        .map_err(SignError::backend)?;
        Ok(Self {
            kind: SIGNED_CHALLENGE.to_owned(),
            challenge: challenge.to_owned(),
            signature: b64::encode(signer.sign(&bytes)?),
            algorithm: signer.algorithm(),
            timestamp: now,
        })
    }

    /// Checks the proof was made by `agent_key` for `agent_id` within `max_age_secs` of `now`.
    pub fn verify(
        &self,
        agent_key: &PublicKey,
        agent_id: &AgentId,
        now: i64,
        max_age_secs: i64,
    ) -> Result<(), ChallengeProofError> {
        if self.kind != SIGNED_CHALLENGE {
            return Err(ChallengeProofError::WrongType);
        }
        if self.algorithm != agent_key.algorithm() {
            return Err(ChallengeProofError::AlgorithmMismatch);
        }
        if self.timestamp > now.saturating_add(MAX_FUTURE_SECS) {
            return Err(ChallengeProofError::FromFuture);
        }
        if self.timestamp < now.saturating_sub(max_age_secs) {
            return Err(ChallengeProofError::Stale);
        }
        let signature = b64::decode(&self.signature).ok_or(ChallengeProofError::BadSignature)?;
        let bytes = jcs::to_vec(&Signed {
            agent_id,
            challenge: &self.challenge,
            timestamp: self.timestamp,
        })
        .map_err(|_| ChallengeProofError::BadSignature)?;
        agent_key
            .verify(self.algorithm, &bytes, &signature)
            .map_err(|_| ChallengeProofError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn create_verify_and_refuse() {
        let agent: AgentId = "ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        let other: AgentId = "ag_660e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = KeyPair::generate(alg).unwrap();
            let proof = ChallengeProof::create(&key, "c-123", &agent, 1_000).unwrap();
            assert_eq!(proof.verify(key.public_key(), &agent, 1_010, 60), Ok(()));
            assert_eq!(
                proof.verify(key.public_key(), &other, 1_010, 60),
                Err(ChallengeProofError::BadSignature)
            );
            assert_eq!(
                proof.verify(key.public_key(), &agent, 1_061, 60),
                Err(ChallengeProofError::Stale)
            );
            assert_eq!(
                proof.verify(key.public_key(), &agent, 900, 60),
                Err(ChallengeProofError::FromFuture)
            );
            let mut changed = proof.clone();
            changed.challenge = "c-124".into();
            assert_eq!(
                changed.verify(key.public_key(), &agent, 1_010, 60),
                Err(ChallengeProofError::BadSignature)
            );
            let stranger = KeyPair::generate(alg).unwrap();
            assert_eq!(
                proof.verify(stranger.public_key(), &agent, 1_010, 60),
                Err(ChallengeProofError::BadSignature)
            );
        }
    }

    #[test]
    fn signed_bytes_are_canonical() {
        let agent: AgentId = "ag_550e8400-e29b-41d4-a716-446655440000".parse().unwrap();
        let bytes = jcs::to_vec(&Signed {
            agent_id: &agent,
            challenge: "c",
            timestamp: 5,
        })
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"agent_id":"ag_550e8400-e29b-41d4-a716-446655440000","challenge":"c","timestamp":5}"#
        );
    }
}
