//! What readiness asks of the database (`/ready`, docs/registry.md, "Readiness"): that the
//! SQLite file opened is still the one at its path, and that every migration this build embeds
//! is recorded as applied, unchanged — read with a real query on the readers' pool.

use sqlx::Row as _;
use sqlx::migrate::Migrator;

use crate::database::Database;
use crate::error::{DbError, backend};

impl Database {
    /// The migrations this build embeds for its dialect.
    fn migrator(&self) -> &'static Migrator {
        match self.dialect {
            crate::Dialect::Sqlite => &crate::database::SQLITE_MIGRATIONS,
            crate::Dialect::Postgres => &crate::database::POSTGRES_MIGRATIONS,
        }
    }

    /// Checks that the database is usable: on SQLite, that the file opened is still the one at
    /// its path ([`DbError::Unavailable`] when it was removed or replaced); then reads the
    /// migration table and returns the versions of the embedded migrations it does not record
    /// as applied successfully with the same checksum (empty when the schema is current).
    /// Versions applied by a newer build are not counted: a replica of the previous release
    /// keeps serving during a rolling upgrade.
    pub async fn unapplied_migrations(&self) -> Result<Vec<i64>, DbError> {
        if let Some(file) = &self.opened_file
            && !file.in_place()
        {
            return Err(DbError::Unavailable("the database file was removed or replaced"));
        }
        let migrator = self.migrator();
        let sql = format!("SELECT version, checksum FROM {} WHERE success", migrator.table_name);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        let mut applied = Vec::with_capacity(rows.len());
        for row in &rows {
            let version: i64 = row.try_get(0).map_err(backend)?;
            let checksum: Vec<u8> = row.try_get(1).map_err(backend)?;
            applied.push((version, checksum));
        }
        Ok(migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .filter(|m| !applied.iter().any(|(v, c)| *v == m.version && c[..] == m.checksum[..]))
            .map(|m| m.version)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    async fn sqlite(dir: &Path) -> Database {
        Database::connect(&Database::sqlite_url(&dir.join("test.db")))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_fresh_database_has_every_migration() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        assert_eq!(db.unapplied_migrations().await.unwrap(), Vec::<i64>::new());
    }

    #[tokio::test]
    async fn a_missing_or_altered_migration_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        let versions: Vec<i64> = crate::database::SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        let (first, last) = (versions[0], versions[versions.len() - 1]);
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(last)
            .execute(db.writer())
            .await
            .unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
            .bind(vec![0_u8; 48])
            .bind(first)
            .execute(db.writer())
            .await
            .unwrap();
        assert_eq!(db.unapplied_migrations().await.unwrap(), vec![first, last]);
    }

    #[tokio::test]
    async fn a_removed_or_replaced_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        let path = dir.path().join("test.db");
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let err = db.unapplied_migrations().await.unwrap_err();
        assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
        // Another file at the same path is not the database either.
        std::fs::write(&path, b"").unwrap();
        let err = db.unapplied_migrations().await.unwrap_err();
        assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    }
}
