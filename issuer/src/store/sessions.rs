//! Sessions (a first AAT and its refreshes), refresh tokens, the issuance log, and what
//! revoking a session, an agent's sessions or a user's covers.

use std::collections::HashMap;

use aip_aat::ids::AgentId;
use aip_api::registry::RevokedEntryBody as RevokedEntry;
use aip_db::audit::AuditEntry;
use aip_db::{DbError, Lock, Write, backend};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::base::IssuerStore;

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

const SESSION_COLUMNS: &str = "s.session_id, s.agent_id, s.user_id, s.auth_method, s.auth_time, s.delegation_scope, \
     s.audience, s.capabilities, s.created_at, s.expires_at, s.revoked_at";

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, DbError> {
    let agent_id: String = row.try_get("agent_id").map_err(backend)?;
    Ok(SessionRecord {
        session_id: row.try_get("session_id").map_err(backend)?,
        agent_id: agent_id.parse().map_err(|_| DbError::Corrupt("agent_id"))?,
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
pub(super) enum Scope<'a> {
    User(&'a str),
    Agent(&'a str),
    Session(&'a str),
}

impl IssuerStore {
    /// The session a refresh token belongs to.
    pub async fn refresh_token(&self, digest: &str) -> Result<Option<RefreshLookup>, DbError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS}, r.used_at FROM refresh_tokens r \
             JOIN sessions s ON s.session_id = r.session_id WHERE r.digest = $1"
        )))
        .bind(digest)
        .fetch_optional(self.db.reader())
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
    pub async fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, DbError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.session_id = $1"
        )))
        .bind(session_id)
        .fetch_optional(self.db.reader())
        .await
        .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// The expiry of the token with this `jti`, if it was issued here.
    pub async fn token_expiry(&self, jti: &str) -> Result<Option<i64>, DbError> {
        sqlx::query("SELECT expires_at FROM issued_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(self.db.reader())
            .await
            .map_err(backend)?
            .map(|row| row.try_get("expires_at").map_err(backend))
            .transpose()
    }

    /// Ends the sessions of an agent (revoked in the registry) and returns its live tokens.
    pub async fn revoke_agent_sessions(
        &self,
        agent_id: &AgentId,
        reason: Option<&str>,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<Covered, DbError> {
        let mut w = self.db.write(Lock::audited()).await?;
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
    ) -> Result<Option<Covered>, DbError> {
        let mut w = self.db.write(Lock::audited()).await?;
        let exists = sqlx::query("SELECT 1 AS found FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(w.conn())
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
    pub(super) async fn end_sessions(
        w: &mut Write,
        scope: Scope<'_>,
        reason: Option<&str>,
        at: i64,
    ) -> Result<Covered, DbError> {
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
        .execute(w.conn())
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
        .fetch_all(w.conn())
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
}
