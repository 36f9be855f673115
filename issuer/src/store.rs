//! The issuer's persistent state, in the authority database beside the registry's: signing
//! keys, the challenge key, users, sessions and refresh tokens, used challenges, and the
//! issuance log. Its audit records join the registry's hash chain.
//!
//! Every write transaction takes the `registry_state` row lock first, as the registry's own
//! writes do, so writers are serialized the same way on SQLite and across PostgreSQL
//! replicas. Token issuance goes through [`Ledger`], which commits many issuances per
//! transaction (group commit): each issuance is still all-or-nothing and acknowledged only
//! after its transaction commits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aip_aat::ids::AgentId;
use aip_registry::audit::AuditEntry;
use aip_registry::store::{Dialect, RevokedEntry, Script, SqlStore};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::challenge::OpenedChallenge;

/// A database failure. The source is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record exists already.
    #[error("{0}")]
    Conflict(&'static str),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The database failed.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl From<aip_registry::store::StoreError> for StoreError {
    fn from(e: aip_registry::store::StoreError) -> Self {
        match e {
            aip_registry::store::StoreError::Corrupt(what) => Self::Corrupt(what),
            aip_registry::store::StoreError::Backend(source) => Self::Backend(source),
            other => Self::Backend(Box::new(other)),
        }
    }
}

/// Takes the registry-wide write lock (see the module documentation) and reads the chain head.
const LOCK: &str = "UPDATE registry_state SET audit_seq = audit_seq WHERE id = 1 RETURNING audit_seq, audit_head";

fn unique_or(e: sqlx::Error, conflict: &'static str) -> StoreError {
    if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
        StoreError::Conflict(conflict)
    } else {
        backend(e)
    }
}

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

/// A user who authorizes agents with an API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's id.
    pub user_id: String,
    /// Tools the user may delegate (`*`: any).
    pub delegatable_tools: Vec<String>,
    /// `tools` or `read_only`.
    pub delegation_scope: String,
    /// Creation time.
    pub created_at: i64,
    /// When the user was revoked.
    pub revoked_at: Option<i64>,
}

/// A session: its first AAT and the refreshes of it share these facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id (`context.session_id`).
    pub session_id: String,
    /// The agent.
    pub agent_id: AgentId,
    /// The user, unless the agent is autonomous.
    pub user_id: Option<String>,
    /// `user_binding.auth_method`.
    pub auth_method: Option<String>,
    /// `user_binding.auth_time`.
    pub auth_time: Option<i64>,
    /// `user_binding.delegation_scope`.
    pub delegation_scope: Option<String>,
    /// The audience.
    pub audience: String,
    /// Capabilities granted at the start (JSON of `aip_aat::token::Capabilities`).
    pub capabilities: String,
    /// Start.
    pub created_at: i64,
    /// After this it cannot be refreshed.
    pub expires_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A refresh token's session, and whether the token was used already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshLookup {
    /// The session.
    pub session: SessionRecord,
    /// When the token was exchanged, if it was.
    pub used_at: Option<i64>,
}

/// An AAT to record in the issuance log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// `jti`.
    pub jti: String,
    /// The agent.
    pub agent_id: AgentId,
    /// The user.
    pub user_id: Option<String>,
    /// The session.
    pub session_id: String,
    /// Signing key.
    pub kid: String,
    /// `iat`.
    pub issued_at: i64,
    /// `exp`.
    pub expires_at: i64,
}

/// What an issuance does to its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// Starts a session with its first refresh token.
    New {
        /// The session.
        session: SessionRecord,
        /// SHA-256 of the refresh token handed out.
        refresh_digest: String,
    },
    /// Exchanges a refresh token for the next one.
    Refresh {
        /// The session.
        session_id: String,
        /// SHA-256 of the refresh token presented.
        presented: String,
        /// SHA-256 of the refresh token handed out.
        next: String,
    },
}

