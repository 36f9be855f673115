//! The authority's HTTP API as data, and the one client of it.
//!
//! - [`registry`]: bodies of the registry's endpoints (agents, certificates, tokens,
//!   revocation), roles, and the request bodies an agent key signs;
//! - [`issuer`]: bodies of the token issuer's endpoints (challenge, token, users, revoke);
//! - [`oauth`]: the issuer's OAuth 2.1 face (metadata, token answers and errors,
//!   introspection);
//! - [`checks`]: checks of request values both services apply;
//! - [`client`]: [`Client`](client::Client), the client of every endpoint, used by `aip-ca`,
//!   token issuers running apart from their registry, and proxies following revocation;
//! - [`agent`]: [`AgentClient`](agent::AgentClient), which fetches an agent's AATs and keeps
//!   them fresh, built on the same client.
//!
//! Servers (`aip-registry`, `aip-issuer`) and clients share these types, so the two ends of the
//! API cannot drift apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod checks;
pub mod client;
pub mod issuer;
pub mod oauth;
pub mod registry;

use serde::{Deserialize, Serialize};

/// The most items one page of a listing (`GET /v1/agents`, `GET /v1/users`) holds; a page
/// with more after it carries `next`, which the next request passes as `after`.
pub const MAX_PAGE: u32 = 1000;

/// The body of every error answer of the authority's API (spec 9.4.2 style), and of the
/// proxy's: `{"error": code, "error_description": text}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: String,
    /// Human-readable explanation.
    pub error_description: String,
}
