//! The AIP registry: the root of trust for agent identities.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod ca;
pub mod config;
pub mod store;
