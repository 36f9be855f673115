//! What backup and restore ask of the database: a consistent snapshot of a live SQLite file
//! ([`snapshot_sqlite`]), and moving the published counters past anything the lost authority
//! may have published ([`Database::advance_counters`]).

use std::path::Path;
use std::str::FromStr as _;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};

use crate::audit::AuditEntry;
use crate::write::Lock;
use crate::{Database, DbError, backend};

/// Revocation list versions and CRL numbers an authority could publish per second, at most:
/// each takes a committed write transaction on the single `registry_state` row, which no
/// engine this code runs on commits anywhere near a million times a second.
pub const MAX_COUNTER_RATE: u64 = 1_000_000;

/// Allowance for the clocks of the lost authority and of the restoring host disagreeing.
pub const CLOCK_SKEW_SECONDS: u64 = 86_400;

/// Writes a transactionally consistent copy of the SQLite database `url` names to `out` (a new
/// file), with `VACUUM INTO` on a read-only connection: writers go on meanwhile, and the copy
/// holds every transaction committed before it started and none after. `out` must not exist.
pub async fn snapshot_sqlite(url: &str, out: &Path) -> Result<(), DbError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(backend)?
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(30));
    let mut conn: SqliteConnection = options.connect().await.map_err(backend)?;
    let target = out
        .to_str()
        .ok_or(DbError::Unavailable("the snapshot path is not valid UTF-8"))?;
    let result = sqlx::query("VACUUM INTO ?1").bind(target).execute(&mut conn).await;
    let _ = conn.close().await;
    result.map_err(backend)?;
    Ok(())
}

/// The counters a restore moved ([`Database::advance_counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advanced {
    /// The revocation list version in force now (the restored authority publishes it).
    pub revocation_version: u64,
    /// The CRL number last taken; the next CRL signed gets the one after.
    pub crl_number: u64,
    /// How far past the restored values they moved.
    pub margin: u64,
}

/// How far a restore moves the counters past the restored values, `now` being the time of the
/// restore and `last_change` the time of the restored database's last audit record (no later
/// than when the copy was taken): as many as the authority could have published since, at
/// [`MAX_COUNTER_RATE`], with [`CLOCK_SKEW_SECONDS`] to spare.
pub fn counter_margin(now: i64, last_change: i64) -> u64 {
    let elapsed = u64::try_from(now.saturating_sub(last_change)).unwrap_or(0);
    elapsed
        .saturating_add(CLOCK_SKEW_SECONDS)
        .saturating_mul(MAX_COUNTER_RATE)
}

/// Largest counter value kept below 2^53, so that the JSON numbers stay exact everywhere.
const MAX_COUNTER: u64 = (1 << 53) - 1;

impl Database {
    /// After a restore: moves the revocation list version and the CRL number past anything the
    /// authority may have published after the restored copy was taken (each by
    /// [`counter_margin`]), so that the restored authority's next list and CRL are newer than
    /// any a client may hold. Recorded in the audit chain as `authority.restore`, with `actor`
    /// and `details` (never secrets). `now` is Unix time.
    pub async fn advance_counters(
        &self,
        actor: &str,
        details: serde_json::Value,
        now: i64,
    ) -> Result<Advanced, DbError> {
        let row = sqlx::query(
            "SELECT s.revocation_version, s.crl_number, \
             (SELECT COALESCE(MAX(at), 0) FROM audit_log) AS last_at \
             FROM registry_state s WHERE s.id = 1",
        )
        .fetch_one(&self.writer)
        .await
        .map_err(backend)?;
        let version = counter(row.try_get("revocation_version").map_err(backend)?)?;
        let crl_number = counter(row.try_get("crl_number").map_err(backend)?)?;
        let last_at: i64 = row.try_get("last_at").map_err(backend)?;
        let margin = counter_margin(now, last_at);
        let advanced = Advanced {
            revocation_version: version.saturating_add(margin),
            crl_number: crl_number.saturating_add(margin),
            margin,
        };
        if advanced.revocation_version > MAX_COUNTER || advanced.crl_number > MAX_COUNTER {
            return Err(DbError::Conflict(
                "the counters cannot move far enough: the restored copy is too old",
            ));
        }
        let mut write = self.write(Lock::audited()).await?;
        let updated = sqlx::query(
            "UPDATE registry_state SET revocation_version = $1, crl_number = $2 \
             WHERE id = 1 AND revocation_version = $3 AND crl_number = $4",
        )
        .bind(i64_of(advanced.revocation_version)?)
        .bind(i64_of(advanced.crl_number)?)
        .bind(i64_of(version)?)
        .bind(i64_of(crl_number)?)
        .execute(write.conn())
        .await
        .map_err(backend)?;
        if updated.rows_affected() != 1 {
            return Err(DbError::Conflict(
                "the database changed during the restore; run it again",
            ));
        }
        let mut recorded = json!({
            "revocation_version": {"restored": version, "now": advanced.revocation_version},
            "crl_number": {"restored": crl_number, "now": advanced.crl_number},
        });
        if let (Some(recorded), serde_json::Value::Object(more)) = (recorded.as_object_mut(), details) {
            recorded.extend(more);
        }
        let entry = AuditEntry {
            actor: actor.to_owned(),
            action: "authority.restore",
            subject: "registry_state".to_owned(),
            details: recorded,
        };
        write.audit(&entry, now).await?;
        write.commit().await?;
        Ok(advanced)
    }
}

