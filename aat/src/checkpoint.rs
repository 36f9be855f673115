//! Signed checkpoints of an audit hash chain ([`crate::chain`]).
//!
//! A hash chain shows edits, deletions and reordering, but not a full re-chain: whoever can
//! write the log can rewrite a record and recompute every hash after it. A checkpoint is a
//! statement `{seq, head, at, kid}` — "record `seq` of this log has hash `head`", made at Unix
//! time `at` by the key `kid` — signed by a key that write access to the log does not give
//! (the authority's registry key, the proxy's audit key). `audit verify` checks every
//! checkpoint's signature against a key it trusts and every signed head against the chain, so
//! a rewrite of any record up to the last checkpoint is found.
//!
//! A checkpoint is a compact JWS (`typ: aip-audit-checkpoint+jwt`) whose header carries the
//! signer's public key (`jwk`), like a proof of possession: any JOSE library verifies it with
//! that key, and the verifier trusts it only when the key's RFC 7638 thumbprint is one it was
//! given ([`TrustedKeys`]) — so a key id is enough to check checkpoints.
//!
//! [`CheckpointCheck`] follows a chain walk record by record and reports the last checkpoint
//! verified and how many records come after it, unsigned ([`CheckpointReport`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::chain::is_hash;
use crate::ids::KeyId;
use crate::jws::{self, Compact, Header};
use crate::keyfile;
use crate::keys::{Algorithm, Jwk, PublicKey, SignError, Signer};

/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "aip-audit-checkpoint+jwt";
/// Records between two checkpoints unless configured otherwise (the authority's
/// `audit.checkpoint_every`, the proxy's `--audit-checkpoint-every`).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
/// Longest checkpoint accepted.
const MAX_CHECKPOINT_LEN: usize = 4096;

/// What a checkpoint states: record `seq` has hash `head`, signed at `at` by key `kid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the record signed.
    pub seq: u64,
    /// Its hash: the head of the chain when the checkpoint was made.
    pub head: String,
    /// When the checkpoint was made (Unix seconds).
    pub at: i64,
    /// The thumbprint of the signing key.
    pub kid: KeyId,
}

impl Checkpoint {
    /// Signs the statement that record `seq` has hash `head`, at time `at`. Returns the
    /// statement and its compact JWS.
    pub fn sign(seq: u64, head: &str, at: i64, signer: &dyn Signer) -> Result<(Self, String), SignError> {
        let checkpoint = Self {
            seq,
            head: head.to_owned(),
            at,
            kid: signer.public_key().thumbprint().clone(),
        };
        let payload = crate::jcs::to_vec(&checkpoint).map_err(SignError::backend)?;
        let jws = jws::sign(CHECKPOINT_TYP, &payload, signer, true)?;
        Ok((checkpoint, jws))
    }

    /// Verifies a signed checkpoint: its key must be one of `trusted`, its signature valid,
    /// its statement well formed and naming that key.
    pub fn verify(signed: &str, trusted: &TrustedKeys) -> Result<Self, CheckpointError> {
        let malformed = |reason: &'static str| CheckpointError::Malformed { reason };
        let compact = Compact::split(signed.trim(), MAX_CHECKPOINT_LEN).map_err(|e| malformed(e.describe()))?;
        let header = Header::parse(&compact).map_err(|e| malformed(e.describe()))?;
        if !header.typ_is(CHECKPOINT_TYP) {
            return Err(malformed("`typ` is not aip-audit-checkpoint+jwt"));
        }
        let jwk = header.jwk.as_ref().ok_or(malformed("the header has no `jwk`"))?;
        let key = PublicKey::from_jwk(jwk).map_err(|_| malformed("the header's `jwk` is not a public key"))?;
        if !trusted.contains(key.thumbprint()) {
            return Err(CheckpointError::UntrustedKey {
                kid: key.thumbprint().clone(),
            });
        }
        let alg = Algorithm::from_name(&header.alg).ok_or(malformed("unsupported `alg`"))?;
        let signature = compact.signature_bytes().map_err(|e| malformed(e.describe()))?;
        let payload = compact.payload_bytes().map_err(|e| malformed(e.describe()))?;
        let checkpoint: Self =
            crate::json::from_slice(&payload).map_err(|_| malformed("the payload is not a checkpoint"))?;
        key.verify(alg, compact.signing_input.as_bytes(), &signature)
            .map_err(|_| CheckpointError::SignatureInvalid { seq: checkpoint.seq })?;
        if checkpoint.kid != *key.thumbprint() {
            return Err(malformed("`kid` is not the signing key's thumbprint"));
        }
        if checkpoint.seq == 0 || !is_hash(&checkpoint.head) {
            return Err(malformed("`seq` or `head` is malformed"));
        }
        Ok(checkpoint)
    }
}

/// The keys whose checkpoints are trusted, by RFC 7638 thumbprint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    kids: Vec<KeyId>,
}

impl TrustedKeys {
    /// Trusts the key with this thumbprint.
    pub fn of(kid: KeyId) -> Self {
        Self { kids: vec![kid] }
    }

