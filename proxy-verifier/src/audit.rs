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
//! the last record written, replaced atomically after each flush. [`verify`] checks both.
//!
//! [`AuditLog::record`] never touches the disk: it hands the record to a writer thread over an
//! unbounded channel. That thread chains, serializes and appends records, flushing whenever the
//! channel is momentarily empty, so a burst becomes one write and a quiet log is written at once.
//! After each write it sleeps [`LINGER`] before waiting on the channel again: under steady
//! traffic the callers then hand records over without waking it (a wake-up is a system call on
//! the call path), and what arrived meanwhile is written together.
//!
//! Integers beyond ±2^53 inside `request_id` or `args` are stored rounded, as RFC 8785 requires.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::dlp::DlpEvent;

/// `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// One audit record (spec 12.1 and 12.2, plus the chain fields).
///
/// Optional fields left `None` are omitted from the log. `seq`, `prev_hash` and `hash` are set
/// by the [`AuditLog`] writer; whatever the caller puts there is replaced. Fields are declared
/// in the order RFC 8785 sorts their names, so that serializing the struct directly already
/// gives the canonical form (checked by `direct_serialization_is_canonical`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Why an AAT was refused: the spec 11.2 `aat_error` string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_error: Option<String>,
    /// AAT issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_issuer: Option<String>,
    /// AAT unique identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aat_jti: Option<String>,
    /// Agent identifier (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Human-readable agent name (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// Tool arguments, already hashed or redacted by the caller: never the raw arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// Lowercase hex SHA-256 of the canonical arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_hash: Option<String>,
    /// Tools an AAT grants (`AAT_VALIDATED` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities_granted: Option<Vec<String>>,
    /// `ALLOW`, `BLOCK`, `ALLOW_MONITOR`, `RATE_LIMITED`, `ASK`, …
    pub decision: String,
    /// Delegation scope (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_scope: Option<String>,
    /// `upstream` (client to server) or `downstream` (server to client).
    pub direction: String,
    /// DLP matches per rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<Vec<DlpCount>>,
    /// Time spent deciding, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// JSON-RPC error code sent back, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    /// What happened, for records that are events: `DLP_TRIGGERED`, `HITL_RESOLVED`,
    /// `POLICY_RELOADED`, `AAT_VALIDATED`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Argument that failed validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_arg: Option<String>,
    /// Pattern that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_rule: Option<String>,
    /// Identifier of a call held for human approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    /// JSON-RPC method name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Revocation mode of a `REGISTRY_REVOCATION_CHECK` (`online`, `cached`, `crl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Policy hash at decision time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// `enforce` or `monitor`.
    pub policy_mode: String,
    /// `hash` of the previous record, [`GENESIS_HASH`] for the first (set by the log).
    #[serde(default)]
    pub prev_hash: String,
    /// Why, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// JSON-RPC request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Value>,
    /// Revocation list version after a `REGISTRY_REVOCATION_CHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_list_version: Option<u64>,
    /// Position in the chain, from 1 (set by the log).
    #[serde(default)]
    pub seq: u64,
    /// Session identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Time of the decision, RFC 3339 UTC with milliseconds (`2026-02-19T10:30:45.123Z`).
    pub timestamp: String,
    /// Identity token nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Tool name (for `tools/call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// How the user authenticated (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_auth_method: Option<String>,
    /// Authorizing user (from the AAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Whether a policy violation was detected.
    pub violation: bool,
    /// Arguments whose canonical SHA-256 the writer thread stores in `args_hash`, so that the
    /// call path does not pay for canonicalization and hashing. Never written to the log.
    #[serde(skip)]
    pub hash_args: Option<Value>,
    /// SHA-256 of the canonical record without this field (set by the log).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// How many times one DLP rule matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlpCount {
    /// Number of matches replaced.
    pub count: u64,
    /// The rule name.
    pub rule: String,
}

impl From<DlpEvent> for DlpCount {
    fn from(event: DlpEvent) -> Self {
        Self {
            rule: event.rule,
            count: u64::try_from(event.count).unwrap_or(u64::MAX),
        }
    }
}