fn counter(value: i64) -> Result<u64, DbError> {
    u64::try_from(value).map_err(|_| DbError::Corrupt("a negative counter in registry_state"))
}

fn i64_of(value: u64) -> Result<i64, DbError> {
    i64::try_from(value).map_err(|_| DbError::Corrupt("a counter out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_covers_the_time_since_the_copy_and_the_skew() {
        assert_eq!(counter_margin(1_000, 1_000), CLOCK_SKEW_SECONDS * MAX_COUNTER_RATE);
        assert_eq!(
            counter_margin(1_010, 1_000),
            (CLOCK_SKEW_SECONDS + 10) * MAX_COUNTER_RATE
        );
        // A copy stamped later than the restoring host's clock still moves by the skew.
        assert_eq!(counter_margin(1_000, 5_000), CLOCK_SKEW_SECONDS * MAX_COUNTER_RATE);
        assert_eq!(counter_margin(i64::MAX, i64::MIN), u64::MAX);
    }

    #[tokio::test]
    async fn a_restore_moves_both_counters_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&Database::sqlite_url(&dir.path().join("a.db")))
            .await
            .unwrap();
        sqlx::query("UPDATE registry_state SET revocation_version = 7, crl_number = 3 WHERE id = 1")
            .execute(db.writer())
            .await
            .unwrap();
        let now = 1_800_000_000;
        let advanced = db
            .advance_counters("system:restore", json!({"backup_created_at": 5}), now)
            .await
            .unwrap();
        // No audit record yet: the copy counts as taken at time 0.
        let margin = counter_margin(now, 0);
        assert_eq!(advanced.margin, margin);
        assert_eq!(advanced.revocation_version, 7 + margin);
        assert_eq!(advanced.crl_number, 3 + margin);
        let row = sqlx::query("SELECT revocation_version, crl_number FROM registry_state WHERE id = 1")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>(0).unwrap(), i64_of(7 + margin).unwrap());
        assert_eq!(row.try_get::<i64, _>(1).unwrap(), i64_of(3 + margin).unwrap());
        let row = sqlx::query("SELECT action, details FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(row.try_get::<String, _>(0).unwrap(), "authority.restore");
        assert!(row.try_get::<String, _>(1).unwrap().contains("backup_created_at"));
        db.close().await;
    }

    #[tokio::test]
    async fn a_snapshot_of_a_live_database_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = Database::sqlite_url(&dir.path().join("live.db"));
        let db = Database::connect(&url).await.unwrap();
        sqlx::query("UPDATE registry_state SET crl_number = 42 WHERE id = 1")
            .execute(db.writer())
            .await
            .unwrap();
        let out = dir.path().join("copy.db");
        snapshot_sqlite(&url, &out).await.unwrap();
        // An existing target is refused.
        assert!(snapshot_sqlite(&url, &out).await.is_err());
        db.close().await;
        let copy = Database::connect(&Database::sqlite_url(&out)).await.unwrap();
        let row = sqlx::query("SELECT crl_number FROM registry_state WHERE id = 1")
            .fetch_one(copy.reader())
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>(0).unwrap(), 42);
        copy.close().await;
    }
}
