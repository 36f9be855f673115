//! [`DbError`]: why a database operation failed.

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
    /// The database is not the one opened, or not in the state this build needs; the text
    /// says how.
    #[error("database unavailable: {0}")]
    Unavailable(&'static str),
    /// The database failed. The source is for logs, never for clients.
    #[error("database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// [`DbError::Backend`] from any error.
pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Backend(Box::new(e))
}

/// `conflict` when `e` is a unique-constraint violation (a duplicate key), else a backend error.
pub fn unique_or<E: From<DbError>>(e: sqlx::Error, conflict: E) -> E {
    if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
        conflict
    } else {
        backend(e).into()
    }
}
