//! The stdio relay: newline-delimited JSON-RPC between an MCP client (our stdin/stdout) and the
//! wrapped server (its stdin/stdout), with the policy applied on the way.
//!
//! Two OS threads carry the two directions, so a slow or stopped side never stalls the other;
//! no async runtime sits on the call path. What the proxy does not change is forwarded
//! byte-for-byte: the original line, not a re-serialization. Writes are buffered and flushed as
//! soon as the reading side has nothing more waiting, so a burst of pipelined calls costs one
//! write system call per burst while a lone call is never held back.
//!
//! - `lines` — reading one line under the size cap; the buffered outputs ([`Sink`]);
//! - `shared` — the [`Relay`] both directions share, and its [`RelayOptions`];
//! - `context` — the per-message context every step of a client message borrows;
//! - `pending` — the requests forwarded and not answered yet, their deadlines;
//! - `upstream` — client → server: size, parse and method checks, `tools/list`, `tools/call`,
//!   DLP on arguments, holds for approval;
//! - `authenticate` — the AAT step of a client message, its audit records and refusals;
//! - `records` — the decision record of a client message, and how its arguments are kept;
//! - `downstream` — server → client: `tools/list` filtering, `schema_hash`, DLP on output,
//!   answers for calls the server leaves unanswered.

mod authenticate;
mod context;
mod downstream;
mod lines;
mod pending;
mod records;
mod shared;
mod upstream;

pub use downstream::schema_digest;
pub use lines::{Sink, sink};
pub use shared::{AuditArgs, DEFAULT_MAX_MESSAGE, Relay, RelayOptions};
