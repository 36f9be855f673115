//! The checkpoint file `<log>.checkpoints`: one signed checkpoint of the chain
//! (`aip_aat::checkpoint`) per line, appended by the writer thread every `every` records and
//! when the log is closed, signed by the proxy's audit key — which write access to the log does
//! not give, so `aip-proxy audit verify --key` finds a log re-chained from its first change.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aip_aat::checkpoint::{self, Checkpoint, TrustedKeys};
use aip_aat::clock::Clock;
use aip_aat::keys::Signer;

/// The key that signs checkpoints and how often.
#[derive(Clone)]
pub struct CheckpointKey {
    /// The audit key.
    pub signer: Arc<dyn Signer>,
    /// Records between two checkpoints (at least 1).
    pub every: u64,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("kid", self.signer.key_id())
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// `<log>.checkpoints`.
pub(super) fn checkpoints_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".checkpoints");
    PathBuf::from(name)
}

/// The signed checkpoints of the file at `path`, one per line; `None` when there is no file.
pub(super) fn read_checkpoints(path: &Path) -> io::Result<Option<Vec<String>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            lines.push(line);
        }
    }
    Ok(Some(lines))
}

/// Appends checkpoints for the writer thread.
pub(super) struct CheckpointWriter {
    key: CheckpointKey,
    clock: Arc<dyn Clock>,
    path: PathBuf,
    file: File,
    /// The last record signed.
    signed: u64,
}

impl CheckpointWriter {
    /// Opens the checkpoint file of the log at `log` whose last record is `seq`; refuses (with
    /// the reason) a file whose last checkpoint is not this key's or names a later record.
    pub(super) fn open(log: &Path, seq: u64, key: CheckpointKey, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let path = checkpoints_path(log);
        let existing = read_checkpoints(&path).map_err(|e| format!("{} is unreadable ({e})", path.display()))?;
        let trusted = TrustedKeys::of(key.signer.key_id().clone());
        let signed = match existing.as_deref().and_then(<[String]>::last) {
            None => 0,
            Some(last) => {
                let last = Checkpoint::verify(last, &trusted).map_err(|e| format!("{}: {e}", path.display()))?;
                if last.seq > seq {
                    return Err(format!(
                        "the log ends at seq {seq} but {} signs seq {}: records were removed from its end",
                        path.display(),
                        last.seq
                    ));
                }
                last.seq
            }
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {} ({e})", path.display()))?;
        Ok(Self {
            key,
            clock,
            path,
            file,
            signed,
        })
    }

    /// Signs record `seq` with hash `head` when the interval is reached, or whenever it is not
    /// signed yet with `force` (closing and syncing the log); fsyncs with `durable`.
    pub(super) fn checkpoint(&mut self, seq: u64, head: &str, force: bool, durable: bool) -> io::Result<()> {
        let wanted = if force {
            seq > self.signed
        } else {
            checkpoint::due(self.key.every, self.signed, seq)
        };
        if !wanted {
            return Ok(());
        }
        let (_, jws) = Checkpoint::sign(seq, head, self.clock.now(), &*self.key.signer).map_err(io::Error::other)?;
        self.file.write_all(format!("{jws}\n").as_bytes())?;
        if durable {
            self.file.sync_data()?;
        }
        self.signed = seq;
        tracing::debug!(seq, file = %self.path.display(), "signed the audit log's head");
        Ok(())
    }
}