    /// Reads the key from a file's text: a key file (`aip_aat::keyfile`, read without its
    /// passphrase: only its `kid` is used), a public key as SPKI PEM, or a public JWK.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            let key = PublicKey::from_public_key_pem(text).map_err(|e| format!("not a public key PEM: {e}"))?;
            return Ok(Self::of(key.thumbprint().clone()));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| "expected a key file, a public key PEM or a JWK".to_owned())?;
        if value.get("format").is_some() {
            let info = keyfile::inspect(text).map_err(|e| format!("not a key file: {e}"))?;
            return Ok(Self::of(info.kid));
        }
        let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
        let key = PublicKey::from_jwk(&jwk).map_err(|e| format!("not a public key: {e}"))?;
        Ok(Self::of(key.thumbprint().clone()))
    }

    /// Whether checkpoints signed by `kid` are trusted.
    pub fn contains(&self, kid: &KeyId) -> bool {
        self.kids.contains(kid)
    }
}

/// Whether a chain that grew from `from` to `to` records, signing a checkpoint every `every`
/// records, reached a new one.
pub fn due(every: u64, from: u64, to: u64) -> bool {
    let every = every.max(1);
    to > from && to / every != from / every
}

/// Records a log may have without a checkpoint over them, as `audit verify` is told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unsigned {
    /// None: the last record must be signed (an empty log passes).
    #[default]
    Refused,
    /// Records after the last checkpoint (a log still being written); at least one
    /// checkpoint is required once the log has records.
    Tail,
    /// Any: a log that predates checkpoints, or was written without a key, passes too.
    Any,
}

/// A checkpoint, or the log against its checkpoints, does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not a well-formed signed checkpoint.
    #[error("a checkpoint is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// Signed by a key that is not trusted.
    #[error("a checkpoint is signed by key {kid}, which is not the audit key")]
    UntrustedKey {
        /// The key's thumbprint.
        kid: KeyId,
    },
    /// The signature does not verify.
    #[error("the signature of the checkpoint of record {seq} does not verify")]
    SignatureInvalid {
        /// The record it names.
        seq: u64,
    },
    /// Checkpoints are not in increasing order of the records they sign.
    #[error("the checkpoint of record {seq} is out of order")]
    OutOfOrder {
        /// The record it names.
        seq: u64,
    },
    /// The record a checkpoint signed is not the one in the log.
    #[error("record {seq} is not the record signed at its checkpoint: the log was rewritten")]
    Mismatch {
        /// The record.
        seq: u64,
    },
    /// A checkpoint signs a record after the end of the log.
    #[error("a checkpoint signs record {seq} but the log ends at record {records}: records were removed")]
    BeyondEnd {
        /// The record it signs.
        seq: u64,
        /// Records in the log.
        records: u64,
    },
    /// Records after the last checkpoint.
    #[error("{} record(s) after the last signed checkpoint (record {signed}) are not signed", .records - .signed)]
    UnsignedTail {
        /// The last record signed.
        signed: u64,
        /// Records in the log.
        records: u64,
    },
    /// No checkpoint at all.
    #[error("the log has {records} record(s) and no signed checkpoint")]
    NoCheckpoint {
        /// Records in the log.
        records: u64,
    },
}

/// What the checkpoints of a verified log say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The last checkpoint, verified against the chain.
    pub last: Option<Checkpoint>,
    /// Records after it, not covered by any signature.
    pub unsigned: u64,
}

/// Checks verified checkpoints against a chain walked in order: give it every record's
/// sequence number and hash ([`CheckpointCheck::record`]), then the record count
/// ([`CheckpointCheck::finish`]).
#[derive(Clone, Debug, Default)]
pub struct CheckpointCheck {
    pending: VecDeque<Checkpoint>,
    last: Option<Checkpoint>,
}

impl CheckpointCheck {
    /// A check of `checkpoints`, each already verified ([`Checkpoint::verify`]), in the
    /// order they were written.
    pub fn new(checkpoints: Vec<Checkpoint>) -> Result<Self, CheckpointError> {
        if let Some(pair) = checkpoints.windows(2).find(|pair| pair[1].seq <= pair[0].seq) {
            return Err(CheckpointError::OutOfOrder { seq: pair[1].seq });
        }
        Ok(Self {
            pending: checkpoints.into(),
            last: None,
        })
    }

    /// The next record of the chain (after the chain's own checks passed for it).
    pub fn record(&mut self, seq: u64, hash: &str) -> Result<(), CheckpointError> {
        if self.pending.front().is_some_and(|c| c.seq == seq) {
            let checkpoint = self.pending.pop_front().ok_or(CheckpointError::OutOfOrder { seq })?;
            if checkpoint.head != hash {
                return Err(CheckpointError::Mismatch { seq });
            }
            self.last = Some(checkpoint);
        }
        Ok(())
    }

