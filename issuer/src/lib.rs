//! The AIP token issuer (spec section 9): single-use challenges, proof of key possession, user
//! authorization (API keys, OpenID Connect ID tokens, loopback users), AAT minting with
//! capability intersection, rotating refresh tokens, and revocation of tokens, sessions and
//! users through the registry's revocation list.
//!
//! [`http::routes`] serves it ([`openapi`] describes it); `aip-authority` mounts it beside the registry (one process, one
//! database). The issuer reaches the registry only through [`directory::AgentDirectory`], in
//! the words of the registry's API (`aip-api`); it shares the authority database and its audit
//! chain through `aip-db`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authorize;
pub mod challenge;
pub mod config;
pub mod directory;
mod forms;
pub mod http;
pub mod keys;
pub mod oidc;
pub mod openapi;
mod relying_party;
mod seal;
pub mod service;
pub mod store;
#[cfg(test)]
mod test_support;
