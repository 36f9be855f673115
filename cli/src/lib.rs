//! The command lines of the AIP identity authority, as a library with two thin binaries:
//!
//! * `aip-ca` ([`ca::main`]): operate the authority; the agent and user tools;
//! * `aip-agent` ([`agent::main`]): the agent-side shim that lets an unmodified MCP client
//!   present AATs (docs/architecture.md, "Tool call").
//!
//! Both share what is private here: the agent directory, passphrase and client flags, and how
//! results and errors are reported. Flags in, library calls, output out; the logic lives in
//! the authority's crates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent_dir;
mod commands;
mod logging;
mod manuals;
mod output;
mod passphrase;
mod remote;

pub mod agent;
pub mod ca;

/// One TLS crypto backend for the whole process (aws-lc-rs).
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
