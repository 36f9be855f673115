//! Users who authorize agents with an API key, and user revocation (whatever the user's
//! authorization method).

use aip_db::audit::AuditEntry;
use aip_db::{DbError, Lock, backend};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::base::{IssuerStore, strings};
use super::sessions::{Covered, Scope};

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

impl IssuerStore {
    /// Creates a user with an API key (stored as its digest).
    ///
    /// Refused, with nothing written, when the id looks like an existing user's (the same
    /// Unicode TR39 skeleton): `Ok(Some(existing id))`.
    pub async fn create_user(
        &self,
        user: &UserRecord,
        key_digest: &str,
        audit: &AuditEntry,
    ) -> Result<Option<String>, DbError> {
        let mut w = self.db.write(Lock::audited()).await?;
        // Under the lock, so two look-alike ids created at once cannot both get in.
        let skeleton = aip_api::checks::skeleton(&user.user_id);
        let imitated = sqlx::query("SELECT user_id FROM users WHERE user_id_skeleton = $1 AND user_id <> $2 LIMIT 1")
            .bind(&skeleton)
            .bind(&user.user_id)
            .fetch_optional(w.conn())
            .await
            .map_err(backend)?;
        if let Some(row) = imitated {
            return Ok(Some(row.try_get("user_id").map_err(backend)?));
        }
        let revoked = sqlx::query("SELECT 1 AS revoked FROM user_revocations WHERE user_id = $1")
            .bind(&user.user_id)
            .fetch_optional(w.conn())
            .await
            .map_err(backend)?;
        if revoked.is_some() {
            return Err(DbError::Conflict("this user id was revoked and cannot be reused"));
        }
        sqlx::query(
            "INSERT INTO users (user_id, key_digest, delegatable_tools, delegation_scope, created_at, \
             user_id_skeleton) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.user_id)
        .bind(key_digest)
        .bind(serde_json::to_string(&user.delegatable_tools).map_err(backend)?)
        .bind(&user.delegation_scope)
        .bind(user.created_at)
        .bind(&skeleton)
        .execute(w.conn())
        .await
        .map_err(|e| aip_db::unique_or(e, DbError::Conflict("a user with this id exists already")))?;
        w.audit(audit, user.created_at).await?;
        w.commit().await?;
        Ok(None)
    }

    /// Fills in the id skeleton of users created before skeletons were stored (migration
    /// 0005); the number filled in. Safe to run on every replica at once.
    pub async fn backfill_user_skeletons(&self) -> Result<u64, DbError> {
        self.db
            .fill_derived(
                "SELECT user_id, user_id FROM users WHERE user_id_skeleton IS NULL LIMIT 500",
                "UPDATE users SET user_id_skeleton = $1 WHERE user_id = $2 AND user_id_skeleton IS NULL",
                aip_api::checks::skeleton,
            )
            .await
    }

    fn user_from_row(row: &AnyRow) -> Result<UserRecord, DbError> {
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
    pub async fn user_by_key(&self, key_digest: &str) -> Result<Option<UserRecord>, DbError> {
        let row = sqlx::query(
            "SELECT u.user_id, u.delegatable_tools, u.delegation_scope, u.created_at, r.revoked_at \
             FROM users u LEFT JOIN user_revocations r ON r.user_id = u.user_id WHERE u.key_digest = $1",
        )
        .bind(key_digest)
        .fetch_optional(self.db.reader())
        .await
        .map_err(backend)?;
        row.as_ref().map(Self::user_from_row).transpose()
    }

    /// API-key users, by id.
    pub async fn users(&self, after: &str, limit: u32) -> Result<Vec<UserRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT u.user_id, u.delegatable_tools, u.delegation_scope, u.created_at, r.revoked_at \
             FROM users u LEFT JOIN user_revocations r ON r.user_id = u.user_id \
             WHERE u.user_id > $1 ORDER BY u.user_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit.clamp(1, aip_api::MAX_PAGE + 1)))
        .fetch_all(self.db.reader())
        .await
        .map_err(backend)?;
        rows.iter().map(Self::user_from_row).collect()
    }

    /// Revokes a user (final): refreshes stop, and the user's live tokens and sessions are
    /// returned for publication.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<Covered, DbError> {
        let mut w = self.db.write(Lock::audited()).await?;
        sqlx::query(
            "INSERT INTO user_revocations (user_id, revoked_at, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(at)
        .bind(reason)
        .execute(w.conn())
        .await
        .map_err(backend)?;
        let covered = Self::end_sessions(&mut w, Scope::User(user_id), reason, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(covered)
    }
}
