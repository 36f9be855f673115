//! [`Database`]: the pools, the dialect, connecting (with the migrations) and closing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row as _};

use crate::checkpoint::Checkpointer;
use crate::error::{DbError, backend};
use crate::{nodelay, sqlite};

pub(crate) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// The database engine behind a [`Database`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// An SQLite file (the embedded default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Dialect {
    /// `INSERT INTO`, for inserts inside a write transaction. On SQLite it is
    /// `INSERT OR FAIL INTO`: a failed constraint stops the statement without undoing its
    /// earlier rows, so SQLite keeps no statement journal (a copy of every page the statement
    /// changes) for it. That is safe only because a write transaction that meets any error is
    /// rolled back as a whole, never committed; PostgreSQL has no such journal and no such
    /// clause.
    pub fn insert_verb(self) -> &'static str {
        match self {
            Self::Sqlite => "INSERT OR FAIL INTO",
            Self::Postgres => "INSERT INTO",
        }
    }
}

/// The authority's database: readers, the writer every write transaction must use (on SQLite
/// a single connection; on PostgreSQL the same pool as the readers), and the dialect. Clones
/// share the pools.
#[derive(Clone)]
pub struct Database {
    pub(crate) readers: AnyPool,
    pub(crate) writer: AnyPool,
    pub(crate) dialect: Dialect,
    /// Signs checkpoints of the audit chain, when the registry key is at hand.
    pub(crate) checkpoints: Option<Arc<Checkpointer>>,

    /// On PostgreSQL, the URL the version watcher connects to (`crate::notices`).
    pub(crate) listen_url: Option<String>,
    /// On SQLite, the file opened (readiness checks it is still in place).
    pub(crate) opened_file: Option<sqlite::OpenedFile>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(DbError::Conflict("database URL must start with sqlite: or postgres:"));
        };
        let mut opened_file = None;
        let (readers, writer) = match dialect {
            Dialect::Sqlite => {
                sqlite::create_private_file(url)?;
                let writer = sqlite::pool(1, true).connect(url).await.map_err(backend)?;
                // Migrations (and the WAL switch) first, on the writer, before readers open.
                SQLITE_MIGRATIONS.run(&writer).await.map_err(backend)?;
                let readers = sqlite::pool(8, false).connect(url).await.map_err(backend)?;
                opened_file = sqlite::file_path(url).and_then(|path| sqlite::OpenedFile::at(&path));
                tokio::spawn(sqlite::checkpoint_wal(readers.clone(), writer.clone()));
                (readers, writer)
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(15))
                    .max_connections(16)
                    .after_connect(|conn, _| Box::pin(nodelay::set_nodelay(conn)))
                    .connect(url)
                    .await
                    .map_err(backend)?;
                POSTGRES_MIGRATIONS.run(&pool).await.map_err(backend)?;
                (pool.clone(), pool)
            }
        };
        let listen_url = (dialect == Dialect::Postgres).then(|| url.to_owned());
        Ok(Self {
            readers,
            writer,
            dialect,
            checkpoints: None,

            listen_url,
            opened_file,
        })
    }

    /// The URL of an SQLite database file, created if missing (mode 0600).
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// The same database, signing checkpoints of the audit chain with `checkpointer`.
    #[must_use]
    pub fn with_checkpoints(mut self, checkpointer: Checkpointer) -> Self {
        self.checkpoints = Some(Arc::new(checkpointer));
        self
    }

    /// The engine in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.readers
    }

    /// The pool writes go through: on SQLite a single connection. Writes that change shared
    /// state take the authority lock first ([`Database::write`]); this pool is for writes
    /// that need no lock (upkeep, idempotent inserts).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Fills in a column derived in Rust from another (upkeep after a migration that added
    /// it), up to 500 rows per transaction, until `select` finds none; the number of rows
    /// filled. `select` yields the rows still to fill as (key, source) text columns, and
    /// `update` sets the column to `$1` where the key is `$2` and the column is still empty,
    /// so replicas may run it at the same time. `derive` must give every row a value, or this
    /// never ends.
    pub async fn fill_derived(
        &self,
        select: &'static str,
        update: &'static str,
        derive: impl Fn(&str) -> String,
    ) -> Result<u64, DbError> {
        let mut filled = 0;
        loop {
            let rows = sqlx::query(select).fetch_all(&self.writer).await.map_err(backend)?;
            if rows.is_empty() {
                return Ok(filled);
            }
            let mut tx = self.writer.begin().await.map_err(backend)?;
            for row in &rows {
                let key: String = row.try_get(0).map_err(backend)?;
                let source: String = row.try_get(1).map_err(backend)?;
                sqlx::query(update)
                    .bind(derive(&source))
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            tx.commit().await.map_err(backend)?;
            filled += u64::try_from(rows.len()).unwrap_or(u64::MAX);
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.readers).await.map_err(backend)?;
        Ok(())
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}
