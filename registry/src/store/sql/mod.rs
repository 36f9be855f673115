//! [`SqlStore`]: the registry's tables in the authority database (`aip_db::Database`), one
//! file per concern: agents, keys and certificates; revocation publication; credentials. Writes
//! go through `aip_db::Write`, which takes the authority lock and appends the audit record.

mod agents;
mod credentials;
mod revocation;

use aip_aat::aid::AgentStatus;
use aip_aat::ids::AgentId;
use aip_db::{Database, Write};
use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::{NewCertificate, Nonce, Store, StoreError};

/// The registry's tables, over the authority database.
#[derive(Clone)]
pub struct SqlStore {
    db: Database,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("db", &self.db).finish()
    }
}

impl SqlStore {
    /// The registry's tables in `db` (migrations applied).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`), applying pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(Database::connect(url).await?))
    }

    /// The database, for what the registry shares with other services (the audit log).
    pub fn database(&self) -> &Database {
        &self.db
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }
}

/// A database failure, for logs only.
fn stored(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(stored)
}

pub(super) fn u64_of(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("negative counter"))
}

pub(super) fn i64_of(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt("counter overflow"))
}

pub(super) fn rfc3339(unix: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| StoreError::Corrupt("timestamp"))
}

/// Records the event that the reserved revocation list version publishes.
pub(super) async fn event(
    w: &mut Write,
    kind: &str,
    subject: &str,
    data: &serde_json::Value,
    at: i64,
) -> Result<u64, StoreError> {
    let version = w.version()?;
    sqlx::query("INSERT INTO events (version, at, kind, subject, data) VALUES ($1, $2, $3, $4, $5)")
        .bind(i64_of(version)?)
        .bind(at)
        .bind(kind)
        .bind(subject)
        .bind(to_json(data)?)
        .execute(w.conn())
        .await
        .map_err(stored)?;
    Ok(version)
}

pub(super) async fn record_nonce(w: &mut Write, nonce: &Nonce) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO request_nonces (jti, expires_at) VALUES ($1, $2)")
        .bind(&nonce.jti)
        .bind(nonce.expires_at)
        .execute(w.conn())
        .await
        .map_err(|e| aip_db::unique_or(e, StoreError::ProofReplayed))?;
    Ok(())
}

pub(super) async fn insert_certificate(w: &mut Write, c: &NewCertificate) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO certificates (serial, agent_id, key_thumbprint, not_before, not_after, der, issuer_key_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.serial)
    .bind(c.agent_id.as_str())
    .bind(c.key_thumbprint.as_str())
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(&c.der)
    .bind(c.issuer_key_id.as_deref())
    .execute(w.conn())
    .await
    .map_err(stored)?;
    Ok(())
}

/// The agent's status and current key, read under the write lock.
pub(super) async fn agent_state(w: &mut Write, agent_id: &AgentId) -> Result<(AgentStatus, String), StoreError> {
    let row = sqlx::query("SELECT status, key_thumbprint FROM agents WHERE agent_id = $1")
        .bind(agent_id.as_str())
        .fetch_optional(w.conn())
        .await
        .map_err(stored)?
        .ok_or(StoreError::AgentNotFound)?;
    let status: String = row.try_get("status").map_err(stored)?;
    let status = status.parse().map_err(|_| StoreError::Corrupt("status"))?;
    Ok((status, row.try_get("key_thumbprint").map_err(stored)?))
}
