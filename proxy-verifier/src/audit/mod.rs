//! The hash-chained JSONL audit log (spec 12).
//!
//! One [`Record`] per decision or event, one JSON object per line. Every record carries its
//! position in the chain (`seq`, from 1), the hash of the record before it (`prev_hash`; the first
//! record has [`GENESIS_HASH`]) and its own `hash`: the lowercase hex SHA-256 of the RFC 8785
//! canonical JSON of the record without its `hash` member (so it covers `seq` and `prev_hash`).
//!
//! A line is that canonical JSON with `"hash"` appended as the last member, for example
//! `{"decision":"ALLOW",…,"seq":7,"timestamp":"…","violation":false,"hash":"…"}`. Editing,
//! deleting, reordering or cutting records breaks the chain; removing whole records from the end
//! does not, so the log keeps a sidecar head file `<log>.head` holding `{"seq":N,"hash":"…"}` of
//! the last record written, replaced atomically after each flush. [`verify()`] checks both.
//!
//! Whoever can write the log can also rewrite a record and recompute every hash after it (and
//! the head file). With an audit key ([`CheckpointKey`]), the writer signs the chain's head every
//! `every` records and when the log is synced or closed, appending the signed checkpoint
//! (`aip_aat::checkpoint`) to `<log>.checkpoints`; [`verify_signed`] checks them with the key's
//! public half, so such a re-chain fails.
//!
//! [`AuditLog::record`] never touches the disk: it hands the record to a writer thread over an
//! unbounded channel. That thread chains, serializes and appends records, flushing whenever the
//! channel is momentarily empty, so a burst becomes one write and a quiet log is written at once.
//! After each write it sleeps `LINGER` (1 ms) before waiting on the channel again: under steady
//! traffic the callers then hand records over without waking it (a wake-up is a system call on
//! the call path), and what arrived meanwhile is written together.
//!
//! Integers beyond ±2^53 inside `request_id` or `args` are stored rounded, as RFC 8785 requires.
//! The chain is `aip_aat::chain`, the same as the authority's audit log.
//!
//! # Files
//!
//! - `line` — a record as a line, and the check of one line against its hash;
//! - `record` — [`Record`], its canonical form and timestamp format;
//! - `writer` — [`AuditLog`], its writer thread and the head file;
//! - `checkpoints` — the signed checkpoint file ([`CheckpointKey`]);
//! - `verify` — [`verify()`], [`verify_signed`], [`VerifyError`], [`VerifyReport`].

mod checkpoints;
mod line;
mod record;
mod verify;
mod writer;

pub use aip_aat::chain::GENESIS_HASH;
pub use aip_aat::checkpoint::DEFAULT_CHECKPOINT_EVERY;
pub use checkpoints::CheckpointKey;
pub use record::{DlpCount, Record, timestamp_of};
pub use verify::{VerifyError, VerifyReport, verify, verify_signed};
pub use writer::AuditLog;