/// One token issuance for the [`Ledger`].
#[derive(Clone, Debug)]
pub struct Issuance {
    /// The challenge answered; recorded as used.
    pub challenge: OpenedChallenge,
    /// The token.
    pub token: IssuedToken,
    /// Its session.
    pub session: SessionChange,
    /// The audit record of the issuance.
    pub audit: AuditEntry,
}

/// Why the ledger refused an issuance (nothing of it was written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The challenge was answered before.
    #[error("the challenge was already used")]
    ChallengeReplayed,
    /// The user was revoked.
    #[error("the user's authorization was revoked")]
    UserRevoked,
    /// The refresh token was exchanged before: the session must be revoked.
    #[error("the refresh token was already used")]
    RefreshReused,
    /// The session was revoked or ended.
    #[error("the session was revoked or has ended")]
    SessionEnded,
}

/// What the ledger answers for one operation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Refused; a denial was audited when `audit_denial` was set.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Op {
    Issue(Box<Issuance>, oneshot::Sender<Result<(), LedgerError>>),
    Audit(AuditEntry, i64, oneshot::Sender<Result<(), LedgerError>>),
}

/// The issuer's tables.
#[derive(Clone)]
pub struct IssuerStore {
    reader: AnyPool,
    writer: AnyPool,
    dialect: Dialect,
    /// `last_expiry` as last written, per signing key.
    key_expiry: Arc<Mutex<HashMap<String, i64>>>,
}

impl std::fmt::Debug for IssuerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerStore").finish_non_exhaustive()
    }
}

/// A write transaction holding the registry-state lock, appending audit records to the chain.
struct Write {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    seq: i64,
    head: String,
}

impl Write {
    /// Appends a record to the chain.
    async fn audit(&mut self, entry: &AuditEntry, at: i64) -> Result<(), StoreError> {
        let (seq, head) =
            aip_registry::audit::append(&mut self.tx, self.dialect, self.seq, &self.head, &[(entry, at)]).await?;
        self.seq = seq;
        self.head = head;
        Ok(())
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("UPDATE registry_state SET audit_seq = $1 WHERE id = 1")
            .bind(self.seq)
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        self.tx.commit().await.map_err(backend)
    }
}

fn strings(json: &str, what: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|_| StoreError::Corrupt(what))
}

const SESSION_COLUMNS: &str = "s.session_id, s.agent_id, s.user_id, s.auth_method, s.auth_time, s.delegation_scope, \
     s.audience, s.capabilities, s.created_at, s.expires_at, s.revoked_at";

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    let agent_id: String = row.try_get("agent_id").map_err(backend)?;
    Ok(SessionRecord {
        session_id: row.try_get("session_id").map_err(backend)?,
        agent_id: agent_id.parse().map_err(|_| StoreError::Corrupt("agent_id"))?,
        user_id: row.try_get("user_id").map_err(backend)?,
        auth_method: row.try_get("auth_method").map_err(backend)?,
        auth_time: row.try_get("auth_time").map_err(backend)?,
        delegation_scope: row.try_get("delegation_scope").map_err(backend)?,
        audience: row.try_get("audience").map_err(backend)?,
        capabilities: row.try_get("capabilities").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        revoked_at: row.try_get("revoked_at").map_err(backend)?,
    })
}

/// Live tokens and sessions a revocation covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    /// Tokens not yet expired.
    pub tokens: Vec<RevokedEntry>,
    /// Sessions, each with the expiry of its last token.
    pub sessions: Vec<RevokedEntry>,
}

