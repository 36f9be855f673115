//! [`IssuerStore`]: the issuer's tables in the authority database, and what the files of this
//! module share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aip_db::{Database, DbError, backend};
use sqlx::Row;

/// The issuer's tables.
#[derive(Clone)]
pub struct IssuerStore {
    pub(super) db: Database,
    /// `last_expiry` as last written, per signing key.
    pub(super) key_expiry: Arc<Mutex<HashMap<String, i64>>>,
}

impl std::fmt::Debug for IssuerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerStore").finish_non_exhaustive()
    }
}

pub(super) fn strings(json: &str, what: &'static str) -> Result<Vec<String>, DbError> {
    serde_json::from_str(json).map_err(|_| DbError::Corrupt(what))
}

impl IssuerStore {
    /// The issuer's tables in `db` (migrations applied).
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            key_expiry: Arc::default(),
        }
    }

    /// The secret named `name`, created with `create` the first time (every replica then
    /// reads the same value).
    pub async fn secret(&self, name: &str, create: impl FnOnce() -> String) -> Result<String, DbError> {
        sqlx::query("INSERT INTO issuer_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(create())
            .execute(self.db.writer())
            .await
            .map_err(backend)?;
        sqlx::query("SELECT value FROM issuer_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(self.db.reader())
            .await
            .map_err(backend)?
            .try_get("value")
            .map_err(backend)
    }

    /// Deletes what can no longer matter: used challenges past their expiry, refresh tokens
    /// and sessions ended a day ago, and the issuance log of tokens expired an hour ago.
    pub async fn purge(&self, now: i64) -> Result<u64, DbError> {
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
                .execute(self.db.writer())
                .await
                .map_err(backend)?
                .rows_affected();
        }
        Ok(removed)
    }
}
