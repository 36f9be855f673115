//! Server-sent events (the `text/event-stream` answers of Streamable HTTP), both ways: reading
//! an upstream's stream event by event under a size cap, and writing events for the client.

use bytes::{Bytes, BytesMut};

/// One event of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Event {
    /// `id:`, which a client may resume from (`Last-Event-ID`).
    pub(super) id: Option<String>,
    /// `event:` (absent: `message`).
    pub(super) event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(super) data: String,
}

/// Why a stream could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SseError {
    /// An event or a line exceeds the cap.
    TooLarge(usize),
    /// The stream is not UTF-8.
    NotUtf8,
}

/// Splits a byte stream into events (WHATWG HTML, "Parsing an event stream"), holding at most
/// `max` bytes of one event.
#[derive(Debug)]
pub(super) struct Parser {
    pending: BytesMut,
    event: Event,
    has_data: bool,
    size: usize,
    max: usize,
}

impl Parser {
    pub(super) fn new(max: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            event: Event::default(),
            has_data: false,
            size: 0,
            max,
        }
    }

    /// Feeds `chunk`; the events it completes.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n' || *b == b'\r') {
            if self.pending[end] == b'\r' && end + 1 == self.pending.len() {
                // Perhaps the first half of `\r\n`: wait for the next byte.
                break;
            }
            let line = self.pending.split_to(end);
            // `\r\n` is one line end.
            let crlf = self.pending.starts_with(b"\r\n");
            let _ = self.pending.split_to(if crlf { 2 } else { 1 });
            if let Some(event) = self.line(&line)? {
                events.push(event);
            }
        }
        if self.pending.len() > self.max {
            return Err(SseError::TooLarge(self.max));
        }
        Ok(events)
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<Event>, SseError> {
        if line.is_empty() {
            let done = std::mem::take(&mut self.event);
            let had_data = std::mem::replace(&mut self.has_data, false);
            self.size = 0;
            return Ok(had_data.then_some(done));
        }
        self.size += line.len();
        if self.size > self.max {
            return Err(SseError::TooLarge(self.max));
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.event.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }
}

/// An event as written to the client: `data` may hold line breaks, each line its own `data:`.
pub(super) fn encode(id: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(b"event: message\n");
    if let Some(id) = id.filter(|id| !id.contains(['\n', '\r'])) {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// A comment line that keeps an idle stream (and its connection) alive.
pub(super) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_and_line_ends() {
        let mut parser = Parser::new(1024);
        assert!(parser.feed(b": hi\r\nid: 7\r\ndata: {\"a\"").unwrap().is_empty());
        assert!(parser.feed(b":1}\r").unwrap().is_empty());
        let events = parser.feed(b"\n\r\nevent: message\ndata: x\ndata: y\n\n").unwrap();
        assert_eq!(
            events,
            vec![
                Event {
                    id: Some("7".into()),
                    event: None,
                    data: "{\"a\":1}".into()
                },
                Event {
                    id: None,
                    event: Some("message".into()),
                    data: "x\ny".into()
                }
            ]
        );
        // An event without data (a retry hint) is no event.
        assert!(parser.feed(b"retry: 10\n\n").unwrap().is_empty());
    }

    #[test]
    fn an_oversized_event_is_refused() {
        let mut parser = Parser::new(16);
        assert_eq!(parser.feed(b"data: 0123456789abcdef\n"), Err(SseError::TooLarge(16)));
        let mut parser = Parser::new(16);
        assert_eq!(parser.feed(&[b'x'; 40]), Err(SseError::TooLarge(16)));
    }

    #[test]
    fn encoded_events_keep_every_line_in_data() {
        assert_eq!(
            &encode(Some("3"), b"{\n\"a\": 1}")[..],
            b"event: message\nid: 3\ndata: {\ndata: \"a\": 1}\n\n"
        );
    }
}
