//! Access tokens and registration tokens, kept as digests.

use aip_api::registry::Role;
use aip_db::Lock;
use aip_db::audit::AuditEntry;
use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, stored};
use crate::store::{CredentialStore, NewAccessToken, NewRegistrationToken, RegistrationTokenInfo, StoreError};

#[async_trait]
impl CredentialStore for SqlStore {
    async fn create_access_token(&self, token: &NewAccessToken, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
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
        .map_err(stored)?;
        w.audit(audit, token.created_at).await?;
        Ok(w.commit().await?)
    }

    async fn access_token(&self, digest: &str) -> Result<Option<(String, Role)>, StoreError> {
        let row = sqlx::query("SELECT token_id, role FROM access_tokens WHERE digest = $1 AND revoked_at IS NULL")
            .bind(digest)
            .fetch_optional(self.db.reader())
            .await
            .map_err(stored)?;
        row.map(|row| {
            let role: String = row.try_get("role").map_err(stored)?;
            Ok((
                row.try_get("token_id").map_err(stored)?,
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
        let mut w = self.db.write(Lock::audited()).await?;
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
        .map_err(stored)?;
        w.audit(audit, token.created_at).await?;
        Ok(w.commit().await?)
    }

    async fn registration_token(&self, digest: &str) -> Result<Option<RegistrationTokenInfo>, StoreError> {
        let row = sqlx::query("SELECT token_id, uses_remaining, expires_at FROM registration_tokens WHERE digest = $1")
            .bind(digest)
            .fetch_optional(self.db.reader())
            .await
            .map_err(stored)?;
        row.map(|row| {
            Ok(RegistrationTokenInfo {
                token_id: row.try_get("token_id").map_err(stored)?,
                uses_remaining: row.try_get("uses_remaining").map_err(stored)?,
                expires_at: row.try_get("expires_at").map_err(stored)?,
            })
        })
        .transpose()
    }
}
