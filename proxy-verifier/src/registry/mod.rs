//! The proxy's link to the AIP registry (spec 3.9; docs/architecture.md, "The proxy's link to
//! the authority"): the issuer keys AATs are verified with, and the revocation data of spec
//! 3.9.3.
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
//! In `crl` mode the freshness clock is the last file read that verified, and the signed list
//! carries its own expiry (`expires_at`): the data is stale after `max_staleness` without a
//! good read, or once the list in force has expired, whichever comes first. A file the
//! updater stops replacing is thus trusted until its list expires, never longer; a broken or
//! forged one makes the data stale after `max_staleness`.
//!
//! # Files
//!
//! - `error` — [`LinkError`];
//! - `limits` — the link's bounds and shared timeouts;
//! - `events` — what the link reports ([`RegistryEvent`]);
//! - `config` — what the link needs of `spec.registry`;
//! - `files` — bounded reads of the link's local files;
//! - `http` — the HTTP client: the only code that speaks HTTP to the registry;
//! - `state` — the keys and revocation list in force: install, rollback refusal, freshness;
//! - `refresh` — loading keys and lists from the registry or files into the state;
//! - `stream` — following `/v1/revocations/stream`;
//! - `worker` — the link's thread, its runtime, caller requests and the unknown-`kid` gate;
//! - this file — [`RegistryLink`], what callers see.

mod config;
mod error;
mod events;
mod files;
mod http;
mod limits;
mod refresh;
mod state;
mod stream;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::clock::{Clock, SystemClock};
use aip_aat::ids::{AgentId, Jti, KeyId};
use aip_aat::keys::{JwkSet, KeyResolver, PublicKey};
use aip_aat::revocation::RevocationIndex;
use aip_aat::validate::RevocationView;

use crate::policy::RegistrySettings;

pub use error::LinkError;
pub use events::{ListCounts, RegistryEvent, UpdateSource};
pub use limits::{CALL_TIMEOUT, KID_REFRESH_GAP, MAX_JWKS_BYTES, MAX_KEYS, MAX_LIST_BYTES};

use config::{Config, Mode};
use http::Http;
use refresh::Shared;
use worker::Worker;

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

/// The `issuer` the authority publishes in its RFC 8414 metadata
/// (`/.well-known/oauth-authorization-server` at `spec.registry.endpoint`): what the MCP front
/// door names as its authorization server, character for character, since clients compare
/// the two exactly.
pub async fn authorization_server(settings: &RegistrySettings) -> Result<String, LinkError> {
    Http::new(settings)?
        .authorization_server(limits::BACKGROUND_TIMEOUT)
        .await
}

/// The proxy's link to the registry: issuer keys ([`KeyResolver`]) and revocation data
/// ([`RevocationView`]), kept fresh by a thread of its own. Shared as `Arc<RegistryLink>`;
/// dropping the last `Arc` stops the thread.
pub struct RegistryLink {
    shared: Arc<Shared>,
    worker: Worker,
}

impl fmt::Debug for RegistryLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLink")
            .field("endpoint", &self.shared.http.endpoint())
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
    ) -> Result<Arc<Self>, LinkError> {
        Self::start_with_clock(settings, on_event, Arc::new(SystemClock))
    }

    /// As [`RegistryLink::start`], reading wall-clock time (the expiry of signed lists) from
    /// `clock`.
    pub fn start_with_clock(
        settings: &RegistrySettings,
        on_event: Box<dyn Fn(RegistryEvent) + Send + Sync>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, LinkError> {
        let config = Config::from_settings(settings);
        let http = Http::new(settings)?;
        let shared = Arc::new(Shared::new(config, http, clock, on_event));
        let worker = Worker::start(&shared)?;
        Ok(Arc::new(Self { shared, worker }))
    }

    /// Whether the revocation data may be used for a validation now. `online`: a conditional
    /// request of `/v1/revocations` on every call, answered within [`CALL_TIMEOUT`]; `cached`
    /// and `crl`: `Ok` when the last successful load is at most `max_staleness` old and, for a
    /// signed list, its `expires_at` has not passed. On `Err` the caller fails closed (or
    /// applies its failover mode).
    pub fn ensure_fresh(&self) -> Result<(), LinkError> {
        match self.shared.config.mode {
            Mode::Online => self.worker.check_online(),
            Mode::Cached | Mode::Crl => {
                let age = self.shared.state.age();
                let max = self.shared.config.max_staleness;
                if age > max {
                    return Err(LinkError::Stale {
                        age_ms: age.as_millis(),
                        max_ms: max.as_millis(),
                    });
                }
                if let Some(expires_at) = self.shared.state.expires_at()
                    && self.shared.clock.now() >= expires_at
                {
                    return Err(LinkError::expired(expires_at));
                }
                Ok(())
            }
        }
    }

    /// The mode, the list version in force and the age of the data.
    pub fn status(&self) -> RevocationStatus {
        let (version, counts) = self.shared.state.version_and_counts();
        RevocationStatus {
            mode: self.shared.config.mode.as_str(),
            version,
            age: self.shared.state.age(),
            max_staleness: self.shared.config.max_staleness,
            counts,
            keys: self.shared.state.keys().len(),
        }
    }

    /// The revocation index in force: one consistent snapshot for a whole validation.
    pub fn revocations(&self) -> Arc<RevocationIndex> {
        self.shared.state.index()
    }

    /// The issuer keys in force.
    pub fn keys(&self) -> Arc<JwkSet> {
        self.shared.state.keys()
    }

    /// Stops the background work and waits for the link's thread (also done on drop). Later
    /// network calls fail with [`LinkError::Stopped`]; lookups keep answering with the
    /// data last loaded.
    pub fn shutdown(&self) {
        self.worker.shutdown();
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
        if let Some(key) = self.shared.state.keys().get(kid) {
            return Some(key.clone());
        }
        self.worker.refresh_for_unknown_kid();
        self.shared.state.keys().get(kid).cloned()
    }

    /// The issuer keys the registry publishes as roots of delegable AATs. An unknown root
    /// refreshes the keys first, as an unknown `kid` does.
    fn delegation_root(&self, root_key_id: u32) -> Option<PublicKey> {
        if let Some(key) = self.shared.state.keys().delegation_root(root_key_id) {
            return Some(key);
        }
        self.worker.refresh_for_unknown_kid();
        self.shared.state.keys().delegation_root(root_key_id)
    }
}

