//! [`Write`]: the write transaction of every change the audit log records. It takes the
//! authority lock (the `registry_state` row) before anything else, appends the change's audit
//! records to the hash chain, and commits them together with the change, so a failed request
//! changes nothing and leaves no gap in the chain. A write whose records reach the checkpoint
//! interval commits the signed checkpoint of its last record too ([`crate::Checkpointer`]).

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::audit::{self, AuditEntry};
use crate::checkpoint::Checkpointer;
use crate::{Database, DbError, Dialect, Script, backend};

/// What a [`Write`] reserves when it takes the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    /// Audit records reserved up front (their sequence numbers are taken with the lock, so
    /// committing costs no further statement). A write that appends more than it reserved
    /// records the new chain length when it commits.
    records: u32,
    /// Whether the change is published as a revocation event: the next revocation list
    /// version (`registry_state.revocation_version`) is taken with the lock.
    new_version: bool,
}

impl Lock {
    /// A change that appends exactly one audit record.
    pub fn audited() -> Self {
        Self {
            records: 1,
            new_version: false,
        }
    }

    /// A batch whose number of audit records is known only as it goes.
    pub fn batch() -> Self {
        Self {
            records: 0,
            new_version: false,
        }
    }

    /// The same, also taking the next revocation list version.
    #[must_use]
    pub fn publishing(self) -> Self {
        Self {
            new_version: true,
            ..self
        }
    }

    /// The statement that takes the lock and the reservations, returning the chain head, the
    /// audit sequence number after the reservation and the revocation list version.
    fn statement(self) -> String {
        let version = if self.new_version {
            ", revocation_version = revocation_version + 1"
        } else {
            ""
        };
        format!(
            "UPDATE registry_state SET audit_seq = audit_seq + {}{version} WHERE id = 1 \
             RETURNING audit_seq, audit_head, revocation_version",
            self.records
        )
    }
}

/// A write transaction holding the authority lock. Every write appends at least the audit
/// records it reserved; [`Write::commit`] refuses one that did not.
pub struct Write {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    /// Sequence number of the last record in the chain, this transaction's included.
    seq: i64,
    /// Its hash.
    head: String,
    /// The chain length `registry_state` holds now (the reservation included).
    recorded: i64,
    /// The revocation list version this transaction publishes, when it reserved one.
    version: Option<u64>,
    /// Sequence number of the last record before this transaction.
    start: i64,
    /// Signs a checkpoint when this transaction's records reach the interval.
    checkpoints: Option<Arc<Checkpointer>>,
    /// Sign the chain's head when committing, due or not.
    sign_head: bool,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("seq", &self.seq)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Begins a write transaction: takes the authority lock with `lock`'s reservations.
    pub async fn write(&self, lock: Lock) -> Result<Write, DbError> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = take(&mut tx, lock).await?;
        Write::new(tx, self, lock, &row)
    }

    /// Begins a write transaction with `lock` and runs `claim` (a [`Script`] whose rows are
    /// `kind`, `value`) right after taking the lock, in the same round trip on SQLite. On
    /// PostgreSQL the lock is taken first, on its own: a statement's snapshot is taken when it
    /// starts, so reads that must see every write committed before the lock was granted go in
    /// a later statement. Returns the transaction and the claim's rows.
    pub async fn write_with(&self, lock: Lock, mut claim: Script) -> Result<(Write, Vec<AnyRow>), DbError> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let (row, rows) = match self.dialect {
            Dialect::Sqlite => {
                claim.prepend(&lock.statement());
                let mut rows = claim.fetch_all(&mut tx).await?.into_iter();
                let row = rows.next().ok_or(DbError::Corrupt("registry_state"))?;
                (row, rows.collect())
            }
            Dialect::Postgres => {
                let row = take(&mut tx, lock).await?;
                (row, claim.fetch_all(&mut tx).await?)
            }
        };
        Ok((Write::new(tx, self, lock, &row)?, rows))
    }

    /// Signs the audit chain's head unless a checkpoint already covers it (or no key signs
    /// checkpoints); returns the sequence number signed.
    pub async fn checkpoint(&self) -> Result<Option<i64>, DbError> {
        if self.checkpoints.is_none() {
            return Ok(None);
        }
        let mut write = self.write(Lock::batch()).await?;
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_checkpoints")
            .fetch_one(write.conn())
            .await
            .map_err(backend)?;
        let signed: i64 = row.try_get("seq").map_err(backend)?;
        let seq = write.seq;
        write.sign_head = seq > signed;
        write.commit().await?;
        Ok((seq > signed).then_some(seq))
    }
}

