//! Where the proxy remembers used proof (and single-use AAT) identifiers, so that each is
//! accepted once whichever `aip-proxy` process sees it (docs/architecture.md, "The AAT on the
//! wire"; `aat.replay_store`).
//!
//! - `local` — the default: a directory every proxy of the user on this host shares;
//! - `redis` — a Redis server, shared across hosts;
//! - this file — [`Layered`]: this process's own memory first, then the shared store;
//!   [`DpopInProcess`]: the front door's DPoP proofs in its memory, whatever the local store;
//!   and [`open`], which builds what the policy names.

mod local;
mod redis;

use std::sync::Arc;

use aip_aat::dpop::MAX_DPOP_AGE_SECS;
use aip_aat::replay::{InMemoryReplayCache, ReplayCache, ReplayError, ReplayScope};

use crate::policy::ReplayStore;

pub use local::{LocalReplayStore, default_dir};
pub use redis::RedisReplayStore;

/// Identifiers remembered at once, by each process in memory and by the local store. Each is
/// kept for the proof's validity window (at least 600 s), so this bounds the sustained rate at
/// about 1 600 calls per second; beyond it, calls are refused (`proof_replayed`: freshness
/// cannot be proven) rather than unchecked.
pub const REPLAY_CAPACITY: usize = 1_000_000;

/// This process's memory in front of a shared store. An identifier this process has seen is
/// refused without asking the store; any other is recorded in both, and accepted only if the
/// shared store accepts it. A store that fails refuses the call.
#[derive(Debug)]
pub struct Layered<S> {
    memory: InMemoryReplayCache,
    shared: S,
}

impl<S: ReplayCache> Layered<S> {
    /// `shared` behind a memory cache of [`REPLAY_CAPACITY`] entries.
    pub fn new(shared: S) -> Self {
        Self {
            memory: InMemoryReplayCache::new(REPLAY_CAPACITY),
            shared,
        }
    }

    /// The shared store.
    pub fn shared(&self) -> &S {
        &self.shared
    }
}

impl<S: ReplayCache> ReplayCache for Layered<S> {
    fn check_and_record(&self, scope: ReplayScope, id: &str, expires_at: i64, now: i64) -> Result<(), ReplayError> {
        self.memory.check_and_record(scope, id, expires_at, now)?;
        self.shared.check_and_record(scope, id, expires_at, now)
    }
}

/// DPoP proof identifiers a front door keeps in memory at once: each is kept until its `iat`
/// is too old to be accepted (at most 330 s after it is recorded), so this sustains about
/// 12 000 proofs per second (about 60 bytes each, allocated as they come); beyond it, proofs
/// are refused (`proof_replayed`) rather than unchecked.
pub const DPOP_CAPACITY: usize = 4_000_000;

/// The front door's replay state with the host's local store: DPoP proofs in this process's
/// memory, everything else in `rest`.
///
/// A DPoP proof names the URL it is for (`htu`): only the front door serving that URL accepts
/// it, so the host's other proxies need not see its `jti`, and a file per proof would cost more
/// than the rest of the checks. What memory alone cannot see is a proof accepted before a
/// restart: a proof made before this store was created is refused as a possible replay (its
/// client makes a new one). Several processes serving one URL share DPoP state through Redis.
#[derive(Debug)]
pub struct DpopInProcess<S> {
    dpop: InMemoryReplayCache,
    /// When this store was created (Unix seconds): proofs made before it are refused.
    created: i64,
    rest: S,
}

impl<S: ReplayCache> DpopInProcess<S> {
    /// DPoP proofs in memory (up to `capacity`), created at `now`; other identifiers in `rest`.
    pub fn new(rest: S, capacity: usize, now: i64) -> Self {
        Self {
            dpop: InMemoryReplayCache::with_min_retention(capacity, 0),
            created: now,
            rest,
        }
    }
}

impl<S: ReplayCache> ReplayCache for DpopInProcess<S> {
    fn check_and_record(&self, scope: ReplayScope, id: &str, expires_at: i64, now: i64) -> Result<(), ReplayError> {
        if scope != ReplayScope::Dpop {
            return self.rest.check_and_record(scope, id, expires_at, now);
        }
        // A DPoP proof is kept until MAX_DPOP_AGE_SECS past its `iat`
        // (`CallVerifier::verify_dpop`), so this is its `iat`.
        let made = expires_at.saturating_sub(MAX_DPOP_AGE_SECS);
        if made < self.created {
            return Err(ReplayError::Replayed);
        }
        self.dpop.check_and_record(scope, id, expires_at, now)
    }
}

