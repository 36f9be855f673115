//! The host's replay store: one directory that every `aip-proxy` of the user shares, where each
//! used identifier is a file created atomically (`O_CREAT|O_EXCL`).
//!
//! - A file's name is the hex SHA-256 of scope ‖ identifier; it holds the last second (Unix
//!   time, decimal) through which the identifier stays used. An empty or unreadable file counts
//!   as used: it is being written, or something is wrong, and either way a refusal is safe.
//! - Recording: `create_new` wins for exactly one process. A file that already exists is a
//!   replay unless it has expired; an expired one is taken over under an exclusive `flock`, after
//!   checking that the locked file is still the one the name points to.
//! - Sweeping: at most once a minute, on a thread of its own, expired files are removed under
//!   the same lock, so a sweep never removes an entry another process has just renewed.
//! - Bounded: when the last sweep counted `capacity` live entries or more, new identifiers are
//!   refused ([`ReplayError::Full`]) until a sweep finds room.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use aip_aat::replay::{DEFAULT_MIN_RETENTION_SECS, ReplayCache, ReplayError, ReplayScope};

/// Seconds between two sweeps of one process.
const SWEEP_EVERY_SECS: i64 = 60;

/// A [`ReplayCache`] in a directory shared by the proxies of one host.
#[derive(Debug)]
pub struct LocalReplayStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    capacity: usize,
    min_retention: i64,
    /// Live entries the last sweep counted.
    live: AtomicUsize,
    last_sweep: AtomicI64,
    sweeping: AtomicBool,
}

/// The default directory: `$XDG_RUNTIME_DIR/aip-proxy/replay`, else
/// `$XDG_STATE_HOME/aip-proxy/replay`, else `~/.local/state/aip-proxy/replay`.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_RUNTIME_DIR")
        .or_else(|| var("XDG_STATE_HOME"))
        .or_else(|| var("HOME").map(|home| home.join(".local/state")))?;
    Some(base.join("aip-proxy").join("replay"))
}

