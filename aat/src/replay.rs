//! Replay protection: remembering used `jti`s for as long as they could be accepted.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// Why an identifier could not be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// It was recorded before and has not expired: a replay.
    #[error("identifier already used")]
    Replayed,
    /// The cache is at capacity with live entries, so freshness cannot be proven.
    /// Callers must refuse the request (fail closed).
    #[error("replay cache is full")]
    Full,
    /// The store could not be written or reached, so freshness cannot be proven.
    /// Callers must refuse the request (fail closed).
    #[error("replay store unavailable")]
    Unavailable,
}

/// What kind of identifier is recorded. Kinds never collide: a proof `jti` chosen equal to
/// an AAT's `jti` cannot use up that AAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplayScope {
    /// An AAT's `jti` (single-use AATs, spec 7.5.3 step 9).
    Aat,
    /// A per-call proof's `jti`.
    Proof,
    /// A DPoP proof's `jti` (RFC 9449 §11.1).
    Dpop,
}

impl ReplayScope {
    /// A short tag for storage keys (`aat`, `proof`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aat => "aat",
            Self::Proof => "proof",
            Self::Dpop => "dpop",
        }
    }

    /// SHA-256(scope ‖ id): the fixed-size key every store records `id` under, so that stores
    /// never hold identifiers themselves and scopes never collide.
    pub fn digest(self, id: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update([self as u8])
            .chain_update(id.as_bytes())
            .finalize()
            .into()
    }
}

/// Atomic check-and-record of one-time identifiers (spec 14.8.4).
pub trait ReplayCache: Send + Sync {
    /// Records `id` in `scope` as used through `expires_at` inclusive (Unix seconds), or fails
    /// if it is already recorded and unexpired. Must be atomic across concurrent callers.
    fn check_and_record(&self, scope: ReplayScope, id: &str, expires_at: i64, now: i64) -> Result<(), ReplayError>;
}

/// Default minimum time an entry is kept (at least 600 s: docs/architecture.md, "The AAT on the wire").
pub const DEFAULT_MIN_RETENTION_SECS: i64 = 600;
const SHARDS: usize = 16;

/// A bounded in-memory [`ReplayCache`].
///
/// * Entries are kept through `max(expires_at, now + min_retention)` and evicted only after
///   that second: a live entry is never dropped to make room. When full of live entries, new
///   identifiers are refused with [`ReplayError::Full`].
/// * Identifiers are stored as the first 128 bits of SHA-256(scope ‖ id) (fixed-size, no
///   allocation per entry; collisions are infeasible), about 60 bytes per entry.
/// * Sixteen independently locked shards keep contention low.
///
/// Size it for the peak rate: `capacity ≥ calls per second × retention`.
#[derive(Debug)]
pub struct InMemoryReplayCache {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    min_retention: i64,
}

#[derive(Debug, Default)]
struct Shard {
    expiry_of: HashMap<u128, i64>,
    by_expiry: BinaryHeap<Reverse<(i64, u128)>>,
}

impl Shard {
    fn evict_expired(&mut self, now: i64) {
        while let Some(Reverse((expiry, key))) = self.by_expiry.peek().copied() {
            // An entry covers its expiry second: `expires_at` is the last second at which
            // the identifier could still be accepted.
            if expiry >= now {
                break;
            }
            self.by_expiry.pop();
            // Only remove the map entry if it is this heap entry's (not a later re-insert).
            if self.expiry_of.get(&key) == Some(&expiry) {
                self.expiry_of.remove(&key);
            }
        }
    }
}

impl InMemoryReplayCache {
    /// A cache holding up to `capacity` live identifiers (rounded up to a multiple of 16),
    /// each kept at least [`DEFAULT_MIN_RETENTION_SECS`].
    pub fn new(capacity: usize) -> Self {
        Self::with_min_retention(capacity, DEFAULT_MIN_RETENTION_SECS)
    }

    /// As [`InMemoryReplayCache::new`] with another minimum retention in seconds.
    pub fn with_min_retention(capacity: usize, min_retention_secs: i64) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Self {
            shards,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            min_retention: min_retention_secs.max(0),
        }
    }

    /// Number of entries currently held (live or awaiting eviction).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).expiry_of.len())
            .sum()
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayCache for InMemoryReplayCache {
    fn check_and_record(&self, scope: ReplayScope, id: &str, expires_at: i64, now: i64) -> Result<(), ReplayError> {
        let digest = scope.digest(id);
        let mut key_bytes = [0u8; 16];
        key_bytes.copy_from_slice(&digest[..16]);
        let key = u128::from_le_bytes(key_bytes);
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard.evict_expired(now);
        let len = shard.expiry_of.len();
        let expiry = expires_at.max(now.saturating_add(self.min_retention));
        match shard.expiry_of.entry(key) {
            Entry::Occupied(_) => return Err(ReplayError::Replayed),
            Entry::Vacant(_) if len >= self.shard_capacity => return Err(ReplayError::Full),
            Entry::Vacant(slot) => {
                slot.insert(expiry);
            }
        }
        shard.by_expiry.push(Reverse((expiry, key)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ReplayScope = ReplayScope::Proof;

    #[test]
    fn scopes_do_not_collide() {
        let cache = InMemoryReplayCache::new(100);
        cache.check_and_record(ReplayScope::Proof, "same", 10, 0).unwrap();
        assert_eq!(cache.check_and_record(ReplayScope::Aat, "same", 10, 0), Ok(()));
        assert_eq!(
            cache.check_and_record(ReplayScope::Aat, "same", 10, 0),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn second_use_is_a_replay_through_expiry() {
        let cache = InMemoryReplayCache::with_min_retention(100, 0);
        assert_eq!(cache.check_and_record(P, "a", 1_010, 1_000), Ok(()));
        assert_eq!(cache.check_and_record(P, "a", 1_010, 1_005), Err(ReplayError::Replayed));
        assert_eq!(
            cache.check_and_record(P, "a", 1_010, 1_010),
            Err(ReplayError::Replayed),
            "inclusive expiry"
        );
        assert_eq!(
            cache.check_and_record(P, "a", 1_010, 1_011),
            Ok(()),
            "expired entries are evicted"
        );
    }

    #[test]
    fn minimum_retention_applies() {
        let cache = InMemoryReplayCache::new(100);
        cache.check_and_record(P, "a", 1_001, 1_000).unwrap();
        assert_eq!(cache.check_and_record(P, "a", 1_001, 1_600), Err(ReplayError::Replayed));
        assert_eq!(cache.check_and_record(P, "a", 1_001, 1_601), Ok(()));
    }

    #[test]
    fn never_evicts_live_entries_when_full() {
        let cache = InMemoryReplayCache::with_min_retention(16, 0);
        // Fill every shard to its single slot with live entries.
        let mut stored = Vec::new();
        for i in 0..10_000 {
            let id = format!("id-{i}");
            match cache.check_and_record(P, &id, 2_000, 1_000) {
                Ok(()) => stored.push(id),
                Err(ReplayError::Full) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(stored.len(), 16);
        for id in &stored {
            assert_eq!(cache.check_and_record(P, id, 2_000, 1_500), Err(ReplayError::Replayed));
        }
        // Once they expire, there is room again.
        assert_eq!(cache.check_and_record(P, "fresh", 3_000, 2_001), Ok(()));
    }

    #[test]
    fn concurrent_callers_see_exactly_one_success() {
        let cache = std::sync::Arc::new(InMemoryReplayCache::new(1_000));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|i| cache.check_and_record(P, &format!("j{i}"), 10, 0).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 200);
    }
}
