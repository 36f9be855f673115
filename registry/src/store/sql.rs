//! [`Store`] over sqlx's `Any` driver: one body of SQL for SQLite and PostgreSQL, each with
//! its own migrations. Placeholders are `$N` (both engines accept them) and values are the
//! types `Any` carries on both engines: integers, text and blobs (flags are 0/1 integers,
//! since `Any` cannot decode SQLite's BOOLEAN).
//!
//! Writers are serialized by the single `registry_state` row: every write transaction updates
//! it first, which takes PostgreSQL's row lock (across replicas) or SQLite's write lock. SQLite
//! writes all go through one dedicated connection: writers queue for it in order instead of
//! spinning in SQLite's busy handler, and its page cache stays warm (in WAL mode a connection's
//! cache is invalidated whenever another connection writes).

use std::path::Path;
use std::time::Duration;

use aip_aat::aid::{AgentStatus, AidMetadata};
use aip_aat::ids::AgentId;
use aip_aat::keys::Jwk;
use aip_aat::revocation::{RevocationList, RevokedAat, RevokedAgent, RevokedSession, RevokedUser, SuspendedAgent};
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};
use time::OffsetDateTime;

use super::{
    AgentQuery, KeyRotation, NewAccessToken, NewAgent, NewCertificate, NewRegistrationToken, Nonce,
    RegistrationCredential, RegistrationTokenInfo, Revocations, Role, StatusAction, StatusChanged, Store, StoreError,
    StoredAgent, StoredCertificate, StoredCrl, StoredEvent, StoredKey,
};
use crate::audit::{AuditEntry, AuditRecord};
use crate::ca::{CrlEntry, CrlReason};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// The database engine behind a [`SqlStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// An SQLite file (the embedded default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Dialect {
    /// `INSERT INTO`, for inserts inside a write transaction. On SQLite it is
    /// `INSERT OR FAIL INTO`: a failed constraint stops the statement without undoing its
    /// earlier rows, so SQLite keeps no statement journal (a copy of every page the statement
    /// changes) for it. That is safe only because a write transaction that meets any error is
    /// rolled back as a whole, never committed; PostgreSQL has no such journal and no such
    /// clause.
    pub fn insert_verb(self) -> &'static str {
        match self {
            Self::Sqlite => "INSERT OR FAIL INTO",
            Self::Postgres => "INSERT INTO",
        }
    }
}

/// The SQL store.
pub struct SqlStore {
    pool: AnyPool,
    writer: AnyPool,
    dialect: Dialect,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// `conflict` for a unique-constraint violation, else a backend error.
fn unique_or(e: sqlx::Error, conflict: StoreError) -> StoreError {
    if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
        conflict
    } else {
        backend(e)
    }
}

fn agent_from_row(row: &AnyRow) -> Result<StoredAgent, StoreError> {
    let get_text = |col: &str| row.try_get::<String, _>(col).map_err(backend);
    let get_opt = |col: &str| row.try_get::<Option<String>, _>(col).map_err(backend);
    let agent_id: AgentId = get_text("agent_id")?
        .parse()
        .map_err(|_| StoreError::Corrupt("agent_id"))?;
    let capabilities: Vec<String> =
        serde_json::from_str(&get_text("capabilities")?).map_err(|_| StoreError::Corrupt("capabilities"))?;
    let metadata: Option<AidMetadata> = match get_opt("metadata")? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("metadata"))?),
        None => None,
    };
    let public_key: Jwk =
        serde_json::from_str(&get_text("public_key")?).map_err(|_| StoreError::Corrupt("public_key"))?;
    Ok(StoredAgent {
        agent: NewAgent {
            agent_id,
            name: get_text("name")?,
            description: get_opt("description")?,
            owner: get_opt("owner")?,
            capabilities,
            autonomous: row.try_get::<i64, _>("autonomous").map_err(backend)? != 0,
            metadata,
            public_key,
            thumbprint: get_text("key_thumbprint")?
                .parse()
                .map_err(|_| StoreError::Corrupt("key_thumbprint"))?,
            created_at: row.try_get::<i64, _>("created_at").map_err(backend)?,
        },
        status: get_text("status")?.parse().map_err(|_| StoreError::Corrupt("status"))?,
        status_reason: get_opt("status_reason")?,
        status_changed_at: row.try_get::<Option<i64>, _>("status_changed_at").map_err(backend)?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(backend)
}

fn u64_of(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("negative counter"))
}

fn i64_of(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt("counter overflow"))
}

fn rfc3339(unix: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| StoreError::Corrupt("timestamp"))
}

