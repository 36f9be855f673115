//! The proxy's link to the AIP registry (spec 3.9, DESIGN §9): the issuer keys AATs are
//! verified with, and the revocation data of spec 3.9.3.
//!
//! - Keys come from `{endpoint}/v1/jwks`, or from `spec.registry.jwks_file` (an extension for
//!   proxies without network access to the registry). They are re-read every `cache.ttl`, and
//!   at once when a token names an unknown `kid` — at most once per [`KID_REFRESH_GAP`], so a
//!   flood of made-up `kid`s cannot turn into a flood of fetches.
//! - Revocation data, by mode: `cached` polls `/v1/revocations` with `If-None-Match` every
//!   `check_interval` and follows `/v1/revocations/stream`, fetching the list as soon as an
//!   event announces a newer version; `online` makes a conditional request on every
//!   [`RegistryLink::ensure_fresh`]; `crl` re-reads a signed list file (`/v1/revocations.jws`)
//!   every `check_interval`, verified with the registry key from the key set.
//! - A list older than the one loaded is refused (rollback), as is a file that does not verify;
//!   the previous list stays in force and its freshness clock stops. Revocation data older than
//!   `max_staleness` makes [`RegistryLink::ensure_fresh`] fail, so callers fail closed.
//!
//! Everything that touches the network or the files runs on one OS thread of the link's own,
//! driving a tokio current-thread runtime, so the synchronous relay threads and the HTTP
//! server's runtime use the link the same way. Lookups (`resolve`, the [`RevocationView`]
//! methods, `ensure_fresh` in `cached` and `crl` mode) only read a lock; the two calls that
//! must wait for the network (an unknown `kid`, an `online` check) hand a request to the
//! link's thread and wait on a std channel for at most [`CALL_TIMEOUT`].
//!
//! The bearer token is sent only to the revocation endpoints, never logged, and never part
//! of an error; URLs with credentials in them are refused. `cache.enabled` and
//! `cache.max_entries` have nothing to bound here: validation always needs the key set, which
//! is held whole and limited to [`MAX_KEYS`], and each mode loads the revocation list whole
//! (limited to [`MAX_LIST_BYTES`]).
//!
//! In `crl` mode the freshness clock is the last file read that verified: a file the updater
//! stops replacing stays fresh as long as it verifies, while a broken or forged one makes the
//! data stale after `max_staleness`.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, mpsc as std_mpsc};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use aip_aat::ids::{AgentId, Jti, KeyId};
use aip_aat::keys::{JwkSet, Jwks, KeyResolver, PublicKey};
use aip_aat::revocation::{RevocationIndex, RevocationList, SignedListError};
use aip_aat::secret::SecretString;
use aip_aat::validate::RevocationView;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};

use crate::policy::{RegistrySettings, RevocationMode};

/// Largest JWKS accepted, from the registry or from a file.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// Largest revocation list accepted, as JSON or signed.
pub const MAX_LIST_BYTES: usize = aip_aat::revocation::MAX_SIGNED_LIST_LEN;
/// Most issuer keys a key set may hold.
pub const MAX_KEYS: usize = 64;
/// Shortest time between two key refreshes caused by unknown `kid`s.
pub const KID_REFRESH_GAP: Duration = Duration::from_secs(5);
/// Longest a caller waits for the registry (an unknown `kid`, an `online` check).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Timeout of the link's own requests (first load, polls, key refreshes, stream connects).
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(15);
/// TCP and TLS connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An event stream silent this long is taken for dead (the registry sends keep-alives every
/// 15 s).
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// Largest server-sent event (the registry's are a few hundred bytes).
const MAX_EVENT_BYTES: usize = 64 << 10;
/// Largest CA certificate file.
const MAX_CA_BYTES: usize = 1 << 20;
/// First and longest wait before reconnecting the event stream.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Requests waiting for the link's thread; more are refused at once.
const MAX_PENDING_REQUESTS: usize = 1024;

/// The registry link failed. One line, naming the endpoint or file; never a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The settings cannot be used.
    #[error("registry settings: {0}")]
    Config(&'static str),
    /// The CA certificate file cannot be used.
    #[error("registry CA certificate {}: {reason}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be reached, or did not answer in time.
    #[error("registry {url}: {reason}")]
    Transport {
        /// What was requested.
        url: String,
        /// Why it failed (the transport's error chain, without the URL).
        reason: String,
    },
    /// The registry answered with an error status.
    #[error("registry {url}: HTTP {status}{hint}")]
    Status {
        /// What was requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What to check, when the status suggests it.
        hint: &'static str,
    },
    /// A file could not be read.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A response or file is larger than accepted.
    #[error("{source_name}: larger than {limit} bytes")]
    TooLarge {
        /// The URL or file.
        source_name: String,
        /// The limit.
        limit: usize,
    },
    /// A JWKS or revocation list is not valid JSON of the expected shape.
    #[error("{source_name}: {reason}")]
    Decode {
        /// The URL or file.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key set holds malformed keys.
    #[error("{source_name}: {reason}")]
    Keys {
        /// The URL or file.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key set holds no usable key, or more than [`MAX_KEYS`].
    #[error("{source_name}: {count} usable keys (expected 1 to {MAX_KEYS})")]
    KeyCount {
        /// The URL or file.
        source_name: String,
        /// How many usable keys it holds.
        count: usize,
    },
    /// A signed revocation list does not verify.
    #[error("{path}: {reason}")]
    SignedList {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A revocation list older than the one in force was refused.
    #[error(
        "{source_name}: revocation list version {offered} is older than version {loaded} in force (rollback refused)"
    )]
    Rollback {
        /// The URL or file.
        source_name: String,
        /// The version offered.
        offered: u64,
        /// The version in force.
        loaded: u64,
    },
    /// The revocation data in force is older than `max_staleness`.
    #[error("revocation data is stale: last loaded {age_ms} ms ago, max_staleness is {max_ms} ms")]
    Stale {
        /// Age of the data, in milliseconds.
        age_ms: u128,
        /// The bound, in milliseconds.
        max_ms: u128,
    },
    /// The registry did not answer within [`CALL_TIMEOUT`].
    #[error("registry {what} did not complete within {} ms", CALL_TIMEOUT.as_millis())]
    Timeout {
        /// What was waited for.
        what: &'static str,
    },
    /// Too many calls are already waiting for the registry.
    #[error("registry link is busy: too many calls are waiting for the registry")]
    Busy,
    /// The link was shut down, or could not start its thread.
    #[error("registry link is stopped")]
    Stopped,
}

/// Where a revocation list came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateSource {
    /// A periodic (or first) request of `/v1/revocations`.
    Poll,
    /// A request of `/v1/revocations` prompted by an event of the stream.
    Stream,
    /// The signed list file (`crl` mode).
    File,
    /// A request of `/v1/revocations` made for a validation (`online` mode).
    Online,
}

