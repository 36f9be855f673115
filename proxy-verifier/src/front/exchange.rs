//! One HTTP exchange through the relay: the relay applies the policy exactly as on stdio and
//! writes what it decides to two [`Sink`]s — answers for the client, messages for the server.
//! Here each sink is an [`Outbox`]: every flush hands the bytes written since to a channel as
//! one message (the relay flushes after every message it sends to the front door).
//!
//! The channels also tell when nothing more will come: once the handler has dropped its sinks,
//! a channel closes when no one else holds its sink — at once, unless a call is held for
//! approval, whose outcome keeps both until it resolves.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::relay::{Relay, Sink};

/// A writer whose flushes deliver whole messages to a channel.
struct Outbox {
    written: Vec<u8>,
    to: UnboundedSender<Vec<u8>>,
}

impl Write for Outbox {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut message = std::mem::take(&mut self.written);
        while message.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            message.pop();
        }
        if message.is_empty() {
            return Ok(());
        }
        // A receiver that is gone wants nothing more: not an error for the relay.
        let _ = self.to.send(message);
        Ok(())
    }
}

/// A sink delivering to a new channel, and that channel.
pub(super) fn outbox() -> (Sink, UnboundedReceiver<Vec<u8>>) {
    let (to, from) = unbounded_channel();
    let sink: Sink = Arc::new(Mutex::new(Box::new(Outbox {
        written: Vec::new(),
        to,
    })));
    (sink, from)
}

/// What the relay made of a client message.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Forward this (the message as the policy lets it through: credentials cut, perhaps
    /// redacted) to the server.
    Forward(Vec<u8>),
    /// Answer the client with this (a refusal or an error), forwarding nothing.
    Answer(Vec<u8>),
    /// Nothing to forward or answer (a notification refused).
    Nothing,
}

/// Runs one client message through `relay` and waits for its outcome (for a held call, until
/// the approval resolves). With `may_block` (the checks may wait for the network), the relay
/// runs where blocking does not stall the runtime's other tasks.
pub(super) async fn client_message(
    relay: &Arc<Relay>,
    body: &[u8],
    credentials: crate::identity::Presented<'_>,
    may_block: bool,
) -> io::Result<Outcome> {
    let (client, mut answers) = outbox();
    let (server, mut forwarded) = outbox();
    let run = || relay.client_message(body, credentials, &client, &server);
    if may_block {
        tokio::task::block_in_place(run)?;
    } else {
        run()?;
    }
    drop((client, server));
    // The relay answers or forwards (never both); a held call does either later.
    tokio::select! {
        biased;
        Some(answer) = answers.recv() => Ok(Outcome::Answer(answer)),
        Some(message) = forwarded.recv() => Ok(Outcome::Forward(message)),
        else => Ok(Outcome::Nothing),
    }
}

/// Runs one server message through `relay`: what reaches the client, if anything (a message
/// that is not JSON is dropped).
pub(super) fn server_message(relay: &Relay, body: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let (client, mut relayed) = outbox();
    relay.server_message(body, &client)?;
    drop(client);
    Ok(relayed.try_recv().ok())
}

/// One spelling of a JSON-RPC id (JSON text), so that a server that re-encodes an id still
/// matches: its value written back compactly.
pub(super) fn id_key(id: &str) -> String {
    serde_json::from_str::<serde_json::Value>(id).map_or_else(|_| id.to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flush_is_one_message() {
        let (sink, mut from) = outbox();
        {
            let mut out = sink.lock().unwrap();
            out.write_all(b"{\"a\":\n1}").unwrap();
            out.write_all(b"\n").unwrap();
            out.flush().unwrap();
            out.flush().unwrap();
            out.write_all(b"{}").unwrap();
            out.flush().unwrap();
        }
        assert_eq!(from.try_recv().unwrap(), b"{\"a\":\n1}");
        assert_eq!(from.try_recv().unwrap(), b"{}");
        drop(sink);
        assert!(from.try_recv().is_err());
    }
}
