//! Writing the audit log: [`AuditLog`] hands records to a writer thread that chains, serializes
//! and appends them, and keeps the head file `<log>.head` naming the last record written and,
//! with an audit key, the signed checkpoints `<log>.checkpoints`.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aip_aat::clock::{Clock, SystemClock};
use serde::Deserialize;

use aip_aat::chain::{GENESIS_HASH, is_hash, record_hash};

use super::checkpoints::{CheckpointKey, CheckpointWriter};
use super::line::{LineFault, check_line, push_line};
use super::record::{Record, canonical_record};

/// Unwritten bytes kept while the disk refuses writes; records beyond this are dropped (and
/// reported) rather than growing memory without bound.
const MAX_PENDING: usize = 64 * 1024 * 1024;
/// A burst is written out in pieces of about this size.
const BATCH_BYTES: usize = 256 * 1024;
/// How often a failing disk is retried while no new records arrive.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest time between two rewrites of the head file outside [`AuditLog::sync`]: replacing
/// it costs a file creation and a rename, too much to pay for every record of a busy log. A
/// crash may leave the head this far behind the log (its records then still verify; only a
/// truncation inside that window goes unnoticed).
const HEAD_INTERVAL: Duration = Duration::from_millis(100);

/// How long the writer sleeps after a write before it waits on the channel again: the most a
/// record waits for its write once traffic is steady.
const LINGER: Duration = Duration::from_millis(1);

/// Chunk size when searching backwards for the last line of an existing log.
const TAIL_CHUNK: u64 = 8 * 1024;

/// What the caller thread sends to the writer.
// Records travel unboxed: the channel stores them in preallocated blocks, a `Box` would add an
// allocation per record on the caller's hot path.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(Record),
    Sync(Sender<io::Result<()>>),
}

/// An append-only, hash-chained audit log written by a background thread.
///
/// Share it behind an `Arc`; [`AuditLog::close`] (or dropping the last reference) writes out
/// everything recorded so far. Records left unstamped are stamped with the log's clock when
/// they are recorded.
pub struct AuditLog {
    tx: Option<Sender<Message>>,
    writer: Option<JoinHandle<io::Result<()>>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("tx", &self.tx)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600, and starts the writer thread.
    ///
    /// An existing log is continued after its last record. The log is refused, with an error
    /// naming `aip-proxy audit verify`, when its last line is incomplete or corrupt, or when the
    /// head file shows records missing from its end: a new chain is never started on top of a
    /// broken one. The file is locked for the lifetime of the log, so a second writer is refused.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// As [`AuditLog::open`], stamping records with the time `clock` reads.
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> io::Result<Self> {
        Self::open_signed(path, clock, None)
    }

