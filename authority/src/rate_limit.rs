//! Rate limits at the authority's HTTP edge (spec 8.4.2; `[rate_limits]` in aip.toml):
//! registration (`POST /v1/agents`), challenges and tokens (`POST /v1/challenge`,
//! `POST /v1/token`, `POST /oauth/token`, refreshes included), and every failed authentication (any answer 401: a
//! bearer token, a proof or a user credential refused) are counted per client address and per
//! credential or agent, each in a keyed GCRA table (governor). Past a limit the answer is
//! `429 rate_limited` with `Retry-After`.
//!
//! The client address is the connection's peer (`ConnectInfo`), never a forwarding header;
//! IPv6 addresses count per /64, the smallest block a client is usually given. Credentials are
//! kept only as keyed hashes. Memory is bounded: every [`SWEEP_EVERY`] checks a table drops the
//! keys whose state is back to fresh, and a table still holding `max_tracked_keys` keys after
//! that is emptied (a flood of sources then resets the limits rather than locking every
//! client out; see docs/decisions.md).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aip_http::{ClientAdmission, TooManyRequests};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// How many checks a table takes between two sweeps of its stale keys.
pub const SWEEP_EVERY: u64 = 1024;

/// `[rate_limits]` in aip.toml. Every limit is a number of requests per minute, which is also
/// the burst allowed at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Whether requests are limited at all.
    pub enabled: bool,
    /// `POST /v1/agents` per client address.
    pub registration_per_address: u32,
    /// `POST /v1/agents` per bearer credential (registration or admin token).
    pub registration_per_token: u32,
    /// `POST /v1/challenge` and `POST /v1/token` per client address.
    pub token_per_address: u32,
    /// `POST /v1/challenge` and `POST /v1/token` per agent.
    pub token_per_agent: u32,
    /// Failed authentications (answers 401) per client address.
    pub failed_auth_per_address: u32,
    /// Failed authentications per credential (bearer token) or agent (challenge, token).
    pub failed_auth_per_credential: u32,
    /// Keys (addresses, credentials) one table tracks at most.
    pub max_tracked_keys: u32,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            enabled: true,
            registration_per_address: 120,
            registration_per_token: 120,
            token_per_address: 1_200,
            token_per_agent: 120,
            failed_auth_per_address: 60,
            failed_auth_per_credential: 30,
            max_tracked_keys: 100_000,
        }
    }
}

impl RateLimitSection {
    /// The section checked: `Err((member, message))` names the member at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let per_minute = [
            ("rate_limits.registration_per_address", self.registration_per_address),
            ("rate_limits.registration_per_token", self.registration_per_token),
            ("rate_limits.token_per_address", self.token_per_address),
            ("rate_limits.token_per_agent", self.token_per_agent),
            ("rate_limits.failed_auth_per_address", self.failed_auth_per_address),
            (
                "rate_limits.failed_auth_per_credential",
                self.failed_auth_per_credential,
            ),
        ];
        for (member, value) in per_minute {
            if !(1..=1_000_000).contains(&value) {
                return Err((
                    member,
                    format!(
                        "must be between 1 and 1000000 requests per minute (got {value}); set `enabled = false` to turn the limits off"
                    ),
                ));
            }
        }
        if !(1_000..=10_000_000).contains(&self.max_tracked_keys) {
            return Err((
                "rate_limits.max_tracked_keys",
                format!("must be between 1000 and 10000000 (got {})", self.max_tracked_keys),
            ));
        }
        Ok(())
    }
}

type Keyed = RateLimiter<u128, DashMapStateStore<u128>, DefaultClock>;

/// One keyed table: a GCRA state per key, swept and capped.
struct Table {
    quota: Quota,
    limiter: RwLock<Arc<Keyed>>,
    checks: AtomicU64,
    max_keys: usize,
}

impl Table {
    fn new(per_minute: u32, max_keys: usize) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            quota,
            limiter: RwLock::new(Arc::new(Keyed::dashmap(quota))),
            checks: AtomicU64::new(0),
            max_keys,
        }
    }

    fn current(&self) -> Arc<Keyed> {
        self.limiter.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes one cell for `key`; `Err(wait)` when the key is over its limit.
    fn check(&self, key: u128) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        self.current()
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the keys whose state is fresh again; empties a table still at its cap.
    fn sweep(&self) {
        let limiter = self.current();
        limiter.retain_recent();
        if limiter.len() >= self.max_keys {
            tracing::warn!(
                keys = limiter.len(),
                "a rate-limit table reached rate_limits.max_tracked_keys and was emptied"
            );
            *self.limiter.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Keyed::dashmap(self.quota));
        }
        limiter.shrink_to_fit();
    }

    /// The keys held now.
    fn len(&self) -> usize {
        self.current().len()
    }
}

