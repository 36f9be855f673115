//! Agents, their keys and certificates, and the nonces of their signed requests.

use aip_aat::aid::{AgentStatus, AidMetadata};
use aip_aat::ids::AgentId;
use aip_aat::keys::Jwk;
use aip_db::audit::AuditEntry;
use aip_db::{DbError, Lock, Script};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, agent_state, event, insert_certificate, record_nonce, stored, to_json};
use crate::ca::CrlReason;
use crate::store::{
    AgentQuery, AgentStore, KeyRotation, NewAgent, NewCertificate, Nonce, RegistrationCredential, StatusAction,
    StatusChanged, StoreError, StoredAgent, StoredCertificate, StoredKey,
};

#[async_trait]
impl AgentStore for SqlStore {
    async fn register_agent(
        &self,
        agent: &NewAgent,
        certificate: &NewCertificate,
        credential: &RegistrationCredential,
        nonce: &Nonce,
        audit: &AuditEntry,
    ) -> Result<Option<i64>, StoreError> {
        let now = agent.created_at;
        let mut w = self.db.write(Lock::audited()).await?;
        let token_expiry = match credential {
            // Authenticated by the caller moments ago; nothing to consume.
            RegistrationCredential::Admin { .. } => None,
            RegistrationCredential::RegistrationToken { digest } => {
                let row = sqlx::query(
                    "UPDATE registration_tokens SET uses_remaining = uses_remaining - 1, last_used_at = $2 \
                     WHERE digest = $1 AND uses_remaining > 0 AND expires_at > $2 AND revoked_at IS NULL \
                     RETURNING expires_at",
                )
                .bind(digest)
                .bind(now)
                .fetch_optional(w.conn())
                .await
                .map_err(stored)?
                .ok_or(StoreError::InvalidCredential)?;
                Some(row.try_get::<i64, _>("expires_at").map_err(stored)?)
            }
        };
        record_nonce(&mut w, nonce).await?;
        // Under the lock, so two look-alike names registered at once cannot both get in.
        let skeleton = aip_api::checks::skeleton(&agent.name);
        let imitated = sqlx::query("SELECT agent_id, name FROM agents WHERE name_skeleton = $1 AND name <> $2 LIMIT 1")
            .bind(&skeleton)
            .bind(&agent.name)
            .fetch_optional(w.conn())
            .await
            .map_err(stored)?;
        if let Some(row) = imitated {
            return Err(StoreError::LooksLike {
                agent_id: row.try_get("agent_id").map_err(stored)?,
                name: row.try_get("name").map_err(stored)?,
            });
        }
        let public_key = to_json(&agent.public_key)?;
        let metadata = agent.metadata.as_ref().map(to_json).transpose()?;
        sqlx::query(
            "INSERT INTO agents (agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
             status_reason, status_changed_at, created_at, key_thumbprint, public_key, name_skeleton) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', NULL, NULL, $8, $9, $10, $11)",
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
        .bind(&skeleton)
        .execute(w.conn())
        .await
        // A trigger records the key in agent_keys, where every key is unique.
        .map_err(|e| aip_db::unique_or(e, StoreError::KeyAlreadyRegistered))?;
        insert_certificate(&mut w, certificate).await?;
        w.audit(audit, now).await?;
        w.commit().await?;
        Ok(token_expiry)
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<StoredAgent>, StoreError> {
        let sql = const_format_agent_by_id();
        let row = sqlx::query(sql)
            .bind(agent_id.as_str())
            .fetch_optional(self.db.reader())
            .await
            .map_err(stored)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn agents(&self, query: &AgentQuery) -> Result<Vec<StoredAgent>, StoreError> {
        let after = query.after.as_ref().map_or("", AgentId::as_str);
        // One more than a page at most: the service asks for one more to know whether
        // another page follows.
        let limit = i64::from(query.limit.clamp(1, aip_api::MAX_PAGE + 1));
        let rows = match query.status {
            Some(status) => {
                sqlx::query(agents_by_status_sql())
                    .bind(status.as_str())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.db.reader())
                    .await
            }
            None => {
                sqlx::query(agents_sql())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.db.reader())
                    .await
            }
        }
        .map_err(stored)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn agent_keys(&self, agent_id: &AgentId) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT thumbprint, public_key, added_at, valid_until FROM agent_keys WHERE agent_id = $1 \
             ORDER BY added_at DESC, thumbprint",
        )
        .bind(agent_id.as_str())
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        rows.iter()
            .map(|row| {
                let thumbprint: String = row.try_get("thumbprint").map_err(stored)?;
                let public_key: String = row.try_get("public_key").map_err(stored)?;
                Ok(StoredKey {
                    thumbprint: thumbprint.parse().map_err(|_| StoreError::Corrupt("thumbprint"))?,
                    public_key: serde_json::from_str(&public_key).map_err(|_| StoreError::Corrupt("public_key"))?,
                    added_at: row.try_get("added_at").map_err(stored)?,
                    valid_until: row.try_get("valid_until").map_err(stored)?,
                })
            })
            .collect()
    }

    async fn certificates(&self, agent_id: &AgentId) -> Result<Vec<StoredCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, key_thumbprint, not_before, not_after, der, revoked_at, revocation_reason, superseded_at, \
             issuer_key_id FROM certificates WHERE agent_id = $1 ORDER BY not_before DESC, serial",
        )
        .bind(agent_id.as_str())
        .fetch_all(self.db.reader())
        .await
        .map_err(stored)?;
        rows.iter()
            .map(|row| {
                let thumbprint: String = row.try_get("key_thumbprint").map_err(stored)?;
                let revoked_at: Option<i64> = row.try_get("revoked_at").map_err(stored)?;
                let reason: Option<i64> = row.try_get("revocation_reason").map_err(stored)?;
                let revoked = match (revoked_at, reason) {
                    (Some(at), Some(code)) => Some((
                        at,
                        CrlReason::from_code(code).ok_or(StoreError::Corrupt("revocation_reason"))?,
                    )),
                    _ => None,
                };
                Ok(StoredCertificate {
                    certificate: NewCertificate {
                        serial: row.try_get("serial").map_err(stored)?,
                        agent_id: agent_id.clone(),
                        key_thumbprint: thumbprint.parse().map_err(|_| StoreError::Corrupt("key_thumbprint"))?,
                        not_before: row.try_get("not_before").map_err(stored)?,
                        not_after: row.try_get("not_after").map_err(stored)?,
                        der: row.try_get("der").map_err(stored)?,
                        issuer_key_id: row.try_get("issuer_key_id").map_err(stored)?,
                    },
                    revoked,
                    superseded_at: row.try_get("superseded_at").map_err(stored)?,
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
        let mut w = self.db.write(Lock::audited().publishing()).await?;
        let (status, thumbprint) = agent_state(&mut w, agent_id).await?;
        if status != AgentStatus::Active {
            return Err(StoreError::Conflict("only an active agent can rotate its key"));
        }
        if thumbprint != current.as_str() {
            return Err(StoreError::Conflict(
                "the agent's key changed meanwhile; retry with its current key",
            ));
        }
        for nonce in nonces {
            record_nonce(&mut w, nonce).await?;
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
        .map_err(|e| aip_db::unique_or(e, StoreError::KeyAlreadyRegistered))?;
        sqlx::query("UPDATE agent_keys SET valid_until = $1 WHERE thumbprint = $2")
            .bind(grace_until)
            .bind(current.as_str())
            .execute(w.conn())
            .await
            .map_err(stored)?;
        sqlx::query("UPDATE agents SET key_thumbprint = $1, public_key = $2 WHERE agent_id = $3")
            .bind(new_key.thumbprint.as_str())
            .bind(&public_key)
            .bind(agent_id.as_str())
            .execute(w.conn())
            .await
            .map_err(stored)?;
        sqlx::query(
            "UPDATE certificates SET superseded_at = $1 WHERE agent_id = $2 AND key_thumbprint = $3 AND superseded_at IS NULL",
        )
        .bind(grace_until)
        .bind(agent_id.as_str())
        .bind(current.as_str())
        .execute(w.conn())
        .await
        .map_err(stored)?;
        insert_certificate(&mut w, certificate).await?;
        let data = serde_json::json!({
            "agent_id": agent_id,
            "previous_key": current,
            "key": new_key.thumbprint,
            "previous_key_valid_until": grace_until,
        });
        let version = event(&mut w, "agent_key_rotated", agent_id.as_str(), &data, now).await?;
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
        let mut w = self.db.write(Lock::audited()).await?;
        let (status, thumbprint) = agent_state(&mut w, &certificate.agent_id).await?;
        if status != AgentStatus::Active {
            return Err(StoreError::Conflict("only an active agent can renew its certificate"));
        }
        if thumbprint != certificate.key_thumbprint.as_str() {
            return Err(StoreError::Conflict(
                "the agent's key changed meanwhile; retry with its current key",
            ));
        }
        record_nonce(&mut w, nonce).await?;
        insert_certificate(&mut w, certificate).await?;
        w.audit(audit, certificate.not_before).await?;
        Ok(w.commit().await?)
    }

    async fn change_status(
        &self,
        agent_id: &AgentId,
        action: StatusAction,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<StatusChanged, StoreError> {
        let mut w = self.db.write(Lock::audited().publishing()).await?;
        let (previous, _) = agent_state(&mut w, agent_id).await?;
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
            .map_err(stored)?;
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
        update.execute(w.conn()).await.map_err(stored)?;
        let mut data = serde_json::json!({"agent_id": agent_id, "status": status});
        if let Some(reason) = reason {
            data["reason"] = reason.into();
        }
        let version = event(&mut w, kind, agent_id.as_str(), &data, at).await?;
        w.audit(audit, at).await?;
        w.commit().await?;
        Ok(StatusChanged {
            version,
            previous,
            status,
        })
    }

    async fn set_redirect_uris(
        &self,
        agent_id: &AgentId,
        redirect_uris: &[String],
        at: i64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut w = self.db.write(Lock::audited()).await?;
        let (status, _) = agent_state(&mut w, agent_id).await?;
        if status == AgentStatus::Revoked {
            return Err(StoreError::Conflict(
                "the agent is revoked; its redirect URIs cannot change",
            ));
        }
        let value = if redirect_uris.is_empty() {
            None
        } else {
            Some(to_json(&redirect_uris)?)
        };
        sqlx::query("UPDATE agents SET redirect_uris = $1 WHERE agent_id = $2")
            .bind(value)
            .bind(agent_id.as_str())
            .execute(w.conn())
            .await
            .map_err(stored)?;
        w.audit(audit, at).await?;
        Ok(w.commit().await?)
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM request_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(self.db.writer())
            .await
            .map_err(stored)?;
        Ok(done.rows_affected())
    }
}

impl SqlStore {
    /// Adds to `claim` (statements a token issuer runs in its own write transaction, right
    /// after taking the authority lock) the statement that names those of `agents` that may
    /// not obtain tokens now: rows of `kind` `agent_suspended` or `agent_revoked`, `value` the
    /// agent's id. Read under the lock every status change takes, it sees every change
    /// committed before, by any replica.
    pub fn push_inactive_agents(claim: &mut Script, agents: &[&str]) {
        if agents.is_empty() {
            return;
        }
        let list = claim.values(1, agents.len());
        claim.push(format!(
            "SELECT CAST('agent_' || status AS TEXT) AS kind, agent_id AS value FROM agents \
             WHERE agent_id IN {list} AND status <> 'active'"
        ));
        for agent in agents {
            claim.bind(*agent);
        }
    }
}

fn agent_from_row(row: &AnyRow) -> Result<StoredAgent, StoreError> {
    let get_text = |col: &str| row.try_get::<String, _>(col).map_err(stored);
    let get_opt = |col: &str| row.try_get::<Option<String>, _>(col).map_err(stored);
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
    let redirect_uris: Vec<String> = match get_opt("redirect_uris")? {
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("redirect_uris"))?,
        None => Vec::new(),
    };
    Ok(StoredAgent {
        agent: NewAgent {
            agent_id,
            name: get_text("name")?,
            description: get_opt("description")?,
            owner: get_opt("owner")?,
            capabilities,
            autonomous: row.try_get::<i64, _>("autonomous").map_err(stored)? != 0,
            metadata,
            public_key,
            thumbprint: get_text("key_thumbprint")?
                .parse()
                .map_err(|_| StoreError::Corrupt("key_thumbprint"))?,
            created_at: row.try_get::<i64, _>("created_at").map_err(stored)?,
        },
        status: get_text("status")?.parse().map_err(|_| StoreError::Corrupt("status"))?,
        status_reason: get_opt("status_reason")?,
        status_changed_at: row.try_get::<Option<i64>, _>("status_changed_at").map_err(stored)?,
        redirect_uris,
    })
}

fn const_format_agent_by_id() -> &'static str {
    "SELECT agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
     status_reason, status_changed_at, created_at, key_thumbprint, public_key, redirect_uris FROM agents WHERE agent_id = $1"
}

fn agents_sql() -> &'static str {
    "SELECT agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
     status_reason, status_changed_at, created_at, key_thumbprint, public_key, redirect_uris FROM agents \
     WHERE agent_id > $1 ORDER BY agent_id LIMIT $2"
}

fn agents_by_status_sql() -> &'static str {
    "SELECT agent_id, name, description, owner, capabilities, autonomous, metadata, status, \
     status_reason, status_changed_at, created_at, key_thumbprint, public_key, redirect_uris FROM agents \
     WHERE status = $1 AND agent_id > $2 ORDER BY agent_id LIMIT $3"
}

impl SqlStore {
    /// Fills in the name skeleton of agents registered before skeletons were stored (migration
    /// 0005); the number filled in. Safe to run on every replica at once.
    pub async fn backfill_name_skeletons(&self) -> Result<u64, DbError> {
        self.db
            .fill_derived(
                "SELECT agent_id, name FROM agents WHERE name_skeleton IS NULL LIMIT 500",
                "UPDATE agents SET name_skeleton = $1 WHERE agent_id = $2 AND name_skeleton IS NULL",
                aip_api::checks::skeleton,
            )
            .await
    }
}
