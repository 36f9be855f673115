//! AIP Layer 2: the policy engine, DLP, the audit chain and the stdio relay behind `aip-proxy`.
//!
//! Where a change belongs, module by module (each depends only on those listed above it that it
//! names; there are no import circles):
//!
//! - [`normalize`] folds names for comparison and detects look-alikes (spec 4.1);
//! - `user_regex` builds the regexes policy authors write, under size limits;
//! - [`dlp`] finds and redacts sensitive data (spec 3.6);
//! - [`policy`] loads and compiles `AgentPolicy` documents (spec 3), one file per section;
//! - [`keys`] reads and writes policy signing keys and signs policies;
//! - [`engine`] evaluates methods and tool calls (spec 4);
//! - [`state`] holds the policy in force, swapped on reload;
//! - [`jsonrpc`] reads messages and turns refusals into JSON-RPC errors (spec 11.1);
//! - [`metrics`] names and records the Prometheus metrics (spec 6.4);
//! - `clock` turns the injected [`Clock`](aip_aat::clock::Clock) into calendar time;
//! - [`audit`] writes and verifies the hash-chained audit log (spec 12);
//! - [`hitl`] holds `ask` calls until a human answers (IETF draft 6.5);
//! - [`registry`] links the proxy to the AIP registry: issuer keys and revocation data;
//! - [`replay`] remembers used proof identifiers, shared by the host's proxies (or via Redis);
//! - [`identity`] checks AATs, proofs, revocation and delegations (spec 4.3 steps 0b–0c);
//! - `target` starts the wrapped stdio server's process;
//! - [`relay`] carries JSON-RPC between the client and the wrapped server, applying the policy;
//! - [`front`] serves MCP over Streamable HTTP through the relay: tokens, sessions, streams;
//! - [`server`] serves the optional HTTP API (health, metrics, validation, approvals);
//! - [`openapi`] describes both HTTP listeners, the front door and the HTTP API, in OpenAPI 3.1;
//! - [`run`] puts it together for `aip-proxy`: target process, signals, reload, shutdown;
//! - [`cli`] defines `aip-proxy`'s command line (for the binary, its manual page and completions).
//! - [`client_config`] writes MCP client configurations that run the proxy (and `aip-agent`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod cli;
pub mod client_config;
mod clock;
pub mod dlp;
pub mod engine;
pub mod front;
pub mod hitl;
pub mod identity;
pub mod jsonrpc;
pub mod keys;
pub mod metrics;
pub mod normalize;
pub mod openapi;
pub mod policy;
pub mod registry;
pub mod relay;
pub mod replay;
pub mod run;
pub mod server;
pub mod state;
mod target;
mod user_regex;