/// A limit per address and one per credential.
struct Pair {
    address: Table,
    credential: Table,
}

impl Pair {
    fn new(per_address: u32, per_credential: u32, max_keys: usize) -> Self {
        Self {
            address: Table::new(per_address, max_keys),
            credential: Table::new(per_credential, max_keys),
        }
    }

    /// Takes a cell for the address and one for the credential (each when known); the longest
    /// wait when either is over its limit.
    fn check(&self, address: Option<u128>, credential: Option<u128>) -> Result<(), Duration> {
        let address = address.map_or(Ok(()), |key| self.address.check(key));
        let credential = credential.map_or(Ok(()), |key| self.credential.check(key));
        match (address, credential) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(wait), _) | (_, Err(wait)) => Err(wait),
        }
    }
}

/// Which limit a request falls under before it is served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Registration,
    Token,
    Other,
}

impl Route {
    fn of(request: &Request) -> Self {
        if request.method() != Method::POST {
            return Self::Other;
        }
        match request.uri().path() {
            "/v1/agents" => Self::Registration,
            "/v1/challenge" | "/v1/token" | "/oauth/token" => Self::Token,
            _ => Self::Other,
        }
    }
}

/// Whose failures a key of the blocked list counts.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
enum Source {
    Address,
    Credential,
}

/// The authority's rate limits, shared by every connection.
pub struct RateLimits {
    registration: Pair,
    token: Pair,
    failures: Pair,
    /// Sources over their failure limit, until when. A source is refused before its request
    /// is served, so a guesser gets no answer at all while blocked.
    blocked: Mutex<HashMap<(Source, u128), Instant>>,
    max_keys: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    /// The limits of a checked section; `None` when they are turned off.
    pub fn new(section: &RateLimitSection) -> Option<Arc<Self>> {
        if !section.enabled {
            return None;
        }
        let max_keys = usize::try_from(section.max_tracked_keys).unwrap_or(usize::MAX);
        Some(Arc::new(Self {
            registration: Pair::new(
                section.registration_per_address,
                section.registration_per_token,
                max_keys,
            ),
            token: Pair::new(section.token_per_address, section.token_per_agent, max_keys),
            failures: Pair::new(
                section.failed_auth_per_address,
                section.failed_auth_per_credential,
                max_keys,
            ),
            blocked: Mutex::new(HashMap::new()),
            max_keys,
            hasher: RandomState::new(),
        }))
    }

    /// The most keys any one table holds now (addresses or credentials).
    pub fn tracked_keys(&self) -> usize {
        [&self.registration, &self.token, &self.failures]
            .iter()
            .flat_map(|pair| [pair.address.len(), pair.credential.len()])
            .chain([self.blocked.lock().unwrap_or_else(PoisonError::into_inner).len()])
            .max()
            .unwrap_or(0)
    }

    /// The key of a credential: a keyed hash, so the secret is not kept.
    fn credential_key(&self, credential: &str) -> u128 {
        u128::from(self.hasher.hash_one(credential))
    }

    /// How long `address` and `credential` are still blocked for failing, if they are.
    fn blocked_for(&self, address: Option<u128>, credential: Option<u128>) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.is_empty() {
            return None;
        }
        let now = Instant::now();
        [
            address.map(|key| (Source::Address, key)),
            credential.map(|key| (Source::Credential, key)),
        ]
        .into_iter()
        .flatten()
        .filter_map(|key| blocked.get(&key))
        .filter_map(|until| until.checked_duration_since(now))
        .max()
    }

    /// Counts a failed authentication; `Err(wait)` when a source is now over its limit (and
    /// blocked for `wait`).
    fn failed(&self, address: Option<u128>, credential: Option<u128>) -> Result<(), Duration> {
        let by_address = address.map_or(Ok(()), |key| self.failures.address.check(key));
        let by_credential = credential.map_or(Ok(()), |key| self.failures.credential.check(key));
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if blocked.len() >= self.max_keys {
            blocked.retain(|_, until| *until > now);
        }
        let mut longest = None;
        for (result, key) in [
            (by_address, address.map(|key| (Source::Address, key))),
            (by_credential, credential.map(|key| (Source::Credential, key))),
        ] {
            if let (Err(wait), Some(key)) = (result, key) {
                if blocked.len() < self.max_keys {
                    blocked.insert(key, now + wait);
                }
                longest = longest.max(Some(wait));
            }
        }
        longest.map_or(Ok(()), Err)
    }
}