/// Which tokens a revocation covers.
#[derive(Clone, Copy, Debug)]
enum Scope<'a> {
    User(&'a str),
    Agent(&'a str),
    Session(&'a str),
}

impl IssuerStore {
    /// The issuer's tables in the database `store` opened (migrations applied).
    pub fn new(store: &SqlStore) -> Self {
        let (reader, writer) = store.pools();
        Self {
            reader: reader.clone(),
            writer: writer.clone(),
            dialect: store.dialect(),
            key_expiry: Arc::default(),
        }
    }

    /// A write transaction holding the lock.
    async fn write(&self) -> Result<Write, StoreError> {
        let (write, _) = self.write_with(Script::new(self.dialect)).await?;
        Ok(write)
    }

    /// The secret named `name`, created with `create` the first time (every replica then
    /// reads the same value).
    pub async fn secret(&self, name: &str, create: impl FnOnce() -> String) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO issuer_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(create())
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        sqlx::query("SELECT value FROM issuer_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.reader)
            .await
            .map_err(backend)?
            .try_get("value")
            .map_err(backend)
    }

    /// Every signing key, newest first.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, public_key, key_file, created_at, retired_at, last_expiry FROM issuer_keys \
             ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.reader)
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
    pub async fn add_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        sqlx::query("UPDATE issuer_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *w.tx)
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
        .execute(&mut *w.tx)
        .await
        .map_err(|e| unique_or(e, "this key is already an issuer key"))?;
        w.audit(audit, key.created_at).await?;
        w.commit().await
    }

    /// Creates a user with an API key (stored as its digest).
    pub async fn create_user(&self, user: &UserRecord, key_digest: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut w = self.write().await?;
        let revoked = sqlx::query("SELECT 1 AS revoked FROM user_revocations WHERE user_id = $1")
            .bind(&user.user_id)
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(backend)?;
        if revoked.is_some() {
            return Err(StoreError::Conflict("this user id was revoked and cannot be reused"));
        }
        sqlx::query(
            "INSERT INTO users (user_id, key_digest, delegatable_tools, delegation_scope, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.user_id)
        .bind(key_digest)
        .bind(serde_json::to_string(&user.delegatable_tools).map_err(backend)?)
        .bind(&user.delegation_scope)
        .bind(user.created_at)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| unique_or(e, "a user with this id exists already"))?;
        w.audit(audit, user.created_at).await?;
        w.commit().await
    }

    fn user_from_row(row: &AnyRow) -> Result<UserRecord, StoreError> {
        Ok(UserRecord {
            user_id: row.try_get("user_id").map_err(backend)?,
            delegatable_tools: strings(
                &row.try_get::<String, _>("delegatable_tools").map_err(backend)?,
                "delegatable_tools",
            )?,
            delegation_scope: row.try_get("delegation_scope").map_err(backend)?,
            created_at: row.try_get("created_at").map_err(backend)?,
            revoked_at: row.try_get("revoked_at").map_err(backend)?,
        })
    }

    /// The user whose API key has this digest.
    pub async fn user_by_key(&self, key_digest: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT u.user_id, u.delegatable_tools, u.delegation_scope, u.created_at, r.revoked_at \
             FROM users u LEFT JOIN user_revocations r ON r.user_id = u.user_id WHERE u.key_digest = $1",
        )
        .bind(key_digest)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.as_ref().map(Self::user_from_row).transpose()
    }

    /// API-key users, by id.
    pub async fn users(&self, after: &str, limit: u32) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.user_id, u.delegatable_tools, u.delegation_scope, u.created_at, r.revoked_at \
             FROM users u LEFT JOIN user_revocations r ON r.user_id = u.user_id \
             WHERE u.user_id > $1 ORDER BY u.user_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::user_from_row).collect()
    }

    /// The session a refresh token belongs to.
    pub async fn refresh_token(&self, digest: &str) -> Result<Option<RefreshLookup>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS}, r.used_at FROM refresh_tokens r \
             JOIN sessions s ON s.session_id = r.session_id WHERE r.digest = $1"
        )))
        .bind(digest)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.map(|row| {
            Ok(RefreshLookup {
                session: session_from_row(&row)?,
                used_at: row.try_get("used_at").map_err(backend)?,
            })
        })
        .transpose()
    }

    /// A session.
    pub async fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.session_id = $1"
        )))
        .bind(session_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// The expiry of the token with this `jti`, if it was issued here.
    pub async fn token_expiry(&self, jti: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query("SELECT expires_at FROM issued_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .map(|row| row.try_get("expires_at").map_err(backend))
            .transpose()
    }

    /// Revokes a user (final): refreshes stop, and the user's live tokens and sessions are
    /// returned for publication.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<Covered, StoreError> {
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO user_revocations (user_id, revoked_at, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(at)
        .bind(reason)
        .execute(&mut *w.tx)
        .await
        .map_err(backend)?;
        let covered = Self::end_sessions(&mut w, Scope::User(user_id), reason, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(covered)
    }

    /// Ends the sessions of an agent (revoked in the registry) and returns its live tokens.
    pub async fn revoke_agent_sessions(
        &self,
        agent_id: &AgentId,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<Covered, StoreError> {
        let mut w = self.write().await?;
        let covered = Self::end_sessions(&mut w, Scope::Agent(agent_id.as_str()), reason, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(covered)
    }

    /// Ends a session and returns its live tokens. `None` when there is no such session.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<Option<Covered>, StoreError> {
        let mut w = self.write().await?;
        let exists = sqlx::query("SELECT 1 AS found FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Ok(None);
        }
        let covered = Self::end_sessions(&mut w, Scope::Session(session_id), reason, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(Some(covered))
    }

    /// Marks the sessions in `scope` revoked and lists the live tokens they hold.
    async fn end_sessions(
        w: &mut Write,
        scope: Scope<'_>,
        reason: Option<&str>,
        at: i64,
    ) -> Result<Covered, StoreError> {
        let (column, id) = match scope {
            Scope::User(id) => ("user_id", id),
            Scope::Agent(id) => ("agent_id", id),
            Scope::Session(id) => ("session_id", id),
        };
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE {column} = $3 AND revoked_at IS NULL"
        )))
        .bind(at)
        .bind(reason)
        .bind(id)
        .execute(&mut *w.tx)
        .await
        .map_err(backend)?;
        // The issuance log is indexed by session only (one index fewer to update per issuance):
        // a user's or agent's tokens are found through their sessions.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT t.jti, t.session_id, t.expires_at FROM sessions s \
             JOIN issued_tokens t ON t.session_id = s.session_id \
             WHERE s.{column} = $1 AND t.expires_at >= $2 ORDER BY t.jti"
        )))
        .bind(id)
        .bind(at)
        .fetch_all(&mut *w.tx)
        .await
        .map_err(backend)?;
        let mut covered = Covered::default();
        let mut sessions: HashMap<String, i64> = HashMap::new();
        for row in &rows {
            let jti: String = row.try_get("jti").map_err(backend)?;
            let session: String = row.try_get("session_id").map_err(backend)?;
            let expires_at: i64 = row.try_get("expires_at").map_err(backend)?;
            let last = sessions.entry(session).or_insert(expires_at);
            *last = (*last).max(expires_at);
            covered.tokens.push(RevokedEntry {
                id: jti,
                expires_at: Some(expires_at),
            });
        }
        if let Scope::Session(id) = scope {
            sessions.entry(id.to_owned()).or_insert(at);
        }
        let mut sessions: Vec<_> = sessions.into_iter().collect();
        sessions.sort();
        covered.sessions = sessions
            .into_iter()
            .map(|(id, expires_at)| RevokedEntry {
                id,
                expires_at: Some(expires_at),
            })
            .collect();
        Ok(covered)
    }

    /// Deletes what can no longer matter: used challenges past their expiry, refresh tokens
    /// and sessions ended a day ago, and the issuance log of tokens expired an hour ago.
    pub async fn purge(&self, now: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for (sql, before) in [
            ("DELETE FROM used_challenges WHERE expires_at < $1", now - 60),
            ("DELETE FROM issued_tokens WHERE expires_at < $1", now - 3_600),
            (
                "DELETE FROM refresh_tokens WHERE session_id IN (SELECT session_id FROM sessions WHERE expires_at < $1)",
                now - 86_400,
            ),
            ("DELETE FROM sessions WHERE expires_at < $1", now - 86_400),
        ] {
            removed += sqlx::query(sql)
                .bind(before)
                .execute(&self.writer)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Takes the write lock and runs `claim` (a [`Script`] whose rows are `kind`, `value`) in
    /// the same round trip on SQLite. On PostgreSQL the lock is taken first, on its own: a
    /// statement's snapshot is taken when it starts, so reads that must see every write
    /// committed before the lock was granted go in a later statement.
    async fn write_with(&self, mut claim: Script) -> Result<(Write, Vec<AnyRow>), StoreError> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let (lock, rows) = match self.dialect {
            Dialect::Sqlite => {
                claim.prepend(LOCK);
                let mut rows = claim.fetch_all(&mut tx).await?.into_iter();
                let lock = rows.next().ok_or(StoreError::Corrupt("registry_state"))?;
                (lock, rows.collect())
            }
            Dialect::Postgres => {
                let lock = sqlx::query(LOCK).fetch_one(&mut *tx).await.map_err(backend)?;
                (lock, claim.fetch_all(&mut tx).await?)
            }
        };
        Ok((
            Write {
                dialect: self.dialect,
                seq: lock.try_get("audit_seq").map_err(backend)?,
                head: lock.try_get("audit_head").map_err(backend)?,
                tx,
            },
            rows,
        ))
    }

    /// Commits a batch in a fixed number of round trips (plus two per refresh): each issuance
    /// is applied or refused on its own (a refused one writes nothing but, for refresh
    /// refusals, the use of its challenge), every applied one and every denial is audited, and
    /// all of it commits together.
    async fn commit_batch(&self, ops: &[&Op]) -> Result<Vec<Result<(), Refusal>>, StoreError> {
        let issuances: Vec<(usize, &Issuance)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::Issue(issuance, _) => Some((i, &**issuance)),
                Op::Audit(..) => None,
            })
            .collect();
        let mut outcomes: Vec<Result<(), Refusal>> = vec![Ok(()); ops.len()];

        // 1. With the lock: the revoked users, and the challenges used here for the first time
        // ever (a revoked user's challenge is not used up).
        let (mut w, rows) = self.write_with(self.claim(&issuances)).await?;
        let mut revoked = HashSet::new();
        let mut claimed = HashSet::new();
        for row in rows {
            let kind: String = row.try_get("kind").map_err(backend)?;
            let value: String = row.try_get("value").map_err(backend)?;
            match kind.as_str() {
                "revoked" => revoked.insert(value),
                "claimed" => claimed.insert(value),
                _ => return Err(StoreError::Corrupt("claim row")),
            };
        }
        // 2. Each challenge goes to the first issuance in the batch that presented it.
        for (i, issuance) in &issuances {
            if issuance.token.user_id.as_ref().is_some_and(|u| revoked.contains(u)) {
                outcomes[*i] = Err(Refusal::UserRevoked);
            } else if !claimed.remove(&issuance.challenge.id) {
                outcomes[*i] = Err(Refusal::ChallengeReplayed);
            }
        }

        // 3. Refreshes: the session must be live and the presented token unused.
        for (i, issuance) in &issuances {
            if outcomes[*i].is_err() {
                continue;
            }
            if let SessionChange::Refresh {
                session_id, presented, ..
            } = &issuance.session
            {
                outcomes[*i] = Self::exchange(&mut w, session_id, presented, issuance.token.issued_at).await?;
            }
        }

        // 4. What the applied issuances create, their audit records and the denials', in queue
        // order, and the new chain head: one round trip.
        let applied: Vec<&Issuance> = issuances
            .iter()
            .filter(|(i, _)| outcomes[*i].is_ok())
            .map(|(_, issuance)| *issuance)
            .collect();
        let mut writes = Script::new(self.dialect);
        Self::insert_issuances(&mut writes, &applied);
        let mut records = Vec::new();
        for (op, outcome) in ops.iter().zip(&outcomes) {
            match op {
                Op::Issue(issuance, _) if outcome.is_ok() => records.push((&issuance.audit, issuance.token.issued_at)),
                Op::Issue(..) => {}
                Op::Audit(entry, at, _) => records.push((entry, *at)),
            }
        }
        let (seq, _) = aip_registry::audit::insert(&mut writes, w.seq, &w.head, &records)?;

        // 5. How long each signing key must stay published: written when it moves by more than
        // a minute (well inside the publication margin), not on every batch.
        let mut last_expiry: HashMap<&str, i64> = HashMap::new();
        for issuance in &applied {
            let last = last_expiry.entry(issuance.token.kid.as_str()).or_insert(0);
            *last = (*last).max(issuance.token.expires_at);
        }
        let mut written = self.key_expiry.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (kid, expiry) in last_expiry {
            if written.get(kid).is_some_and(|w| *w + 60 >= expiry) {
                continue;
            }
            let (until, key, later) = (writes.param(), writes.param(), writes.param());
            writes.push(format!(
                "UPDATE issuer_keys SET last_expiry = {until} WHERE kid = {key} AND last_expiry < {later}"
            ));
            writes.bind(expiry + 60).bind(kid).bind(expiry + 60);
            written.insert(kid.to_owned(), expiry + 60);
        }
        let next = writes.param();
        writes.push(format!("UPDATE registry_state SET audit_seq = {next} WHERE id = 1"));
        writes.bind(seq);
        writes.execute(&mut w.tx).await?;
        w.tx.commit().await.map_err(backend)?;
        *self.key_expiry.lock().unwrap_or_else(PoisonError::into_inner) = written;
        Ok(outcomes)
    }

    /// The statements that find the batch's revoked users and use up its challenges, each row
    /// a `kind` (`revoked` or `claimed`) and a `value` (the user or the challenge).
    fn claim(&self, issuances: &[(usize, &Issuance)]) -> Script {
        let mut claim = Script::new(self.dialect);
        let users: HashSet<&str> = issuances
            .iter()
            .filter_map(|(_, x)| x.token.user_id.as_deref())
            .collect();
        if !users.is_empty() {
            let list = claim.values(1, users.len());
            claim.push(format!(
                "SELECT CAST('revoked' AS TEXT) AS kind, user_id AS value FROM user_revocations WHERE user_id IN {list}"
            ));
            for user in users {
                claim.bind(user);
            }
        }
        if !issuances.is_empty() {
            let values = claim.values(issuances.len(), 3);
            let verb = self.dialect.insert_verb();
            // Duplicates within the batch are skipped like any other conflict.
            claim.push(format!(
                "WITH v (challenge_id, expires_at, user_id) AS (VALUES {values}) \
                 {verb} used_challenges (challenge_id, expires_at) SELECT challenge_id, expires_at FROM v \
                 WHERE NOT EXISTS (SELECT 1 FROM user_revocations r WHERE r.user_id = v.user_id) \
                 ON CONFLICT (challenge_id) DO NOTHING \
                 RETURNING CAST('claimed' AS TEXT) AS kind, challenge_id AS value"
            ));
            for (_, issuance) in issuances {
                claim
                    .bind(&issuance.challenge.id)
                    .bind(issuance.challenge.expires_at)
                    .bind(issuance.token.user_id.as_deref());
            }
        }
        claim
    }

    /// Adds the sessions, refresh tokens and issuance-log rows of `applied` to `writes`.
    fn insert_issuances(writes: &mut Script, applied: &[&Issuance]) {
        let sessions: Vec<&SessionRecord> = applied
            .iter()
            .filter_map(|x| match &x.session {
                SessionChange::New { session, .. } => Some(session),
                SessionChange::Refresh { .. } => None,
            })
            .collect();
        if !sessions.is_empty() {
            writes.insert_values(
                "sessions (session_id, agent_id, user_id, auth_method, auth_time, delegation_scope, \
                 audience, capabilities, created_at, expires_at)",
                sessions.len(),
                10,
            );
            for session in &sessions {
                writes
                    .bind(&session.session_id)
                    .bind(session.agent_id.as_str())
                    .bind(session.user_id.as_deref())
                    .bind(session.auth_method.as_deref())
                    .bind(session.auth_time)
                    .bind(session.delegation_scope.as_deref())
                    .bind(&session.audience)
                    .bind(&session.capabilities)
                    .bind(session.created_at)
                    .bind(session.expires_at);
            }
        }
        if applied.is_empty() {
            return;
        }
        writes.insert_values("refresh_tokens (digest, session_id, created_at)", applied.len(), 3);
        for issuance in applied {
            let digest = match &issuance.session {
                SessionChange::New { refresh_digest, .. } => refresh_digest,
                SessionChange::Refresh { next, .. } => next,
            };
            writes
                .bind(digest)
                .bind(&issuance.token.session_id)
                .bind(issuance.token.issued_at);
        }
        writes.insert_values(
            "issued_tokens (jti, agent_id, user_id, session_id, kid, issued_at, expires_at)",
            applied.len(),
            7,
        );
        for issuance in applied {
            let token = &issuance.token;
            writes
                .bind(&token.jti)
                .bind(token.agent_id.as_str())
                .bind(token.user_id.as_deref())
                .bind(&token.session_id)
                .bind(&token.kid)
                .bind(token.issued_at)
                .bind(token.expires_at);
        }
    }

    /// Marks a refresh token used, if its session is live and it was not used before.
    async fn exchange(
        w: &mut Write,
        session_id: &str,
        presented: &str,
        at: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let live = sqlx::query(
            "SELECT 1 AS live FROM sessions WHERE session_id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(session_id)
        .bind(at)
        .fetch_optional(&mut *w.tx)
        .await
        .map_err(backend)?;
        if live.is_none() {
            return Ok(Err(Refusal::SessionEnded));
        }
        let exchanged = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE digest = $2 AND session_id = $3 AND used_at IS NULL",
        )
        .bind(at)
        .bind(presented)
        .bind(session_id)
        .execute(&mut *w.tx)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(if exchanged == 0 {
            Err(Refusal::RefreshReused)
        } else {
            Ok(())
        })
    }
}

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 256;

