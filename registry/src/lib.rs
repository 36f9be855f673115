//! The AIP registry: the root of trust for agent identities.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod authority;
pub mod ca;
pub mod client;
pub mod config;
pub mod http;
pub mod metrics;
pub mod service;
pub mod store;
