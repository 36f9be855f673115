//! The authority's audit log: the `audit_log` table, a hash chain of every change the registry
//! and the token issuer make (the chain itself is `aip_aat::chain`, shared with the proxy's
//! log).
//!
//! A record's hash is the SHA-256 of the RFC 8785 form of
//! `{seq, at, actor, action, subject, details, prev_hash}`. The chain head (the last sequence
//! number and its hash) is kept in `registry_state`, written in the same transaction as the
//! records ([`crate::Write`]), so removing the last records is detected too; the head signed
//! at checkpoints (`audit_checkpoints`, [`crate::Checkpointer`]) detects a full re-chain.

use aip_aat::chain::{self, Break, ChainVerifier, Link};
use aip_aat::checkpoint::{Checkpoint, CheckpointCheck, CheckpointError, CheckpointReport, TrustedKeys, Unsigned};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use crate::{Database, DbError, Script, backend};

/// A change to record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Who: `admin:<token id>`, `agent:<agent id>`, `registration-token:<id>`, `system`.
    pub actor: String,
    /// What: `agent.register`, `agent.revoke`, ….
    pub action: &'static str,
    /// On what (usually an agent id).
    pub subject: String,
    /// Details (never secrets).
    pub details: Value,
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub subject: String,
    /// Details.
    pub details: Value,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

/// Adds to `script` the insert of `entries` (each with its time) after the record numbered
/// `seq` whose hash is `head`, as one statement. Returns the new last sequence number and
/// hash.
pub(crate) fn insert(
    script: &mut Script,
    seq: i64,
    head: &str,
    entries: &[(&AuditEntry, i64)],
) -> Result<(i64, String), DbError> {
    let mut seq = seq;
    let mut head = head.to_owned();
    if entries.is_empty() {
        return Ok((seq, head));
    }
    script.insert_values(
        "audit_log (seq, at, actor, action, subject, details, prev_hash, hash)",
        entries.len(),
        8,
    );
    for (entry, at) in entries {
        seq += 1;
        let details = aip_aat::jcs::to_string(&entry.details).map_err(backend)?;
        let hash = canonical_record_hash(seq, *at, (&entry.actor, entry.action, &entry.subject), &details, &head);
        let prev_hash = std::mem::replace(&mut head, hash.clone());
        script
            .bind(seq)
            .bind(*at)
            .bind(entry.actor.clone())
            .bind(entry.action)
            .bind(entry.subject.clone())
            .bind(details)
            .bind(prev_hash)
            .bind(hash);
    }
    Ok((seq, head))
}

/// The hash of a record with these contents.
pub fn record_hash(seq: i64, at: i64, entry: (&str, &str, &str, &Value), prev_hash: &str) -> String {
    let (actor, action, subject, details) = entry;
    // A `serde_json::Value` always has a canonical form.
    let details = aip_aat::jcs::to_string(details).unwrap_or_default();
    canonical_record_hash(seq, at, (actor, action, subject), &details, prev_hash)
}

/// The hash of a record whose details are already in their RFC 8785 form: its members are
/// written in RFC 8785 order into the hash, so the details are not canonicalized again.
fn canonical_record_hash(seq: i64, at: i64, entry: (&str, &str, &str), details: &str, prev_hash: &str) -> String {
    let (actor, action, subject) = entry;
    let text = |value: &str| aip_aat::jcs::to_string(&value).unwrap_or_default();
    let number = |value: i64| aip_aat::jcs::to_string(&value).unwrap_or_default();
    let (action, actor, at, prev_hash, seq, subject) = (
        text(action),
        text(actor),
        number(at),
        text(prev_hash),
        number(seq),
        text(subject),
    );
    chain::hash_of_members(&[
        ("action", &action),
        ("actor", &actor),
        ("at", &at),
        ("details", details),
        ("prev_hash", &prev_hash),
        ("seq", &seq),
        ("subject", &subject),
    ])
}

impl AuditRecord {
    /// Recomputes this record's hash from its contents.
    pub fn computed_hash(&self) -> String {
        record_hash(
            self.seq,
            self.at,
            (&self.actor, &self.action, &self.subject, &self.details),
            &self.prev_hash,
        )
    }
}

