//! Following `/v1/revocations/stream` (`cached` mode): every event announcing a version newer
//! than the list in force fetches the list at once. The stream reconnects with backoff and
//! `Last-Event-ID`, is taken for dead after [`STREAM_IDLE`] of silence, and no event may grow
//! past [`MAX_EVENT_BYTES`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;

use super::error::LinkError;
use super::events::UpdateSource;
use super::limits::BACKGROUND_TIMEOUT;
use super::refresh::Shared;

/// An event stream silent this long is taken for dead (the registry sends keep-alives every
/// 15 s).
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// Largest server-sent event (the registry's are a few hundred bytes).
pub(super) const MAX_EVENT_BYTES: usize = 64 << 10;
/// First and longest wait before reconnecting the event stream.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

impl Shared {
    /// Follows `/v1/revocations/stream`, reconnecting with backoff and `Last-Event-ID`.
    pub(super) async fn follow_stream(self: Arc<Self>) {
        let mut backoff = BACKOFF_START;
        let mut last_seen = 0;
        loop {
            let started = Instant::now();
            let mut connected = false;
            if let Err(e) = self.stream_once(&mut last_seen, &mut connected).await {
                self.check_failed(&e);
            }
            // A connection that lasted resets the backoff; one that keeps dropping at once
            // backs off like a refused one.
            if connected && started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_START;
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
        }
    }

    /// One connection to the event stream, until it ends. Every event announcing a version
    /// newer than the list in force fetches the list at once.
    async fn stream_once(&self, last_seen: &mut u64, connected: &mut bool) -> Result<(), LinkError> {
        let url = self.http.url("/v1/revocations/stream");
        let from = (*last_seen).max(self.state.version());
        let chunks = self.http.open_events(&url, from).await?;
        *connected = true;
        let mut guard = EventSizeGuard::default();
        let mut events = std::pin::pin!(
            chunks
                .map(move |chunk| match chunk {
                    Ok(bytes) if guard.feed(bytes.as_ref()) => Ok(bytes),
                    Ok(_) => Err(StreamFault::TooLarge),
                    Err(reason) => Err(StreamFault::Transport(reason)),
                })
                .eventsource()
        );
        loop {
            let next = tokio::time::timeout(STREAM_IDLE, events.next())
                .await
                .map_err(|_| LinkError::Transport {
                    url: url.clone(),
                    reason: format!("event stream silent for {} s", STREAM_IDLE.as_secs()),
                })?;
            let event = match next {
                None => return Ok(()),
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    return Err(LinkError::Transport {
                        url: url.clone(),
                        reason: format!("event stream: {e}"),
                    });
                }
            };
            let Ok(version) = event.id.trim().parse::<u64>() else {
                continue;
            };
            *last_seen = (*last_seen).max(version);
            if version > self.state.version() {
                let _ = self.fetch_list(UpdateSource::Stream, BACKGROUND_TIMEOUT).await;
            }
        }
    }
}

/// Why the event stream's bytes were cut off.
#[derive(Debug, thiserror::Error)]
enum StreamFault {
    #[error("{0}")]
    Transport(String),
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Bounds the bytes between two event boundaries (blank lines) of a server-sent event stream,
/// so a registry that never ends an event cannot make the parser buffer without end.
#[derive(Default)]
pub(super) struct EventSizeGuard {
    since_boundary: usize,
    after_newline: bool,
}

impl EventSizeGuard {
    /// Counts `chunk`; `false` once an event grows past [`MAX_EVENT_BYTES`].
    pub(super) fn feed(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            match byte {
                b'\n' if self.after_newline => self.since_boundary = 0,
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
            self.since_boundary += 1;
            if self.since_boundary > MAX_EVENT_BYTES {
                return false;
            }
        }
        true
    }
}
