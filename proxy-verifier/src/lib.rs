//! AIP Layer 2: the policy engine, DLP, the audit chain and the stdio relay behind `aip-proxy`.
//!
//! - [`policy`] loads and compiles `AgentPolicy` documents (spec 3);
//! - [`engine`] evaluates methods and tool calls (spec 4);
//! - [`dlp`] finds and redacts sensitive data (spec 3.6);
//! - [`normalize`] folds names for comparison and detects look-alikes (spec 4.1).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
mod clock;
pub mod dlp;
pub mod engine;
pub mod hitl;
pub mod identity;
pub mod jsonrpc;
pub mod keys;
pub mod metrics;
pub mod normalize;
pub mod policy;
pub mod registry;
pub mod relay;
pub mod run;
pub mod server;
pub mod state;
mod user_regex;
