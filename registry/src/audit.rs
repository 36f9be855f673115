//! The hash-chained audit log of registry mutations.
//!
//! Each record holds the SHA-256 of its predecessor (`prev_hash`) and its own hash over the
//! RFC 8785 form of `{seq, at, actor, action, subject, details, prev_hash}`. The chain head
//! (last sequence number and hash) is kept separately in the registry state, so removing the
//! last records is detected too.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A mutation to record.
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

/// Appends `entries` (each with its time) to the chain, in one statement inside the caller's
/// write transaction, after the record numbered `seq` whose hash is `head`. Returns the new
/// last sequence number and hash; the caller records them in `registry_state` (the
/// `audit_log_head` trigger keeps the head hash itself current).
pub async fn append(
    conn: &mut sqlx::AnyConnection,
    dialect: crate::store::Dialect,
    seq: i64,
    head: &str,
    entries: &[(&AuditEntry, i64)],
) -> Result<(i64, String), crate::store::StoreError> {
    let mut script = crate::store::Script::new(dialect);
    let (seq, head) = insert(&mut script, seq, head, entries)?;
    script.execute(conn).await?;
    Ok((seq, head))
}

/// Adds to `script` the insert of `entries` (each with its time) after the record numbered
/// `seq` whose hash is `head`, as one statement. Returns the new last sequence number and
/// hash, as [`append`] does.
pub fn insert(
    script: &mut crate::store::Script,
    seq: i64,
    head: &str,
    entries: &[(&AuditEntry, i64)],
) -> Result<(i64, String), crate::store::StoreError> {
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
        let details =
            aip_aat::jcs::to_string(&entry.details).map_err(|e| crate::store::StoreError::Backend(Box::new(e)))?;
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
    match aip_aat::jcs::to_string(details) {
        Ok(details) => canonical_record_hash(seq, at, (actor, action, subject), &details, prev_hash),
        // A serde_json::Value always has a canonical form; fall back to plain JSON regardless.
        Err(_) => {
            let hashed = Hashed {
                seq,
                at,
                actor,
                action,
                subject,
                details,
                prev_hash,
            };
            hex::encode(Sha256::digest(serde_json::to_vec(&hashed).unwrap_or_default()))
        }
    }
}

/// The hash of a record whose details are already in their RFC 8785 form, `details`: the
/// SHA-256 of the record's own RFC 8785 form, written member by member (in the order RFC 8785
/// sorts them) so that the details are not canonicalized a second time.
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
    let members = [
        ("action", action.as_str()),
        ("actor", &actor),
        ("at", &at),
        ("details", details),
        ("prev_hash", &prev_hash),
        ("seq", &seq),
        ("subject", &subject),
    ];
    let mut hasher = Sha256::new();
    for (i, (name, value)) in members.iter().enumerate() {
        hasher.update(if i == 0 { "{\"" } else { ",\"" });
        hasher.update(name);
        hasher.update("\":");
        hasher.update(value);
    }
    hasher.update("}");
    hex::encode(hasher.finalize())
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

/// Verifies records incrementally, in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainVerifier {
    /// Checks the next record.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if record.seq != self.last_seq + 1 {
            return Err(ChainBreak::Gap {
                seq: record.seq,
                previous: self.last_seq,
            });
        }
        if record.computed_hash() != record.hash {
            return Err(ChainBreak::Edited { seq: record.seq });
        }
        if record.prev_hash != self.last_hash {
            return Err(ChainBreak::Unlinked { seq: record.seq });
        }
        self.last_seq = record.seq;
        self.last_hash.clone_from(&record.hash);
        Ok(())
    }

    /// Checks the end of the chain against the recorded head; returns the record count.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<i64, ChainBreak> {
        if self.last_seq < head_seq {
            return Err(ChainBreak::Truncated {
                last: self.last_seq,
                head: head_seq,
            });
        }
        if self.last_seq != head_seq || self.last_hash != head_hash {
            return Err(ChainBreak::HeadMismatch { seq: self.last_seq });
        }
        Ok(self.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let mut v = ChainVerifier::default();
        for r in records {
            v.push(r)?;
        }
        v.finish(head.0, head.1)
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
