//! Following `/v1/revocations/stream` (`cached` mode): every event announcing a version newer
//! than the list in force fetches the list at once. The stream reconnects with backoff and
//! `Last-Event-ID`, and is taken for dead after [`STREAM_IDLE`] of silence; the client bounds
//! each event (`aip_api::client::MAX_EVENT_BYTES`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::error::LinkError;
use super::events::UpdateSource;
use super::limits::BACKGROUND_TIMEOUT;
use super::refresh::Shared;

/// An event stream silent this long is taken for dead (the registry sends keep-alives every
/// 15 s).
const STREAM_IDLE: Duration = Duration::from_secs(45);
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
        let mut events = std::pin::pin!(self.http.open_events(from).await?);
        *connected = true;
        loop {
            let next = tokio::time::timeout(STREAM_IDLE, events.next())
                .await
                .map_err(|_| LinkError::Transport {
                    url: url.clone(),
                    reason: format!("event stream silent for {} s", STREAM_IDLE.as_secs()),
                })?;
            let event = match next {
                None => return Ok(()),
                Some(event) => event?,
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