/// Group commit of issuances and denial records: callers queue operations and wait for the
/// transaction that holds theirs to commit.
#[derive(Clone, Debug)]
pub struct Ledger {
    queue: mpsc::Sender<Op>,
}

impl Ledger {
    /// Starts the writer task over `store`.
    pub fn start(store: IssuerStore) -> Self {
        let (queue, mut incoming) = mpsc::channel::<Op>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while incoming.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let ops: Vec<&Op> = batch.iter().collect();
                let result = store.commit_batch(&ops).await;
                match result {
                    Ok(outcomes) => {
                        for (op, outcome) in batch.drain(..).zip(outcomes) {
                            reply(op, outcome.map_err(LedgerError::from));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = ?e, operations = batch.len(), "issuance batch failed; retrying one by one");
                        // One bad operation must not fail its neighbours: retry each alone.
                        for op in batch.drain(..) {
                            let outcome = store.commit_batch(&[&op]).await;
                            let outcome = match outcome {
                                Ok(mut outcomes) => outcomes.pop().unwrap_or(Ok(())).map_err(LedgerError::from),
                                Err(e) => Err(LedgerError::Store(e)),
                            };
                            reply(op, outcome);
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    async fn submit(&self, op: Op, done: oneshot::Receiver<Result<(), LedgerError>>) -> Result<(), LedgerError> {
        let closed = || LedgerError::Store(StoreError::Corrupt("the issuance writer stopped"));
        self.queue.send(op).await.map_err(|_| closed())?;
        match tokio::time::timeout(Duration::from_secs(30), done).await {
            Ok(Ok(outcome)) => outcome,
            _ => Err(closed()),
        }
    }

    /// Records an issuance; returns once it is committed, or why it was refused.
    pub async fn issue(&self, issuance: Issuance) -> Result<(), LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::Issue(Box::new(issuance), tx), rx).await
    }

    /// Appends an audit record (a denial) through the same group commit.
    pub async fn audit(&self, entry: AuditEntry, at: i64) -> Result<(), LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Op::Audit(entry, at, tx), rx).await
    }
}

fn reply(op: Op, outcome: Result<(), LedgerError>) {
    let sender = match op {
        Op::Issue(_, sender) | Op::Audit(_, _, sender) => sender,
    };
    // The caller may have given up waiting; the outcome is committed regardless.
    let _ = sender.send(outcome);
}
