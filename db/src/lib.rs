//! The authority's database, shared by the registry and the token issuer: connection pools and
//! the SQL dialect ([`Database`]), the embedded migrations, several statements in one round
//! trip ([`Script`]), the write transaction that takes the authority lock and appends to the
//! audit chain ([`Write`]), the audit table itself ([`audit`]) and its signed checkpoints
//! ([`Checkpointer`]), what readiness asks of it ([`Database::unapplied_migrations`]), and what
//! backup and restore ask of it ([`backup`]).
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
//! Every write that publishes a revocation list version also announces it to the other
//! replicas (on PostgreSQL a `NOTIFY` in its transaction; [`Database::watch_versions`]).
//! docs/architecture.md says which service owns which table.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod backup;
mod checkpoint;
mod database;
mod error;
mod nodelay;
mod notices;
mod ready;
mod script;
mod sqlite;
mod write;

pub use checkpoint::Checkpointer;
pub use database::{Database, Dialect};
pub use error::{DbError, backend, unique_or};
pub use script::Script;
pub use write::{Lock, Write};
