//! The keys and the revocation list in force. A list older than the one in force is refused
//! (rollback); a list at least as new, or a 304, restarts the freshness clock, whose age
//! [`RegistryLink::ensure_fresh`](super::RegistryLink::ensure_fresh) holds against
//! `max_staleness`, as it holds the expiry of a signed list against the time.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aip_aat::keys::{JwkSet, Jwks};
use aip_aat::revocation::{RevocationIndex, RevocationList};

use super::error::LinkError;
use super::events::ListCounts;
use super::limits::MAX_KEYS;

/// The keys and list in force, read by lookups and replaced by the link's thread.
pub(super) struct State {
    keys: RwLock<Arc<JwkSet>>,
    index: RwLock<Arc<RevocationIndex>>,
    list: Mutex<ListState>,
}

/// The list in force, apart from its index.
#[derive(Default)]
struct ListState {
    loaded: bool,
    version: u64,
    counts: ListCounts,
    etag: Option<String>,
    loaded_at: Option<Instant>,
    /// The signed list's `expires_at` (Unix time); `None` for lists fetched unsigned.
    expires_at: Option<i64>,
}

impl State {
    /// No keys and no list yet.
    pub(super) fn new() -> Self {
        Self {
            keys: RwLock::new(Arc::new(JwkSet::default())),
            index: RwLock::new(Arc::new(RevocationIndex::default())),
            list: Mutex::new(ListState::default()),
        }
    }

    /// The issuer keys in force.
    pub(super) fn keys(&self) -> Arc<JwkSet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `keys` in force; returns how many there are.
    pub(super) fn set_keys(&self, keys: JwkSet) -> usize {
        let count = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        count
    }

    /// The revocation index in force.
    pub(super) fn index(&self) -> Arc<RevocationIndex> {
        Arc::clone(&self.index.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Version of the list in force.
    pub(super) fn version(&self) -> u64 {
        lock(&self.list).version
    }

    /// Version and entries of the list in force.
    pub(super) fn version_and_counts(&self) -> (u64, ListCounts) {
        let state = lock(&self.list);
        (state.version, state.counts)
    }

    /// The ETag of the list in force, for a conditional request.
    pub(super) fn etag(&self) -> Option<String> {
        lock(&self.list).etag.clone()
    }

    /// The list in force is still current (a 304): the freshness clock restarts.
    pub(super) fn confirm(&self) {
        lock(&self.list).loaded_at = Some(Instant::now());
    }

    /// The `expires_at` of the signed list in force (Unix time), if it came signed.
    pub(super) fn expires_at(&self) -> Option<i64> {
        lock(&self.list).expires_at
    }

    /// Time since the last successful load; `Duration::MAX` before the first.
    pub(super) fn age(&self) -> Duration {
        lock(&self.list).loaded_at.map_or(Duration::MAX, |at| at.elapsed())
    }

    /// Puts `list` in force unless it is older than the list in force; either way a list at
    /// least as new restarts the freshness clock. `expires_at` is the expiry of a signed
    /// list: another copy of the version in force can only move it later. `Some` with its
    /// entries when the version changed.
    pub(super) fn install(
        &self,
        list: &RevocationList,
        etag: Option<String>,
        expires_at: Option<i64>,
        source_name: &str,
    ) -> Result<Option<ListCounts>, LinkError> {
        let mut state = lock(&self.list);
        if state.loaded && list.version < state.version {
            return Err(LinkError::Rollback {
                source_name: source_name.to_owned(),
                offered: list.version,
                loaded: state.version,
            });
        }
        let changed = !state.loaded || list.version != state.version;
        let counts = ListCounts::from(list);
        if changed {
            *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(RevocationIndex::from(list));
            state.counts = counts;
        }
        state.expires_at = match (changed, state.expires_at, expires_at) {
            (false, Some(held), Some(offered)) => Some(held.max(offered)),
            _ => expires_at,
        };
        state.loaded = true;
        state.version = list.version;
        state.etag = etag;
        state.loaded_at = Some(Instant::now());
        Ok(changed.then_some(counts))
    }
}

/// Parses a JWKS document holding 1 to [`MAX_KEYS`] usable keys.
pub(super) fn parse_jwks(bytes: &[u8], source_name: &dyn fmt::Display) -> Result<JwkSet, LinkError> {
    let jwks: Jwks = aip_aat::json::from_slice(bytes).map_err(|e| LinkError::Decode {
        source_name: source_name.to_string(),
        reason: format!("not a JWK set: {e}"),
    })?;
    if jwks.keys.len() > MAX_KEYS * 4 {
        return Err(LinkError::KeyCount {
            source_name: source_name.to_string(),
            count: jwks.keys.len(),
        });
    }
    let set = JwkSet::from_jwks(&jwks).map_err(|error| LinkError::Keys {
        source_name: source_name.to_string(),
        reason: error.to_string(),
    })?;
    if set.is_empty() || set.len() > MAX_KEYS {
        return Err(LinkError::KeyCount {
            source_name: source_name.to_string(),
            count: set.len(),
        });
    }
    Ok(set)
}

/// Locks `mutex`, recovering from poisoning: every critical section here leaves the state
/// consistent.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