/// A write transaction holding the registry-state lock, with the audit sequence number (and,
/// for revocation-affecting changes, the revocation list version) it reserved. Every write
/// transaction appends exactly one audit record.
struct Write {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    audit_seq: i64,
    prev_hash: String,
    version: Option<u64>,
    audited: bool,
}

impl Write {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Appends `entry` to the audit chain (a trigger moves the chain head).
    async fn audit(&mut self, entry: &AuditEntry, at: i64) -> Result<(), StoreError> {
        // The sequence number is already reserved: the record goes after its predecessor.
        crate::audit::append(
            &mut self.tx,
            self.dialect,
            self.audit_seq - 1,
            &self.prev_hash,
            &[(entry, at)],
        )
        .await?;
        self.audited = true;
        Ok(())
    }

    /// Records the event that the reserved revocation list version publishes.
    async fn event(&mut self, kind: &str, subject: &str, data: &serde_json::Value, at: i64) -> Result<u64, StoreError> {
        let version = self
            .version
            .ok_or(StoreError::Corrupt("event without a reserved version"))?;
        sqlx::query("INSERT INTO events (version, at, kind, subject, data) VALUES ($1, $2, $3, $4, $5)")
            .bind(i64_of(version)?)
            .bind(at)
            .bind(kind)
            .bind(subject)
            .bind(to_json(data)?)
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        Ok(version)
    }

    async fn nonce(&mut self, nonce: &Nonce) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO request_nonces (jti, expires_at) VALUES ($1, $2)")
            .bind(&nonce.jti)
            .bind(nonce.expires_at)
            .execute(self.conn())
            .await
            .map_err(|e| unique_or(e, StoreError::ProofReplayed))?;
        Ok(())
    }

    async fn certificate(&mut self, c: &NewCertificate) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO certificates (serial, agent_id, key_thumbprint, not_before, not_after, der) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.serial)
        .bind(c.agent_id.as_str())
        .bind(c.key_thumbprint.as_str())
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(&c.der)
        .execute(self.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// The agent's status and current key, read under the write lock.
    async fn agent_state(&mut self, agent_id: &AgentId) -> Result<(AgentStatus, String), StoreError> {
        let row = sqlx::query("SELECT status, key_thumbprint FROM agents WHERE agent_id = $1")
            .bind(agent_id.as_str())
            .fetch_optional(self.conn())
            .await
            .map_err(backend)?
            .ok_or(StoreError::AgentNotFound)?;
        let status: String = row.try_get("status").map_err(backend)?;
        let status = status.parse().map_err(|_| StoreError::Corrupt("status"))?;
        Ok((status, row.try_get("key_thumbprint").map_err(backend)?))
    }

    async fn commit(self) -> Result<(), StoreError> {
        if !self.audited {
            // Committing would leave a reserved sequence number without a record.
            return Err(StoreError::Corrupt("write transaction without an audit record"));
        }
        self.tx.commit().await.map_err(backend)
    }
}

/// How long a statement waits for a lock before failing.
const BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10000";

/// Pool options for SQLite connections: foreign keys on, WAL (its file cut back to 128 MiB when
/// the log starts over), and memory-mapped reads. The writer does not checkpoint the WAL on
/// commit (see [`checkpoint_wal`]), so a commit never waits for a checkpoint's disk flushes.
fn sqlite_pool(size: u32, writer: bool) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(15))
        .max_connections(size)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if writer {
                    sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
                }
                for pragma in [
                    "PRAGMA foreign_keys = ON",
                    BUSY_TIMEOUT,
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA journal_size_limit = 134217728",
                    "PRAGMA synchronous = NORMAL",
                    "PRAGMA mmap_size = 268435456",
                    "PRAGMA cache_size = -32000",
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
}

/// Checkpoints the SQLite write-ahead log every half second, until the pool closes. PASSIVE
/// checkpoints run on a reader connection and never block the writer or readers; the WAL file
/// is reused from its start once a checkpoint has caught up. Under a steady stream of commits a
/// passive checkpoint never quite catches up and the log would grow without bound, so once it
/// holds [`WAL_RESTART_FRAMES`] frames a RESTART checkpoint runs on the writer's connection,
/// between two write transactions: it copies the few frames the passive one left, waits up to
/// [`WAL_RESTART_WAIT`] for readers of older snapshots, and the next commit starts the log over.
async fn checkpoint_wal(readers: AnyPool, writer: AnyPool) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if readers.is_closed() {
            return;
        }
        if let Err(e) = checkpoint_once(&readers, &writer, WAL_RESTART_FRAMES).await {
            if readers.is_closed() || writer.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Log size (in frames, one page each) from which the log is restarted: 128 MiB of 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = 32_768;

/// How long a RESTART checkpoint waits for readers of older snapshots: 100 ms.
const WAL_RESTART_WAIT: &str = "PRAGMA busy_timeout = 100";

/// The write-ahead log after a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalState {
    /// Whether the checkpoint could not finish (readers or a writer in the way).
    pub(crate) busy: bool,
    /// Frames in the log.
    pub(crate) frames: i64,
    /// Frames copied into the database.
    pub(crate) checkpointed: i64,
}