impl LocalReplayStore {
    /// Opens (creating, mode 0700) the store in `dir`, holding up to `capacity` live entries.
    /// Refuses a directory that is not the user's own or that others may write or read.
    pub fn open(dir: &Path, capacity: usize) -> io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other("not a directory"));
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(io::Error::other("the directory belongs to another user"));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(io::Error::other(format!(
                "the directory's mode is {:o}; it must be 700 (no access for others)",
                meta.mode() & 0o777
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                capacity: capacity.max(1),
                min_retention: DEFAULT_MIN_RETENTION_SECS,
                live: AtomicUsize::new(0),
                last_sweep: AtomicI64::new(i64::MIN),
                sweeping: AtomicBool::new(false),
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Removes expired entries now, in this thread; returns the live entries counted.
    pub fn sweep(&self, now: i64) -> io::Result<usize> {
        self.inner.sweep(now)
    }

    /// Starts a sweep on its own thread when the last one is a minute old and none is running.
    fn maybe_sweep(&self, now: i64) {
        let last = self.inner.last_sweep.load(Ordering::Relaxed);
        if last == i64::MIN {
            // The first sweep comes a minute after the first call, off the start-up path.
            let _ = self
                .inner
                .last_sweep
                .compare_exchange(i64::MIN, now, Ordering::Relaxed, Ordering::Relaxed);
            return;
        }
        if now.saturating_sub(last) < SWEEP_EVERY_SECS || self.inner.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.last_sweep.store(now, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new().name("replay-sweep".into()).spawn(move || {
            if let Err(e) = inner.sweep(now) {
                tracing::warn!("replay store {}: sweep failed: {e}", inner.dir.display());
            }
            inner.sweeping.store(false, Ordering::Release);
        });
        if let Err(e) = spawned {
            tracing::warn!("replay store: no sweep thread: {e}");
            self.inner.sweeping.store(false, Ordering::Release);
        }
    }
}

impl ReplayCache for LocalReplayStore {
    fn check_and_record(&self, scope: ReplayScope, id: &str, expires_at: i64, now: i64) -> Result<(), ReplayError> {
        self.maybe_sweep(now);
        let path = self.inner.dir.join(hex::encode(scope.digest(id)));
        let expiry = expires_at.max(now.saturating_add(self.inner.min_retention));
        self.inner.record(&path, expiry, now).map_err(|e| match e {
            Recorded::Replayed => ReplayError::Replayed,
            Recorded::Full => ReplayError::Full,
            Recorded::Failed(e) => {
                tracing::error!(
                    "replay store {} cannot be written ({e}): refusing calls whose freshness it cannot prove",
                    self.inner.dir.display()
                );
                ReplayError::Unavailable
            }
        })
    }
}

enum Recorded {
    Replayed,
    Full,
    Failed(io::Error),
}

impl From<io::Error> for Recorded {
    fn from(e: io::Error) -> Self {
        Self::Failed(e)
    }
}

impl Inner {
    fn record(&self, path: &Path, expiry: i64, now: i64) -> Result<(), Recorded> {
        // A few rounds at most: each retry means a sweep removed the file in between.
        for _ in 0..4 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    if self.live.load(Ordering::Relaxed) >= self.capacity {
                        // Full of live entries: give the name back, refuse.
                        drop(file);
                        fs::remove_file(path)?;
                        return Err(Recorded::Full);
                    }
                    file.write_all(expiry.to_string().as_bytes())?;
                    self.live.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            let mut file = match OpenOptions::new().read(true).write(true).open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if read_expiry(&mut file)?.is_none_or(|until| until >= now) {
                return Err(Recorded::Replayed);
            }
            // Expired: take it over, under the lock, if it is still the file the name points to.
            file.lock()?;
            if !still_linked(&file, path)? {
                continue;
            }
            if read_expiry(&mut file)?.is_none_or(|until| until >= now) {
                return Err(Recorded::Replayed);
            }
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(expiry.to_string().as_bytes())?;
            return Ok(());
        }
        Err(io::Error::other("the entry keeps disappearing").into())
    }

    fn sweep(&self, now: i64) -> io::Result<usize> {
        let mut live = 0;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            match self.sweep_one(&path, now) {
                Ok(true) => live += 1,
                Ok(false) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.live.store(live, Ordering::Relaxed);
        Ok(live)
    }

    /// Removes `path` if expired; whether it is still live.
    fn sweep_one(&self, path: &Path, now: i64) -> io::Result<bool> {
        let mut file = File::open(path)?;
        if read_expiry(&mut file)?.is_none_or(|until| until >= now) {
            return Ok(true);
        }
        file.lock()?;
        if !still_linked(&file, path)? || read_expiry(&mut file)?.is_none_or(|until| until >= now) {
            return Ok(true);
        }
        fs::remove_file(path)?;
        Ok(false)
    }
}

/// The expiry a file holds; `None` while it is empty or unreadable (counts as live).
fn read_expiry(file: &mut File) -> io::Result<Option<i64>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.take(32).read_to_string(&mut text)?;
    Ok(text.trim().parse().ok())
}

/// Whether `path` still names the open `file` (a sweep may have removed it meanwhile).
fn still_linked(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ReplayScope = ReplayScope::Proof;

    fn store(dir: &Path) -> LocalReplayStore {
        LocalReplayStore::open(&dir.join("replay"), 100).unwrap()
    }

    #[test]
    fn two_stores_on_one_directory_see_each_others_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store(dir.path()), store(dir.path()));
        assert_eq!(a.check_and_record(P, "j", 1_010, 1_000), Ok(()));
        assert_eq!(b.check_and_record(P, "j", 1_010, 1_000), Err(ReplayError::Replayed));
        assert_eq!(b.check_and_record(ReplayScope::Aat, "j", 1_010, 1_000), Ok(()));
        // Kept at least the minimum retention, then usable again.
        assert_eq!(b.check_and_record(P, "j", 1_010, 1_600), Err(ReplayError::Replayed));
        assert_eq!(b.check_and_record(P, "j", 1_010, 1_601), Ok(()));
        assert_eq!(a.check_and_record(P, "j", 1_010, 1_700), Err(ReplayError::Replayed));
    }

    #[test]
    fn sweeps_remove_expired_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.check_and_record(P, "old", 0, 1_000).unwrap();
        s.check_and_record(P, "new", 5_000, 1_500).unwrap();
        assert_eq!(s.sweep(2_101).unwrap(), 1);
        assert_eq!(fs::read_dir(s.dir()).unwrap().count(), 1);
        assert_eq!(s.check_and_record(P, "new", 5_000, 2_101), Err(ReplayError::Replayed));
    }

    #[test]
    fn a_full_store_refuses_new_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalReplayStore::open(&dir.path().join("replay"), 2).unwrap();
        s.check_and_record(P, "a", 0, 1_000).unwrap();
        s.check_and_record(P, "b", 0, 1_000).unwrap();
        assert_eq!(s.check_and_record(P, "c", 0, 1_000), Err(ReplayError::Full));
        assert_eq!(s.sweep(1_601).unwrap(), 0);
        assert_eq!(s.check_and_record(P, "c", 0, 1_601), Ok(()));
    }

    #[test]
    fn an_unwritable_store_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        fs::remove_dir(s.dir()).unwrap();
        fs::write(s.dir(), b"not a directory").unwrap();
        assert_eq!(s.check_and_record(P, "j", 0, 1_000), Err(ReplayError::Unavailable));
    }

    #[test]
    fn an_open_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        DirBuilder::new().mode(0o777).create(&open).unwrap();
        fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(LocalReplayStore::open(&open, 10).is_err());
    }

    #[test]
    fn concurrent_stores_accept_each_identifier_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = LocalReplayStore::open(&path, 10_000).unwrap();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| s.check_and_record(P, &format!("j{i}"), 0, 1_000).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
    }
}
