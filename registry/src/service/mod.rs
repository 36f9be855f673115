//! The registry's operations, grouped by concern:
//!
//! - [`state`]: the [`Registry`] itself, what it holds and its accessors;
//! - [`credentials`]: who a bearer token belongs to; access and registration tokens;
//! - [`agents`]: registration with proof of possession, agent records, status changes;
//! - [`certificates`]: agent certificates as the CA issues them and as the API shows them;
//! - [`keys`]: key rotation and certificate renewal, proven by the agent's key;
//! - [`publication`]: the revocation list (JSON and signed), the CRL, the event stream, the
//!   JWKS and the discovery document.
//!
//! HTTP lives in [`crate::http`]; storage behind [`crate::store::Store`].

mod agents;
mod certificates;
mod checks;
mod credentials;
mod error;
mod keys;
mod principal;
mod publication;
mod state;

pub use credentials::{ACCESS_TOKEN_PREFIX, REGISTRATION_TOKEN_PREFIX};
pub use error::RegistryError;
pub use principal::Principal;
pub use publication::MAX_REVOCATION_ENTRIES;
pub use state::{PublishedList, Registry, SignedList, TokenKeys};
