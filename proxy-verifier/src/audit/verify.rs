//! Checking a log: [`verify_signed`] walks the chain of a log, its head file and its signed
//! checkpoints and reports the first break ([`VerifyError`]) or what verified
//! ([`VerifyReport`]); [`verify`] leaves the checkpoints out.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use aip_aat::chain::{Break, ChainVerifier};
use aip_aat::checkpoint::{Checkpoint, CheckpointCheck, CheckpointError, CheckpointReport, TrustedKeys, Unsigned};
use serde_json::Value;

use super::checkpoints::{checkpoints_path, read_checkpoints};
use super::line::{LineFault, check_line};
use super::writer::{head_path, read_head};

/// A log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records.
    pub records: u64,
    /// Hash of the last record ([`GENESIS_HASH`](aip_aat::chain::GENESIS_HASH) for an empty log).
    pub last_hash: String,
    /// Whether a head file was found and agreed with the log.
    pub head_checked: bool,
    /// The last signed checkpoint and the unsigned records after it (all records when
    /// checkpoints were not checked).
    pub checkpoints: CheckpointReport,
}

/// The first break found in a log. Line numbers count from 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The log could not be read.
    #[error("cannot read the audit log: {source}")]
    Io {
        /// The I/O error.
        #[from]
        source: io::Error,
    },
    /// The head file exists but cannot be read or parsed.
    #[error("the head file {path} is unreadable: {reason}")]
    HeadUnreadable {
        /// The head file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A line is not a JSON audit record with chain fields.
    #[error("line {line} is not a valid audit record: {reason}")]
    Unparsable {
        /// The line.
        line: u64,
        /// Why.
        reason: String,
    },
    /// A record's content does not match its hash.
    #[error("line {line} (seq {seq}) was modified after it was written: its hash does not match its content")]
    Edited {
        /// The line.
        line: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// Records are missing before this line.
    #[error(
        "line {line} has seq {found} where seq {expected} was expected: {} record(s) before it were deleted",
        .found - .expected
    )]
    Deleted {
        /// The line.
        line: u64,
        /// The sequence number that should be here.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// Records are out of order (or duplicated).
    #[error("line {line} has seq {found} where seq {expected} was expected: records were reordered or duplicated")]
    Reordered {
        /// The line.
        line: u64,
        /// The sequence number that should be here.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A record's `prev_hash` is not the hash of the record before it.
    #[error("line {line} (seq {seq}) does not link to the record before it: its prev_hash is not that record's hash")]
    ChainBroken {
        /// The line.
        line: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// The last line has no trailing newline: the log was cut inside a record.
    #[error("line {line} is incomplete (no trailing newline): the log was cut in the middle of a record")]
    TruncatedLine {
        /// The line.
        line: u64,
    },
    /// The head file names a record after the end of the log.
    #[error(
        "the log ends at line {line} with {records} record(s) but its head file records seq {head_seq}: \
         the last {} record(s) were removed",
        .head_seq - .records
    )]
    TailTruncated {
        /// The last line of the log (0 when empty).
        line: u64,
        /// Records in the log.
        records: u64,
        /// The last sequence number according to the head file.
        head_seq: u64,
    },
    /// The record the head file names has a different hash.
    #[error("line {line} (seq {seq}) differs from the record named in the head file: the end of the log was replaced")]
    HeadMismatch {
        /// The line.
        line: u64,
        /// Its sequence number.
        seq: u64,
    },
    /// The log has signed checkpoints but no key to check them was given.
    #[error("{} holds signed checkpoints; the audit key is needed to check them", path.display())]
    KeyRequired {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The checkpoints do not verify, or the chain does not match them.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl VerifyError {
    /// The line the break was found at, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Io { .. } | Self::HeadUnreadable { .. } | Self::KeyRequired { .. } | Self::Checkpoint(_) => None,
            Self::Unparsable { line, .. }
            | Self::Edited { line, .. }
            | Self::Deleted { line, .. }
            | Self::Reordered { line, .. }
            | Self::ChainBroken { line, .. }
            | Self::TruncatedLine { line }
            | Self::TailTruncated { line, .. }
            | Self::HeadMismatch { line, .. } => Some(*line),
        }
    }
}

/// Checks the chain of the log at `path` (and its head file `<path>.head`, when present) and
/// reports the first break. Checkpoints are not checked: see [`verify_signed`].
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_signed(path, None, Unsigned::Any)
}

/// Checks the chain of the log at `path`, its head file, and its signed checkpoints
/// (`<path>.checkpoints`) against the audit key `key`; `unsigned` says which records may come
/// after the last checkpoint. Without `key`, only a log without checkpoints can pass, and only
/// with [`Unsigned::Any`].
pub fn verify_signed(path: &Path, key: Option<&TrustedKeys>, unsigned: Unsigned) -> Result<VerifyReport, VerifyError> {
    let signed = match (read_checkpoints(&checkpoints_path(path))?, key) {
        (None, _) => Vec::new(),
        (Some(lines), Some(key)) => lines
            .iter()
            .map(|jws| Checkpoint::verify(jws, key))
            .collect::<Result<Vec<_>, _>>()?,
        (Some(_), None) if unsigned == Unsigned::Any => Vec::new(),
        (Some(_), None) => {
            return Err(VerifyError::KeyRequired {
                path: checkpoints_path(path),
            });
        }
    };
    let mut checkpoints = CheckpointCheck::new(signed)?;
    let head_file = head_path(path);
    let head = read_head(&head_file).map_err(|reason| VerifyError::HeadUnreadable {
        path: head_file.clone(),
        reason,
    })?;
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut chain = ChainVerifier::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let Some(content) = buf.strip_suffix(b"\n") else {
            return Err(VerifyError::TruncatedLine { line });
        };
        // The line's own hash is checked as the line is read: it is exact for the bytes written.
        let link = check_line(content).map_err(|fault| match fault {
            LineFault::Unparsable(reason) => VerifyError::Unparsable { line, reason },
            LineFault::Edited { seq } => VerifyError::Edited { line, seq },
        })?;
        // An edited line was refused just above, so the chain only checks position and link.
        chain.push(link.link(), true).map_err(|broken| match broken {
            Break::OutOfSequence { expected, found }
                if found > expected && !seq_appears_later(&mut reader, expected) =>
            {
                VerifyError::Deleted { line, expected, found }
            }
            Break::OutOfSequence { expected, found } => VerifyError::Reordered { line, expected, found },
            _ => VerifyError::ChainBroken { line, seq: link.seq },
        })?;
        if let Some(head) = &head
            && head.seq == link.seq
            && head.hash != link.hash
        {
            return Err(VerifyError::HeadMismatch { line, seq: link.seq });
        }
        checkpoints.record(link.seq, &link.hash)?;
    }
    let (records, last_hash) = chain.last();
    if let Some(head) = &head
        && head.seq > records
    {
        return Err(VerifyError::TailTruncated {
            line,
            records,
            head_seq: head.seq,
        });
    }
    let last_hash = last_hash.to_owned();
    let checkpoints = checkpoints.finish(records, unsigned)?;
    Ok(VerifyReport {
        records,
        last_hash,
        head_checked: head.is_some(),
        checkpoints,
    })
}

/// Whether a later line holds sequence number `seq` (tells reordering from deletion).
fn seq_appears_later(reader: &mut impl BufRead, seq: u64) -> bool {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let found = serde_json::from_slice::<Value>(&buf)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64));
        if found == Some(seq) {
            return true;
        }
    }
}
