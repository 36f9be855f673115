//! Access tokens and registration tokens, kept as digests.

use aip_api::registry::Role;
use aip_db::Lock;
use aip_db::audit::AuditEntry;
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{SqlStore, stored};
use crate::store::{
    CredentialStore, NewAccessToken, NewRegistrationToken, RegistrationTokenInfo, StoreError, StoredAccessToken,
    StoredRegistrationToken,
};

const ACCESS_TOKEN_COLUMNS: &str = "token_id, role, label, created_at, expires_at, last_used_at, revoked_at";
const REGISTRATION_TOKEN_COLUMNS: &str =
    "token_id, label, uses_remaining, created_at, expires_at, last_used_at, revoked_at";

fn access_token_of(row: &AnyRow) -> Result<StoredAccessToken, StoreError> {
    let role: String = row.try_get("role").map_err(stored)?;
    Ok(StoredAccessToken {
        token_id: row.try_get("token_id").map_err(stored)?,
        role: Role::from_name(&role).ok_or(StoreError::Corrupt("role"))?,
        label: row.try_get("label").map_err(stored)?,
        created_at: row.try_get("created_at").map_err(stored)?,
        expires_at: row.try_get("expires_at").map_err(stored)?,
        last_used_at: row.try_get("last_used_at").map_err(stored)?,
        revoked_at: row.try_get("revoked_at").map_err(stored)?,
    })
}

fn registration_token_of(row: &AnyRow) -> Result<StoredRegistrationToken, StoreError> {
    Ok(StoredRegistrationToken {
        token_id: row.try_get("token_id").map_err(stored)?,
        label: row.try_get("label").map_err(stored)?,
        uses_remaining: row.try_get("uses_remaining").map_err(stored)?,
        created_at: row.try_get("created_at").map_err(stored)?,
        expires_at: row.try_get("expires_at").map_err(stored)?,
        last_used_at: row.try_get("last_used_at").map_err(stored)?,
        revoked_at: row.try_get("revoked_at").map_err(stored)?,
    })
}

/// Sets `revoked_at` of the token `token_id` in `table` (unless it is set) and returns the
/// row as it is now with whether it changed; [`StoreError::TokenNotFound`] when there is none.
async fn revoke_in(
    conn: &mut AnyConnection,
    table: &str,
    columns: &str,
    token_id: &str,
    at: i64,
) -> Result<(AnyRow, bool), StoreError> {
    let revoked = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL RETURNING {columns}"
    )))
    .bind(at)
    .bind(token_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(stored)?;
    if let Some(row) = revoked {
        return Ok((row, true));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE token_id = $1"
    )))
    .bind(token_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(stored)?
    .ok_or(StoreError::TokenNotFound)?;
    Ok((row, false))
}

#[async_trait]
impl CredentialStore for SqlStore {
    async fn create_access_token(&self, token: &NewAccessToken, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
        sqlx::query(
            "INSERT INTO access_tokens (digest, token_id, role, label, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.digest)
        .bind(&token.token_id)
        .bind(token.role.as_str())
        .bind(token.label.as_deref())
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(w.conn())
        .await
        .map_err(stored)?;
        w.audit(audit, token.created_at).await?;
        Ok(w.commit().await?)
    }

    async fn access_token(&self, digest: &str) -> Result<Option<StoredAccessToken>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCESS_TOKEN_COLUMNS} FROM access_tokens WHERE digest = $1 AND revoked_at IS NULL"
        )))
        .bind(digest)
        .fetch_optional(self.db.reader())
        .await
        .map_err(stored)?;
        row.as_ref().map(access_token_of).transpose()
    }

    async fn touch_access_token(&self, token_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE token_id = $2")
            .bind(at)
            .bind(token_id)
            .execute(self.db.writer())
            .await
            .map_err(stored)?;
        Ok(())
    }

    async fn access_tokens(&self) -> Result<Vec<StoredAccessToken>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCESS_TOKEN_COLUMNS} FROM access_tokens ORDER BY created_at, token_id"
        )))
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        rows.iter().map(access_token_of).collect()
    }

    async fn revoke_access_token(
        &self,
        token_id: &str,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StoredAccessToken, StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
        let (row, changed) = revoke_in(w.conn(), "access_tokens", ACCESS_TOKEN_COLUMNS, token_id, at).await?;
        let token = access_token_of(&row)?;
        if !changed {
            // Already revoked: dropping the write rolls it back, nothing is recorded.
            return Ok(token);
        }
        if token.role == Role::Admin && token.expires_at.is_none_or(|t| t > at) {
            // Under the lock, so two revocations cannot each leave the other as the last.
            let others: i64 = sqlx::query(
                "SELECT COUNT(*) FROM access_tokens WHERE role = 'admin' AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $1)",
            )
            .bind(at)
            .fetch_one(w.conn())
            .await
            .map_err(stored)?
            .try_get(0)
            .map_err(stored)?;
            if others == 0 {
                return Err(StoreError::Conflict(
                    "this is the last unexpired admin token; create another admin token before revoking it",
                ));
            }
        }
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(token)
    }

    async fn create_registration_token(
        &self,
        token: &NewRegistrationToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
        sqlx::query(
            "INSERT INTO registration_tokens (digest, token_id, uses_remaining, expires_at, created_at, label) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.digest)
        .bind(&token.token_id)
        .bind(i64::from(token.uses))
        .bind(token.expires_at)
        .bind(token.created_at)
        .bind(token.label.as_deref())
        .execute(w.conn())
        .await
        .map_err(stored)?;
        w.audit(audit, token.created_at).await?;
        Ok(w.commit().await?)
    }

    async fn registration_token(&self, digest: &str) -> Result<Option<RegistrationTokenInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT token_id, uses_remaining, expires_at, revoked_at FROM registration_tokens WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(self.db.reader())
        .await
        .map_err(stored)?;
        row.map(|row| {
            Ok(RegistrationTokenInfo {
                token_id: row.try_get("token_id").map_err(stored)?,
                uses_remaining: row.try_get("uses_remaining").map_err(stored)?,
                expires_at: row.try_get("expires_at").map_err(stored)?,
                revoked: row.try_get::<Option<i64>, _>("revoked_at").map_err(stored)?.is_some(),
            })
        })
        .transpose()
    }

    async fn registration_tokens(&self) -> Result<Vec<StoredRegistrationToken>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REGISTRATION_TOKEN_COLUMNS} FROM registration_tokens ORDER BY created_at, token_id"
        )))
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        rows.iter().map(registration_token_of).collect()
    }

    async fn revoke_registration_token(
        &self,
        token_id: &str,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StoredRegistrationToken, StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
        let (row, changed) = revoke_in(
            w.conn(),
            "registration_tokens",
            REGISTRATION_TOKEN_COLUMNS,
            token_id,
            at,
        )
        .await?;
        let token = registration_token_of(&row)?;
        if changed {
            w.audit(audit, at).await?;
            w.commit().await?;
        }
        Ok(token)
    }
}
