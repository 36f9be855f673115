//! Signed checkpoints of the audit chain (`audit_checkpoints`, `aip_aat::checkpoint`): the
//! chain head signed by the registry key, which write access to the database does not give.
//!
//! A [`Write`](crate::Write) whose records reach a multiple of the interval signs the new head
//! and inserts the checkpoint in the same transaction; `Database::checkpoint` signs the head
//! when the authority stops (or `init` finishes), so a log at rest ends signed.

use std::sync::Arc;

use aip_aat::checkpoint::{self, Checkpoint};
use aip_aat::clock::Clock;
use aip_aat::keys::Signer;

use crate::error::{DbError, backend};

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

    /// Signs the statement that record `seq` has hash `head`, dated now: the checkpoint and
    /// its compact JWS.
    pub(crate) fn sign(&self, seq: i64, head: &str) -> Result<(Checkpoint, String), DbError> {
        let number = u64::try_from(seq).map_err(|_| DbError::Corrupt("negative audit sequence number"))?;
        Checkpoint::sign(number, head, self.clock.now(), &*self.signer).map_err(backend)
    }
}
