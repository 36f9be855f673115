//! The [`Registry`]: its store, CA, attestation key, settings and clock, and what it keeps in
//! memory (caches, the event channel, the token issuer served beside it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aip_aat::clock::Clock;
use aip_aat::keys::{PublicKey, Signer};
use aip_aat::revocation::RevocationList;
use aip_api::registry::IssuerEndpoints;
use tokio::sync::{Notify, broadcast};

use super::principal::CachedAccessToken;
use crate::ca::CertificateAuthority;
use crate::config::RegistrySettings;
use crate::store::{Store, StoredCrl, StoredEvent};

/// How many events the broadcast channel buffers for slow subscribers (they then catch up
/// from the database).
const EVENT_BUFFER: usize = 1024;

/// The revocation list as published for one version.
#[derive(Debug)]
pub struct PublishedList {
    /// The list version.
    pub version: u64,
    /// Its `ETag` (quoted).
    pub etag: String,
    /// The JSON document.
    pub json: Vec<u8>,
    /// The list itself, for its signed copies.
    pub list: RevocationList,
}

/// A signed copy of the revocation list (`GET /v1/revocations.jws`).
#[derive(Debug)]
pub struct SignedList {
    /// The list version.
    pub version: u64,
    /// When the copy was signed (Unix time).
    pub issued_at: i64,
    /// Until when it may be trusted (Unix time).
    pub expires_at: i64,
    /// The compact JWS.
    pub jws: String,
}

/// The token issuer's public signing keys, which the registry publishes in `GET /v1/jwks`
/// beside its own (the token issuer implements it).
pub trait TokenKeys: Send + Sync {
    /// The keys verifiers must accept now (current and still-needed previous keys).
    fn published_keys(&self) -> Vec<PublicKey>;
}

/// The registry.
pub struct Registry {
    pub(super) store: Arc<dyn Store>,
    pub(super) ca: Arc<CertificateAuthority>,
    pub(super) registry_key: Arc<dyn Signer>,
    pub(super) settings: RegistrySettings,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) events: broadcast::Sender<Arc<StoredEvent>>,
    /// Wakes the background work when this process or, as the database announces it, another
    /// replica changed revocation data.
    pub(super) pump: Notify,
    pub(super) published: Mutex<Option<Arc<PublishedList>>>,
    pub(super) signed: Mutex<Option<Arc<SignedList>>>,
    /// The latest CRL of each issuing CA, by its key id.
    pub(super) crl: Mutex<HashMap<String, Arc<StoredCrl>>>,
    pub(super) crl_generation: tokio::sync::Mutex<()>,
    /// Recently seen access tokens, by digest.
    pub(super) access_tokens: Mutex<HashMap<String, CachedAccessToken>>,
    /// The token issuer served beside the registry.
    pub(super) token_issuer: OnceLock<(Arc<dyn TokenKeys>, IssuerEndpoints)>,
    /// The newest revocation list version this process knows of (its own writes at once,
    /// other replicas' when the database announces them, or at the next event poll).
    latest_version: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry_id", &self.settings.registry_id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry over `store`, issuing with `ca` and attesting with `registry_key`.
    pub fn new(
        store: Arc<dyn Store>,
        ca: CertificateAuthority,
        registry_key: Arc<dyn Signer>,
        settings: RegistrySettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            ca: Arc::new(ca),
            registry_key,
            settings,
            clock,
            events: broadcast::channel(EVENT_BUFFER).0,
            pump: Notify::new(),
            published: Mutex::new(None),
            signed: Mutex::new(None),
            crl: Mutex::new(HashMap::new()),
            crl_generation: tokio::sync::Mutex::new(()),
            access_tokens: Mutex::new(HashMap::new()),
            token_issuer: OnceLock::new(),
            latest_version: AtomicU64::new(0),
        }
    }

    pub(super) fn saw_version(&self, version: u64) {
        self.latest_version.fetch_max(version, Ordering::AcqRel);
    }

    /// The newest revocation list version this process knows of: every agent status change,
    /// key rotation and revocation moves it. Changes made through this registry count at once,
    /// changes made by replicas once [`Registry::run_background`] has seen their events. Caches
    /// of agent records compare it to decide whether they are still current.
    pub fn latest_version(&self) -> u64 {
        self.latest_version.load(Ordering::Acquire)
    }

    /// Announces the token issuer served beside the registry: its keys join `GET /v1/jwks`
    /// and its endpoints the discovery document. Only the first call has an effect.
    pub fn attach_token_issuer(&self, keys: Arc<dyn TokenKeys>, endpoints: IssuerEndpoints) {
        let _ = self.token_issuer.set((keys, endpoints));
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The certificate authority.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }
}