/// Takes the authority lock in `tx` with `lock`'s reservations; the row is the state it read.
async fn take(tx: &mut Transaction<'static, Any>, lock: Lock) -> Result<AnyRow, DbError> {
    sqlx::query(sqlx::AssertSqlSafe(lock.statement()))
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)
}

impl Write {
    fn new(tx: Transaction<'static, Any>, database: &Database, lock: Lock, row: &AnyRow) -> Result<Self, DbError> {
        let recorded: i64 = row.try_get("audit_seq").map_err(backend)?;
        let version: i64 = row.try_get("revocation_version").map_err(backend)?;
        let version = u64::try_from(version).map_err(|_| DbError::Corrupt("negative revocation version"))?;
        let start = recorded - i64::from(lock.records);
        Ok(Self {
            tx,
            dialect: database.dialect,
            seq: start,
            start,
            checkpoints: database.checkpoints.clone(),
            sign_head: false,
            head: row.try_get("audit_head").map_err(backend)?,
            recorded,
            version: lock.new_version.then_some(version),
        })
    }

    /// The connection, for the change's own statements.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// The revocation list version this change publishes ([`Lock::publishing`]).
    pub fn version(&self) -> Result<u64, DbError> {
        self.version
            .ok_or(DbError::Corrupt("an event without a reserved revocation list version"))
    }

    /// Appends `entry`, made at `at`, to the audit chain now.
    pub async fn audit(&mut self, entry: &AuditEntry, at: i64) -> Result<(), DbError> {
        let mut script = Script::new(self.dialect);
        self.audit_in(&mut script, &[(entry, at)])?;
        script.execute(&mut self.tx).await
    }

    /// Adds the insert of `entries` (each with its time) to `script`, to run in one round trip
    /// with the change's other statements.
    pub fn audit_in(&mut self, script: &mut Script, entries: &[(&AuditEntry, i64)]) -> Result<(), DbError> {
        let (seq, head) = audit::insert(script, self.seq, &self.head, entries)?;
        self.seq = seq;
        self.head = head;
        Ok(())
    }

    /// Commits the change and its audit records.
    pub async fn commit(self) -> Result<(), DbError> {
        self.commit_with(None).await
    }

    /// Runs `script` (the change's last statements) and commits, with the chain length
    /// recorded in the same round trip when it changed.
    pub async fn commit_with(mut self, script: impl Into<Option<Script>>) -> Result<(), DbError> {
        if self.seq < self.recorded {
            // Committing would leave a reserved sequence number without a record.
            return Err(DbError::Corrupt("a write transaction without its audit record"));
        }
        let mut script = script.into().unwrap_or_else(|| Script::new(self.dialect));
        if self.seq > self.recorded {
            // The `audit_log_head` trigger keeps the head hash itself current.
            let seq = script.param();
            script.push(format!("UPDATE registry_state SET audit_seq = {seq} WHERE id = 1"));
            script.bind(self.seq);
        }
        if let Some(checkpoints) = &self.checkpoints
            && (self.sign_head || checkpoints.due(self.start, self.seq))
        {
            let (checkpoint, jws) = checkpoints.sign(self.seq, &self.head)?;
            script.insert_values("audit_checkpoints (seq, at, kid, jws)", 1, 4);
            script
                .bind(self.seq)
                .bind(checkpoint.at)
                .bind(checkpoint.kid.as_str().to_owned())
                .bind(jws);
        }
        if let Some(version) = self.version {
            // Last, so that on PostgreSQL it is the script's main statement (a SELECT in a
            // common table expression would not run).
            crate::notices::announce(&mut script, version);
        }
        script.execute(&mut self.tx).await?;
        self.tx.commit().await.map_err(backend)
    }
}
