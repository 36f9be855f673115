//! Signed checkpoints of the audit chain (`audit_checkpoints`, `aip_aat::checkpoint`): the
//! chain head signed by the registry key, which write access to the database does not give.
//!
//! A [`Write`](crate::Write) whose records reach a multiple of the interval signs the new head
//! and inserts the checkpoint in the same transaction; [`Database::checkpoint`] signs the head
//! when the authority stops (or `init` finishes), so a log at rest ends signed.

use std::sync::Arc;

use aip_aat::checkpoint::{self, Checkpoint};
use aip_aat::clock::Clock;
use aip_aat::keys::Signer;
use sqlx::Row;

use crate::{Database, DbError, Lock, Script, backend};

/// Signs checkpoints: the key, every how many records, and the clock that dates them.
#[derive(Clone)]
pub struct Checkpointer {
    signer: Arc<dyn Signer>,
    every: u64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("kid", self.signer.key_id())
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Signs with `signer` every `every` records (at least 1), dated by `clock`.
    pub fn new(signer: Arc<dyn Signer>, every: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            signer,
            every: every.max(1),
            clock,
        }
    }

    /// Whether a chain grown from `from` to `to` records reached a checkpoint.
    pub(crate) fn due(&self, from: i64, to: i64) -> bool {
        let number = |seq: i64| u64::try_from(seq).unwrap_or(0);
        checkpoint::due(self.every, number(from), number(to))
    }

    /// Adds to `script` the insert of the checkpoint of record `seq` with hash `head`.
    pub(crate) fn insert(&self, script: &mut Script, seq: i64, head: &str) -> Result<(), DbError> {
        let number = u64::try_from(seq).map_err(|_| DbError::Corrupt("negative audit sequence number"))?;
        let (checkpoint, jws) = Checkpoint::sign(number, head, self.clock.now(), &*self.signer).map_err(backend)?;
        script.insert_values("audit_checkpoints (seq, at, kid, jws)", 1, 4);
        script
            .bind(seq)
            .bind(checkpoint.at)
            .bind(checkpoint.kid.as_str().to_owned())
            .bind(jws);
        Ok(())
    }
}

impl Database {
    /// The same database, signing checkpoints of the audit chain with `checkpointer`.
    #[must_use]
    pub fn with_checkpoints(mut self, checkpointer: Checkpointer) -> Self {
        self.checkpoints = Some(Arc::new(checkpointer));
        self
    }

    /// Signs the chain head unless a checkpoint already covers it (or no key signs
    /// checkpoints); returns the sequence number signed.
    pub async fn checkpoint(&self) -> Result<Option<i64>, DbError> {
        let Some(checkpointer) = self.checkpoints.clone() else {
            return Ok(None);
        };
        let mut write = self.write(Lock::batch()).await?;
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_checkpoints")
            .fetch_one(write.conn())
            .await
            .map_err(backend)?;
        let signed: i64 = row.try_get("seq").map_err(backend)?;
        let (seq, head) = write.head();
        if seq <= signed {
            write.commit().await?;
            return Ok(None);
        }
        let mut script = Script::new(self.dialect);
        checkpointer.insert(&mut script, seq, &head)?;
        write.commit_with(script).await?;
        Ok(Some(seq))
    }

    /// The signed checkpoints, in order of the records they sign.
    pub async fn audit_checkpoints(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT jws FROM audit_checkpoints ORDER BY seq")
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("jws").map_err(backend))
            .collect()
    }
}
