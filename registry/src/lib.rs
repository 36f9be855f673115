//! The AIP registry: the root of trust for agent identities.
//!
//! - [`ca`]: the root and issuing CA, agent certificates, the CRL;
//! - [`config`]: the registry's part of `aip.toml`, validated;
//! - [`store`]: its tables in the authority database, by concern;
//! - [`service`]: its operations, by concern (agents, keys, credentials, publication);
//! - [`http`]: its HTTP API;
//! - [`metrics`]: the names of its metrics, and the recorder `/metrics` renders.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
pub mod config;
pub mod http;
pub mod metrics;
pub mod service;
pub mod store;