/// One PASSIVE checkpoint on a reader, then a RESTART one on the writer's connection when the
/// log holds at least `restart_frames`.
pub(crate) async fn checkpoint_once(
    readers: &AnyPool,
    writer: &AnyPool,
    restart_frames: i64,
) -> Result<WalState, sqlx::Error> {
    let state = wal_checkpoint(&mut *readers.acquire().await?, "PRAGMA wal_checkpoint(PASSIVE)").await?;
    if state.frames < restart_frames {
        return Ok(state);
    }
    let mut conn = writer.acquire().await?;
    sqlx::query(WAL_RESTART_WAIT).execute(&mut *conn).await?;
    let restarted = wal_checkpoint(&mut conn, "PRAGMA wal_checkpoint(RESTART)").await;
    if let Err(e) = sqlx::query(BUSY_TIMEOUT).execute(&mut *conn).await {
        // Never hand the writer back with the short wait: the pool opens a fresh connection.
        conn.close_on_drop();
        return Err(e);
    }
    restarted
}

async fn wal_checkpoint(conn: &mut AnyConnection, pragma: &'static str) -> Result<WalState, sqlx::Error> {
    let row = sqlx::query(pragma).fetch_one(&mut *conn).await?;
    Ok(WalState {
        busy: row.try_get::<i64, _>(0)? != 0,
        frames: row.try_get(1)?,
        checkpointed: row.try_get(2)?,
    })
}

