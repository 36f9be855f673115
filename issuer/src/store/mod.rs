//! The issuer's persistent state, in the authority database beside the registry's, by
//! concern: signing keys and shared secrets ([`keys`]), users ([`users`]), sessions, refresh
//! tokens and the issuance log ([`sessions`]), and the group commit of issuances
//! ([`ledger`]). Its audit records join the authority's hash chain, and every write takes the
//! authority lock first (`aip_db::Write`), so writers are serialized the same way on SQLite
//! and across PostgreSQL replicas.

mod base;
pub mod keys;
pub mod ledger;
pub mod sessions;
pub mod users;

pub use aip_db::DbError;
pub use base::IssuerStore;
pub use keys::KeyRecord;
pub use ledger::{Issuance, IssuedToken, Ledger, LedgerError, OnceKind, Refusal, SessionChange, SingleUse};
pub use sessions::{Covered, RefreshLookup, SessionRecord};
pub use users::UserRecord;