impl UpdateSource {
    /// `poll`, `stream`, `file` or `online`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Stream => "stream",
            Self::File => "file",
            Self::Online => "online",
        }
    }
}

impl fmt::Display for UpdateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Entries of a revocation list, by kind (spec 12.4 `REGISTRY_REVOCATION_CHECK`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListCounts {
    /// Revoked agents.
    pub agents_revoked: usize,
    /// Revoked AATs.
    pub aats_revoked: usize,
    /// Revoked sessions.
    pub sessions_revoked: usize,
    /// Users whose delegations were revoked.
    pub users_revoked: usize,
    /// Suspended agents.
    pub agents_suspended: usize,
}

impl From<&RevocationList> for ListCounts {
    fn from(list: &RevocationList) -> Self {
        Self {
            agents_revoked: list.revoked_agents.len(),
            aats_revoked: list.revoked_aats.len(),
            sessions_revoked: list.revoked_sessions.len(),
            users_revoked: list.revoked_users.len(),
            agents_suspended: list.suspended_agents.len(),
        }
    }
}

/// What the link reports as it works, for the audit log and the operator's log. The callback
/// runs on the link's own thread: it must return quickly and must not call back into the link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A revocation list with a new version is in force (also the first one).
    ListUpdated {
        /// `online`, `cached` or `crl`.
        mode: &'static str,
        /// Its version.
        version: u64,
        /// Where it came from.
        source: UpdateSource,
        /// Its entries.
        counts: ListCounts,
    },
    /// Revocation data could not be fetched, read or accepted; the previous list stays.
    CheckFailed {
        /// `online`, `cached` or `crl`.
        mode: &'static str,
        /// Why (one line, no secrets).
        reason: String,
    },
    /// The issuer keys were (re)loaded.
    KeysRefreshed {
        /// How many keys are in force.
        count: usize,
    },
    /// The issuer keys could not be reloaded; the previous keys stay.
    KeysFailed {
        /// Why (one line, no secrets).
        reason: String,
    },
}

/// The revocation data in force, for health checks and audit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationStatus {
    /// `online`, `cached` or `crl`.
    pub mode: &'static str,
    /// Version of the list in force.
    pub version: u64,
    /// Time since the last successful load (a new list, an unchanged one, or a 304).
    pub age: Duration,
    /// The configured bound on `age`.
    pub max_staleness: Duration,
    /// Entries of the list in force.
    pub counts: ListCounts,
    /// Issuer keys in force.
    pub keys: usize,
}

/// The proxy's link to the registry: issuer keys ([`KeyResolver`]) and revocation data
/// ([`RevocationView`]), kept fresh by a thread of its own. Shared as `Arc<RegistryLink>`;
/// dropping the last `Arc` stops the thread.
pub struct RegistryLink {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    kid_gate: KidGate,
    stop: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    worker_id: ThreadId,
}

impl fmt::Debug for RegistryLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLink")
            .field("endpoint", &self.shared.http.base)
            .field("mode", &self.shared.config.mode.as_str())
            .finish_non_exhaustive()
    }
}

