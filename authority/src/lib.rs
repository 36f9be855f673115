//! One AIP identity authority: the registry and the token issuer, wired together over one
//! database and served on one listener.
//!
//! - [`config`]: `aip.toml` — the file, and the registry's and issuer's sections in it;
//! - [`init`]: creating an authority directory (CA, keys, configuration, database, first
//!   admin token, first issuer signing key);
//! - [`backup`]: backing up an authority directory while it serves, and restoring one;
//! - [`open`]: opening one, with the registry and the issuer wired together ([`Authority`]);
//! - [`lock`]: who may use an authority directory at once (servers share it, offline changes
//!   take it alone);
//! - [`renew`]: renewing the issuing CA offline;
//! - [`directory`]: where the two services meet in one process — the issuer's
//!   `AgentDirectory` over the registry, the registry's `TokenKeys` over the issuer's keys;
//! - [`ready`]: `GET /ready`, whether a replica should be sent traffic;
//! - [`openapi`]: the OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`;
//! - [`server`]: serving it, with the bounds of [`connections`] (how many, how slow) and the
//!   [`rate_limit`]s of spec 8.4.2.
//!
//! `aip-ca init`, `aip-ca serve` and the offline commands are thin calls into this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod config;
pub mod connections;
pub mod directory;
pub mod error;
pub mod init;
pub mod lock;
pub mod open;
pub mod openapi;
pub mod rate_limit;
pub mod ready;
pub mod renew;
pub mod server;

pub use error::AuthorityError;
pub use init::{InitOptions, Initialized, init};
pub use open::{Authority, Overrides, open, open_database};