/// Where and how the chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainBreak {
    /// The record's contents do not match its hash: it was edited.
    #[error("record {seq} was modified: its contents do not match its hash")]
    Edited {
        /// The record.
        seq: i64,
    },
    /// A record is missing before `seq` (deleted, or records were renumbered).
    #[error("record {seq} does not follow record {previous}: records are missing or out of order")]
    Gap {
        /// The record found.
        seq: i64,
        /// The record before it.
        previous: i64,
    },
    /// The record does not link to its predecessor's hash: records were removed, replaced or
    /// reordered.
    #[error("record {seq} does not link to the record before it: records were removed, replaced or reordered")]
    Unlinked {
        /// The record.
        seq: i64,
    },
    /// The chain ends before the recorded head: the newest records were removed.
    #[error("the log ends at record {last} but the registry recorded {head} records: records were removed")]
    Truncated {
        /// Last record found.
        last: i64,
        /// Recorded head.
        head: i64,
    },
    /// The last record is not the recorded head.
    #[error("record {seq} is not the recorded head of the log")]
    HeadMismatch {
        /// The record.
        seq: i64,
    },
}

/// Checks the table's records incrementally, in `seq` order, then the recorded head.
#[derive(Debug, Default)]
pub struct AuditChain {
    chain: ChainVerifier,
}

fn signed(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl AuditChain {
    /// Checks the next record.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let link = Link {
            seq: u64::try_from(record.seq).unwrap_or(0),
            prev_hash: &record.prev_hash,
            hash: &record.hash,
        };
        let previous = signed(self.chain.last().0);
        self.chain
            .push(link, record.computed_hash() == record.hash)
            .map_err(|broken| match broken {
                Break::Edited { .. } => ChainBreak::Edited { seq: record.seq },
                Break::Unlinked { .. } => ChainBreak::Unlinked { seq: record.seq },
                _ => ChainBreak::Gap {
                    seq: record.seq,
                    previous,
                },
            })
    }

    /// Checks the end of the chain against the recorded head (`registry_state` is written
    /// with the records, so it must name the last one exactly); returns the record count.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<i64, ChainBreak> {
        let (last_seq, last_hash) = self.chain.last();
        let last = signed(last_seq);
        if last < head_seq {
            return Err(ChainBreak::Truncated { last, head: head_seq });
        }
        if last != head_seq || last_hash != head_hash {
            return Err(ChainBreak::HeadMismatch { seq: last });
        }
        Ok(last)
    }
}

/// Why the audit log could not be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The chain is broken.
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    /// The chain does not match its signed checkpoints, or they do not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// An audit log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Number of records.
    pub records: i64,
    /// Hash of the last record.
    pub head: String,
    /// The last signed checkpoint and the unsigned records after it.
    pub checkpoints: CheckpointReport,
}