/// RFC 8785 form of a record. The struct's fields are declared in canonical order, so plain
/// serialization is canonical unless a free-form value (`args`, `request_id`) holds a
/// floating-point number or a key outside the Basic Multilingual Plane, where serde_json and
/// RFC 8785 may differ; those rare records go through the full canonicalizer.
fn canonical_record(record: &Record) -> Result<Vec<u8>, String> {
    let free_form = [record.args.as_ref(), record.request_id.as_ref()];
    if free_form.into_iter().flatten().any(|v| !plain_json(v, 0)) {
        return aip_aat::jcs::to_vec(record).map_err(|e| e.to_string());
    }
    serde_json::to_vec(record).map_err(|e| e.to_string())
}

/// Whether serde_json writes `value` exactly as RFC 8785 does.
fn plain_json(value: &Value, depth: usize) -> bool {
    match value {
        Value::Number(n) => !n.is_f64(),
        Value::Array(items) => depth < 64 && items.iter().all(|v| plain_json(v, depth + 1)),
        Value::Object(map) => {
            depth < 64
                && map
                    .iter()
                    .all(|(k, v)| k.chars().all(|c| c <= '\u{FFFF}') && plain_json(v, depth + 1))
        }
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

impl Record {
    /// A record of the four required decision fields, stamped with the current time.
    pub fn new(
        direction: impl Into<String>,
        decision: impl Into<String>,
        policy_mode: impl Into<String>,
        violation: bool,
    ) -> Self {
        Self {
            timestamp: timestamp_now(),
            direction: direction.into(),
            decision: decision.into(),
            policy_mode: policy_mode.into(),
            violation,
            ..Self::default()
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn timestamp_now() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, written digit by digit: this runs on the call path for every
/// record, where the formatting machinery cost more than the rest of the record.
fn format_timestamp(at: time::OffsetDateTime) -> String {
    fn digits(out: &mut [u8], value: u32) {
        let mut value = value;
        for slot in out.iter_mut().rev() {
            // A decimal digit: always below 10.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    // `time` keeps years within ±9999; a clock set before year 0 reads as 0000.
    digits(&mut out[0..4], u32::try_from(at.year()).unwrap_or(0));
    digits(&mut out[5..7], u32::from(u8::from(at.month())));
    digits(&mut out[8..10], u32::from(at.day()));
    digits(&mut out[11..13], u32::from(at.hour()));
    digits(&mut out[14..16], u32::from(at.minute()));
    digits(&mut out[17..19], u32::from(at.second()));
    digits(&mut out[20..23], u32::from(at.millisecond()));
    // ASCII digits and separators only.
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

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
/// everything recorded so far.
#[derive(Debug)]
pub struct AuditLog {
    tx: Option<Sender<Message>>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600, and starts the writer thread.
    ///
    /// An existing log is continued after its last record. The log is refused, with an error
    /// naming `aip-proxy audit verify`, when its last line is incomplete or corrupt, or when the
    /// head file shows records missing from its end: a new chain is never started on top of a
    /// broken one. The file is locked for the lifetime of the log, so a second writer is refused.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
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
        let writer = Writer {
            file,
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
        })
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self { tx: None, writer: None }
    }

    /// Whether records go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `record` for the writer thread. Never blocks and never fails; write errors are
    /// reported by the writer on the log (`tracing`).
    pub fn record(&self, record: Record) {
        if let Some(tx) = &self.tx {
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
fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// The content of the head file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    seq: u64,
    hash: String,
}

/// Reads the head file: `None` when there is none, `Err(reason)` when it is corrupt.
fn read_head(path: &Path) -> Result<Option<Head>, String> {
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
            record.args_hash = aip_aat::jcs::to_vec(&args)
                .ok()
                .map(|bytes| hex::encode(Sha256::digest(bytes)));
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
        let hash = hex::encode(Sha256::digest(&canonical));
        self.seq = record.seq;
        if self.pending.len() >= MAX_PENDING {
            // The chain still advances: the gap shows in `verify` as deleted records.
            self.lost += 1;
            self.report(&io::Error::other("write backlog full; dropping records"));
        } else {
            self.pending.reserve(body.len() + 77);
            self.pending.extend_from_slice(body);
            self.pending.extend_from_slice(b",\"hash\":\"");
            self.pending.extend_from_slice(hash.as_bytes());
            self.pending.extend_from_slice(b"\"}\n");
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

    /// Writes what is pending and updates the head file, without fsync; reports failures.
    fn flush(&mut self) {
        let result = self.write_pending().and_then(|()| {
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

/// Chain fields of one valid line.
struct Link {
    seq: u64,
    prev_hash: String,
    hash: String,
}

/// What is wrong with one line on its own.
enum LineFault {
    Unparsable(String),
    Edited { seq: u64 },
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses one line (without its newline) and checks its hash against its content.
fn check_line(line: &[u8]) -> Result<Link, LineFault> {
    let text = std::str::from_utf8(line).map_err(|_| LineFault::Unparsable("not UTF-8".into()))?;
    // Strict parsing: a duplicated member could show readers a value the hash does not cover.
    let value = aip_aat::jcs::parse_strict(text).map_err(|e| LineFault::Unparsable(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(LineFault::Unparsable("not a JSON object".into()));
    };
    let hash = match map.remove("hash") {
        Some(Value::String(hash)) if is_hash(&hash) => hash,
        _ => return Err(LineFault::Unparsable("missing or malformed \"hash\"".into())),
    };
    let seq = match map.get("seq").and_then(Value::as_u64) {
        Some(seq) if seq > 0 => seq,
        _ => return Err(LineFault::Unparsable("missing or malformed \"seq\"".into())),
    };
    let prev_hash = match map.get("prev_hash").and_then(Value::as_str) {
        Some(prev) if is_hash(prev) => prev.to_owned(),
        _ => return Err(LineFault::Unparsable("missing or malformed \"prev_hash\"".into())),
    };
    let canonical = aip_aat::jcs::to_vec(&map).map_err(|e| LineFault::Unparsable(e.to_string()))?;
    if hex::encode(Sha256::digest(&canonical)) == hash {
        return Ok(Link { seq, prev_hash, hash });
    }
    // The line as written is the canonical text followed by the hash member; hashing those bytes
    // directly is exact even where parsing a number back would not be.
    if let Some(body) = text.strip_suffix(&format!(",\"hash\":\"{hash}\"}}")) {
        let mut digest = Sha256::new();
        digest.update(body.as_bytes());
        digest.update(b"}");
        if hex::encode(digest.finalize()) == hash {
            return Ok(Link { seq, prev_hash, hash });
        }
    }
    Err(LineFault::Edited { seq })
}

/// A log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records.
    pub records: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub last_hash: String,
    /// Whether a head file was found and agreed with the log.
    pub head_checked: bool,
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
}

impl VerifyError {
    /// The line the break was found at, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Io { .. } | Self::HeadUnreadable { .. } => None,
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
/// reports the first break.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let head_file = head_path(path);
    let head = read_head(&head_file).map_err(|reason| VerifyError::HeadUnreadable {
        path: head_file.clone(),
        reason,
    })?;
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut records = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let Some(content) = buf.strip_suffix(b"\n") else {
            return Err(VerifyError::TruncatedLine { line });
        };
        let link = check_line(content).map_err(|fault| match fault {
            LineFault::Unparsable(reason) => VerifyError::Unparsable { line, reason },
            LineFault::Edited { seq } => VerifyError::Edited { line, seq },
        })?;
        let expected = records + 1;
        if link.seq > expected {
            return Err(if seq_appears_later(&mut reader, expected) {
                VerifyError::Reordered {
                    line,
                    expected,
                    found: link.seq,
                }
            } else {
                VerifyError::Deleted {
                    line,
                    expected,
                    found: link.seq,
                }
            });
        }
        if link.seq < expected {
            return Err(VerifyError::Reordered {
                line,
                expected,
                found: link.seq,
            });
        }
        if link.prev_hash != prev_hash {
            return Err(VerifyError::ChainBroken { line, seq: link.seq });
        }
        if let Some(head) = &head
            && head.seq == link.seq
            && head.hash != link.hash
        {
            return Err(VerifyError::HeadMismatch { line, seq: link.seq });
        }
        records = link.seq;
        prev_hash = link.hash;
    }
    if let Some(head) = &head
        && head.seq > records
    {
        return Err(VerifyError::TailTruncated {
            line,
            records,
            head_seq: head.seq,
        });
    }
    Ok(VerifyReport {
        records,
        last_hash: prev_hash,
        head_checked: head.is_some(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_serialization_is_canonical() {
        let mut record = Record::new("upstream", "BLOCK", "enforce", true);
        let text = "tab\t quote\" back\\ ctl\u{1} é 😀 <>/";
        for field in [
            &mut record.event,
            &mut record.method,
            &mut record.tool,
            &mut record.args_hash,
            &mut record.reason,
            &mut record.failed_arg,
            &mut record.failed_rule,
            &mut record.policy_hash,
            &mut record.hold_id,
            &mut record.session_id,
            &mut record.token_id,
            &mut record.agent_id,
            &mut record.agent_name,
            &mut record.user_id,
            &mut record.user_auth_method,
            &mut record.delegation_scope,
            &mut record.aat_jti,
            &mut record.aat_issuer,
            &mut record.aat_error,
            &mut record.mode,
        ] {
            *field = Some(text.to_owned());
        }
        record.capabilities_granted = Some(vec![text.to_owned(), "read_file".into()]);
        record.revocation_list_version = Some(42);
        record.request_id = Some(serde_json::json!("id-1"));
        record.args = Some(serde_json::json!({"b": [1, -2, {"z": null, "a": true}], "a": text, "é": 3}));
        record.error_code = Some(-32001);
        record.duration_us = Some(12);
        record.dlp = Some(vec![DlpCount {
            rule: "AWS Key".into(),
            count: 2,
        }]);
        record.seq = 9;
        record.prev_hash = GENESIS_HASH.to_owned();
        assert_eq!(
            serde_json::to_vec(&record).unwrap(),
            aip_aat::jcs::to_vec(&record).unwrap()
        );
        assert_eq!(
            canonical_record(&record).unwrap(),
            aip_aat::jcs::to_vec(&record).unwrap()
        );
        record.args = Some(serde_json::json!({"x": 1.5e300}));
        assert_eq!(
            canonical_record(&record).unwrap(),
            aip_aat::jcs::to_vec(&record).unwrap()
        );
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_millis() {
        let ts = Record::new("upstream", "ALLOW", "enforce", false).timestamp;
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(
            ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
            "{ts}"
        );
        assert!(time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339).is_ok());
    }

    #[test]
    fn timestamps_are_zero_padded_and_truncated_to_milliseconds() {
        let at = time::macros::datetime!(2026-02-09 04:05:06.007_999 UTC);
        assert_eq!(format_timestamp(at), "2026-02-09T04:05:06.007Z");
        let at = time::macros::datetime!(0987-12-31 23:59:59.999_999_999 UTC);
        assert_eq!(format_timestamp(at), "0987-12-31T23:59:59.999Z");
        let at = time::macros::datetime!(2026-11-24 00:00:00 UTC);
        assert_eq!(format_timestamp(at), "2026-11-24T00:00:00.000Z");
    }

    #[test]
    fn optional_fields_are_omitted_and_round_trip() {
        let mut record = Record::new("downstream", "BLOCK", "monitor", true);
        record.tool = Some("read_file".into());
        record.dlp = Some(vec![
            DlpEvent {
                rule: "AWS Key".into(),
                count: 2,
            }
            .into(),
        ]);
        let value = serde_json::to_value(&record).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "decision",
                "direction",
                "dlp",
                "policy_mode",
                "prev_hash",
                "seq",
                "timestamp",
                "tool",
                "violation"
            ]
        );
        assert_eq!(serde_json::from_value::<Record>(value).unwrap(), record);
    }

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
}