    /// The end of the chain, after `records` records; `unsigned` says which records may
    /// come after the last checkpoint.
    pub fn finish(mut self, records: u64, unsigned: Unsigned) -> Result<CheckpointReport, CheckpointError> {
        if let Some(beyond) = self.pending.pop_front() {
            return Err(CheckpointError::BeyondEnd {
                seq: beyond.seq,
                records,
            });
        }
        let signed = self.last.as_ref().map_or(0, |c| c.seq);
        match (&self.last, unsigned) {
            (_, Unsigned::Any) => {}
            (None, _) if records > 0 => return Err(CheckpointError::NoCheckpoint { records }),
            (Some(_), Unsigned::Refused) if records > signed => {
                return Err(CheckpointError::UnsignedTail { signed, records });
            }
            _ => {}
        }
        Ok(CheckpointReport {
            last: self.last,
            unsigned: records - signed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn head(n: u8) -> String {
        hex::encode([n; 32])
    }

    fn key() -> KeyPair {
        KeyPair::ed25519_from_seed(&[7; 32])
    }

    #[test]
    fn a_signed_checkpoint_verifies_only_under_its_key() {
        let key = key();
        let (made, jws) = Checkpoint::sign(3, &head(3), 1_700_000_000, &key).unwrap();
        let trusted = TrustedKeys::of(key.key_id().clone());
        assert_eq!(Checkpoint::verify(&jws, &trusted).unwrap(), made);

        let other = KeyPair::generate(Algorithm::ES256).unwrap();
        let (_, forged) = Checkpoint::sign(3, &head(3), 1_700_000_000, &other).unwrap();
        assert!(matches!(
            Checkpoint::verify(&forged, &trusted),
            Err(CheckpointError::UntrustedKey { .. })
        ));
        // The statement of one checkpoint under the signature of another.
        let (_, second) = Checkpoint::sign(4, &head(4), 1_700_000_001, &key).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], second.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(
            Checkpoint::verify(&spliced, &trusted),
            Err(CheckpointError::SignatureInvalid { seq: 4 })
        );
        assert!(matches!(
            Checkpoint::verify("a.b", &trusted),
            Err(CheckpointError::Malformed { .. })
        ));
    }

    #[test]
    fn checkpoints_are_due_when_the_chain_crosses_a_multiple_of_the_interval() {
        assert!(due(3, 2, 3) && due(3, 0, 7) && due(1, 4, 5));
        assert!(!due(3, 3, 5) && !due(3, 4, 4) && !due(0, 5, 5));
    }

    #[test]
    fn trusted_keys_are_read_from_key_files_pem_and_jwk() {
        let key = key();
        let kid = key.key_id().clone();
        let file = keyfile::encode(&key, keyfile::Protection::InsecureNone).unwrap();
        assert!(TrustedKeys::from_text(&file).unwrap().contains(&kid));
        let pem = key.public_key().to_public_key_pem().unwrap();
        assert!(TrustedKeys::from_text(&pem).unwrap().contains(&kid));
        let jwk = serde_json::to_string(&key.public_key().to_jwk()).unwrap();
        assert!(TrustedKeys::from_text(&jwk).unwrap().contains(&kid));
        assert!(TrustedKeys::from_text("nonsense").is_err());
    }

    fn checkpoint(seq: u64, n: u8) -> Checkpoint {
        Checkpoint {
            seq,
            head: head(n),
            at: 0,
            kid: key().key_id().clone(),
        }
    }

    fn walk(
        checkpoints: Vec<Checkpoint>,
        records: u8,
        unsigned: Unsigned,
    ) -> Result<CheckpointReport, CheckpointError> {
        let mut check = CheckpointCheck::new(checkpoints)?;
        for n in 1..=records {
            check.record(u64::from(n), &head(n))?;
        }
        check.finish(u64::from(records), unsigned)
    }

    #[test]
    fn the_chain_must_match_every_checkpoint_and_end_signed() {
        let report = walk(vec![checkpoint(2, 2), checkpoint(4, 4)], 4, Unsigned::Refused).unwrap();
        assert_eq!((report.last.unwrap().seq, report.unsigned), (4, 0));
        assert_eq!(
            walk(vec![checkpoint(2, 9)], 4, Unsigned::Any),
            Err(CheckpointError::Mismatch { seq: 2 })
        );
        assert_eq!(
            walk(vec![checkpoint(2, 2)], 4, Unsigned::Refused),
            Err(CheckpointError::UnsignedTail { signed: 2, records: 4 })
        );
        assert_eq!(walk(vec![checkpoint(2, 2)], 4, Unsigned::Tail).unwrap().unsigned, 2);
        assert_eq!(
            walk(vec![], 4, Unsigned::Tail),
            Err(CheckpointError::NoCheckpoint { records: 4 })
        );
        assert_eq!(walk(vec![], 4, Unsigned::Any).unwrap().unsigned, 4);
        assert_eq!(walk(vec![], 0, Unsigned::Refused).unwrap(), CheckpointReport::default());
        assert_eq!(
            walk(vec![checkpoint(5, 5)], 4, Unsigned::Any),
            Err(CheckpointError::BeyondEnd { seq: 5, records: 4 })
        );
        assert_eq!(
            walk(vec![checkpoint(3, 3), checkpoint(2, 2)], 4, Unsigned::Any),
            Err(CheckpointError::OutOfOrder { seq: 2 })
        );
    }
}
