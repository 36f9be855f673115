//! Newline-delimited messages on the two pipes: reading one line under the size cap, and the
//! shared, buffered outputs ([`Sink`]) both directions write to.

use std::io::{self, BufRead, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A shared, flushable output.
pub type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Wraps a writer as a [`Sink`].
pub fn sink(writer: impl Write + Send + 'static) -> Sink {
    Arc::new(Mutex::new(Box::new(io::BufWriter::with_capacity(64 << 10, writer))))
}

/// The result of reading one line.
pub(super) enum Line {
    Eof,
    Complete,
    TooLong,
}

/// How much of an oversized line is kept: enough for the members before its `id` in the
/// messages MCP clients and servers write.
const KEPT_PREFIX: usize = 4096;

/// Reads one `\n`-terminated line into `buf` (terminator included), refusing to buffer more than
/// `max` bytes: of an oversized line only the first [`KEPT_PREFIX`] bytes stay in `buf` (where
/// its `id` may be read), the rest is consumed and dropped.
pub(super) fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Complete,
            });
        }
        let (chunk, done) = match memchr_newline(available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let used = chunk.len();
        if !too_long {
            if buf.len() + used > max + 1 {
                too_long = true;
                let room = KEPT_PREFIX.saturating_sub(buf.len()).min(used);
                buf.extend_from_slice(&chunk[..room]);
                buf.truncate(KEPT_PREFIX);
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

pub(super) fn lock(sink: &Sink) -> MutexGuard<'_, Box<dyn Write + Send>> {
    sink.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes one message (adding the newline when `text` lacks it) and flushes if asked.
pub(super) fn send(sink: &Sink, text: &[u8], flush: bool) -> io::Result<()> {
    let mut out = lock(sink);
    out.write_all(text)?;
    if !text.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    if flush { out.flush() } else { Ok(()) }
}

pub(super) fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub(super) fn flush_both(a: &Sink, b: &Sink) -> io::Result<()> {
    let first = lock(a).flush();
    let second = lock(b).flush();
    first.and(second)
}