impl Database {
    /// Audit records after `after_seq`, in order, at most `limit` (1–10 000).
    pub async fn audit_records(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get("details").map_err(backend)?;
                Ok(AuditRecord {
                    seq: row.try_get("seq").map_err(backend)?,
                    at: row.try_get("at").map_err(backend)?,
                    actor: row.try_get("actor").map_err(backend)?,
                    action: row.try_get("action").map_err(backend)?,
                    subject: row.try_get("subject").map_err(backend)?,
                    // An unparseable `details` is reported by the chain check as an edit.
                    details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
                    prev_hash: row.try_get("prev_hash").map_err(backend)?,
                    hash: row.try_get("hash").map_err(backend)?,
                })
            })
            .collect()
    }

    /// The signed checkpoints, in order of the records they sign.
    pub async fn audit_checkpoints(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT jws FROM audit_checkpoints ORDER BY seq")
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("jws").map_err(backend))
            .collect()
    }

    /// The audit chain head: the last sequence number and its hash.
    pub async fn audit_head(&self) -> Result<(i64, String), DbError> {
        let row = sqlx::query("SELECT audit_seq, audit_head FROM registry_state WHERE id = 1")
            .fetch_one(&self.readers)
            .await
            .map_err(backend)?;
        Ok((
            row.try_get("audit_seq").map_err(backend)?,
            row.try_get("audit_head").map_err(backend)?,
        ))
    }

    /// Checks the whole audit chain against its head and its checkpoints, signed by a key of
    /// `trusted`; `unsigned` says which records may come after the last checkpoint.
    pub async fn verify_audit(&self, trusted: &TrustedKeys, unsigned: Unsigned) -> Result<AuditReport, AuditError> {
        let (head_seq, head_hash) = self.audit_head().await?;
        let signed = self
            .audit_checkpoints()
            .await?
            .iter()
            .map(|jws| Checkpoint::verify(jws, trusted))
            .collect::<Result<Vec<_>, _>>()?;
        let mut checkpoints = CheckpointCheck::new(signed)?;
        let mut chain = AuditChain::default();
        let mut after = 0;
        loop {
            let records = self.audit_records(after, 1000).await?;
            let Some(last) = records.last().map(|r| r.seq) else {
                break;
            };
            for record in &records {
                chain.push(record)?;
                checkpoints.record(u64::try_from(record.seq).unwrap_or(0), &record.hash)?;
            }
            after = last;
        }
        let records = chain.finish(head_seq, &head_hash)?;
        let checkpoints = checkpoints.finish(u64::try_from(records).unwrap_or(0), unsigned)?;
        Ok(AuditReport {
            records,
            head: head_hash,
            checkpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use aip_aat::chain::GENESIS_HASH;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let details = json!({"n": seq});
                let hash = record_hash(seq, 1_000 + seq, ("admin:t1", "agent.revoke", "ag_x", &details), &prev);
                let r = AuditRecord {
                    seq,
                    at: 1_000 + seq,
                    actor: "admin:t1".into(),
                    action: "agent.revoke".into(),
                    subject: "ag_x".into(),
                    details,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn verify(records: &[AuditRecord], head: (i64, &str)) -> Result<i64, ChainBreak> {
        let mut v = AuditChain::default();
        for r in records {
            v.push(r)?;
        }
        v.finish(head.0, head.1)
    }

    #[derive(Serialize)]
    struct Hashed<'a> {
        seq: i64,
        at: i64,
        actor: &'a str,
        action: &'a str,
        subject: &'a str,
        details: &'a Value,
        prev_hash: &'a str,
    }

    #[test]
    fn the_hash_is_over_the_rfc_8785_form_of_the_record() {
        let entries = [
            (
                "admin:t1",
                "agent.register",
                "ag_1",
                json!({"b": 1, "a": [true, null, "x"]}),
            ),
            (
                "agent:\u{e9}\u{1F600}",
                "token.issue",
                "line\nbreak \"quoted\" \\ \u{7}",
                json!({}),
            ),
            (
                "",
                "token.deny",
                "\u{2028}",
                json!({"\u{e9}": {"z": 1.5, "\u{10000}": -0.0}, "e": 1e21}),
            ),
        ];
        for (n, (actor, action, subject, details)) in entries.into_iter().enumerate() {
            let seq = i64::try_from(n).unwrap() + 1;
            let hashed = Hashed {
                seq,
                at: 1_700_000_000,
                actor,
                action,
                subject,
                details: &details,
                prev_hash: GENESIS_HASH,
            };
            let expected = hex::encode(Sha256::digest(aip_aat::jcs::to_vec(&hashed).unwrap()));
            assert_eq!(
                record_hash(seq, 1_700_000_000, (actor, action, subject, &details), GENESIS_HASH),
                expected,
                "entry {n}"
            );
        }
    }

    #[test]
    fn detects_edits_deletions_reordering_and_truncation() {
        let records = chain(5);
        let head = (5, records[4].hash.clone());
        assert_eq!(verify(&records, (head.0, &head.1)), Ok(5));

        let mut edited = records.clone();
        edited[2].details = json!({"n": 99});
        assert_eq!(verify(&edited, (head.0, &head.1)), Err(ChainBreak::Edited { seq: 3 }));

        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(
            verify(&deleted, (head.0, &head.1)),
            Err(ChainBreak::Gap { seq: 3, previous: 1 })
        );

        // Swap two records' contents but keep the sequence numbers in order.
        let mut swapped = records.clone();
        let (a, b) = (swapped[1].clone(), swapped[2].clone());
        swapped[1] = AuditRecord { seq: 2, ..b };
        swapped[2] = AuditRecord { seq: 3, ..a };
        assert!(matches!(
            verify(&swapped, (head.0, &head.1)),
            Err(ChainBreak::Edited { seq: 2 })
        ));

        assert_eq!(
            verify(&records[..4], (head.0, &head.1)),
            Err(ChainBreak::Truncated { last: 4, head: 5 })
        );
        assert_eq!(
            verify(&records, (5, GENESIS_HASH)),
            Err(ChainBreak::HeadMismatch { seq: 5 })
        );
    }
}