/// Each lookup reads the list in force anew: a check made of several lookups takes one
/// [`RegistryLink::revocations`] snapshot instead, so that they all see the same list.
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
    fn key_valid_until(&self, agent_id: &AgentId, thumbprint: &KeyId) -> Option<i64> {
        self.revocations().key_valid_until(agent_id, thumbprint)
    }
    fn is_delegation_revoked(&self, revocation_id: &str) -> bool {
        self.revocations().is_delegation_revoked(revocation_id)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::Instant;

    use super::files::read_bounded;
    use super::state::parse_jwks;
    use super::*;
    use crate::policy::RevocationMode;
    use aip_aat::keys::{Algorithm, Jwks, KeyPair};
    use aip_aat::revocation::{RevocationList, RevokedAgent, SignedRevocationList};
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

    /// `list` signed by `signer`, valid for an hour from now.
    fn sign(list: RevocationList, signer: &KeyPair) -> String {
        let now = OffsetDateTime::from_unix_timestamp(SystemClock.now()).unwrap();
        SignedRevocationList::new(list, now, now + time::Duration::hours(1))
            .sign(signer)
            .unwrap()
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
        fn start(&self, version: u64, signer: &KeyPair) -> (Result<RegistryLink, LinkError>, Recorded) {
            std::fs::write(&self.crl, sign(list(version, &[]), signer)).unwrap();
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
        replace(&o.crl, &sign(list(4, &[&agent]), &o.registry_key));
        wait_for("version 4", || link.status().version == 4);
        assert!(link.is_agent_revoked(&agent));
        assert_eq!(link.status().counts.agents_revoked, 1);

        // A tampered file is refused and the list in force stays.
        let signed = sign(list(5, &[]), &o.registry_key);
        let parts: Vec<&str> = signed.split('.').collect();
        let forged_payload = sign(list(9, &[]), &o.registry_key);
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
        replace(&o.crl, &sign(list(2, &[]), &o.registry_key));
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
        replace(&o.crl, &sign(list(4, &[&agent]), &o.registry_key));
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
    fn crl_mode_goes_stale_when_the_list_in_force_expires() {
        let o = offline();
        let clock = Arc::new(aip_aat::clock::FixedClock::new(1_770_000_000));
        let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap();
        let write = |version: u64, expires_at: i64| {
            let signed = SignedRevocationList::new(list(version, &[]), at(1_770_000_000 - 10), at(expires_at));
            replace(&o.crl, &signed.sign(&o.registry_key).unwrap());
        };
        write(3, 1_770_000_100);
        let (_, sink) = events();
        let mut settings = settings(RevocationMode::Crl { path: o.crl.clone() }, Some(o.jwks.clone()));
        settings.max_staleness = Duration::from_secs(3600);
        let link = RegistryLink::start_with_clock(&settings, sink, clock.clone()).unwrap();
        link.ensure_fresh().unwrap();
        // The file keeps verifying, but the list in force has expired.
        clock.set(1_770_000_100);
        let error = link.ensure_fresh().unwrap_err();
        assert!(matches!(error, LinkError::Expired { .. }), "{error}");
        assert!(error.to_string().contains("2026-02-02T02:41:40Z"), "{error}");
        // An older copy of the same version does not shorten the expiry in force; a newer
        // copy extends it.
        write(3, 1_770_000_050);
        write(3, 1_770_000_200);
        wait_for("the new copy", || link.ensure_fresh().is_ok());
        clock.set(1_770_000_150);
        write(3, 1_770_000_120);
        std::thread::sleep(Duration::from_millis(200));
        link.ensure_fresh().unwrap();
        link.shutdown();
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
            Err(LinkError::TooLarge { .. })
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
}
