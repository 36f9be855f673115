//! The audit hash chain, shared by the authority's audit table and the proxy's JSONL log.
//!
//! Every record carries its position (`seq`, from 1), the hash of the record before it
//! (`prev_hash`; the first record has [`GENESIS_HASH`]) and its own `hash`: the lowercase hex
//! SHA-256 of the RFC 8785 form of the record without `hash` — so the hash covers `seq` and
//! `prev_hash`, and editing, deleting, reordering or renumbering records breaks the chain.
//!
//! [`ChainVerifier`] checks records in order. Where the chain's head (the last record written)
//! is kept, and how strictly it must match, is each log's own business: the authority keeps it
//! in the same transaction as the records, the proxy in a sidecar file that may lag behind.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record whose RFC 8785 form (without `hash`) is `canonical`; a record not yet
/// in that form hashes as [`crate::jcs::sha256_hex`].
pub fn record_hash(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
}

/// The hash of a record given as its members, each value already in RFC 8785 form and the
/// members in the order RFC 8785 sorts their names: the object is written member by member
/// into the hash, so values canonicalized once are not canonicalized again.
pub fn hash_of_members(members: &[(&str, &str)]) -> String {
    let mut hasher = Sha256::new();
    for (i, (name, value)) in members.iter().enumerate() {
        hasher.update(if i == 0 { "{\"" } else { ",\"" });
        hasher.update(name);
        hasher.update("\":");
        hasher.update(value);
    }
    hasher.update(if members.is_empty() { "{}" } else { "}" });
    hex::encode(hasher.finalize())
}

/// Whether `text` has the form of a hash: 64 lowercase hex digits.
pub fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The chain fields of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link<'a> {
    /// Its position, from 1.
    pub seq: u64,
    /// The hash it names as its predecessor's.
    pub prev_hash: &'a str,
    /// Its own hash, as stored.
    pub hash: &'a str,
}

/// The first break [`ChainVerifier`] finds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Break {
    /// The record's contents do not match its hash: it was edited.
    Edited {
        /// Its sequence number.
        seq: u64,
    },
    /// The record does not follow the one before it: records are missing, duplicated or out of
    /// order.
    OutOfSequence {
        /// The sequence number that should be here.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The record's `prev_hash` is not the hash of the record before it.
    Unlinked {
        /// Its sequence number.
        seq: u64,
    },
}

/// Checks records one at a time, in order: each must match its own hash, follow the record
/// before it, and name that record's hash as `prev_hash`.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    last_seq: u64,
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
    /// A verifier at the start of a chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next record: `intact` says whether its contents match its hash (how that is
    /// computed depends on how the log stores records). The contents are checked first, then
    /// the position, then the link.
    pub fn push(&mut self, link: Link<'_>, intact: bool) -> Result<(), Break> {
        if !intact {
            return Err(Break::Edited { seq: link.seq });
        }
        let expected = self.last_seq + 1;
        if link.seq != expected {
            return Err(Break::OutOfSequence {
                expected,
                found: link.seq,
            });
        }
        if link.prev_hash != self.last_hash {
            return Err(Break::Unlinked { seq: link.seq });
        }
        self.last_seq = link.seq;
        link.hash.clone_into(&mut self.last_hash);
        Ok(())
    }

    /// The last record accepted: its sequence number (0 before any) and hash ([`GENESIS_HASH`]
    /// before any).
    pub fn last(&self) -> (u64, &str) {
        (self.last_seq, &self.last_hash)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::jcs::sha256_hex;

    /// `n` records `{seq, prev_hash, n}` chained the way the logs chain them.
    fn chain(n: u64) -> Vec<(Value, String)> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let record = json!({"seq": seq, "prev_hash": prev, "n": seq * 10});
                let hash = sha256_hex(&record).unwrap();
                prev.clone_from(&hash);
                (record, hash)
            })
            .collect()
    }

    fn check(records: &[(Value, String)]) -> Result<u64, Break> {
        let mut verifier = ChainVerifier::new();
        for (record, hash) in records {
            let link = Link {
                seq: record["seq"].as_u64().unwrap(),
                prev_hash: record["prev_hash"].as_str().unwrap(),
                hash,
            };
            verifier.push(link, sha256_hex(record).unwrap() == *hash)?;
        }
        Ok(verifier.last().0)
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(check(&chain(5)), Ok(5));
        assert_eq!(check(&[]), Ok(0));
        assert_eq!(ChainVerifier::new().last(), (0, GENESIS_HASH));
    }

    #[test]
    fn edits_deletions_reordering_and_relinking_are_found() {
        let records = chain(5);

        let mut edited = records.clone();
        edited[2].0["n"] = json!(99);
        assert_eq!(check(&edited), Err(Break::Edited { seq: 3 }));

        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted), Err(Break::OutOfSequence { expected: 2, found: 3 }));

        let mut swapped = records.clone();
        swapped.swap(1, 2);
        assert_eq!(check(&swapped), Err(Break::OutOfSequence { expected: 2, found: 3 }));

        // A record re-hashed after its predecessor changed still names the old hash.
        let mut relinked = records.clone();
        relinked[1].0["prev_hash"] = json!(GENESIS_HASH);
        relinked[1].1 = sha256_hex(&relinked[1].0).unwrap();
        assert_eq!(check(&relinked), Err(Break::Unlinked { seq: 2 }));

        // A renumbered record no longer matches its hash: reported as the edit it is.
        let mut renumbered = records;
        renumbered[4].0["seq"] = json!(7);
        assert_eq!(check(&renumbered), Err(Break::Edited { seq: 7 }));
    }

    #[test]
    fn members_hash_as_their_canonical_object() {
        let record = json!({"b": [1, "x"], "a": {"z": null}, "c": "é"});
        let members = [("a", r#"{"z":null}"#), ("b", r#"[1,"x"]"#), ("c", "\"é\"")];
        assert_eq!(hash_of_members(&members), sha256_hex(&record).unwrap());
        assert_eq!(hash_of_members(&[]), sha256_hex(&json!({})).unwrap());
        assert!(is_hash(GENESIS_HASH) && is_hash(&sha256_hex(&record).unwrap()));
        assert!(!is_hash("ABC") && !is_hash(&"A".repeat(64)));
    }
}