impl RegistryLink {
    /// Loads the issuer keys and the first revocation data, then keeps both fresh in the
    /// background, on an OS thread of its own running a tokio current-thread runtime. Fails,
    /// with an error naming the endpoint or file, if the first load fails.
    ///
    /// Call it only when a registry is configured (`Policy::registry()` is `Some`): without
    /// one, nothing needs to run.
    pub fn start(
        settings: &RegistrySettings,
        on_event: Box<dyn Fn(RegistryEvent) + Send + Sync>,
    ) -> Result<Arc<Self>, RegistryError> {
        let config = Config::from_settings(settings);
        let http = Http::new(settings)?;
        let shared = Arc::new(Shared {
            config,
            http,
            keys: RwLock::new(Arc::new(JwkSet::default())),
            index: RwLock::new(Arc::new(RevocationIndex::default())),
            list: Mutex::new(ListState::default()),
            list_fetch: tokio::sync::Mutex::new(()),
            on_event,
        });
        let (requests, request_rx) = mpsc::channel(MAX_PENDING_REQUESTS);
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("aip-registry".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || work(shared, request_rx, stop_rx, ready_tx)
            })
            .map_err(|_| RegistryError::Stopped)?;
        let first_load = ready_rx.recv().unwrap_or(Err(RegistryError::Stopped));
        if let Err(e) = first_load {
            let _ = worker.join();
            return Err(e);
        }
        Ok(Arc::new(Self {
            shared,
            requests,
            kid_gate: KidGate::default(),
            stop,
            worker_id: worker.thread().id(),
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// Whether the revocation data may be used for a validation now. `online`: a conditional
    /// request of `/v1/revocations` on every call, answered within [`CALL_TIMEOUT`]; `cached`
    /// and `crl`: `Ok` when the last successful load is at most `max_staleness` old. On `Err`
    /// the caller fails closed (or applies its failover mode).
    pub fn ensure_fresh(&self) -> Result<(), RegistryError> {
        match self.shared.config.mode {
            Mode::Online => self.call(Request::CheckOnline, "revocation check"),
            Mode::Cached | Mode::Crl => {
                let age = self.shared.age();
                let max = self.shared.config.max_staleness;
                if age > max {
                    return Err(RegistryError::Stale {
                        age_ms: age.as_millis(),
                        max_ms: max.as_millis(),
                    });
                }
                Ok(())
            }
        }
    }

    /// The mode, the list version in force and the age of the data.
    pub fn status(&self) -> RevocationStatus {
        let (version, counts) = {
            let state = lock(&self.shared.list);
            (state.version, state.counts)
        };
        RevocationStatus {
            mode: self.shared.config.mode.as_str(),
            version,
            age: self.shared.age(),
            max_staleness: self.shared.config.max_staleness,
            counts,
            keys: self.shared.keys().len(),
        }
    }

    /// The revocation index in force: one consistent snapshot for a whole validation.
    pub fn revocations(&self) -> Arc<RevocationIndex> {
        Arc::clone(&self.shared.index.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The issuer keys in force.
    pub fn keys(&self) -> Arc<JwkSet> {
        self.shared.keys()
    }

    /// Stops the background work and waits for the link's thread (also done on drop). Later
    /// network calls fail with [`RegistryError::Stopped`]; lookups keep answering with the
    /// data last loaded.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        if std::thread::current().id() == self.worker_id {
            // Called from the event callback: the thread ends once the callback returns.
            return;
        }
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }

    /// Hands a request to the link's thread and waits for its answer.
    fn call(&self, make: fn(Reply) -> Request, what: &'static str) -> Result<(), RegistryError> {
        if std::thread::current().id() == self.worker_id {
            // From the event callback: the thread cannot answer while it runs the callback.
            return Err(RegistryError::Busy);
        }
        let (reply, answer) = std_mpsc::sync_channel(1);
        self.requests.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RegistryError::Busy,
            mpsc::error::TrySendError::Closed(_) => RegistryError::Stopped,
        })?;
        match answer.recv_timeout(CALL_TIMEOUT) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(RegistryError::Timeout { what }),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(RegistryError::Stopped),
        }
    }

    /// Refreshes the keys for an unknown `kid`: at most once per [`KID_REFRESH_GAP`]; a caller
    /// arriving while a refresh runs waits for that one instead of starting another.
    fn refresh_for_unknown_kid(&self) {
        let gate = &self.kid_gate;
        let mut state = lock(&gate.state);
        if state.running {
            let round = state.round;
            let deadline = Instant::now() + CALL_TIMEOUT;
            while state.running && state.round == round {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                state = gate
                    .done
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            return;
        }
        if state.last.is_some_and(|at| at.elapsed() < KID_REFRESH_GAP) {
            return;
        }
        state.running = true;
        state.last = Some(Instant::now());
        drop(state);
        // A failure is reported as `KeysFailed` by the link's thread; the caller sees the kid
        // still unknown.
        let _ = self.call(Request::RefreshKeys, "key refresh");
        let mut state = lock(&gate.state);
        state.running = false;
        state.round = state.round.wrapping_add(1);
        drop(state);
        gate.done.notify_all();
    }
}

impl Drop for RegistryLink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl KeyResolver for RegistryLink {
    /// Any key the registry publishes, whatever the issuer: `trusted_issuers` restricts `iss`
    /// separately. An unknown `kid` refreshes the keys first (see [`KID_REFRESH_GAP`]).
    fn resolve(&self, _issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        if let Some(key) = self.shared.keys().get(kid) {
            return Some(key.clone());
        }
        self.refresh_for_unknown_kid();
        self.shared.keys().get(kid).cloned()
    }
}

impl RevocationView for RegistryLink {
    fn is_agent_revoked(&self, agent_id: &AgentId) -> bool {
        self.revocations().is_agent_revoked(agent_id)
    }
    fn is_token_revoked(&self, jti: &Jti) -> bool {
        self.revocations().is_token_revoked(jti)
    }
    fn is_session_revoked(&self, session_id: &str) -> bool {
        self.revocations().is_session_revoked(session_id)
    }
    fn user_revoked_at(&self, user_id: &str) -> Option<i64> {
        self.revocations().user_revoked_at(user_id)
    }
    fn is_agent_suspended(&self, agent_id: &AgentId) -> bool {
        self.revocations().is_agent_suspended(agent_id)
    }
}

/// The revocation mode, without its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Online,
    Cached,
    Crl,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Cached => "cached",
            Self::Crl => "crl",
        }
    }
}

/// What the link's thread needs of the settings.
struct Config {
    mode: Mode,
    crl_path: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    check_interval: Duration,
    max_staleness: Duration,
    key_ttl: Duration,
}

impl Config {
    fn from_settings(settings: &RegistrySettings) -> Self {
        let (mode, crl_path) = match &settings.revocation {
            RevocationMode::Online => (Mode::Online, None),
            RevocationMode::Cached => (Mode::Cached, None),
            RevocationMode::Crl { path } => (Mode::Crl, Some(path.clone())),
        };
        Self {
            mode,
            crl_path,
            jwks_file: settings.jwks_file.clone(),
            // A zero interval would poll in a loop; the policy loader refuses less than 1 s.
            check_interval: settings.check_interval.max(Duration::from_millis(10)),
            max_staleness: settings.max_staleness,
            key_ttl: settings.cache_ttl.max(Duration::from_millis(10)),
        }
    }
}

