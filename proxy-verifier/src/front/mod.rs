//! The Streamable HTTP front door (`aip-proxy --serve ADDR`): MCP over HTTP for remote clients,
//! in front of a remote MCP server (`--upstream URL`) or a stdio server (`--target "cmd"`), with
//! everything the stdio relay applies — AATs, policy, DLP both ways, approvals, audit — and
//! the HTTP side of MCP authorization: protected resource metadata (RFC 9728), 401 challenges
//! that lead clients to the authority, DPoP-bound AATs (RFC 9449).
//!
//! # Files
//!
//! - `options` — [`FrontDoorOptions`]: the listener, the resource URI, the upstream;
//! - `metadata` — the protected resource metadata and the `WWW-Authenticate` challenges;
//! - `headers` — headers that must come once;
//! - `state` — the state the handlers share;
//! - `auth` — the AAT and DPoP proof of a request, and the 401s;
//! - `session` — `Mcp-Session-Id`: the front door's sessions, bound to their agent;
//! - `exchange` — one message through the relay, its outcome read from two channels;
//! - `sse` — reading and writing event streams;
//! - `upstream` — the remote MCP server's client;
//! - `stdio` — a stdio server per session;
//! - `routes` — `/mcp` and the metadata;
//! - [`openapi`] — their part of the proxy's OpenAPI description ([`crate::openapi`]);
//! - `serve` — [`bind`] and [`serve`]: the listener, TLS, connection limits, the stop.

mod auth;
mod exchange;
mod headers;
mod metadata;
pub mod openapi;
mod options;
mod routes;
mod serve;
mod session;
mod sse;
mod state;
mod stdio;
mod upstream;

pub use options::{FrontDoorOptions, HeaderSource, HttpUpstream, TlsFiles, Upstream, UpstreamHeader};
pub use serve::{Bound, FrontDoorError, Parts, bind, serve};
