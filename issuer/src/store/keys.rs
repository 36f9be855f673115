//! The issuer's signing keys and the secrets its replicas share, as stored.

use aip_db::audit::AuditEntry;
use aip_db::{DbError, Lock, backend};
use sqlx::Row;

use super::base::IssuerStore;

/// An issuer signing key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub algorithm: String,
    /// Public key (JWK JSON).
    pub public_key: String,
    /// Encrypted key file text.
    pub key_file: String,
    /// When it was added.
    pub created_at: i64,
    /// When a newer key replaced it.
    pub retired_at: Option<i64>,
    /// The latest expiry of a token it signed.
    pub last_expiry: i64,
}

impl IssuerStore {
    /// Every signing key, newest first.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, public_key, key_file, created_at, retired_at, last_expiry FROM issuer_keys \
             ORDER BY created_at DESC, kid",
        )
        .fetch_all(self.db.reader())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(KeyRecord {
                    kid: row.try_get("kid").map_err(backend)?,
                    algorithm: row.try_get("algorithm").map_err(backend)?,
                    public_key: row.try_get("public_key").map_err(backend)?,
                    key_file: row.try_get("key_file").map_err(backend)?,
                    created_at: row.try_get("created_at").map_err(backend)?,
                    retired_at: row.try_get("retired_at").map_err(backend)?,
                    last_expiry: row.try_get("last_expiry").map_err(backend)?,
                })
            })
            .collect()
    }

    /// Adds a signing key; every older key is retired (it stays published while tokens it
    /// signed live).
    pub async fn add_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<(), DbError> {
        let mut w = self.db.write(Lock::audited()).await?;
        sqlx::query("UPDATE issuer_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(w.conn())
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO issuer_keys (kid, algorithm, public_key, key_file, created_at, retired_at, last_expiry) \
             VALUES ($1, $2, $3, $4, $5, NULL, 0)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.public_key)
        .bind(&key.key_file)
        .bind(key.created_at)
        .execute(w.conn())
        .await
        .map_err(|e| aip_db::unique_or(e, DbError::Conflict("this key is already an issuer key")))?;
        w.audit(audit, key.created_at).await?;
        w.commit().await
    }
}