/// The replay cache `setting` names, opened: the local store's directory is created (0700)
/// and checked now; a Redis server is connected to on first use. The error is one line.
///
/// For a front door (`front_door_since`: when it starts, Unix seconds) with the local store,
/// DPoP proofs are kept in its memory ([`DpopInProcess`]).
pub fn open(setting: &ReplayStore, front_door_since: Option<i64>) -> Result<Arc<dyn ReplayCache>, String> {
    match setting {
        ReplayStore::Local(dir) => {
            let dir = match dir {
                Some(dir) => dir.clone(),
                None => default_dir().ok_or(
                    "no directory for the replay store: set XDG_RUNTIME_DIR, XDG_STATE_HOME or HOME, or \
                     spec.aat.replay_store",
                )?,
            };
            let store = LocalReplayStore::open(&dir, REPLAY_CAPACITY)
                .map_err(|e| format!("replay store {}: {e}", dir.display()))?;
            tracing::info!(
                "proof replay state shared with this host's proxies in {}",
                dir.display()
            );
            let layered = Layered::new(store);
            Ok(match front_door_since {
                Some(now) => Arc::new(DpopInProcess::new(layered, DPOP_CAPACITY, now)),
                None => Arc::new(layered),
            })
        }
        ReplayStore::Redis { url, name } => {
            let store = RedisReplayStore::new(url, name.clone())?;
            tracing::info!("proof replay state shared through redis://{name}");
            Ok(Arc::new(Layered::new(store)))
        }
    }
}

#[cfg(test)]
mod tests {
    use aip_aat::dpop::MAX_DPOP_FUTURE_SECS;

    use super::*;

    #[test]
    fn a_front_door_keeps_dpop_proofs_in_memory_and_refuses_those_made_before_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let started = 1_000;
        let door = DpopInProcess::new(Layered::new(LocalReplayStore::open(&path, 100).unwrap()), 100, started);
        let expiry = |iat: i64| iat + MAX_DPOP_AGE_SECS;
        assert_eq!(
            door.check_and_record(ReplayScope::Dpop, "p", expiry(1_001), 1_001),
            Ok(())
        );
        assert_eq!(
            door.check_and_record(ReplayScope::Dpop, "p", expiry(1_001), 1_002),
            Err(ReplayError::Replayed)
        );
        // Nothing of it on the host's store.
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
        // Made before the start: perhaps accepted before a restart.
        for iat in [started - 1, started - 10] {
            assert_eq!(
                door.check_and_record(ReplayScope::Dpop, "q", expiry(iat), 1_002),
                Err(ReplayError::Replayed)
            );
        }
        // Up to MAX_DPOP_FUTURE_SECS ahead is still a proof made after the start.
        assert_eq!(
            door.check_and_record(ReplayScope::Dpop, "r", expiry(1_002 + MAX_DPOP_FUTURE_SECS), 1_002),
            Ok(())
        );
        // Other identifiers go to the host's store.
        assert_eq!(door.check_and_record(ReplayScope::Proof, "p", 0, 1_002), Ok(()));
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 1);
    }

    #[test]
    fn the_memory_answers_replays_and_the_store_decides_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let a = Layered::new(LocalReplayStore::open(&path, 100).unwrap());
        let b = Layered::new(LocalReplayStore::open(&path, 100).unwrap());
        assert_eq!(a.check_and_record(ReplayScope::Proof, "j", 0, 1_000), Ok(()));
        assert_eq!(
            a.check_and_record(ReplayScope::Proof, "j", 0, 1_000),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            b.check_and_record(ReplayScope::Proof, "j", 0, 1_000),
            Err(ReplayError::Replayed)
        );
        // Once refused by the store, the other process's memory refuses it too.
        std::fs::remove_dir_all(&path).unwrap();
        assert_eq!(
            b.check_and_record(ReplayScope::Proof, "j", 0, 1_000),
            Err(ReplayError::Replayed)
        );
    }
}
