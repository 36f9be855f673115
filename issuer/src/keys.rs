//! The issuer's AAT signing keys.
//!
//! Keys live in the database as encrypted key files (`aip_aat::keyfile`, under the authority
//! passphrase), so every replica has them. The newest key signs. `aip-ca keys rotate` adds a
//! key and retires the others: running servers publish the new key in `GET /v1/jwks` within
//! [`REFRESH_INTERVAL`] and sign with it from their next start, and a retired key stays
//! published while any token it signed may still be presented (`last_expiry`, kept by the
//! issuance ledger, plus the clock skew verifiers allow).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aip_aat::ids::KeyId;
use aip_aat::keyfile::{self, Passphrase, Protection};
use aip_aat::keys::{Algorithm, Jwk, KeyPair, KeyResolver, PublicKey};
use aip_db::DbError;
use aip_db::audit::AuditEntry;
use serde_json::json;

use crate::store::{IssuerStore, KeyRecord};

/// How often the published key set is re-read from the database.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long past its last token's expiry a retired key stays published (verifiers' skew).
pub const PUBLISH_MARGIN: i64 = 300;

/// A signing key could not be loaded or added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// No signing key exists yet.
    #[error("the authority has no token signing key (run `aip-ca keys rotate`)")]
    NoKey,
    /// A key could not be decrypted or parsed.
    #[error("token signing key {kid}: {source}")]
    KeyFile {
        /// Its id.
        kid: String,
        /// Why.
        source: keyfile::KeyFileError,
    },
    /// A key could not be generated.
    #[error(transparent)]
    Key(#[from] aip_aat::keys::KeyError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] DbError),
}

/// The signing key in use and the keys verifiers must accept.
pub struct SigningKeys {
    signer: Arc<KeyPair>,
    published: RwLock<Vec<PublicKey>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("kid", self.signer.key_id())
            .finish_non_exhaustive()
    }
}

fn record(key: &KeyPair, protection: Protection<'_>, now: i64) -> Result<KeyRecord, KeysError> {
    let kid = key.key_id().to_string();
    let key_file = keyfile::encode(key, protection).map_err(|source| KeysError::KeyFile {
        kid: kid.clone(),
        source,
    })?;
    let public_key = serde_json::to_string(&key.public_key().to_jwk()).map_err(aip_db::backend)?;
    Ok(KeyRecord {
        kid,
        algorithm: key.algorithm().as_str().to_owned(),
        public_key,
        key_file: key_file.to_string(),
        created_at: now,
        retired_at: None,
        last_expiry: 0,
    })
}

/// Generates a signing key, stores it encrypted and makes it the newest; returns its id.
pub async fn add_key(
    store: &IssuerStore,
    algorithm: Algorithm,
    protection: Protection<'_>,
    actor: &str,
    now: i64,
) -> Result<String, KeysError> {
    let key = KeyPair::generate(algorithm)?;
    let record = record(&key, protection, now)?;
    let audit = AuditEntry {
        actor: actor.to_owned(),
        action: "issuer_key.add",
        subject: record.kid.clone(),
        details: json!({"algorithm": record.algorithm}),
    };
    store.add_key(&record, &audit).await?;
    Ok(record.kid)
}

/// Creates the first signing key when there is none.
pub async fn ensure_key(
    store: &IssuerStore,
    algorithm: Algorithm,
    protection: Protection<'_>,
    now: i64,
) -> Result<(), KeysError> {
    if store.keys().await?.is_empty() {
        add_key(store, algorithm, protection, "system:init", now).await?;
    }
    Ok(())
}

/// The keys `GET /v1/jwks` must list at `now`: unretired keys, and retired keys whose tokens
/// may still be live.
pub fn publishable(records: &[KeyRecord], now: i64) -> Vec<PublicKey> {
    records
        .iter()
        .filter(|r| r.retired_at.is_none() || r.last_expiry + PUBLISH_MARGIN >= now)
        .filter_map(|r| {
            let jwk: Jwk = serde_json::from_str(&r.public_key).ok()?;
            PublicKey::from_jwk(&jwk).ok()
        })
        .collect()
}

impl SigningKeys {
    /// Loads the newest key (decrypting it with `passphrase`) and the published set.
    pub async fn load(store: &IssuerStore, passphrase: Option<&Passphrase>, now: i64) -> Result<Self, KeysError> {
        let records = store.keys().await?;
        let newest = records.first().ok_or(KeysError::NoKey)?;
        let signer = keyfile::decode(&newest.key_file, passphrase).map_err(|source| KeysError::KeyFile {
            kid: newest.kid.clone(),
            source,
        })?;
        let keys = Self {
            signer: Arc::new(signer),
            published: RwLock::new(Vec::new()),
        };
        keys.set_published(publishable(&records, now));
        Ok(keys)
    }

    /// A key set over one key, for tests and embedded use.
    pub fn single(key: KeyPair) -> Self {
        let public = key.public_key().clone();
        Self {
            signer: Arc::new(key),
            published: RwLock::new(vec![public]),
        }
    }

    /// The key that signs.
    pub fn signer(&self) -> &Arc<KeyPair> {
        &self.signer
    }

    fn set_published(&self, mut keys: Vec<PublicKey>) {
        if !keys.iter().any(|k| k == self.signer.public_key()) {
            keys.insert(0, self.signer.public_key().clone());
        }
        *self.published.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// Re-reads the published set from the database.
    pub async fn refresh(&self, store: &IssuerStore, now: i64) -> Result<(), KeysError> {
        let records = store.keys().await?;
        self.set_published(publishable(&records, now));
        Ok(())
    }

    /// The keys verifiers must accept now (current and still-needed previous keys), for the
    /// JWKS.
    pub fn published_keys(&self) -> Vec<PublicKey> {
        self.published.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The published keys by `kid`, for verifying the issuer's own AATs (introspection). The
/// caller checks that `iss` is this issuer.
impl KeyResolver for SigningKeys {
    fn resolve(&self, _issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        let published = self.published.read().unwrap_or_else(PoisonError::into_inner);
        published.iter().find(|key| key.thumbprint() == kid).cloned()
    }
}
