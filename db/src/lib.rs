//! The authority's database, shared by the registry and the token issuer: connection pools and
//! the SQL dialect ([`Database`]), the embedded migrations, several statements in one round
//! trip ([`Script`]), the write transaction that takes the authority lock and appends to the
//! audit chain ([`Write`]), and the audit table itself ([`audit`]).
//!
//! One body of SQL serves SQLite (the embedded default) and PostgreSQL through sqlx's `Any`
//! driver, each engine with its own migrations. Placeholders are `$N` (both engines accept
//! them) and values are the types `Any` carries on both: integers, text and blobs (flags are
//! 0/1 integers, since `Any` cannot decode SQLite's BOOLEAN).
//!
//! Writers are serialized by the single `registry_state` row: every write transaction updates
//! it first ([`Database::write`]), which takes PostgreSQL's row lock (across replicas) or
//! SQLite's write lock. SQLite writes all go through one dedicated connection: writers queue
//! for it in order instead of spinning in SQLite's busy handler, and its page cache stays warm
//! (in WAL mode a connection's cache is invalidated whenever another connection writes).
//! docs/architecture.md says which service owns which table.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
mod nodelay;
mod script;
mod sqlite;
mod write;

use std::path::Path;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

pub use script::Script;
pub use write::{Lock, Write};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The change conflicts with what is stored (a duplicate, say); the text says how.
    #[error("{0}")]
    Conflict(&'static str),
    /// Stored data could not be read back, or a write was put together wrongly.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The database failed. The source is for logs, never for clients.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// [`DbError::Backend`] from any error.
pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Backend(Box::new(e))
}

/// Whether `e` is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

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
    readers: AnyPool,
    writer: AnyPool,
    dialect: Dialect,
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
        let (readers, writer) = match dialect {
            Dialect::Sqlite => {
                let writer = sqlite::pool(1, true).connect(url).await.map_err(backend)?;
                // Migrations (and the WAL switch) first, on the writer, before readers open.
                SQLITE_MIGRATIONS.run(&writer).await.map_err(backend)?;
                let readers = sqlite::pool(8, false).connect(url).await.map_err(backend)?;
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
        Ok(Self {
            readers,
            writer,
            dialect,
        })
    }

    /// The URL of an SQLite database file, created if missing.
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
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
