//! Where the proxy remembers used proof (and single-use AAT) identifiers, so that each is
//! accepted once whichever `aip-proxy` process sees it (docs/architecture.md, "The AAT on the
//! wire"; `aat.replay_store`).
//!
//! - `local` — the default: a directory every proxy of the user on this host shares;
//! - `redis` — a Redis server, shared across hosts;
//! - this file — [`Layered`]: this process's own memory first, then the shared store, and
//!   [`open`], which builds what the policy names.

mod local;
mod redis;

use std::sync::Arc;

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

/// The replay cache `setting` names, opened: the local store's directory is created (0700)
/// and checked now; a Redis server is connected to on first use. The error is one line.
pub fn open(setting: &ReplayStore) -> Result<Arc<dyn ReplayCache>, String> {
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
            Ok(Arc::new(Layered::new(store)))
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
    use super::*;

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
