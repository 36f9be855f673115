//! What the registry publishes about revocation: the list, its events, the CRL.

use aip_aat::ids::AgentId;
use aip_aat::revocation::{
    RevocationList, RevokedAat, RevokedAgent, RevokedDelegation, RevokedSession, RevokedUser, SupersededKey,
    SuspendedAgent,
};
use aip_aat::token::MAX_LIFETIME_SECS;
use aip_api::registry::{PublishRevocationsRequest, RevokedEntryBody};
use aip_db::Lock;
use aip_db::audit::AuditEntry;
use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::{SqlStore, event, i64_of, rfc3339, stored, u64_of};
use crate::ca::{CrlEntry, CrlReason};
use crate::store::{RevocationStore, StoreError, StoredCrl, StoredEvent};

#[async_trait]
impl RevocationStore for SqlStore {
    async fn publish_revocations(
        &self,
        revocations: &PublishRevocationsRequest,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut w = self.db.write(Lock::audited().publishing()).await?;
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
            (
                "INSERT INTO revoked_delegations (revocation_id, revoked_at, reason, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (revocation_id) DO NOTHING",
                &revocations.delegations,
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
                    .map_err(stored)?;
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
            .map_err(stored)?;
        }
        let ids = |entries: &[RevokedEntryBody]| entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let mut data = serde_json::json!({
            "jtis": ids(&revocations.tokens),
            "session_ids": ids(&revocations.sessions),
            "user_ids": revocations.users,
        });
        if !revocations.delegations.is_empty() {
            data["revocation_ids"] = ids(&revocations.delegations).into();
        }
        if let Some(reason) = reason {
            data["reason"] = reason.into();
        }
        let version = event(&mut w, revocations.event_kind(), &revocations.subject, &data, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(version)
    }

    async fn revocation_version(&self) -> Result<u64, StoreError> {
        let version: i64 = sqlx::query("SELECT revocation_version FROM registry_state WHERE id = 1")
            .fetch_one(self.db.reader())
            .await
            .map_err(stored)?
            .try_get("revocation_version")
            .map_err(stored)?;
        u64_of(version)
    }

    async fn watch_versions(&self, wake: &(dyn Fn() + Send + Sync)) {
        self.db.watch_versions(wake).await;
    }

    async fn revocation_list(&self, now: i64) -> Result<RevocationList, StoreError> {
        // The version is read before the entries: the list then holds at least what that
        // version announced, never less.
        let version = self.revocation_version().await?;
        let updated_at = sqlx::query("SELECT at FROM events WHERE version = $1")
            .bind(i64_of(version)?)
            .fetch_optional(self.db.reader())
            .await
            .map_err(stored)?
            .map(|row| row.try_get::<i64, _>("at"))
            .transpose()
            .map_err(stored)?
            .unwrap_or(0);
        let mut list = RevocationList::empty(version, rfc3339(updated_at)?);
        let rows = sqlx::query("SELECT agent_id, status, status_reason, status_changed_at FROM agents WHERE status <> 'active' ORDER BY agent_id")
            .fetch_all(self.db.reader())
            .await
            .map_err(stored)?;
        for row in &rows {
            let agent_id: String = row.try_get("agent_id").map_err(stored)?;
            let agent_id: AgentId = agent_id.parse().map_err(|_| StoreError::Corrupt("agent_id"))?;
            let status: String = row.try_get("status").map_err(stored)?;
            let reason: Option<String> = row.try_get("status_reason").map_err(stored)?;
            let at = rfc3339(
                row.try_get::<Option<i64>, _>("status_changed_at")
                    .map_err(stored)?
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
        for (revocation_id, revoked_at, reason) in self
            .revoked_entries(
                "SELECT revocation_id, revoked_at, reason FROM revoked_delegations \
                 WHERE expires_at IS NULL OR expires_at > $1 ORDER BY revocation_id",
                Some(now),
            )
            .await?
        {
            list.revoked_delegations.push(RevokedDelegation {
                revocation_id,
                revoked_at,
                reason,
            });
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
        // Keys replaced by a rotation, until no AAT bound to one can still be unexpired: such
        // an AAT was issued before its grace period ended and lives at most
        // MAX_LIFETIME_SECS.
        let lifetime = i64::try_from(MAX_LIFETIME_SECS).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT agent_id, thumbprint, valid_until FROM agent_keys \
             WHERE valid_until IS NOT NULL AND valid_until > $1 ORDER BY agent_id, thumbprint",
        )
        .bind(now.saturating_sub(lifetime))
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        for row in &rows {
            let agent_id: String = row.try_get("agent_id").map_err(stored)?;
            let thumbprint: String = row.try_get("thumbprint").map_err(stored)?;
            list.superseded_keys.push(SupersededKey {
                agent_id: agent_id.parse().map_err(|_| StoreError::Corrupt("agent_id"))?,
                key_thumbprint: thumbprint.parse().map_err(|_| StoreError::Corrupt("thumbprint"))?,
                valid_until: rfc3339(row.try_get("valid_until").map_err(stored)?)?,
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
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data").map_err(stored)?;
                Ok(StoredEvent {
                    version: u64_of(row.try_get("version").map_err(stored)?)?,
                    at: row.try_get("at").map_err(stored)?,
                    kind: row.try_get("kind").map_err(stored)?,
                    subject: row.try_get("subject").map_err(stored)?,
                    data: serde_json::from_str(&data).map_err(|_| StoreError::Corrupt("event data"))?,
                })
            })
            .collect()
    }

    async fn crl_entries(
        &self,
        now: i64,
        issuer: &str,
        current: bool,
    ) -> Result<(Vec<CrlEntry>, Option<i64>), StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason, superseded_at FROM certificates \
             WHERE not_after > $1 AND (revoked_at IS NOT NULL OR superseded_at <= $1) \
             AND (issuer_key_id = $2 OR ($3 AND issuer_key_id IS NULL)) ORDER BY serial",
        )
        .bind(now)
        .bind(issuer)
        .bind(current)
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(stored)?;
            let reason: Option<i64> = row.try_get("revocation_reason").map_err(stored)?;
            let superseded_at: Option<i64> = row.try_get("superseded_at").map_err(stored)?;
            let (revoked_at, reason) = match (revoked_at, reason, superseded_at) {
                (Some(at), Some(code), _) => (
                    at,
                    CrlReason::from_code(code).ok_or(StoreError::Corrupt("revocation_reason"))?,
                ),
                (_, _, Some(at)) => (at, CrlReason::Superseded),
                _ => return Err(StoreError::Corrupt("certificate revocation state")),
            };
            entries.push(CrlEntry {
                serial: row.try_get("serial").map_err(stored)?,
                revoked_at,
                reason,
            });
        }
        let next: Option<i64> = sqlx::query(
            "SELECT MIN(superseded_at) AS next FROM certificates WHERE superseded_at > $1 AND not_after > $1 \
             AND revoked_at IS NULL AND (issuer_key_id = $2 OR ($3 AND issuer_key_id IS NULL))",
        )
        .bind(now)
        .bind(issuer)
        .bind(current)
        .fetch_one(self.db.reader())
        .await
        .map_err(stored)?
        .try_get("next")
        .map_err(stored)?;
        Ok((entries, next))
    }

    async fn latest_crl(&self, issuer: &str) -> Result<Option<StoredCrl>, StoreError> {
        let row = sqlx::query(
            "SELECT crl_number, revocation_version, this_update, next_update, refresh_at, der, issuer_key_id FROM crls \
             WHERE issuer_key_id = $1 ORDER BY crl_number DESC LIMIT 1",
        )
        .bind(issuer)
        .fetch_optional(self.db.reader())
        .await
        .map_err(stored)?;
        row.map(|row| {
            Ok(StoredCrl {
                crl_number: u64_of(row.try_get("crl_number").map_err(stored)?)?,
                revocation_version: u64_of(row.try_get("revocation_version").map_err(stored)?)?,
                this_update: row.try_get("this_update").map_err(stored)?,
                next_update: row.try_get("next_update").map_err(stored)?,
                refresh_at: row.try_get("refresh_at").map_err(stored)?,
                der: row.try_get("der").map_err(stored)?,
                issuer_key_id: row.try_get("issuer_key_id").map_err(stored)?,
            })
        })
        .transpose()
    }

    async fn next_crl_number(&self) -> Result<(u64, u64), StoreError> {
        // Its own transaction: it takes the registry lock but writes no audit record.
        let mut tx = self.db.writer().begin().await.map_err(stored)?;
        let row = sqlx::query(
            "UPDATE registry_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number, revocation_version",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(stored)?;
        let numbers = (
            u64_of(row.try_get("crl_number").map_err(stored)?)?,
            u64_of(row.try_get("revocation_version").map_err(stored)?)?,
        );
        tx.commit().await.map_err(stored)?;
        Ok(numbers)
    }

    async fn save_crl(&self, crl: &StoredCrl) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO crls (crl_number, revocation_version, this_update, next_update, refresh_at, der, issuer_key_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(i64_of(crl.crl_number)?)
        .bind(i64_of(crl.revocation_version)?)
        .bind(crl.this_update)
        .bind(crl.next_update)
        .bind(crl.refresh_at)
        .bind(&crl.der)
        .bind(&crl.issuer_key_id)
        .execute(self.db.writer())
        .await
        .map_err(stored)?;
        // Keep a short history only, per issuing CA.
        sqlx::query("DELETE FROM crls WHERE crl_number < $1 AND (issuer_key_id = $2 OR issuer_key_id IS NULL)")
            .bind(i64_of(crl.crl_number)?.saturating_sub(16))
            .bind(&crl.issuer_key_id)
            .execute(self.db.writer())
            .await
            .map_err(stored)?;
        Ok(())
    }

    async fn retire_issuing_ca(&self, previous: &str, at: i64, audit: &AuditEntry) -> Result<u64, StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
        let labelled = sqlx::query("UPDATE certificates SET issuer_key_id = $1 WHERE issuer_key_id IS NULL")
            .bind(previous)
            .execute(w.conn())
            .await
            .map_err(stored)?
            .rows_affected();
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(labelled)
    }
}

impl SqlStore {
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
        let rows = query.fetch_all(self.db.reader()).await.map_err(stored)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(stored)?,
                    rfc3339(row.try_get(1).map_err(stored)?)?,
                    row.try_get(2).map_err(stored)?,
                ))
            })
            .collect()
    }
}