    /// As [`AuditLog::open_with_clock`], signing a checkpoint of the chain with `key` every
    /// `key.every` records and when the log is synced or closed (`<log>.checkpoints`).
    pub fn open_signed(path: impl AsRef<Path>, clock: Arc<dyn Clock>, key: Option<CheckpointKey>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let head_path = head_path(&path);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("audit log {} is already open in another process", path.display()),
                ));
            }
            Err(TryLockError::Error(e)) => {
                tracing::warn!(
                    "audit log {}: cannot lock the file ({e}); continuing without a lock",
                    path.display()
                );
            }
        }
        let refuse = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "audit log {p}: {why}; refusing to append to a broken chain. Run `aip-proxy audit verify {p}` \
                     to locate the damage, then move the log and {h} aside to start a new one",
                    p = path.display(),
                    h = head_path.display()
                ),
            )
        };
        let last = match read_last_line(&mut file)? {
            Tail::Empty => None,
            Tail::Unterminated => return Err(refuse("the last line is incomplete (no trailing newline)".into())),
            Tail::Line(bytes) => match check_line(&bytes) {
                Ok(link) => Some((link.seq, link.hash)),
                Err(LineFault::Unparsable(reason)) => {
                    return Err(refuse(format!("the last line is not a valid audit record ({reason})")));
                }
                Err(LineFault::Edited { seq }) => {
                    return Err(refuse(format!("the last record (seq {seq}) does not match its hash")));
                }
            },
        };
        let (seq, hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
        match read_head(&head_path) {
            Ok(None) => {}
            Ok(Some(head)) if head.seq > seq => {
                return Err(refuse(format!(
                    "the log ends at seq {seq} but {} records seq {}: records were removed from its end",
                    head_path.display(),
                    head.seq
                )));
            }
            Ok(Some(head)) if head.seq == seq && head.hash != hash => {
                return Err(refuse(format!(
                    "the last record (seq {seq}) differs from the one recorded in {}",
                    head_path.display()
                )));
            }
            Ok(Some(_)) => {}
            Err(reason) => return Err(refuse(format!("{} is unreadable ({reason})", head_path.display()))),
        }
        let checkpoints = match key {
            None => None,
            Some(key) => Some(CheckpointWriter::open(&path, seq, key, Arc::clone(&clock)).map_err(refuse)?),
        };
        let writer = Writer {
            file,
            checkpoints,
            head_path,
            seq,
            prev_hash: hash.clone(),
            pending: Vec::new(),
            buffered: (seq, hash.clone()),
            written: (seq, hash.clone()),
            head: (seq, hash),
            head_at: Instant::now(),
            failing: false,
            lost: 0,
        };
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("aip-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(handle),
            clock,
        })
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            writer: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock records are stamped with.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Whether records go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `record` for the writer thread, stamping it first (on the caller's thread) when
    /// its `timestamp` is empty. Never blocks and never fails; write errors are reported by the
    /// writer on the log (`tracing`).
    pub fn record(&self, mut record: Record) {
        if let Some(tx) = &self.tx {
            if record.timestamp.is_empty() {
                record.stamp(&*self.clock);
            }
            // Only fails if the writer thread is gone, which it never is before `close`.
            let _ = tx.send(Message::Record(record));
        }
    }

    /// Waits until every record queued before this call is written, fsynced and named in the
    /// head file. Blocks: not for the hot path (use it before exiting when the log is shared).
    pub fn sync(&self) -> io::Result<()> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        tx.send(Message::Sync(reply_tx)).map_err(|_| writer_gone())?;
        reply_rx.recv().map_err(|_| writer_gone())?
    }

    /// Writes out every record queued so far, fsyncs the log and its head file, and stops the
    /// writer thread. Fails if any record could not be written during the life of the log.
    pub fn close(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        drop(self.tx.take());
        match self.writer.take() {
            None => Ok(()),
            Some(handle) => handle.join().map_err(|_| writer_gone())?,
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("closing the audit log: {e}");
        }
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the audit writer thread stopped unexpectedly")
}

/// `<log>.head`.
pub(super) fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// The content of the head file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: String,
}

