//! Persistence. [`Store`] is the registry's only way to its tables, by concern: agents, their
//! keys and certificates ([`AgentStore`]), revocation publication ([`RevocationStore`]) and
//! credentials ([`CredentialStore`]). Each mutating method is one write transaction of the
//! authority database (`aip_db::Write`) that also appends to the audit chain, so a failed
//! request changes nothing. [`SqlStore`] implements it for SQLite (the embedded default) and
//! PostgreSQL.

mod records;
mod sql;
mod traits;

pub use records::{
    AgentQuery, KeyRotation, NewAccessToken, NewAgent, NewCertificate, NewRegistrationToken, Nonce,
    RegistrationCredential, RegistrationTokenInfo, StatusAction, StatusChanged, StoreError, StoredAccessToken,
    StoredAgent, StoredCertificate, StoredCrl, StoredEvent, StoredKey, StoredRegistrationToken,
};
pub use sql::SqlStore;
pub use traits::{AgentStore, CredentialStore, RevocationStore, Store};
