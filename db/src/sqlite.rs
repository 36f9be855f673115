//! SQLite's connection settings, write-ahead-log upkeep, and the identity of the file opened.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::{DbError, backend};

/// How long a statement waits for a lock before failing.
const BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 10000";

/// Pool options for SQLite connections: foreign keys on, WAL (its file cut back to 128 MiB when
/// the log starts over), and memory-mapped reads. The writer does not checkpoint the WAL on
/// commit (see [`checkpoint_wal`]), so a commit never waits for a checkpoint's disk flushes.
pub(crate) fn pool(size: u32, writer: bool) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(15))
        .max_connections(size)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if writer {
                    sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
                }
                for pragma in [
                    "PRAGMA foreign_keys = ON",
                    BUSY_TIMEOUT,
                    "PRAGMA journal_mode = WAL",
                    "PRAGMA journal_size_limit = 134217728",
                    "PRAGMA synchronous = NORMAL",
                    "PRAGMA mmap_size = 268435456",
                    "PRAGMA cache_size = -32000",
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
}

/// Creates the database file a `mode=rwc` URL names when it is missing, readable and writable
/// by its owner only (0600): it holds the audit log and the digests of every credential.
/// SQLite gives the write-ahead log and shared-memory files it makes beside it the same mode.
pub(crate) fn create_private_file(url: &str) -> Result<(), DbError> {
    if !url.contains("mode=rwc") {
        return Ok(());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(backend)?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(backend(e)),
    }
}

/// The path of the database file `url` names; `None` for an in-memory database.
pub(crate) fn file_path(url: &str) -> Option<PathBuf> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (!path.as_os_str().is_empty() && path.as_os_str() != ":memory:").then(|| path.to_owned())
}

/// The identity of the SQLite file a database opened: its path, and (on Unix) its device and
/// inode, so that a file removed or replaced under the running server is noticed. The server's
/// connections keep the old file open and answer on, but what they write is lost.
#[derive(Clone, Debug)]
pub(crate) struct OpenedFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl OpenedFile {
    /// The file at `path` as it is now; `None` when it cannot be read.
    pub(crate) fn at(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            path: path.to_owned(),
            id: file_id(&metadata),
        })
    }

    /// Whether the file at the path is still this one.
    pub(crate) fn in_place(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|now| file_id(&now) == self.id)
    }
}

#[cfg(unix)]
fn file_id(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Checkpoints the SQLite write-ahead log every half second, until the pool closes. PASSIVE
/// checkpoints run on a reader connection and never block the writer or readers; the WAL file
/// is reused from its start once a checkpoint has caught up. Under a steady stream of commits a
/// passive checkpoint never quite catches up and the log would grow without bound, so once it
/// holds [`WAL_RESTART_FRAMES`] frames a RESTART checkpoint runs on the writer's connection,
/// between two write transactions: it copies the few frames the passive one left, waits up to
/// [`WAL_RESTART_WAIT`] for readers of older snapshots, and the next commit starts the log over.
pub(crate) async fn checkpoint_wal(readers: AnyPool, writer: AnyPool) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if readers.is_closed() {
            return;
        }
        if let Err(e) = checkpoint_once(&readers, &writer, WAL_RESTART_FRAMES).await {
            if readers.is_closed() || writer.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Log size (in frames, one page each) from which the log is restarted: 128 MiB of 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = 32_768;

/// How long a RESTART checkpoint waits for readers of older snapshots: 100 ms.
const WAL_RESTART_WAIT: &str = "PRAGMA busy_timeout = 100";

/// The write-ahead log after a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalState {
    /// Whether the checkpoint could not finish (readers or a writer in the way).
    pub(crate) busy: bool,
    /// Frames in the log.
    pub(crate) frames: i64,
    /// Frames copied into the database.
    pub(crate) checkpointed: i64,
}

/// One PASSIVE checkpoint on a reader, then a RESTART one on the writer's connection when the
/// log holds at least `restart_frames`.
pub(crate) async fn checkpoint_once(
    readers: &AnyPool,
    writer: &AnyPool,
    restart_frames: i64,
) -> Result<WalState, sqlx::Error> {
    let state = wal_checkpoint(&mut *readers.acquire().await?, "PRAGMA wal_checkpoint(PASSIVE)").await?;
    if state.frames < restart_frames {
        return Ok(state);
    }
    let mut conn = writer.acquire().await?;
    sqlx::query(WAL_RESTART_WAIT).execute(&mut *conn).await?;
    let restarted = wal_checkpoint(&mut conn, "PRAGMA wal_checkpoint(RESTART)").await;
    if let Err(e) = sqlx::query(BUSY_TIMEOUT).execute(&mut *conn).await {
        // Never hand the writer back with the short wait: the pool opens a fresh connection.
        conn.close_on_drop();
        return Err(e);
    }
    restarted
}

async fn wal_checkpoint(conn: &mut AnyConnection, pragma: &'static str) -> Result<WalState, sqlx::Error> {
    let row = sqlx::query(pragma).fetch_one(&mut *conn).await?;
    Ok(WalState {
        busy: row.try_get::<i64, _>(0)? != 0,
        frames: row.try_get(1)?,
        checkpointed: row.try_get(2)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn write_pages(writer: &AnyPool, rows: i64) {
        for _ in 0..rows {
            sqlx::query("INSERT INTO scratch (v) VALUES (zeroblob(4000))")
                .execute(writer)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_long_log_is_restarted_from_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        // The pools `Database::connect` makes, without its background checkpoints (which
        // would race the ones below).
        sqlx::any::install_default_drivers();
        let url = crate::Database::sqlite_url(&dir.path().join("wal.db"));
        let writer = pool(1, true).connect(&url).await.unwrap();
        let readers = pool(8, false).connect(&url).await.unwrap();
        let store = crate::Database {
            readers,
            writer,
            dialect: crate::Dialect::Sqlite,
            checkpoints: None,

            listen_url: None,
            opened_file: None,
        };
        sqlx::query("CREATE TABLE scratch (n INTEGER PRIMARY KEY, v BLOB)")
            .execute(&store.writer)
            .await
            .unwrap();
        write_pages(&store.writer, 300).await;
        let restarted = checkpoint_once(&store.readers, &store.writer, 1).await.unwrap();
        assert!(!restarted.busy, "{restarted:?}");
        assert!(restarted.frames > 0, "{restarted:?}");
        assert_eq!(restarted.checkpointed, restarted.frames);
        // The next commit writes from the start of the log.
        write_pages(&store.writer, 1).await;
        let after = checkpoint_once(&store.readers, &store.writer, i64::MAX).await.unwrap();
        assert!(after.frames < 10, "{after:?}");
    }
}