/// Reads the head file: `None` when there is none, `Err(reason)` when it is corrupt.
pub(super) fn read_head(path: &Path) -> Result<Option<Head>, String> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Head>(&bytes) {
            Ok(head) if is_hash(&head.hash) => Ok(Some(head)),
            Ok(_) => Err("malformed hash".into()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Replaces the head file atomically (temporary file + rename).
fn write_head(path: &Path, seq: u64, hash: &str, durable: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{{\"seq\":{seq},\"hash\":\"{hash}\"}}\n").as_bytes())?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    if durable {
        // Persist the rename; best effort (not every filesystem lets a directory be fsynced).
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// The end of an existing log.
enum Tail {
    Empty,
    /// The file does not end with a newline.
    Unterminated,
    /// The last line, without its newline.
    Line(Vec<u8>),
}

/// Finds the last line of `file` by reading backwards from its end.
fn read_last_line(file: &mut File) -> io::Result<Tail> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        return Ok(Tail::Unterminated);
    }
    // Search [0, len - 1) backwards for the newline ending the previous line.
    let mut start = 0;
    let mut end = len - 1;
    let mut chunk = Vec::new();
    while end > 0 {
        let from = end.saturating_sub(TAIL_CHUNK);
        chunk.resize(usize::try_from(end - from).unwrap_or(0), 0);
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        end = from;
    }
    let mut line = vec![0; usize::try_from(len - 1 - start).map_err(io::Error::other)?];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Tail::Line(line))
}

/// The background writer: owns the file and the chain state.
struct Writer {
    file: File,
    /// Signs checkpoints, when the log has an audit key.
    checkpoints: Option<CheckpointWriter>,
    head_path: PathBuf,
    /// Last sequence number given out (including records lost to write errors).
    seq: u64,
    /// Hash of the record with `seq`.
    prev_hash: String,
    /// Serialized lines not yet written to the file.
    pending: Vec<u8>,
    /// Last record put in `pending`.
    buffered: (u64, String),
    /// Last record fully written to the file.
    written: (u64, String),
    /// What the head file holds.
    head: (u64, String),
    /// When the head file was last written.
    head_at: Instant,
    /// An error was reported and writes have not recovered since.
    failing: bool,
    /// Records dropped because the disk kept failing.
    lost: u64,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) -> io::Result<()> {
        loop {
            let head_due = (self.head != self.written).then(|| HEAD_INTERVAL.saturating_sub(self.head_at.elapsed()));
            let message = if self.pending.is_empty() && head_due.is_none() {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                let wait = if self.pending.is_empty() {
                    head_due.unwrap_or(RETRY_INTERVAL)
                } else {
                    RETRY_INTERVAL
                };
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            self.handle(message);
            // Take the rest of the burst; an empty (or closed) channel ends it.
            while let Ok(message) = rx.try_recv() {
                self.handle(message);
                if self.pending.len() >= BATCH_BYTES {
                    self.flush();
                }
            }
            self.flush();
            std::thread::sleep(LINGER);
        }
        let result = self.sync();
        if self.lost > 0 {
            return Err(io::Error::other(format!(
                "{} audit record(s) were lost because the log could not be written",
                self.lost
            )));
        }
        result
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Record(record) => self.append(record),
            Message::Sync(reply) => {
                let _ = reply.send(self.sync());
            }
        }
    }

    /// Chains `record` and queues its line.
    fn append(&mut self, mut record: Record) {
        record.seq = self.seq + 1;
        record.prev_hash.clone_from(&self.prev_hash);
        record.hash.clear();
        if let Some(args) = record.hash_args.take() {
            record.args_hash = aip_aat::jcs::sha256_hex(&args).ok();
        }
        let canonical = match canonical_record(&record) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Cannot happen for a `Record`; skip it without breaking the chain.
                tracing::error!("audit record dropped: cannot canonicalize it: {e}");
                return;
            }
        };
        let Some(body) = canonical.strip_suffix(b"}") else {
            tracing::error!("audit record dropped: canonical form is not an object");
            return;
        };
        let hash = record_hash(&canonical);
        self.seq = record.seq;
        if self.pending.len() >= MAX_PENDING {
            // The chain still advances: the gap shows in `verify` as deleted records.
            self.lost += 1;
            self.report(&io::Error::other("write backlog full; dropping records"));
        } else {
            push_line(&mut self.pending, body, &hash);
            self.buffered = (self.seq, hash.clone());
        }
        self.prev_hash = hash;
    }

    /// Writes `pending` to the file, keeping whatever could not be written.
    fn write_pending(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.file.write(&self.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n.min(self.pending.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.written.clone_from(&self.buffered);
        Ok(())
    }

    /// Signs the last record written when a checkpoint is due (or with `force`, whenever it is
    /// not signed yet).
    fn checkpoint(&mut self, force: bool, durable: bool) -> io::Result<()> {
        match &mut self.checkpoints {
            Some(checkpoints) => checkpoints.checkpoint(self.written.0, &self.written.1, force, durable),
            None => Ok(()),
        }
    }

    /// Writes what is pending, signs a checkpoint when one is due and updates the head file,
    /// without fsync; reports failures.
    fn flush(&mut self) {
        let result = self.write_pending().and_then(|()| {
            self.checkpoint(false, false)?;
            if self.head != self.written && self.head_at.elapsed() >= HEAD_INTERVAL {
                write_head(&self.head_path, self.written.0, &self.written.1, false)?;
                self.head.clone_from(&self.written);
                self.head_at = Instant::now();
            }
            Ok(())
        });
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("audit log writes recovered");
            }
            Ok(()) => {}
            Err(e) => self.report(&e),
        }
    }

    /// Writes what is pending, fsyncs the log, then writes and fsyncs the head file.
    fn sync(&mut self) -> io::Result<()> {
        let result = self
            .write_pending()
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.checkpoint(true, true))
            .and_then(|()| {
                write_head(&self.head_path, self.written.0, &self.written.1, true)?;
                self.head.clone_from(&self.written);
                self.head_at = Instant::now();
                Ok(())
            });
        if let Err(e) = &result {
            self.report(e);
        }
        result
    }

    /// Reports the first error of a failure episode.
    fn report(&mut self, e: &io::Error) {
        if !self.failing {
            self.failing = true;
            tracing::error!("cannot write the audit log: {e}; records are kept in memory and retried");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_line_checks_and_any_edit_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let mut record = Record::new("upstream", "ALLOW", "enforce", false);
        record.args = Some(serde_json::json!({"x": 0.1, "y": [1e300, -0.0, 12_345_678_901_234_567_u64]}));
        log.record(record);
        log.close().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let line = text.strip_suffix('\n').unwrap();
        let link = check_line(line.as_bytes()).ok().unwrap();
        assert_eq!((link.seq, link.prev_hash.as_str()), (1, GENESIS_HASH));
        let edited = line.replace("\"ALLOW\"", "\"BLOCK\"");
        assert!(matches!(
            check_line(edited.as_bytes()),
            Err(LineFault::Edited { seq: 1 })
        ));
    }

    #[test]
    fn last_line_is_found_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let long = "x".repeat(20_000);
        fs::write(&path, format!("first\n{long}\n")).unwrap();
        let mut file = File::open(&path).unwrap();
        assert!(matches!(read_last_line(&mut file).unwrap(), Tail::Line(l) if l == long.as_bytes()));
        fs::write(&path, "only\n").unwrap();
        let mut file = File::open(&path).unwrap();
        assert!(matches!(read_last_line(&mut file).unwrap(), Tail::Line(l) if l == b"only"));
        fs::write(&path, "cut").unwrap();
        let mut file = File::open(&path).unwrap();
        assert!(matches!(read_last_line(&mut file).unwrap(), Tail::Unterminated));
    }

    #[test]
    fn disabled_log_accepts_records() {
        let log = AuditLog::disabled();
        assert!(!log.is_enabled());
        log.record(Record::new("upstream", "ALLOW", "enforce", false));
        log.sync().unwrap();
        log.close().unwrap();
    }

    #[test]
    fn records_are_stamped_with_the_log_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock.jsonl");
        let clock = Arc::new(aip_aat::clock::FixedClock::new(1_770_000_000));
        let log = AuditLog::open_with_clock(&path, clock.clone()).unwrap();
        log.record(Record::new("upstream", "ALLOW", "enforce", false));
        clock.advance(61);
        let early = Record::new("upstream", "ALLOW", "enforce", false).stamped(log.clock());
        clock.advance(1);
        log.record(early);
        log.close().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let stamps: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().timestamp)
            .collect();
        assert_eq!(stamps, ["2026-02-02T02:40:00.000Z", "2026-02-02T02:41:01.000Z"]);
    }
}