/// The list in force, apart from its index.
#[derive(Default)]
struct ListState {
    loaded: bool,
    version: u64,
    counts: ListCounts,
    etag: Option<String>,
    loaded_at: Option<Instant>,
}

/// What the caller side and the link's thread share.
struct Shared {
    config: Config,
    http: Http,
    keys: RwLock<Arc<JwkSet>>,
    index: RwLock<Arc<RevocationIndex>>,
    list: Mutex<ListState>,
    /// One list request at a time, so each sends the newest ETag and answers arrive in order.
    list_fetch: tokio::sync::Mutex<()>,
    on_event: Box<dyn Fn(RegistryEvent) + Send + Sync>,
}

impl Shared {
    fn keys(&self) -> Arc<JwkSet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn version(&self) -> u64 {
        lock(&self.list).version
    }

    /// Time since the last successful load; `Duration::MAX` before the first.
    fn age(&self) -> Duration {
        lock(&self.list).loaded_at.map_or(Duration::MAX, |at| at.elapsed())
    }

    fn emit(&self, event: RegistryEvent) {
        (self.on_event)(event);
    }

    fn check_failed(&self, error: &RegistryError) {
        self.emit(RegistryEvent::CheckFailed {
            mode: self.config.mode.as_str(),
            reason: error.to_string(),
        });
    }

    /// The first keys and revocation data; any failure fails the start.
    async fn first_load(&self) -> Result<(), RegistryError> {
        self.refresh_keys(BACKGROUND_TIMEOUT).await?;
        match self.config.mode {
            Mode::Crl => self.load_file(),
            Mode::Cached => self.fetch_list(UpdateSource::Poll, BACKGROUND_TIMEOUT).await,
            Mode::Online => self.fetch_list(UpdateSource::Online, BACKGROUND_TIMEOUT).await,
        }
    }