impl SqlStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::Conflict(
                "database URL must start with sqlite: or postgres:",
            ));
        };
        let (pool, writer) = match dialect {
            Dialect::Sqlite => {
                let writer = sqlite_pool(1, true).connect(url).await.map_err(backend)?;
                // Migrations (and the WAL switch) first, on the writer, before readers open.
                SQLITE_MIGRATIONS.run(&writer).await.map_err(backend)?;
                let readers = sqlite_pool(8, false).connect(url).await.map_err(backend)?;
                tokio::spawn(checkpoint_wal(readers.clone(), writer.clone()));
                (readers, writer)
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(15))
                    .max_connections(16)
                    .after_connect(|conn, _| Box::pin(super::nodelay::set_nodelay(conn)))
                    .connect(url)
                    .await
                    .map_err(backend)?;
                POSTGRES_MIGRATIONS.run(&pool).await.map_err(backend)?;
                (pool.clone(), pool)
            }
        };
        Ok(Self { pool, writer, dialect })
    }

    /// The URL of an SQLite database file, created if missing.
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// The engine in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The connection pools: readers, and the writer every write transaction must use (on
    /// SQLite a single connection; on PostgreSQL the same pool). For components that share the
    /// authority database, such as the token issuer: their write transactions take the
    /// `registry_state` lock first, as [`Store`] methods do.
    pub fn pools(&self) -> (&AnyPool, &AnyPool) {
        (&self.pool, &self.writer)
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Rows of `(identifier, revoked_at, reason)` from one of the revocation tables.
    async fn revoked_entries(
        &self,
        sql: &'static str,
        now: Option<i64>,
    ) -> Result<Vec<(String, OffsetDateTime, Option<String>)>, StoreError> {
        let mut query = sqlx::query(sql);
        if let Some(now) = now {
            query = query.bind(now);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(backend)?,
                    rfc3339(row.try_get(1).map_err(backend)?)?,
                    row.try_get(2).map_err(backend)?,
                ))
            })
            .collect()
    }

    /// Begins a write transaction: takes the registry-wide lock (see the module
    /// documentation) and reserves the next audit sequence number, plus the next revocation
    /// list version when the change is published as an event.
    async fn write(&self, publishes_event: bool) -> Result<Write, StoreError> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let sql = if publishes_event {
            "UPDATE registry_state SET audit_seq = audit_seq + 1, revocation_version = revocation_version + 1 \
             WHERE id = 1 RETURNING audit_seq, audit_head, revocation_version"
        } else {
            "UPDATE registry_state SET audit_seq = audit_seq + 1 WHERE id = 1 RETURNING audit_seq, audit_head, revocation_version"
        };
        let row = sqlx::query(sql).fetch_one(&mut *tx).await.map_err(backend)?;
        let version = u64_of(row.try_get("revocation_version").map_err(backend)?)?;
        Ok(Write {
            dialect: self.dialect,
            audit_seq: row.try_get("audit_seq").map_err(backend)?,
            prev_hash: row.try_get("audit_head").map_err(backend)?,
            version: publishes_event.then_some(version),
            audited: false,
            tx,
        })
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }

    async fn register_agent(
        &self,
        agent: &NewAgent,
        certificate: &NewCertificate,
        credential: &RegistrationCredential,
        nonce: &Nonce,
        audit: &AuditEntry,
    ) -> Result<Option<i64>, StoreError> {
        let now = agent.created_at;
        let mut w = self.write(false).await?;
        let token_expiry = match credential {
            // Authenticated by the caller moments ago; nothing to consume.
            RegistrationCredential::Admin { .. } => None,
            RegistrationCredential::RegistrationToken { digest } => {
                let row = sqlx::query(
                    "UPDATE registration_tokens SET uses_remaining = uses_remaining - 1 \
                     WHERE digest = $1 AND uses_remaining > 0 AND expires_at > $2 RETURNING expires_at",
                )
                .bind(digest)
                .bind(now)
                .fetch_optional(w.conn())
                .await
                .map_err(backend)?
                .ok_or(StoreError::InvalidCredential)?;
                Some(row.try_get::<i64, _>("expires_at").map_err(backend)?)
            }
        };
        w.nonce(nonce).await?;
        let public_key = to_json(&agent.public_key)?;
        let metadata = agent.metadata.as_ref().map(to_json).transpose()?;
        sqlx::query(
            "INSERT INTO agents (agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
             status_reason, status_changed_at, created_at, key_thumbprint, public_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', NULL, NULL, $8, $9, $10)",
        )
        .bind(agent.agent_id.as_str())
        .bind(&agent.name)
        .bind(agent.description.as_deref())
        .bind(agent.owner.as_deref())
        .bind(to_json(&agent.capabilities)?)
        .bind(i64::from(agent.autonomous))
        .bind(metadata)
        .bind(now)
        .bind(agent.thumbprint.as_str())
        .bind(&public_key)
        .execute(w.conn())
        .await
        // A trigger records the key in agent_keys, where every key is unique.
        .map_err(|e| unique_or(e, StoreError::KeyAlreadyRegistered))?;
        w.certificate(certificate).await?;
        w.audit(audit, now).await?;
        w.commit().await?;
        Ok(token_expiry)
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<StoredAgent>, StoreError> {
        let sql = const_format_agent_by_id();
        let row = sqlx::query(sql)
            .bind(agent_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn agents(&self, query: &AgentQuery) -> Result<Vec<StoredAgent>, StoreError> {
        let after = query.after.as_ref().map_or("", AgentId::as_str);
        let limit = i64::from(query.limit.clamp(1, 1000));
        let rows = match query.status {
            Some(status) => {
                sqlx::query(agents_by_status_sql())
                    .bind(status.as_str())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query(agents_sql())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(backend)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn agent_keys(&self, agent_id: &AgentId) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT thumbprint, public_key, added_at, valid_until FROM agent_keys WHERE agent_id = $1 \
             ORDER BY added_at DESC, thumbprint",
        )
        .bind(agent_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let thumbprint: String = row.try_get("thumbprint").map_err(backend)?;
                let public_key: String = row.try_get("public_key").map_err(backend)?;
                Ok(StoredKey {
                    thumbprint: thumbprint.parse().map_err(|_| StoreError::Corrupt("thumbprint"))?,
                    public_key: serde_json::from_str(&public_key).map_err(|_| StoreError::Corrupt("public_key"))?,
                    added_at: row.try_get("added_at").map_err(backend)?,
                    valid_until: row.try_get("valid_until").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn certificates(&self, agent_id: &AgentId) -> Result<Vec<StoredCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, key_thumbprint, not_before, not_after, der, revoked_at, revocation_reason, superseded_at \
             FROM certificates WHERE agent_id = $1 ORDER BY not_before DESC, serial",
        )
        .bind(agent_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let thumbprint: String = row.try_get("key_thumbprint").map_err(backend)?;
                let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(backend)?;
                let reason: Option<i64> = row.try_get("revocation_reason").map_err(backend)?;
                let revoked = match (revoked_at, reason) {
                    (Some(at), Some(code)) => Some((
                        at,
                        CrlReason::from_code(code).ok_or(StoreError::Corrupt("revocation_reason"))?,
                    )),
                    _ => None,
                };
                Ok(StoredCertificate {
                    certificate: NewCertificate {
                        serial: row.try_get("serial").map_err(backend)?,
                        agent_id: agent_id.clone(),
                        key_thumbprint: thumbprint.parse().map_err(|_| StoreError::Corrupt("key_thumbprint"))?,
                        not_before: row.try_get("not_before").map_err(backend)?,
                        not_after: row.try_get("not_after").map_err(backend)?,
                        der: row.try_get("der").map_err(backend)?,
                    },
                    revoked,
                    superseded_at: row.try_get("superseded_at").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn rotate_key(&self, rotation: &KeyRotation, audit: &AuditEntry) -> Result<u64, StoreError> {
        let KeyRotation {
            agent_id,
            current,
            new_key,
            grace_until,
            certificate,
            nonces,
        } = rotation;
        let grace_until = *grace_until;
        let now = new_key.added_at;
        let mut w = self.write(true).await?;
        let (status, thumbprint) = w.agent_state(agent_id).await?;
        if status != AgentStatus::Active {
            return Err(StoreError::Conflict("only an active agent can rotate its key"));
        }
        if thumbprint != current.as_str() {
            return Err(StoreError::Conflict(
                "the agent's key changed meanwhile; retry with its current key",
            ));
        }
        for nonce in nonces {
            w.nonce(nonce).await?;
        }
        let public_key = to_json(&new_key.public_key)?;
        sqlx::query(
            "INSERT INTO agent_keys (thumbprint, agent_id, public_key, added_at, valid_until) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(new_key.thumbprint.as_str())
        .bind(agent_id.as_str())
        .bind(&public_key)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(|e| unique_or(e, StoreError::KeyAlreadyRegistered))?;
        sqlx::query("UPDATE agent_keys SET valid_until = $1 WHERE thumbprint = $2")
            .bind(grace_until)
            .bind(current.as_str())
            .execute(w.conn())
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE agents SET key_thumbprint = $1, public_key = $2 WHERE agent_id = $3")
            .bind(new_key.thumbprint.as_str())
            .bind(&public_key)
            .bind(agent_id.as_str())
            .execute(w.conn())
            .await
            .map_err(backend)?;
        sqlx::query(
            "UPDATE certificates SET superseded_at = $1 WHERE agent_id = $2 AND key_thumbprint = $3 AND superseded_at IS NULL",
        )
        .bind(grace_until)
        .bind(agent_id.as_str())
        .bind(current.as_str())
        .execute(w.conn())
        .await
        .map_err(backend)?;
        w.certificate(certificate).await?;
        let data = serde_json::json!({
            "agent_id": agent_id,
            "previous_key": current,
            "key": new_key.thumbprint,
            "previous_key_valid_until": grace_until,
        });
        let version = w.event("agent_key_rotated", agent_id.as_str(), &data, now).await?;
        w.audit(audit, now).await?;
        w.commit().await?;
        Ok(version)
    }

    async fn add_certificate(
        &self,
        certificate: &NewCertificate,
        nonce: &Nonce,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut w = self.write(false).await?;
        let (status, thumbprint) = w.agent_state(&certificate.agent_id).await?;
        if status != AgentStatus::Active {
            return Err(StoreError::Conflict("only an active agent can renew its certificate"));
        }
        if thumbprint != certificate.key_thumbprint.as_str() {
            return Err(StoreError::Conflict(
                "the agent's key changed meanwhile; retry with its current key",
            ));
        }
        w.nonce(nonce).await?;
        w.certificate(certificate).await?;
        w.audit(audit, certificate.not_before).await?;
        w.commit().await
    }

    async fn change_status(
        &self,
        agent_id: &AgentId,
        action: StatusAction,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StatusChanged, StoreError> {
        let mut w = self.write(true).await?;
        let (previous, _) = w.agent_state(agent_id).await?;
        let (status, kind) = match (previous, action) {
            (AgentStatus::Revoked, _) => return Err(StoreError::Conflict("the agent is revoked; revocation is final")),
            (AgentStatus::Active, StatusAction::Suspend) => (AgentStatus::Suspended, "agent_suspended"),
            (AgentStatus::Suspended, StatusAction::Suspend) => {
                return Err(StoreError::Conflict("the agent is already suspended"));
            }
            (AgentStatus::Suspended, StatusAction::Reactivate) => (AgentStatus::Active, "agent_reactivated"),
            (AgentStatus::Active, StatusAction::Reactivate) => {
                return Err(StoreError::Conflict("the agent is not suspended"));
            }
            (_, StatusAction::Revoke(_)) => (AgentStatus::Revoked, "agent_revoked"),
        };
        sqlx::query("UPDATE agents SET status = $1, status_reason = $2, status_changed_at = $3 WHERE agent_id = $4")
            .bind(status.as_str())
            .bind(reason)
            .bind(at)
            .bind(agent_id.as_str())
            .execute(w.conn())
            .await
            .map_err(backend)?;
        let hold = CrlReason::CertificateHold.code();
        let update = match action {
            StatusAction::Suspend => sqlx::query(
                "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 WHERE agent_id = $3 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(hold)
            .bind(agent_id.as_str()),
            StatusAction::Reactivate => sqlx::query(
                "UPDATE certificates SET revoked_at = NULL, revocation_reason = NULL \
                 WHERE agent_id = $1 AND revocation_reason = $2",
            )
            .bind(agent_id.as_str())
            .bind(hold),
            StatusAction::Revoke(crl_reason) => sqlx::query(
                "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 \
                 WHERE agent_id = $3 AND (revoked_at IS NULL OR revocation_reason = $4)",
            )
            .bind(at)
            .bind(crl_reason.code())
            .bind(agent_id.as_str())
            .bind(hold),
        };
        update.execute(w.conn()).await.map_err(backend)?;
        let mut data = serde_json::json!({"agent_id": agent_id, "status": status});
        if let Some(reason) = reason {
            data["reason"] = reason.into();
        }
        let version = w.event(kind, agent_id.as_str(), &data, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(StatusChanged {
            version,
            previous,
            status,
        })
    }

    async fn publish_revocations(
        &self,
        revocations: &Revocations,
        subject: &str,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut w = self.write(true).await?;
        let reason = revocations.reason.as_deref();
        for (sql, entries) in [
            (
                "INSERT INTO revoked_tokens (jti, revoked_at, reason, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (jti) DO NOTHING",
                &revocations.tokens,
            ),
            (
                "INSERT INTO revoked_sessions (session_id, revoked_at, reason, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (session_id) DO NOTHING",
                &revocations.sessions,
            ),
        ] {
            for entry in entries {
                sqlx::query(sql)
                    .bind(&entry.id)
                    .bind(at)
                    .bind(reason)
                    .bind(entry.expires_at)
                    .execute(w.conn())
                    .await
                    .map_err(backend)?;
            }
        }
        for user in &revocations.users {
            sqlx::query(
                "INSERT INTO revoked_users (user_id, revoked_at, reason) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user)
            .bind(at)
            .bind(reason)
            .execute(w.conn())
            .await
            .map_err(backend)?;
        }
        let ids = |entries: &[super::RevokedEntry]| entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let mut data = serde_json::json!({
            "jtis": ids(&revocations.tokens),
            "session_ids": ids(&revocations.sessions),
            "user_ids": revocations.users,
        });
        if let Some(reason) = reason {
            data["reason"] = reason.into();
        }
        let version = w.event(revocations.event_kind(), subject, &data, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(version)
    }

    async fn revocation_version(&self) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query("SELECT revocation_version FROM registry_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?
            .try_get("revocation_version")
            .map_err(backend)?;
        u64_of(version)
    }

    async fn revocation_list(&self, now: i64) -> Result<RevocationList, StoreError> {
        // The version is read before the entries: the list then holds at least what that
        // version announced, never less.
        let version = self.revocation_version().await?;
        let updated_at = sqlx::query("SELECT at FROM events WHERE version = $1")
            .bind(i64_of(version)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|row| row.try_get::<i64, _>("at"))
            .transpose()
            .map_err(backend)?
            .unwrap_or(0);
        let mut list = RevocationList::empty(version, rfc3339(updated_at)?);
        let rows = sqlx::query("SELECT agent_id, status, status_reason, status_changed_at FROM agents WHERE status <> 'active' ORDER BY agent_id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        for row in &rows {
            let agent_id: String = row.try_get("agent_id").map_err(backend)?;
            let agent_id: AgentId = agent_id.parse().map_err(|_| StoreError::Corrupt("agent_id"))?;
            let status: String = row.try_get("status").map_err(backend)?;
            let reason: Option<String> = row.try_get("status_reason").map_err(backend)?;
            let at = rfc3339(
                row.try_get::<Option<i64>, _>("status_changed_at")
                    .map_err(backend)?
                    .unwrap_or(0),
            )?;
            if status == "revoked" {
                list.revoked_agents.push(RevokedAgent {
                    agent_id,
                    revoked_at: at,
                    reason,
                });
            } else {
                list.suspended_agents.push(SuspendedAgent {
                    agent_id,
                    suspended_at: at,
                    reason,
                });
            }
        }
        for (jti, revoked_at, reason) in self
            .revoked_entries("SELECT jti, revoked_at, reason FROM revoked_tokens WHERE expires_at IS NULL OR expires_at > $1 ORDER BY jti", Some(now))
            .await?
        {
            let jti = jti.parse().map_err(|_| StoreError::Corrupt("jti"))?;
            list.revoked_aats.push(RevokedAat { jti, revoked_at, reason });
        }
        for (session_id, revoked_at, reason) in self
            .revoked_entries(
                "SELECT session_id, revoked_at, reason FROM revoked_sessions WHERE expires_at IS NULL OR expires_at > $1 ORDER BY session_id",
                Some(now),
            )
            .await?
        {
            list.revoked_sessions.push(RevokedSession { session_id, revoked_at, reason });
        }
        for (user_id, revoked_at, reason) in self
            .revoked_entries(
                "SELECT user_id, revoked_at, reason FROM revoked_users ORDER BY user_id",
                None,
            )
            .await?
        {
            list.revoked_users.push(RevokedUser {
                user_id,
                revoked_at,
                reason,
            });
        }
        Ok(list)
    }

    async fn events_after(&self, version: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, at, kind, subject, data FROM events WHERE version > $1 ORDER BY version LIMIT $2",
        )
        .bind(i64_of(version)?)
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data").map_err(backend)?;
                Ok(StoredEvent {
                    version: u64_of(row.try_get("version").map_err(backend)?)?,
                    at: row.try_get("at").map_err(backend)?,
                    kind: row.try_get("kind").map_err(backend)?,
                    subject: row.try_get("subject").map_err(backend)?,
                    data: serde_json::from_str(&data).map_err(|_| StoreError::Corrupt("event data"))?,
                })
            })
            .collect()
    }

    async fn crl_entries(&self, now: i64) -> Result<(Vec<CrlEntry>, Option<i64>), StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason, superseded_at FROM certificates \
             WHERE not_after > $1 AND (revoked_at IS NOT NULL OR superseded_at <= $1) ORDER BY serial",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(backend)?;
            let reason: Option<i64> = row.try_get("revocation_reason").map_err(backend)?;
            let superseded_at: Option<i64> = row.try_get("superseded_at").map_err(backend)?;
            let (revoked_at, reason) = match (revoked_at, reason, superseded_at) {
                (Some(at), Some(code), _) => (
                    at,
                    CrlReason::from_code(code).ok_or(StoreError::Corrupt("revocation_reason"))?,
                ),
                (_, _, Some(at)) => (at, CrlReason::Superseded),
                _ => return Err(StoreError::Corrupt("certificate revocation state")),
            };
            entries.push(CrlEntry {
                serial: row.try_get("serial").map_err(backend)?,
                revoked_at,
                reason,
            });
        }
        let next: Option<i64> = sqlx::query(
            "SELECT MIN(superseded_at) AS next FROM certificates WHERE superseded_at > $1 AND not_after > $1 AND revoked_at IS NULL",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?
        .try_get("next")
        .map_err(backend)?;
        Ok((entries, next))
    }

    async fn latest_crl(&self) -> Result<Option<StoredCrl>, StoreError> {
        let row = sqlx::query(
            "SELECT crl_number, revocation_version, this_update, next_update, refresh_at, der FROM crls \
             ORDER BY crl_number DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| {
            Ok(StoredCrl {
                crl_number: u64_of(row.try_get("crl_number").map_err(backend)?)?,
                revocation_version: u64_of(row.try_get("revocation_version").map_err(backend)?)?,
                this_update: row.try_get("this_update").map_err(backend)?,
                next_update: row.try_get("next_update").map_err(backend)?,
                refresh_at: row.try_get("refresh_at").map_err(backend)?,
                der: row.try_get("der").map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn next_crl_number(&self) -> Result<(u64, u64), StoreError> {
        // Its own transaction: it takes the registry lock but writes no audit record.
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE registry_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number, revocation_version",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let numbers = (
            u64_of(row.try_get("crl_number").map_err(backend)?)?,
            u64_of(row.try_get("revocation_version").map_err(backend)?)?,
        );
        tx.commit().await.map_err(backend)?;
        Ok(numbers)
    }

    async fn save_crl(&self, crl: &StoredCrl) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO crls (crl_number, revocation_version, this_update, next_update, refresh_at, der) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(i64_of(crl.crl_number)?)
        .bind(i64_of(crl.revocation_version)?)
        .bind(crl.this_update)
        .bind(crl.next_update)
        .bind(crl.refresh_at)
        .bind(&crl.der)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        // Keep a short history only.
        sqlx::query("DELETE FROM crls WHERE crl_number < $1")
            .bind(i64_of(crl.crl_number)?.saturating_sub(16))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn create_access_token(&self, token: &NewAccessToken, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut w = self.write(false).await?;
        sqlx::query(
            "INSERT INTO access_tokens (digest, token_id, role, label, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.digest)
        .bind(&token.token_id)
        .bind(token.role.as_str())
        .bind(token.label.as_deref())
        .bind(token.created_at)
        .execute(w.conn())
        .await
        .map_err(backend)?;
        w.audit(audit, token.created_at).await?;
        w.commit().await
    }

    async fn access_token(&self, digest: &str) -> Result<Option<(String, Role)>, StoreError> {
        let row = sqlx::query("SELECT token_id, role FROM access_tokens WHERE digest = $1 AND revoked_at IS NULL")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            let role: String = row.try_get("role").map_err(backend)?;
            Ok((
                row.try_get("token_id").map_err(backend)?,
                Role::from_name(&role).ok_or(StoreError::Corrupt("role"))?,
            ))
        })
        .transpose()
    }

    async fn create_registration_token(
        &self,
        token: &NewRegistrationToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut w = self.write(false).await?;
        sqlx::query(
            "INSERT INTO registration_tokens (digest, token_id, uses_remaining, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.digest)
        .bind(&token.token_id)
        .bind(i64::from(token.uses))
        .bind(token.expires_at)
        .bind(token.created_at)
        .execute(w.conn())
        .await
        .map_err(backend)?;
        w.audit(audit, token.created_at).await?;
        w.commit().await
    }

    async fn registration_token(&self, digest: &str) -> Result<Option<RegistrationTokenInfo>, StoreError> {
        let row = sqlx::query("SELECT token_id, uses_remaining, expires_at FROM registration_tokens WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            Ok(RegistrationTokenInfo {
                token_id: row.try_get("token_id").map_err(backend)?,
                uses_remaining: row.try_get("uses_remaining").map_err(backend)?,
                expires_at: row.try_get("expires_at").map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn audit_records(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get("details").map_err(backend)?;
                Ok(AuditRecord {
                    seq: row.try_get("seq").map_err(backend)?,
                    at: row.try_get("at").map_err(backend)?,
                    actor: row.try_get("actor").map_err(backend)?,
                    action: row.try_get("action").map_err(backend)?,
                    subject: row.try_get("subject").map_err(backend)?,
                    // An unparseable `details` is reported by the chain check as an edit.
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
                    prev_hash: row.try_get("prev_hash").map_err(backend)?,
                    hash: row.try_get("hash").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT audit_seq, audit_head FROM registry_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok((
            row.try_get("audit_seq").map_err(backend)?,
            row.try_get("audit_head").map_err(backend)?,
        ))
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM request_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }
}

fn const_format_agent_by_id() -> &'static str {
    "SELECT agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
     status_reason, status_changed_at, created_at, key_thumbprint, public_key FROM agents WHERE agent_id = $1"
}

fn agents_sql() -> &'static str {
    "SELECT agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
     status_reason, status_changed_at, created_at, key_thumbprint, public_key FROM agents \
     WHERE agent_id > $1 ORDER BY agent_id LIMIT $2"
}

fn agents_by_status_sql() -> &'static str {
    "SELECT agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
     status_reason, status_changed_at, created_at, key_thumbprint, public_key FROM agents \
     WHERE status = $1 AND agent_id > $2 ORDER BY agent_id LIMIT $3"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn write_pages(writer: &AnyPool, rows: i64) {
        for _ in 0..rows {
            sqlx::query("INSERT INTO scratch (v) VALUES (zeroblob(4000))")
                .execute(writer)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_long_log_is_restarted_from_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&SqlStore::sqlite_url(&dir.path().join("wal.db")))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE scratch (n INTEGER PRIMARY KEY, v BLOB)")
            .execute(&store.writer)
            .await
            .unwrap();
        write_pages(&store.writer, 300).await;
        let restarted = checkpoint_once(&store.pool, &store.writer, 1).await.unwrap();
        assert!(!restarted.busy, "{restarted:?}");
        assert!(restarted.frames > 0, "{restarted:?}");
        assert_eq!(restarted.checkpointed, restarted.frames);
        // The next commit writes from the start of the log.
        write_pages(&store.writer, 1).await;
        let after = checkpoint_once(&store.pool, &store.writer, i64::MAX).await.unwrap();
        assert!(after.frames < 10, "{after:?}");
    }
}
