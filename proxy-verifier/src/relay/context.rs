//! The per-message context of the client → server direction: what every step of handling one
//! message borrows from the reading loop. It holds references and two plain values only, so
//! building it costs nothing on the call path (no allocation, lock or clone).

use std::time::Instant;

use crate::engine::Engine;
use crate::identity::Presented;
use crate::jsonrpc::Envelope;

use super::lines::Sink;

/// One client message being handled.
pub(super) struct Message<'m> {
    /// The engine in force for this message (one snapshot for the whole message).
    pub(super) engine: &'m Engine,
    /// Its JSON-RPC envelope.
    pub(super) envelope: &'m Envelope<'m>,
    /// The message as text, without its newline.
    pub(super) text: &'m str,
    /// The line as read (newline included): what is forwarded when nothing changes.
    pub(super) line: &'m [u8],
    /// Where answers to the client go.
    pub(super) client: &'m Sink,
    /// Where forwarded messages go.
    pub(super) server: &'m Sink,
    /// Nothing more is waiting to be read: flush now rather than wait for the next message.
    pub(super) idle: bool,
    /// When evaluation started.
    pub(super) started: Instant,
    /// The credentials the transport carried (the HTTP front door's headers); `None` on stdio,
    /// where they travel in the message's params.
    pub(super) credentials: Option<Presented<'m>>,
}