    /// Reloads the issuer keys; on failure the previous keys stay.
    async fn refresh_keys(&self, timeout: Duration) -> Result<(), RegistryError> {
        let loaded = match &self.config.jwks_file {
            Some(path) => read_bounded(path, MAX_JWKS_BYTES).and_then(|bytes| parse_jwks(&bytes, &path.display())),
            None => {
                let url = self.http.url("/v1/jwks");
                match self.http.get(&url, timeout, MAX_JWKS_BYTES, None, false).await {
                    Ok(Fetched::Body { bytes, .. }) => parse_jwks(&bytes, &url),
                    Ok(Fetched::NotModified) => Err(RegistryError::Status {
                        url,
                        status: 304,
                        hint: "",
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        match loaded {
            Ok(keys) => {
                let count = keys.len();
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                self.emit(RegistryEvent::KeysRefreshed { count });
                Ok(())
            }
            Err(e) => {
                self.emit(RegistryEvent::KeysFailed { reason: e.to_string() });
                Err(e)
            }
        }
    }

    /// Requests `/v1/revocations` (conditionally, once a list is loaded) and puts a newer list
    /// in force. Failures are reported as `CheckFailed`.
    async fn fetch_list(&self, source: UpdateSource, timeout: Duration) -> Result<(), RegistryError> {
        let _one_at_a_time = self.list_fetch.lock().await;
        let etag = lock(&self.list).etag.clone();
        let url = self.http.url("/v1/revocations");
        let result = match self
            .http
            .get(&url, timeout, MAX_LIST_BYTES, etag.as_deref(), true)
            .await
        {
            Ok(Fetched::NotModified) => {
                lock(&self.list).loaded_at = Some(Instant::now());
                Ok(())
            }
            Ok(Fetched::Body { bytes, etag }) => aip_aat::json::from_slice::<RevocationList>(&bytes)
                .map_err(|e| RegistryError::Decode {
                    source_name: url.clone(),
                    reason: format!("not a revocation list: {e}"),
                })
                .and_then(|list| self.install(&list, etag, source, &url)),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.check_failed(e);
        }
        result
    }

    /// Reads and verifies the signed list file (`crl` mode) and puts a newer list in force.
    fn load_file(&self) -> Result<(), RegistryError> {
        let result = self.read_signed_file();
        if let Err(e) = &result {
            self.check_failed(e);
        }
        result
    }

    fn read_signed_file(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.config.crl_path else {
            return Err(RegistryError::Config("crl mode needs revocation.crl_path"));
        };
        let bytes = read_bounded(path, MAX_LIST_BYTES)?;
        let refused = |error: SignedListError| RegistryError::SignedList {
            path: path.clone(),
            reason: error.to_string(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| refused(SignedListError::Malformed("not UTF-8 text")))?;
        let list = RevocationList::verify_signed(text, &self.keys()).map_err(refused)?;
        self.install(&list, None, UpdateSource::File, &path.display().to_string())
    }

    /// Puts `list` in force unless it is older than the list in force; either way a list at
    /// least as new restarts the freshness clock.
    fn install(
        &self,
        list: &RevocationList,
        etag: Option<String>,
        source: UpdateSource,
        source_name: &str,
    ) -> Result<(), RegistryError> {
        let mut state = lock(&self.list);
        if state.loaded && list.version < state.version {
            return Err(RegistryError::Rollback {
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
        state.loaded = true;
        state.version = list.version;
        state.etag = etag;
        state.loaded_at = Some(Instant::now());
        drop(state);
        if changed {
            self.emit(RegistryEvent::ListUpdated {
                mode: self.config.mode.as_str(),
                version: list.version,
                source,
                counts,
            });
        }
        Ok(())
    }

    /// The link's thread after the first load: periodic work and requests until stopped.
    async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<Request>, mut stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&self).refresh_keys_periodically());
        match self.config.mode {
            Mode::Cached => {
                tasks.spawn(Arc::clone(&self).poll_periodically());
                tasks.spawn(Arc::clone(&self).follow_stream());
            }
            Mode::Crl => {
                tasks.spawn(Arc::clone(&self).reread_periodically());
            }
            Mode::Online => {}
        }
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                request = requests.recv() => match request {
                    Some(first) => Arc::clone(&self).answer(first, &mut requests),
                    None => break,
                },
            }
        }
        tasks.abort_all();
    }

    /// Answers `first` and every request already waiting, with one refresh of each kind.
    fn answer(self: Arc<Self>, first: Request, requests: &mut mpsc::Receiver<Request>) {
        let mut key_waiters = Vec::new();
        let mut check_waiters = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            match request {
                Request::RefreshKeys(reply) => key_waiters.push(reply),
                Request::CheckOnline(reply) => check_waiters.push(reply),
            }
            next = requests.try_recv().ok();
        }
        if !key_waiters.is_empty() {
            let shared = Arc::clone(&self);
            tokio::spawn(async move {
                let result = shared.refresh_keys(CALL_TIMEOUT).await;
                for reply in key_waiters {
                    let _ = reply.try_send(result.clone());
                }
            });
        }
        if !check_waiters.is_empty() {
            tokio::spawn(async move {
                let result = self.fetch_list(UpdateSource::Online, CALL_TIMEOUT).await;
                for reply in check_waiters {
                    let _ = reply.try_send(result.clone());
                }
            });
        }
    }

    async fn refresh_keys_periodically(self: Arc<Self>) {
        let mut ticks = ticks(self.config.key_ttl);
        loop {
            ticks.tick().await;
            let _ = self.refresh_keys(BACKGROUND_TIMEOUT).await;
        }
    }

    async fn poll_periodically(self: Arc<Self>) {
        let mut ticks = ticks(self.config.check_interval);
        loop {
            ticks.tick().await;
            let _ = self.fetch_list(UpdateSource::Poll, BACKGROUND_TIMEOUT).await;
        }
    }

    async fn reread_periodically(self: Arc<Self>) {
        let mut ticks = ticks(self.config.check_interval);
        loop {
            ticks.tick().await;
            let _ = self.load_file();
        }
    }

    /// Follows `/v1/revocations/stream`, reconnecting with backoff and `Last-Event-ID`.
    async fn follow_stream(self: Arc<Self>) {
        let mut backoff = BACKOFF_START;
        let mut last_seen = 0;
        loop {
            let started = Instant::now();
            let mut connected = false;
            if let Err(e) = self.stream_once(&mut last_seen, &mut connected).await {
                self.check_failed(&e);
            }
            // A connection that lasted resets the backoff; one that keeps dropping at once
            // backs off like a refused one.
            if connected && started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_START;
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
        }
    }

    /// One connection to the event stream, until it ends. Every event announcing a version
    /// newer than the list in force fetches the list at once.
    async fn stream_once(&self, last_seen: &mut u64, connected: &mut bool) -> Result<(), RegistryError> {
        let url = self.http.url("/v1/revocations/stream");
        let from = (*last_seen).max(self.version());
        let response = self.http.open_stream(&url, from).await?;
        *connected = true;
        let mut guard = EventSizeGuard::default();
        let mut events = std::pin::pin!(
            response
                .bytes_stream()
                .map(move |chunk| match chunk {
                    Ok(bytes) if guard.feed(&bytes) => Ok(bytes),
                    Ok(_) => Err(StreamFault::TooLarge),
                    Err(e) => Err(StreamFault::Transport(aip_aat::error_chain(&e.without_url()))),
                })
                .eventsource()
        );
        loop {
            let next =
                tokio::time::timeout(STREAM_IDLE, events.next())
                    .await
                    .map_err(|_| RegistryError::Transport {
                        url: url.clone(),
                        reason: format!("event stream silent for {} s", STREAM_IDLE.as_secs()),
                    })?;
            let event = match next {
                None => return Ok(()),
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    return Err(RegistryError::Transport {
                        url: url.clone(),
                        reason: format!("event stream: {e}"),
                    });
                }
            };
            let Ok(version) = event.id.trim().parse::<u64>() else {
                continue;
            };
            *last_seen = (*last_seen).max(version);
            if version > self.version() {
                let _ = self.fetch_list(UpdateSource::Stream, BACKGROUND_TIMEOUT).await;
            }
        }
    }
}

/// A tick now and then every `period`; late ticks are not bunched up.
fn ticks(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// The link's thread: a current-thread runtime that makes the first load, reports it on
/// `ready`, then runs until stopped.
fn work(
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
    ready: std_mpsc::SyncSender<Result<(), RegistryError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(_) => {
            let _ = ready.send(Err(RegistryError::Stopped));
            return;
        }
    };
    runtime.block_on(async move {
        if let Err(e) = shared.first_load().await {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        shared.run(requests, stop).await;
    });
}

type Reply = std_mpsc::SyncSender<Result<(), RegistryError>>;

/// Work a caller hands to the link's thread.
enum Request {
    RefreshKeys(Reply),
    CheckOnline(Reply),
}

/// Serializes key refreshes caused by unknown `kid`s.
#[derive(Default)]
struct KidGate {
    state: Mutex<KidGateState>,
    done: Condvar,
}

#[derive(Default)]
struct KidGateState {
    /// When the last refresh started.
    last: Option<Instant>,
    running: bool,
    /// Counts finished refreshes, so waiters know theirs is done.
    round: u64,
}

/// HTTP to the registry.
struct Http {
    client: reqwest::Client,
    /// The endpoint, without a trailing slash.
    base: String,
    token: Option<SecretString>,
}

/// A successful answer.
enum Fetched {
    NotModified,
    Body { bytes: Vec<u8>, etag: Option<String> },
}

impl Http {
    fn new(settings: &RegistrySettings) -> Result<Self, RegistryError> {
        let base = settings.endpoint.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|_| RegistryError::Config("endpoint is not a valid URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RegistryError::Config(
                "endpoint must not carry credentials: put the token in spec.registry.auth",
            ));
        }
        if !(url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(&url))) {
            return Err(RegistryError::Config(
                "endpoint must be an https:// URL (plain http only for a loopback registry)",
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect could carry the bearer token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aip-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_cert {
            let ca_error = |reason: &str| RegistryError::CaCert {
                path: path.clone(),
                reason: reason.to_owned(),
            };
            let pem = read_bounded(path, MAX_CA_BYTES).map_err(|e| match e {
                RegistryError::File { reason, .. } => ca_error(&reason),
                other => other,
            })?;
            let roots =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| ca_error("not a PEM certificate bundle"))?;
            if roots.is_empty() {
                return Err(ca_error("holds no certificate"));
            }
            // The registry's CA is the only root trusted for it.
            builder = builder.tls_certs_only(roots);
        }
        let client = builder
            .build()
            .map_err(|e| ca_error_or_config(settings.ca_cert.as_deref(), &e))?;
        Ok(Self {
            client,
            base,
            token: settings
                .bearer_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(SecretString::new),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET url` within `timeout`, the body bounded by `limit`; with `etag`, conditional.
    async fn get(
        &self,
        url: &str,
        timeout: Duration,
        limit: usize,
        etag: Option<&str>,
        authenticated: bool,
    ) -> Result<Fetched, RegistryError> {
        let mut request = self.client.get(url).timeout(timeout);
        if authenticated && let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(etag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let transport = |e: reqwest::Error| transport_error(url, e, timeout);
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(status_error(url, status));
        }
        let too_large = || RegistryError::TooLarge {
            source_name: url.to_owned(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, etag })
    }

    /// Opens the event stream after version `from`.
    async fn open_stream(&self, url: &str, from: u64) -> Result<reqwest::Response, RegistryError> {
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", from.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = tokio::time::timeout(BACKGROUND_TIMEOUT, request.send())
            .await
            .map_err(|_| RegistryError::Transport {
                url: url.to_owned(),
                reason: format!("no answer within {} s", BACKGROUND_TIMEOUT.as_secs()),
            })?
            .map_err(|e| transport_error(url, e, BACKGROUND_TIMEOUT))?;
        if !response.status().is_success() {
            return Err(status_error(url, response.status()));
        }
        Ok(response)
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`: the hosts the policy loader accepts plain http for.
fn is_loopback_host(url: &reqwest::Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

fn transport_error(url: &str, error: reqwest::Error, timeout: Duration) -> RegistryError {
    let reason = if error.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else {
        aip_aat::error_chain(&error.without_url())
    };
    RegistryError::Transport {
        url: url.to_owned(),
        reason,
    }
}

fn status_error(url: &str, status: reqwest::StatusCode) -> RegistryError {
    let hint = match status.as_u16() {
        401 => " (check spec.registry.auth: the registry refused the token)",
        403 => " (spec.registry.auth: the token cannot read registry data; use a reader token)",
        _ => "",
    };
    RegistryError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        hint,
    }
}

fn ca_error_or_config(ca_cert: Option<&Path>, error: &reqwest::Error) -> RegistryError {
    match ca_cert {
        Some(path) => RegistryError::CaCert {
            path: path.to_owned(),
            reason: aip_aat::error_chain(error),
        },
        None => RegistryError::Config("the HTTP client could not be built"),
    }
}

/// Reads at most `limit` bytes of `path`; a longer file is refused.
fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, RegistryError> {
    let file_error = |e: std::io::Error| RegistryError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(file_error)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(file_error)?;
    if bytes.len() > limit {
        return Err(RegistryError::TooLarge {
            source_name: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Parses a JWKS document holding 1 to [`MAX_KEYS`] usable keys.
fn parse_jwks(bytes: &[u8], source_name: &dyn fmt::Display) -> Result<JwkSet, RegistryError> {
    let jwks: Jwks = aip_aat::json::from_slice(bytes).map_err(|e| RegistryError::Decode {
        source_name: source_name.to_string(),
        reason: format!("not a JWK set: {e}"),
    })?;
    if jwks.keys.len() > MAX_KEYS * 4 {
        return Err(RegistryError::KeyCount {
            source_name: source_name.to_string(),
            count: jwks.keys.len(),
        });
    }
    let set = JwkSet::from_jwks(&jwks).map_err(|error| RegistryError::Keys {
        source_name: source_name.to_string(),
        reason: error.to_string(),
    })?;
    if set.is_empty() || set.len() > MAX_KEYS {
        return Err(RegistryError::KeyCount {
            source_name: source_name.to_string(),
            count: set.len(),
        });
    }
    Ok(set)
}

/// Why the event stream's bytes were cut off.
#[derive(Debug, thiserror::Error)]
enum StreamFault {
    #[error("{0}")]
    Transport(String),
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Bounds the bytes between two event boundaries (blank lines) of a server-sent event stream,
/// so a registry that never ends an event cannot make the parser buffer without end.
#[derive(Default)]
struct EventSizeGuard {
    since_boundary: usize,
    after_newline: bool,
}

impl EventSizeGuard {
    /// Counts `chunk`; `false` once an event grows past [`MAX_EVENT_BYTES`].
    fn feed(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            match byte {
                b'\n' if self.after_newline => self.since_boundary = 0,
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
            self.since_boundary += 1;
            if self.since_boundary > MAX_EVENT_BYTES {
                return false;
            }
        }
        true
    }
}

/// Locks `mutex`, recovering from poisoning: every critical section here leaves the state
/// consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aip_aat::keys::{Algorithm, KeyPair};
    use aip_aat::revocation::RevokedAgent;
    use time::OffsetDateTime;

    type Recorded = Arc<Mutex<Vec<RegistryEvent>>>;

    fn events() -> (Recorded, Box<dyn Fn(RegistryEvent) + Send + Sync>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        (seen, Box::new(move |e| sink.lock().unwrap().push(e)))
    }

    fn settings(revocation: RevocationMode, jwks_file: Option<PathBuf>) -> RegistrySettings {
        RegistrySettings {
            // Nothing listens here: every test below runs without network.
            endpoint: "http://127.0.0.1:9".into(),
            revocation,
            check_interval: Duration::from_millis(50),
            max_staleness: Duration::from_millis(300),
            cache_enabled: true,
            cache_ttl: Duration::from_secs(3600),
            cache_max_entries: 100,
            ca_cert: None,
            bearer_token: Some("s3cret-token".into()),
            jwks_file,
        }
    }

    fn list(version: u64, revoked: &[&AgentId]) -> RevocationList {
        let at = OffsetDateTime::from_unix_timestamp(1_770_000_000).unwrap();
        let mut list = RevocationList::empty(version, at);
        for id in revoked {
            list.revoked_agents.push(RevokedAgent {
                agent_id: (*id).clone(),
                revoked_at: at,
                reason: None,
            });
        }
        list
    }

    /// Writes `text` to `path` the way an updater should: a new file renamed into place.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    struct Offline {
        dir: tempfile::TempDir,
        registry_key: KeyPair,
        jwks: PathBuf,
        crl: PathBuf,
    }

    fn offline() -> Offline {
        let dir = tempfile::tempdir().unwrap();
        let registry_key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_string(&Jwks::from_keys([registry_key.public_key()])).unwrap(),
        )
        .unwrap();
        let crl = dir.path().join("revocations.jws");
        Offline {
            dir,
            registry_key,
            jwks,
            crl,
        }
    }

    impl Offline {
        /// Writes `version` of the list, signed by `signer`, and starts a `crl` link on it.
        fn start(&self, version: u64, signer: &KeyPair) -> (Result<RegistryLink, RegistryError>, Recorded) {
            std::fs::write(&self.crl, list(version, &[]).sign(signer).unwrap()).unwrap();
            let (seen, sink) = events();
            let mode = RevocationMode::Crl { path: self.crl.clone() };
            let link = RegistryLink::start(&settings(mode, Some(self.jwks.clone())), sink);
            (link.map(|l| Arc::into_inner(l).unwrap()), seen)
        }
    }

    #[test]
    fn crl_mode_verifies_refuses_tampering_and_rollback_and_goes_stale() {
        let o = offline();
        let agent = AgentId::random().unwrap();
        let (link, seen) = o.start(3, &o.registry_key);
        let link = link.unwrap();
        assert_eq!(link.status().version, 3);
        assert_eq!(link.status().mode, "crl");
        link.ensure_fresh().unwrap();
        assert!(!link.is_agent_revoked(&agent));

        // A newer list is picked up on the next re-read.
        replace(&o.crl, &list(4, &[&agent]).sign(&o.registry_key).unwrap());
        wait_for("version 4", || link.status().version == 4);
        assert!(link.is_agent_revoked(&agent));
        assert_eq!(link.status().counts.agents_revoked, 1);

        // A tampered file is refused and the list in force stays.
        let signed = list(5, &[]).sign(&o.registry_key).unwrap();
        let parts: Vec<&str> = signed.split('.').collect();
        let forged_payload = list(9, &[]).sign(&o.registry_key).unwrap();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            forged_payload.split('.').nth(1).unwrap(),
            parts[2]
        );
        replace(&o.crl, &forged);
        wait_for("the refusal", || {
            seen.lock().unwrap().iter().any(
                |e| matches!(e, RegistryEvent::CheckFailed { reason, .. } if reason.contains("signature is invalid")),
            )
        });
        assert_eq!(link.status().version, 4);
        assert!(link.is_agent_revoked(&agent));

        // So is an older list, however well signed.
        replace(&o.crl, &list(2, &[]).sign(&o.registry_key).unwrap());
        wait_for("the rollback refusal", || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, RegistryEvent::CheckFailed { reason, .. } if reason.contains("rollback refused")))
        });
        assert_eq!(link.status().version, 4);

        // Refused files do not keep the data fresh.
        wait_for("staleness", || link.ensure_fresh().is_err());
        let stale = link.ensure_fresh().unwrap_err().to_string();
        assert!(stale.contains("stale"), "{stale}");

        // A good file again: fresh again.
        replace(&o.crl, &list(4, &[&agent]).sign(&o.registry_key).unwrap());
        wait_for("freshness", || link.ensure_fresh().is_ok());
        let updates: Vec<u64> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RegistryEvent::ListUpdated { version, source, .. } => {
                    assert_eq!(*source, UpdateSource::File);
                    Some(*version)
                }
                _ => None,
            })
            .collect();
        assert_eq!(updates, [3, 4]);
        for event in seen.lock().unwrap().iter() {
            assert!(!format!("{event:?}").contains("s3cret"), "{event:?}");
        }
        link.shutdown();
        drop(o.dir);
    }

    #[test]
    fn a_file_signed_by_an_unknown_key_fails_the_start() {
        let o = offline();
        let stranger = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let error = o.start(1, &stranger).0.unwrap_err().to_string();
        assert!(
            error.contains("revocations.jws") && error.contains("unknown key"),
            "{error}"
        );
    }

    #[test]
    fn unknown_kids_refresh_the_keys_at_most_once_per_gap() {
        let o = offline();
        let (link, seen) = o.start(1, &o.registry_key);
        let link = link.unwrap();
        let refreshes = || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, RegistryEvent::KeysRefreshed { .. }))
                .count()
        };
        assert_eq!(refreshes(), 1);
        let known = o.registry_key.key_id().clone();
        assert!(link.resolve("any", &known).is_some());
        assert_eq!(refreshes(), 1, "a known kid needs no refresh");