/// The key of a client address: IPv4 as itself, IPv6 by its /64.
fn address_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !u128::from(u64::MAX)) | (1 << 32),
    }
}

/// `429 rate_limited` with `Retry-After`.
fn too_many(wait: Duration) -> Response {
    TooManyRequests { retry_after: wait }.into_response()
}

/// The middleware: refuses a request over a limit before it is served, gives the handler the
/// per-agent admission (challenge and token requests name their agent in the body, which the
/// handler reads), and counts the answers 401 against the address and the credential or agent.
pub async fn limit(State(limits): State<Arc<RateLimits>>, mut request: Request, next: Next) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| address_key(peer.ip()));
    let route = Route::of(&request);
    let bearer = aip_http::bearer(request.headers()).map(|token| limits.credential_key(token));
    // The agent a token request speaks for, once its handler has read it.
    let agent = Arc::new(OnceLock::new());
    let credential = if route == Route::Token {
        request.extensions_mut().insert(ClientAdmission::new({
            let limits = limits.clone();
            let agent = agent.clone();
            move |agent_id: &str| {
                let key = *agent.get_or_init(|| limits.credential_key(agent_id));
                if let Some(retry_after) = limits.blocked_for(None, Some(key)) {
                    return Err(TooManyRequests { retry_after });
                }
                limits
                    .token
                    .check(None, Some(key))
                    .map_err(|retry_after| TooManyRequests { retry_after })
            }
        }));
        None
    } else {
        bearer
    };
    if let Some(wait) = limits.blocked_for(address, credential) {
        return too_many(wait);
    }
    let admitted = match route {
        Route::Registration => limits.registration.check(address, credential),
        Route::Token => limits.token.check(address, None),
        Route::Other => Ok(()),
    };
    if let Err(wait) = admitted {
        return too_many(wait);
    }
    let response = next.run(request).await;
    let credential = credential.or_else(|| agent.get().copied());
    if response.status() == StatusCode::UNAUTHORIZED
        && let Err(wait) = limits.failed(address, credential)
    {
        return too_many(wait);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_their_member() {
        assert_eq!(RateLimitSection::default().check(), Ok(()));
        let zero = RateLimitSection {
            token_per_agent: 0,
            ..RateLimitSection::default()
        };
        let (member, message) = zero.check().unwrap_err();
        assert_eq!(member, "rate_limits.token_per_agent");
        assert!(message.contains("enabled = false"), "{message}");
        let tiny = RateLimitSection {
            max_tracked_keys: 10,
            ..RateLimitSection::default()
        };
        assert_eq!(tiny.check().unwrap_err().0, "rate_limits.max_tracked_keys");
        let off = RateLimitSection {
            enabled: false,
            ..RateLimitSection::default()
        };
        assert!(RateLimits::new(&off).is_none());
    }

    #[test]
    fn ipv6_clients_count_per_64_and_ipv4_mapped_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(v4), address_key(mapped));
        assert_ne!(address_key(v4), address_key("::".parse().unwrap()));
    }

    #[test]
    fn memory_stays_bounded_however_many_sources_appear() {
        let section = RateLimitSection {
            max_tracked_keys: 1_000,
            failed_auth_per_address: 1,
            ..RateLimitSection::default()
        };
        let limits = RateLimits::new(&section).unwrap();
        let bound = 1_000 + usize::try_from(SWEEP_EVERY).unwrap();
        for source in 0..50_000u128 {
            // Each source fails twice: over its limit, so it stays tracked and blocked.
            let _ = limits.failed(Some(source), Some(source));
            let _ = limits.failed(Some(source), Some(source));
            let _ = limits.token.check(Some(source), Some(source));
            assert!(
                limits.tracked_keys() <= bound,
                "{} keys after {source}",
                limits.tracked_keys()
            );
        }
    }

    #[test]
    fn a_source_over_its_failure_limit_is_blocked_and_others_are_not() {
        let section = RateLimitSection {
            failed_auth_per_address: 2,
            ..RateLimitSection::default()
        };
        let limits = RateLimits::new(&section).unwrap();
        assert!(limits.failed(Some(1), None).is_ok());
        assert!(limits.failed(Some(1), None).is_ok());
        let wait = limits.failed(Some(1), None).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(limits.blocked_for(Some(1), None).is_some());
        assert!(limits.blocked_for(Some(2), None).is_none());
        assert!(limits.blocked_for(None, Some(1)).is_none());
    }
}