        // A new key appears in the file; its kid is unknown until a refresh.
        let issuer = KeyPair::generate(Algorithm::ES256).unwrap();
        replace(
            &o.jwks,
            &serde_json::to_string(&Jwks::from_keys([o.registry_key.public_key(), issuer.public_key()])).unwrap(),
        );
        let found = link.resolve("any", issuer.key_id()).unwrap();
        assert_eq!(found.thumbprint(), issuer.key_id());
        assert_eq!(refreshes(), 2);

        // A flood of made-up kids: no further refresh within the gap (the end-to-end test
        // floods from several threads).
        let started = Instant::now();
        let made_up = (0..400).map(|i| format!("made-up-{i}").parse::<KeyId>().unwrap());
        assert!(made_up.into_iter().all(|kid| link.resolve("any", &kid).is_none()));
        assert!(started.elapsed() < KID_REFRESH_GAP);
        assert_eq!(refreshes(), 2);
    }

    #[test]
    fn resolve_works_from_inside_a_tokio_runtime() {
        let o = offline();
        let link = o.start(1, &o.registry_key).0.unwrap();
        let issuer = KeyPair::generate(Algorithm::EdDSA).unwrap();
        replace(
            &o.jwks,
            &serde_json::to_string(&Jwks::from_keys([issuer.public_key()])).unwrap(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let kid = issuer.key_id().clone();
        let found = runtime.block_on(async { link.resolve("any", &kid) });
        assert!(found.is_some());
    }

    #[test]
    fn online_mode_fails_fast_without_a_registry() {
        let (_, sink) = events();
        let started = Instant::now();
        let error = RegistryLink::start(&settings(RevocationMode::Online, None), sink)
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(error.starts_with("registry http://127.0.0.1:9/v1/jwks: "), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn key_sets_are_bounded() {
        let keys: Vec<PublicKey> = (0..=MAX_KEYS)
            .map(|_| KeyPair::generate(Algorithm::EdDSA).unwrap().public_key().clone())
            .collect();
        let too_many = serde_json::to_vec(&Jwks::from_keys(keys.iter())).unwrap();
        let error = parse_jwks(&too_many, &"jwks.json").unwrap_err().to_string();
        assert_eq!(error, "jwks.json: 65 usable keys (expected 1 to 64)");
        let enough = serde_json::to_vec(&Jwks::from_keys(keys[..MAX_KEYS].iter())).unwrap();
        assert_eq!(parse_jwks(&enough, &"jwks.json").unwrap().len(), MAX_KEYS);
        let empty = parse_jwks(br#"{"keys":[]}"#, &"jwks.json").unwrap_err().to_string();
        assert!(empty.contains("0 usable keys"), "{empty}");
        let garbage = parse_jwks(b"[]", &"jwks.json").unwrap_err().to_string();
        assert!(garbage.starts_with("jwks.json: not a JWK set"), "{garbage}");

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_JWKS_BYTES + 1]).unwrap();
        assert!(matches!(
            read_bounded(&big, MAX_JWKS_BYTES),
            Err(RegistryError::TooLarge { .. })
        ));
    }

    #[test]
    fn endpoints_with_credentials_or_plain_http_elsewhere_are_refused() {
        for (endpoint, needle) in [
            ("https://user:pw@registry.example", "credentials"),
            ("http://registry.example", "https://"),
            ("http://127.0.0.2.example", "https://"),
            ("ftp://127.0.0.1", "https://"),
            ("not a url", "valid URL"),
        ] {
            let mut s = settings(RevocationMode::Online, None);
            s.endpoint = endpoint.into();
            let error = Http::new(&s).err().unwrap().to_string();
            assert!(error.contains(needle), "{endpoint}: {error}");
            assert!(!error.contains("pw"), "{error}");
        }
        for endpoint in ["http://localhost:8443/", "http://[::1]:1", "https://registry.example"] {
            let mut s = settings(RevocationMode::Online, None);
            s.endpoint = endpoint.into();
            assert!(Http::new(&s).is_ok(), "{endpoint}");
        }
        let mut s = settings(RevocationMode::Online, None);
        s.ca_cert = Some("/nonexistent/ca.pem".into());
        let error = Http::new(&s).err().unwrap().to_string();
        assert!(
            error.starts_with("registry CA certificate /nonexistent/ca.pem: "),
            "{error}"
        );
    }

    #[test]
    fn event_size_is_bounded_between_blank_lines() {
        let mut guard = EventSizeGuard::default();
        let event = b"id: 7\nevent: agent.revoked\ndata: {}\n\n";
        for _ in 0..10_000 {
            assert!(guard.feed(event));
            assert!(guard.feed(b":\n\n"));
        }
        let mut guard = EventSizeGuard::default();
        assert!(guard.feed(b"data: "));
        let long = vec![b'x'; MAX_EVENT_BYTES];
        assert!(!guard.feed(&long));
        // CRLF line ends count as boundaries too.
        let mut guard = EventSizeGuard::default();
        for _ in 0..MAX_EVENT_BYTES {
            assert!(guard.feed(b"id: 1\r\n\r\n"));
        }
    }
}
